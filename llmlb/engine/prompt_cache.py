"""The prompt cache's disk tier: sequences' KV cells saved in files, found again by their tokens.

A loaded model's sequences lose their cells when another prompt takes them, when the model is
unloaded and when the node stops; the runner then saves them here (engine/llama_kv.py) and a
later request that starts the same way restores them instead of evaluating its prompt again.

Layout: $LLMLB_HOME/prompt-cache/<model id>/<key>.kv. The model id names the model file
(its digest, else its path, size and time), its LoRA adapters and llama.cpp's version: a
file saved by anything else is never offered to this model. The key is the chain hash of
the entry's token blocks (BLOCK tokens each; a block's hash covers all before it), so a
prompt's blocks lead straight to the entry that shares the most of them.

A file is MAGIC, the header's length, the header (msgpack), the header's sha256, then the
cells; the header holds the payload's size and sha256. Files are written to a temporary name,
fsynced and renamed, so a kill -9 mid-write leaves only a temporary file, which no reader
trusts and the next scan removes. A file that is damaged (a checksum that does not match),
foreign (another model id) or unreadable is removed with one warning. The files of all
models together stay under LLMLB_PROMPT_CACHE_GB: the least recently used (by mtime, which a
restore touches) go first. A disk that is full costs the save, with one warning, not a request.

No llama.cpp here: the node reads headers too (engine/holdings.py), in its own process.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import logging
import os
import queue
import struct
import sys
import threading
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import msgspec

log = logging.getLogger("llmlb.engine")

DIR_NAME = "prompt-cache"
BLOCK = 64  # tokens per block: the finest prefix an entry is found by
MIN_TOKENS = 256  # a sequence shorter than this is not worth a file
MAGIC = b"LLMLBKV1"
SUFFIX = ".kv"
_LEN = struct.Struct("<I")
MAX_HEADER = 16 * 1024 * 1024  # tokens of a 1M context, with room
# cells copied and waiting for the writer (memory); past it a save is skipped, unless the
# writer has nothing queued (an entry larger than this is saved alone)
WRITE_QUEUE_BYTES = 512 << 20
Notify = Callable[[str, list[int]], None]  # (entry name, text-prefix hashes; [] = gone)


class Header(msgspec.Struct):
    identity: str
    tokens: bytes  # int32, little-endian
    prefix: list[int]  # the text-prefix hashes (llmlb/prefix.py) of the request it held
    size: int
    sha256: bytes


@dataclass
class Entry:
    key: str
    path: Path
    tokens: list[int]
    prefix: list[int]


class Damaged(Exception):
    """A file that is not a whole entry of this model."""


def identity(model: Any) -> str:
    """The id of a catalog row's model file (with its adapters and llama.cpp's version)."""
    path = Path(model.path)
    if model.digest:
        file_id = f"sha256:{model.digest}"
    else:
        try:
            st = path.stat()
            file_id = f"file:{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            file_id = f"file:{path}"
    adapters = [
        (a.get("digest") or a.get("path"), a.get("scale", 1.0)) for a in model.adapters or []
    ]
    try:
        lib = metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        lib = "unknown"
    blob = json.dumps([file_id, adapters, lib], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def block_keys(tokens: list[int]) -> list[str]:
    """The chain hash of each full block of `tokens`."""
    keys, parent = [], b""
    for i in range(0, len(tokens) - BLOCK + 1, BLOCK):
        parent = hashlib.sha256(parent + array("i", tokens[i : i + BLOCK]).tobytes()).digest()
        keys.append(parent[:16].hex())
    return keys


def _packed(tokens: list[int]) -> bytes:
    values = array("i", tokens)
    if sys.byteorder != "little":
        values.byteswap()
    return values.tobytes()


def _tokens(header: Header) -> list[int]:
    values = array("i")
    values.frombytes(header.tokens)
    if sys.byteorder != "little":
        values.byteswap()
    return values.tolist()


def read_header(fh) -> tuple[Header, int]:
    """The header of an open entry file, checked, and where its payload starts."""
    head = fh.read(len(MAGIC) + _LEN.size)
    if len(head) < len(MAGIC) + _LEN.size or not head.startswith(MAGIC):
        raise Damaged("it is not a prompt-cache file")
    (n,) = _LEN.unpack(head[len(MAGIC) :])
    if n > MAX_HEADER:
        raise Damaged("its header is too large")
    raw, digest = fh.read(n), fh.read(32)
    if len(raw) < n or hashlib.sha256(raw).digest() != digest:
        raise Damaged("its header's checksum does not match")
    try:
        header = msgspec.msgpack.decode(raw, type=Header)
    except msgspec.DecodeError as exc:
        raise Damaged(f"its header cannot be read ({exc})") from None
    if len(header.tokens) % 4:
        raise Damaged("its token list is cut short")
    return header, len(head) + n + 32


def scan_dir(directory: Path) -> Iterator[tuple[Path, Header | Damaged]]:
    """Every entry file of one model id's directory, with its header or why it is damaged."""
    try:
        paths = sorted(directory.glob("*" + SUFFIX))
    except OSError:
        return
    for path in paths:
        try:
            with open(path, "rb") as fh:
                yield path, read_header(fh)[0]
        except Damaged as exc:
            yield path, exc
        except OSError as exc:
            yield path, Damaged(f"it cannot be read ({exc.strerror})")


class PromptCache:
    """One model id's entries on disk, and the writer that saves new ones."""

    def __init__(self, root: Path, ident: str, limit: int, notify: Notify | None = None):
        self.root, self.identity, self.limit = root, ident, limit
        self.dir = root / ident[:32]
        self.notify = notify or (lambda _name, _prefix: None)
        self._lock = threading.Lock()
        self.entries: dict[str, Entry] = {}
        self._by_block: dict[str, str] = {}  # block key -> entry key
        self._queue: queue.SimpleQueue[tuple[list[int], list[int], Any] | None] = (
            queue.SimpleQueue()
        )
        self._pending = 0  # bytes queued for the writer
        self._idle = threading.Condition(self._lock)
        self._failing = False  # a write failed: warned once, quiet until one succeeds
        self._names = itertools.count()
        self._writer = threading.Thread(target=self._write_forever, name="kv writer", daemon=True)
        self._writer.start()

    def name(self, key: str) -> str:
        return f"{self.dir.name}/{key}"

    # -- finding -------------------------------------------------------------------------------
    def scan(self) -> list[Entry]:
        """Index this model id's files (dropping broken ones) and remove leftover temporary
        files; the entries found (not notified: the caller tells them at once)."""
        for tmp in self.dir.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        found_entries = []
        for path, found in scan_dir(self.dir):
            if isinstance(found, Damaged):
                self._drop_file(path, str(found))
            elif found.identity != self.identity:
                self._drop_file(path, "it was saved for another model")
            else:
                entry = Entry(path.stem, path, _tokens(found), found.prefix)
                self._index(entry, tell=False)
                found_entries.append(entry)
        return found_entries

    def lookup(self, tokens: list[int]) -> Entry | None:
        """The entry that shares the most full blocks with `tokens`, if any."""
        keys = block_keys(tokens)
        with self._lock:
            for k in reversed(keys):
                key = self._by_block.get(k)
                if key is not None:
                    return self.entries.get(key)
        return None

    def has(self, tokens: list[int]) -> bool:
        """An entry holds these full blocks already (it is then marked as used)."""
        keys = block_keys(tokens)
        with self._lock:
            entry = self.entries.get(keys[-1]) if keys else None
        if entry is not None:
            _touch(entry.path)
        return entry is not None

    def read(self, entry: Entry) -> bytearray | None:
        """An entry's cells, checked; None (and the entry dropped) when they cannot be had."""
        try:
            with open(entry.path, "rb") as fh:
                header, start = read_header(fh)
                if header.identity != self.identity:
                    raise Damaged("it was saved for another model")
                if header.size != os.fstat(fh.fileno()).st_size - start:
                    raise Damaged("it is not as long as its header says")
                data = bytearray(header.size)
                if fh.readinto(data) != header.size or fh.read(1):
                    raise Damaged("it is not as long as its header says")
        except FileNotFoundError:  # removed by hand, or by another model's eviction
            self._forget(entry.key)
            return None
        except OSError as exc:
            self.drop(entry, f"it cannot be read ({exc.strerror})")
            return None
        except Damaged as exc:
            self.drop(entry, str(exc))
            return None
        if hashlib.sha256(data).digest() != header.sha256:
            self.drop(entry, "its checksum does not match: it is damaged")
            return None
        _touch(entry.path)
        return data

    # -- saving --------------------------------------------------------------------------------
    def save_later(self, tokens: list[int], prefix: list[int], data: Any) -> bool:
        """Queue a write of `data` (a buffer); False when the writer is too far behind."""
        size = len(data)
        with self._lock:
            if self._pending and self._pending + size > WRITE_QUEUE_BYTES:
                return False
            self._pending += size
        self._queue.put((tokens, prefix, data))
        return True

    def flush(self, timeout: float) -> bool:
        """Wait for queued writes; False when they did not finish within `timeout`."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def _write_forever(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            tokens, prefix, data = item
            try:
                self.write(tokens, prefix, data)
            except Exception:
                log.exception("prompt cache: saving an entry failed")
            finally:
                with self._idle:
                    self._pending -= len(data)
                    self._idle.notify_all()

    def write(self, tokens: list[int], prefix: list[int], data: Any) -> bool:
        """Save an entry now (atomically), then keep the cache within its limit."""
        keys = block_keys(tokens)
        if not keys:
            return False
        key = keys[-1]
        header = msgspec.msgpack.encode(
            Header(
                self.identity,
                _packed(tokens),
                prefix,
                len(data),
                hashlib.sha256(data).digest(),
            )
        )
        path = self.dir / (key + SUFFIX)
        tmp = self.dir / f".{key}.{os.getpid()}.{next(self._names)}.tmp"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(MAGIC + _LEN.pack(len(header)) + header + hashlib.sha256(header).digest())
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            _fsync_dir(self.dir)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            self._write_failed(exc)
            return False
        if self._failing:
            log.info("prompt cache: saving works again (%s)", self.dir)
            self._failing = False
        self._index(Entry(key, path, list(tokens), list(prefix)))
        self.evict()
        return True

    def _write_failed(self, exc: OSError) -> None:
        if self._failing:
            return
        self._failing = True
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            why = f"the disk is full ({self.root})"
        else:
            why = f"{exc.strerror or exc} ({self.root})"
        log.warning("prompt cache: could not save a sequence: %s; its prompt will be evaluated "
                    "again when it returns", why)  # fmt: skip

    def evict(self) -> None:
        """Remove the least recently used files (of every model) past the limit."""
        files = []
        try:
            for path in self.root.glob("*/*" + SUFFIX):
                try:
                    st = path.stat()
                except OSError:
                    continue
                files.append((st.st_mtime_ns, st.st_size, path))
        except OSError:
            return
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files, key=lambda f: f[0]):
            if total <= self.limit:
                break
            path.unlink(missing_ok=True)
            total -= size
            if path.parent == self.dir:
                self._forget(path.stem)
            else:
                self.notify(f"{path.parent.name}/{path.stem}", [])

    def close(self, timeout: float) -> bool:
        done = self.flush(timeout)
        self._queue.put(None)
        return done

    # -- the index -----------------------------------------------------------------------------
    def _index(self, entry: Entry, tell: bool = True) -> None:
        with self._lock:
            self.entries[entry.key] = entry
            for k in block_keys(entry.tokens):
                self._by_block[k] = entry.key
        if tell:
            self.notify(self.name(entry.key), entry.prefix)

    def _forget(self, key: str) -> None:
        with self._lock:
            entry = self.entries.pop(key, None)
            if entry is None:
                return
            for k in block_keys(entry.tokens):
                if self._by_block.get(k) == key:
                    del self._by_block[k]
            # another entry may hold the same blocks: point them at it
            for other in self.entries.values():
                for k in block_keys(other.tokens):
                    self._by_block.setdefault(k, other.key)
        self.notify(self.name(key), [])

    def drop(self, entry: Entry, why: str) -> None:
        """Remove an entry that cannot be used, saying why (once)."""
        self._forget(entry.key)
        self._drop_file(entry.path, why)

    def _drop_file(self, path: Path, why: str) -> None:
        log.warning("prompt cache: removed %s: %s", path, why)
        path.unlink(missing_ok=True)


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.utime(path)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
