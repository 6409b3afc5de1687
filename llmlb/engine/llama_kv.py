"""The decode loop's side of the prompt cache: what each sequence holds, and its disk tier.

The node learns what every sequence holds (the text-prefix hashes of the request that filled
it, llmlb/prefix.py) from a `Holds` event, so that the router can send a conversation's next
turn here. With a disk tier (engine/prompt_cache.py), cells about to be lost are saved
first: when a request takes a sequence and would cut a full block of it, and when the model
is unloaded or the node stops (`save_all`). A request that no sequence serves well gets the
longest saved prefix restored into its sequence (llama.cpp's per-sequence state API) before
the rest of its prompt is evaluated; the prepare thread reads the file ahead (`lookup`)
while the bytes waiting in memory stay under READ_AHEAD_BYTES, else the loop reads it.

The copy of a sequence's cells is the only part on the decode loop's thread (a memcpy: about
20 ms for 1,500 tokens of SmolLM2); hashing and writing run on the cache's writer thread.
"""

from __future__ import annotations

import ctypes
import logging
import time
import weakref
from typing import Any

import llama_cpp as lc

from llmlb import settings
from llmlb.engine import wire
from llmlb.engine.llama_loop import Job, Seq, common_prefix
from llmlb.engine.prompt_cache import BLOCK, DIR_NAME, MIN_TOKENS, Entry, PromptCache, identity
from llmlb.engine.sink import Outbox

log = logging.getLogger("llmlb.engine")
READ_AHEAD_BYTES = 1 << 30


def open_cache(model: Any, outbox: Outbox) -> PromptCache | None:
    """The disk tier of `model` (a catalog row), its files indexed and told to the node; None
    when LLMLB_PROMPT_CACHE_GB is 0."""
    limit = settings.prompt_cache_bytes()
    if limit <= 0:
        return None

    def notify(name: str, prefix: list[int]) -> None:
        outbox.now([wire.Holds(entry=name, prefix=prefix)])

    cache = PromptCache(settings.home() / DIR_NAME, identity(model), limit)
    entries = cache.scan()
    if entries:
        outbox.now([wire.Holds(entry=cache.name(e.key), prefix=e.prefix) for e in entries])
    cache.notify = notify
    return cache


class Hit:
    """A saved prefix found for a request: its entry, the tokens it shares, its cells if read."""

    def __init__(self, entry: Entry, shared: int):
        self.entry, self.shared = entry, shared
        self.data: bytearray | None = None


class KvTier:
    def __init__(self, name: str, ctx, cache: PromptCache | None, outbox: Outbox):
        self.name, self.ctx, self.cache, self.out = name, ctx, cache, outbox
        self.mem = lc.llama_get_memory(ctx)
        self.prefixes: dict[int, list[int]] = {}  # sequence id -> text-prefix hashes it holds
        self._cold: set[int] = set()  # sequences whose prompt is evaluated from scratch
        self._read_ahead: weakref.WeakSet[Hit] = weakref.WeakSet()

    # -- the prepare thread --------------------------------------------------------------------
    def lookup(self, tokens: list[int], seqs: list[Seq]) -> Hit | None:
        """The saved prefix worth restoring for `tokens`: longer, by a block, than what any
        sequence holds now (a guess: the loop decides when the request starts)."""
        if self.cache is None:
            return None
        entry = self.cache.lookup(tokens)
        if entry is None:
            return None
        shared = common_prefix(entry.tokens, tokens)
        held = max((common_prefix(list(s.cached), tokens) for s in seqs), default=0)
        if shared < held + BLOCK:
            return None
        hit = Hit(entry, shared)
        if sum(len(h.data) for h in self._read_ahead if h.data is not None) < READ_AHEAD_BYTES:
            hit.data = self.cache.read(entry)
            if hit.data is None:
                return None  # damaged or gone (said and dropped): evaluate the prompt
            self._read_ahead.add(hit)
        return hit

    # -- the decode loop's thread --------------------------------------------------------------
    def last_alone(self, seq: Seq) -> bool:
        """Whether a prompt's last token is decoded on its own. llama.cpp's numbers depend on
        the shape of the batch a token is computed in; a restored prompt computes only its
        last token, so a prompt evaluated from scratch (that could be restored one day)
        computes it the same way, and the restored prompt then answers exactly as this one
        (greedy tokens alike). One more decode, for a cold prompt of MIN_TOKENS or more."""
        job = seq.job
        return seq.id in self._cold and job is not None and len(job.tokens) >= MIN_TOKENS

    def take(self, seq: Seq, prefix: int, job: Job) -> int:
        """`job` takes `seq`, which holds `prefix` of its tokens: save what would be lost,
        restore a longer saved prefix. Returns how many tokens the sequence now shares."""
        hit: Hit | None = job.hit
        job.hit = None
        if hit is not None and hit.shared >= prefix + BLOCK:
            restored = self._restore(seq, hit, job)
            if restored is not None:
                prefix = restored
        self.save(seq, prefix)
        if self.cache is not None and prefix < BLOCK:
            self._cold.add(seq.id)
        else:
            self._cold.discard(seq.id)
        self.prefixes[seq.id] = job.opts.prefix
        self.out.note(wire.Holds(seq=seq.id, prefix=job.opts.prefix))
        return prefix

    def _restore(self, seq: Seq, hit: Hit, job: Job) -> int | None:
        assert self.cache is not None
        data, hit.data = hit.data, None
        if data is None:
            data = self.cache.read(hit.entry)
            if data is None:
                return None
        self.save(seq, 0)  # its own cells go first
        lc.llama_memory_seq_rm(self.mem, seq.id, -1, -1)
        buf = (ctypes.c_uint8 * len(data)).from_buffer(data)
        if lc.llama_state_seq_set_data(self.ctx, buf, len(data), seq.id) == 0:
            lc.llama_memory_seq_rm(self.mem, seq.id, -1, -1)
            seq.cached.clear()
            self.cache.drop(hit.entry, "its cells do not fit this model")
            return 0
        seq.cached[:] = hit.entry.tokens
        shared = common_prefix(seq.cached, job.tokens)
        job.stats.restored_tokens = min(shared, len(job.tokens) - 1)
        log.info("%s: restored %d prompt tokens from disk", self.name, shared)
        return shared

    def save(self, seq: Seq, keep: int) -> None:
        """Save `seq`'s cells when keeping only `keep` of its tokens would lose a full block
        of a sequence worth a file, and no entry holds them already."""
        cached = seq.cached
        if (
            self.cache is None
            or len(cached) < MIN_TOKENS
            or len(cached) // BLOCK <= keep // BLOCK
            or self.cache.has(cached)
        ):
            return
        data = self.copy(seq.id)
        if data is None or not self.cache.save_later(
            list(cached), self.prefixes.get(seq.id, []), data
        ):
            log.debug("prompt cache: sequence %d not saved (the writer is behind)", seq.id)

    def copy(self, seq_id: int) -> Any:
        size = lc.llama_state_seq_get_size(self.ctx, seq_id)
        if size <= 0:
            return None
        buf = (ctypes.c_uint8 * size)()
        if lc.llama_state_seq_get_data(self.ctx, buf, size, seq_id) != size:
            return None
        return buf

    # -- unloading -----------------------------------------------------------------------------
    def save_all(self, seqs: list[Seq], secs: float) -> None:
        """The model is going (the loop has stopped): save every sequence worth it, most
        recently used first, for at most `secs`."""
        if self.cache is None:
            return
        deadline = time.monotonic() + secs
        saved = 0
        for seq in sorted(seqs, key=lambda s: -s.last_used):
            if time.monotonic() >= deadline:
                break
            cached = seq.cached
            if len(cached) < MIN_TOKENS or self.cache.has(cached):
                continue
            data = self.copy(seq.id)
            if data is not None and self.cache.write(
                list(cached), self.prefixes.get(seq.id, []), data
            ):
                saved += 1
        self.cache.close(max(0.0, deadline - time.monotonic()))
        if saved:
            log.info("prompt cache: saved %d sequences before unloading", saved)
