"""One decode loop per loaded chat model: continuous batching on llama.cpp's batch API.

The loop's thread owns the llama.cpp context (in a runner process: engine/runner_main.py);
requests reach it only through its inbox, and their output leaves through the Outbox, one
frame per step. A request takes a free sequence: the one
whose cached tokens share the longest prefix with its prompt (llama-server's rule: more
than 10% of the prompt), else the least recently used, and keeps that prefix. Every step
decodes one batch: the next token of every generating sequence, then prompt chunks of
newcomers (at most n_ubatch tokens, so a long prompt never stalls the others for long, and
the node hears from the runner after every compute graph). A finished, stopped or cancelled
request frees its sequence at once; its cells keep their tokens for the next request that
starts the same way.

A token its grammar refuses makes a request filter the whole vocabulary through the grammar:
for a grammar of thousands of alternatives (a long enum) that is half a second of llama.cpp's
time. It runs on the loop's grammar thread, on a copy of the logits, while the loop decodes
the other sequences; the request's sequence sits out the steps until its token is drawn.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import llama_cpp as lc

from llmlb.engine.base import GenOptions, GenStats, Piece, TokenLogprob
from llmlb.engine.llama_batch import AbortFlag, Batch
from llmlb.engine.llama_sampling import NO_TOKEN, Sampler, logprobs
from llmlb.engine.sink import Outbox, Sink
from llmlb.engine.text_out import TextOut
from llmlb.errors import LlmlbError, Unavailable

log = logging.getLogger("llmlb.engine")
REUSE_SIMILARITY = 0.1  # llama-server's --slot-prompt-similarity
# The grammar thread's priority: below the decode threads (a stream beside a held request
# keeps its speed), yet with a share of a busy CPU (about a tenth beside one thread at 0), so
# that a held request is slow, not starved.
GRAMMAR_NICE = 10
DRAWING_ALIVE_SECS = 30.0


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass
class Job:
    """One generation handed to the loop: a tokenized prompt and how to sample."""

    tokens: list[int]
    opts: GenOptions
    stats: GenStats
    sink: Sink
    sampler: Sampler
    keep_tokens: bool = False  # stats.context gets the prompt's and the reply's tokens
    generated: list[int] = field(default_factory=list)
    hit: Any = None  # a saved prefix on disk to restore (engine/llama_kv.py)


@dataclass
class Seq:
    """One llama.cpp sequence (a parallel slot) and the request it runs, if any."""

    id: int
    cached: list[int] = field(default_factory=list)  # tokens in its KV cells, from position 0
    job: Job | None = None
    next_token: int | None = None  # sampled, decoded at the next step
    row: int = -1  # batch row whose logits it samples from after this step
    n_gen: int = 0
    out: TextOut = field(default_factory=TextOut)
    unsent: list[tuple[int, TokenLogprob]] = field(default_factory=list)  # (end byte, logprob)
    started_ns: int = 0
    first_ns: int = 0
    last_used: float = 0.0
    drawing: Future[int] | None = None  # its token, being drawn on the grammar thread
    drawing_since: float = 0.0


class DecodeLoop:
    def __init__(
        self,
        ctx,
        vocab,
        name: str,
        n_seq: int,
        n_ctx_seq: int,
        n_ubatch: int,
        outbox: Outbox,
        kv: Any = None,  # llama_kv.KvTier: what sequences hold, and the disk tier
    ):
        self.ctx, self.vocab, self.name = ctx, vocab, name
        self.n_vocab = lc.llama_vocab_n_tokens(vocab)
        self.mem = lc.llama_get_memory(ctx)
        self.n_ctx_seq, self.n_ubatch = n_ctx_seq, n_ubatch
        self.seqs = [Seq(i) for i in range(n_seq)]
        self.batch = Batch(n_ubatch)
        self._inbox: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._waiting: deque[Job] = deque()
        self._lock = threading.Lock()  # the jobs in the running decode, and the abort flag
        self._in_decode: list[Job] = []
        self._closed = False
        self._abort = AbortFlag()
        self._abort.attach(ctx)
        self._pieces: dict[int, bytes] = {}
        self._out = outbox  # filled by the loop thread only, flushed after every step
        self.kv = kv
        self._grammar_thread: ThreadPoolExecutor | None = None  # started on first use
        self._woken = threading.Event()  # a job came, or a token was drawn off the loop
        self._thread = threading.Thread(target=self._run, name=f"decode {name}", daemon=True)
        self._thread.start()

    # -- the outside's side ------------------------------------------------------
    def submit(self, job: Job) -> None:
        job.sink.on_cancel = self._on_cancel
        with self._lock:
            if not self._closed:
                self._inbox.put(job)
                self._woken.set()
                return
        job.sampler.close()
        job.sink.done(job.stats, Unavailable(f"model '{self.name}' was unloaded"))

    def close(self) -> None:
        """Stop the loop (running requests end with an error) and wait for it."""
        with self._lock:
            self._closed = True
            self._abort.set()
            self._inbox.put(None)
        self._thread.join()
        self._abort.detach(self.ctx)

    def _on_cancel(self) -> None:
        # a client left: if the decode in flight serves only cancelled requests, stop it now
        with self._lock:
            if self._in_decode and all(j.sink.cancelled.is_set() for j in self._in_decode):
                self._abort.set()

    # -- the loop ------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while self._take_new():
                self._drawn()
                decoded = self._step()
                self._out.flush(alive=decoded or self._drawing_lately())
                if not decoded and self._drawing():
                    self._woken.wait(0.5)  # only tokens being drawn: for one, or a new job
                    self._woken.clear()
        except Exception as exc:  # a bug or a llama.cpp failure: fail loudly, not silently
            log.exception("decode loop of %s failed", self.name)
            self._fail_all(LlmlbError(f"the engine failed: {exc}"))
        self._fail_all(Unavailable(f"model '{self.name}' was unloaded"))
        self._out.flush()

    def _take_new(self) -> bool:
        idle = not self._waiting and all(s.job is None for s in self.seqs)
        while True:
            try:
                job = self._inbox.get() if idle else self._inbox.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return False
            self._waiting.append(job)
            idle = False
        for s in self.seqs:  # a client that left frees its sequence now, for whoever waits
            if s.job is not None and s.job.sink.cancelled.is_set() and s.drawing is None:
                self._finish(s, "cancelled")
        while self._waiting:
            job = self._waiting[0]
            if job.sink.cancelled.is_set():
                self._waiting.popleft()
                job.stats.finish_reason = "cancelled"
                self._end(job)
                continue
            found = self._free_seq(job.tokens, seeded=job.opts.seed is not None)
            if found is None:
                break
            self._waiting.popleft()
            self._start(*found, job)
        return True

    def _free_seq(self, tokens: list[int], seeded: bool = False) -> tuple[Seq, int] | None:
        """A free sequence for `tokens`, and how many of them it holds already: the one whose
        cache shares the most of them (past REUSE_SIMILARITY), else the least recently used.
        A seeded request reuses nothing (see _chunk)."""
        free = [s for s in self.seqs if s.job is None]
        if not free:
            return None
        if seeded:
            return min(free, key=lambda s: s.last_used), 0
        shared = {s.id: common_prefix(s.cached, tokens) for s in free}
        best, best_sim = None, REUSE_SIMILARITY
        for s in free:
            sim = shared[s.id] / len(tokens)
            if sim > best_sim:
                best, best_sim = s, sim
        seq = best or min(free, key=lambda s: s.last_used)
        return seq, shared[seq.id]

    def _start(self, seq: Seq, prefix: int, job: Job) -> None:
        if self.kv is not None:  # cells about to be lost are saved, a longer prefix restored
            prefix = self.kv.take(seq, prefix, job)
        # (sliding-window layers keep the whole context: swa_full, llama.cpp's default, so
        # any cached prefix is still complete)
        keep = min(prefix, len(job.tokens) - 1)
        if keep < len(seq.cached):
            if not lc.llama_memory_seq_rm(self.mem, seq.id, keep, -1):
                lc.llama_memory_seq_rm(self.mem, seq.id, -1, -1)  # cannot cut: start over
                keep = 0
            del seq.cached[keep:]
        job.stats.prompt_tokens = len(job.tokens)
        job.stats.cached_tokens = keep
        if len(job.tokens) - keep >= 4 * self.n_ubatch:
            log.info("%s: evaluating a long prompt: %d tokens, %d of them cached",
                     self.name, len(job.tokens), keep)  # fmt: skip
        seq.job, seq.next_token, seq.row, seq.n_gen = job, None, -1, 0
        seq.out = TextOut(job.opts.stop)
        seq.unsent = []
        seq.started_ns, seq.first_ns = time.perf_counter_ns(), 0

    def _step(self) -> bool:
        """One decode; False when there was nothing to decode."""
        batch = self.batch
        batch.clear()
        before: dict[int, int] = {}  # seq id -> cached tokens before this step
        for s in self.seqs:
            if s.job is not None and s.next_token is not None:
                before[s.id] = len(s.cached)
                s.row = batch.add(s.id, [s.next_token], len(s.cached), True)
                s.cached.append(s.next_token)
                s.next_token = None
        generating = len(before)
        # a long prompt goes in slices of one compute graph: running streams keep flowing
        limit = self.n_ubatch
        prefilling = [
            s for s in self.seqs if s.job is not None and len(s.cached) < len(s.job.tokens)
        ]
        for s in sorted(prefilling, key=lambda s: s.started_ns):
            room = min(limit - batch.n, batch.room)
            if room <= 0:
                break
            assert s.job is not None
            start = len(s.cached)
            end = self._chunk_end(s.job, start, room)
            if end <= start:
                continue  # a seeded prompt waits for room for its whole chunk
            chunk = s.job.tokens[start:end]
            last = start + len(chunk) == len(s.job.tokens)
            if last and len(chunk) > 1 and self.kv is not None and self.kv.last_alone(s):
                chunk, last = chunk[:-1], False  # its last token next, alone, as after a restore
            before[s.id] = start
            row = batch.add(s.id, chunk, start, last)
            s.cached.extend(chunk)
            if last:
                s.row = row
        if batch.n == 0:
            return False
        if batch.n > generating and log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s: decoding %d prompt tokens, %d generating",
                self.name,
                batch.n - generating,
                generating,
            )
        jobs = [self.seqs[i].job for i in before]
        with self._lock:
            self._in_decode = [j for j in jobs if j is not None]
            if all(j.sink.cancelled.is_set() for j in self._in_decode):
                self._abort.set()  # they all left meanwhile: do not even start
            else:
                self._abort.clear()
        rc = batch.decode(self.ctx)
        with self._lock:
            self._in_decode = []
            self._abort.clear()
        if rc != 0:
            self._undo(before, rc)
            return True
        for s in self.seqs:
            if s.job is not None and s.row >= 0:
                row, s.row = s.row, -1
                self._sample(s, row)
        return True

    def _chunk_end(self, job: Job, start: int, room: int) -> int:
        """Where this step's slice of a prompt ends. A seeded request's prompt is evaluated
        from its first token in slices of fixed bounds (every request of the same prompt
        computes the same numbers the same way), so the same seed gives the same text whether
        or not the prompt was cached before: a cached prefix and a freshly computed one differ
        in their last bits on llama.cpp (other kernels for other batch shapes)."""
        if job.opts.seed is None:
            return start + room
        size = max(1, self.n_ubatch - len(self.seqs))  # fits beside every other sequence
        end = min(len(job.tokens), (start // size + 1) * size)
        return end if end - start <= room else start

    def _undo(self, before: dict[int, int], rc: int) -> None:
        """A decode that was aborted (rc 2) or failed: forget what it added, end its requests."""
        if rc == 2:
            log.info("%s: stopped a decode whose clients all went away", self.name)
        else:
            log.error("%s: llama_decode failed with code %d", self.name, rc)
        for seq_id, n in before.items():
            s = self.seqs[seq_id]
            lc.llama_memory_seq_rm(self.mem, seq_id, n, -1)
            del s.cached[n:]
            s.row = -1
            if s.job is None:
                continue
            if rc == 2 or s.job.sink.cancelled.is_set():
                self._finish(s, "cancelled")
            else:
                self._finish(s, "error", LlmlbError(f"llama.cpp could not decode (code {rc})"))

    def _sample(self, s: Seq, row: int) -> None:
        job = s.job
        assert job is not None
        if job.sink.cancelled.is_set():
            self._finish(s, "cancelled")
            return
        if job.opts.logprobs:  # (they read the row in the context's buffer)
            token = job.sampler.sample(self.ctx, row)
        else:
            drawn = job.sampler.quick(self.ctx, row)
            if drawn is None:  # the grammar refused it: filter the vocabulary off the loop
                logits = job.sampler.row(self.ctx, row).copy()
                s.drawing = self._grammar_pool().submit(job.sampler.filtered, logits)
                s.drawing_since = time.monotonic()
                s.drawing.add_done_callback(lambda _: self._woken.set())
                return
            token = drawn
        self._take(s, token, row)

    def _grammar_pool(self) -> ThreadPoolExecutor:
        if self._grammar_thread is None:
            self._grammar_thread = ThreadPoolExecutor(1, f"grammar {self.name}", _yield_cpu)
        return self._grammar_thread

    def _drawing(self) -> list[Future[int]]:
        return [s.drawing for s in self.seqs if s.drawing is not None]

    def _drawing_lately(self) -> bool:
        """A token being drawn, for less than DRAWING_ALIVE_SECS: the runner is at work (the
        node's stall watch hears so); one drawn for longer is left to the stall watch."""
        now = time.monotonic()
        return any(
            s.drawing is not None and now - s.drawing_since < DRAWING_ALIVE_SECS for s in self.seqs
        )

    def _drawn(self) -> None:
        """Take the tokens drawn off the loop."""
        for s in self.seqs:
            drawing = s.drawing
            if drawing is None or not drawing.done():
                continue
            s.drawing = None
            token = drawing.result()  # (filtered() raises nothing of its own)
            if s.job is None:
                continue
            if s.job.sink.cancelled.is_set():
                self._finish(s, "cancelled")
            else:
                self._take(s, token, -1)

    def _take(self, s: Seq, token: int, row: int) -> None:
        """A drawn token: the reply's next piece, or its end. (`row`: its logits, for the
        log probabilities; -1 when it was drawn off the loop, which they never are.)"""
        job = s.job
        assert job is not None
        if token == NO_TOKEN:  # the grammar admits no token here: the reply ends, cleanly
            log.info("%s: the reply's grammar admits no further token; ending it", self.name)
            self._finish(s, "stop")
            return
        now = time.perf_counter_ns()
        if s.n_gen == 0:
            s.first_ns = now
            job.stats.prompt_ns = now - s.started_ns
        s.n_gen += 1
        job.stats.completion_tokens = s.n_gen
        job.stats.eval_ns = now - s.first_ns
        if lc.llama_vocab_is_eog(self.vocab, token):
            self._finish(s, "stop")
            return
        if job.keep_tokens:
            job.generated.append(token)
        data = self._piece(token)
        if job.opts.logprobs:
            lp = logprobs(self.ctx, row, self.n_vocab, token, job.opts.top_logprobs, self._piece)
            s.unsent.append((s.out.fed_bytes + len(data), lp))
        self._emit(s, s.out.feed(data))
        limit = job.opts.max_tokens is not None and s.n_gen >= job.opts.max_tokens
        if s.out.stopped:
            self._finish(s, "stop")
        elif limit or len(s.cached) >= self.n_ctx_seq:  # (no room left to decode this token)
            self._finish(s, "length")
        else:
            s.next_token = token

    def _emit(self, s: Seq, text: str) -> None:
        assert s.job is not None
        n = 0
        while n < len(s.unsent) and s.unsent[n][0] <= s.out.sent_bytes:
            n += 1
        lps = [lp for _, lp in s.unsent[:n]]
        del s.unsent[:n]
        if text or lps:
            self._out.put(s.job.sink, Piece(text, lps))

    def _finish(self, s: Seq, reason: str, error: BaseException | None = None) -> None:
        job = s.job
        assert job is not None
        if reason in ("stop", "length"):
            self._emit(s, s.out.flush())
        job.stats.finish_reason = reason
        s.job, s.next_token, s.row = None, None, -1
        s.last_used = time.monotonic()
        self._end(job, error)

    def _end(self, job: Job, error: BaseException | None = None) -> None:
        if job.keep_tokens:
            job.stats.context = job.tokens + job.generated
        job.sampler.close()
        self._out.finish(job.sink, job.stats, error)

    def _fail_all(self, error: BaseException) -> None:
        if self._grammar_thread is not None:  # a sampler is freed once no thread uses it
            self._grammar_thread.shutdown()
            self._grammar_thread = None
        for s in self.seqs:
            s.drawing = None
        for s in self.seqs:
            if s.job is not None:
                self._finish(s, "error", error)
        while self._waiting:
            self._end(self._waiting.popleft(), error)
        while True:
            try:
                job = self._inbox.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                self._end(job, error)

    # -- text of tokens ------------------------------------------------------------
    def _piece(self, token: int) -> bytes:
        """The bytes a generated token stands for (control tokens stand for nothing)."""
        data = self._pieces.get(token)
        if data is None:
            data = token_bytes(self.vocab, token)
            self._pieces[token] = data
        return data


def _yield_cpu() -> None:
    """The grammar thread runs at a low priority (Linux sets it per thread): where it would
    take a core from the decode threads, the request that needs it waits, not the streams
    beside it."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), GRAMMAR_NICE)


def token_bytes(vocab, token: int, special: bool = False) -> bytes:
    import ctypes

    buf = ctypes.create_string_buffer(64)
    n = lc.llama_token_to_piece(vocab, token, buf, len(buf), 0, special)
    if n < 0:
        buf = ctypes.create_string_buffer(-n)
        n = lc.llama_token_to_piece(vocab, token, buf, len(buf), 0, special)
    return buf.raw[:n]
