"""Download one file: parallel ranged parts, resume, retries, stall detection, streaming hash.

Parts: a file is cut into at most MAX_PARTS parts of at least MIN_PART bytes, fetched by up to
`connections` workers in file order. Like ollama's 16 parts, this beats the per-connection caps
of CDNs; MIN_PART keeps small files on one connection, where a second request would cost more
than it saves. Each part records how many of its bytes are on disk (`done`), and that number only
grows after the bytes were written, so a saved snapshot never claims data that is not there:
after a crash the download continues from the snapshot with Range requests.

A file whose size nobody published (a mirror's bare listing, no Content-Length on HEAD) is
fetched in one stream without Range requests, hashed as it arrives, and started over after a
failure. Sizes that are known are checked: a server that sends another length fails the file.

Hashing runs beside the download: a hasher thread follows the contiguous prefix of the file
that is on disk and reads it back from the page cache it was just written to, so verification
costs no extra pass over the data and no extra time (hashing is faster than any network).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import logging
import os
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path

from llmlb.errors import LlmlbError, NotFound, Unauthorized
from llmlb.jobs.http_get import TooManyRedirects, describe, open_get
from llmlb.units import size as human_size

log = logging.getLogger("llmlb.pull")

MIN_PART = 8 << 20
MAX_PARTS = 16
HASH_CHUNK = 4 << 20
# At most this much per read, and whatever has arrived: bytes count (and show) as they come,
# not a whole MiB per connection later (readinto() would wait to fill its buffer: a slow pull
# then moved in steps of a MiB per connection, all of them at once).
READ_CHUNK = 1 << 20
MAX_ATTEMPTS = 6  # consecutive failures of one part without progress
BACKOFF = (0.5, 1, 2, 4, 8, 15)
REPORT_EVERY = 0.25  # seconds between progress reports (they become SQLite writes)


class DownloadError(LlmlbError):
    status = 502
    kind = "server_error"


class DigestMismatch(DownloadError):
    pass


class DiskFull(DownloadError):
    """No space left while writing (ENOSPC, or a quota): the pull fails, nothing hangs."""

    status = 507


DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


def disk_full(path: Path) -> DiskFull:
    where = Path(path).parent
    try:
        free = f"{human_size(free_bytes(where))} free in {where}"
    except OSError:
        free = f"no space left in {where}"
    return DiskFull(
        f"disk full while writing {Path(path).name} ({free}); free some space and pull again"
    )


def free_bytes(path: Path) -> int:
    """Free space on the file system that holds `path` (or its nearest existing parent)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


class Stopped(Exception):
    """The download was asked to stop (server shutdown or cancel); its parts are kept."""


class _Retry(Exception):
    pass


class _RangeIgnored(Exception):
    """The server answered a Range request with the whole file (or cannot resume)."""


def backoff(failures: int) -> float:
    """Seconds to wait after the n-th failure in a row."""
    return BACKOFF[min(failures - 1, len(BACKOFF) - 1)]


def split(size: int) -> list[list[int]]:
    """[[start, end, done], ...] covering `size` bytes."""
    if size <= 0:
        return [[0, 0, 0]]
    count = max(1, min(MAX_PARTS, size // MIN_PART))
    step = -(-size // count)
    return [[start, min(size, start + step), 0] for start in range(0, size, step)]


class FileDownload:
    def __init__(
        self,
        url: str,
        dest: Path,
        size: int | None,
        *,
        sha256: str | None = None,
        blob_id: str | None = None,
        parts: list[list[int]] | None = None,
        headers: dict[str, str] | None = None,
        connections: int = 8,
        stall_secs: float = 30,
        stop: threading.Event | None = None,
        on_progress: Callable[[FileDownload], None] | None = None,
        on_unauthorized: Callable[[], LlmlbError] | None = None,
        where: str = "on Hugging Face",
        pwrite: Callable[[int, memoryview, int], int] = os.pwrite,
    ):
        self.url = url
        self.dest = Path(dest)
        self.size = size
        self.sha256 = sha256
        self.blob_id = blob_id
        self.parts = [list(p) for p in parts] if parts and size is not None else split(size or 0)
        self.headers = headers or {}
        self.connections = max(1, connections)
        self.stall_secs = stall_secs
        self.stop = stop or threading.Event()
        self.on_progress = on_progress
        self.on_unauthorized = on_unauthorized
        self.where = where
        self.pwrite = pwrite  # the OS write; tests replace it to simulate a full disk
        self.fetched = 0  # bytes received in this run (for speed and the tests)
        self.digest: str | None = None
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._abort = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._fd = -1

    # --- state ---------------------------------------------------------------------------
    @property
    def done(self) -> int:
        with self._lock:
            return sum(p[2] for p in self.parts)

    def snapshot(self) -> list[list[int]]:
        with self._lock:
            return [list(p) for p in self.parts]

    def _frontier(self) -> int:
        for start, end, done in self.parts:
            if start + done < end:
                return start + done
        return self.size or 0

    def _report(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self)

    @contextlib.contextmanager
    def _reporting(self) -> Iterator[None]:
        """Report progress every REPORT_EVERY seconds while bytes come in, from a thread of its
        own: what a read brought is shown even when the next read waits (a stall), and a report
        (a catalog write) never holds up a connection. A report that fails (a full disk under
        the catalog) stops the download with its error."""
        if self.on_progress is None:
            yield
            return
        finished = threading.Event()
        failed: list[BaseException] = []

        def report_while_running() -> None:
            shown = self.done
            while not finished.wait(REPORT_EVERY):
                done = self.done
                if done == shown:
                    continue
                try:
                    self._report()
                except BaseException as exc:
                    failed.append(exc)
                    self._abort_all()
                    return
                shown = done

        reporter = threading.Thread(
            target=report_while_running, name=f"progress-{self.dest.name}", daemon=True
        )
        reporter.start()
        try:
            yield
        finally:
            finished.set()
            reporter.join()
            if failed:
                raise failed[0]

    # --- the run -------------------------------------------------------------------------
    def run(self) -> str:
        """Download what is missing, verify, and return the hex digest. The file stays on disk."""
        try:
            self.dest.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.dest, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if exc.errno in DISK_FULL_ERRNOS:
                raise disk_full(self.dest) from exc
            raise
        try:
            with self._reporting():
                if self.size is None:
                    self._run_stream()
                else:
                    self._run_ranged()
            self._report()
            return self._verify()
        finally:
            os.close(self._fd)
            self._fd = -1

    def _run_ranged(self) -> None:
        """Parts over parallel ranged connections; a server that ignores Range gets the file
        fetched again from the start, in one stream."""
        if os.fstat(self._fd).st_size != self.size:
            os.ftruncate(self._fd, self.size or 0)
        ranged, restarts = True, 0
        while True:
            try:
                self._run_parts(ranged)
                return
            except _RangeIgnored as exc:
                # Never append a whole body to a partial file: start this file over, in one stream.
                restarts += 1
                if restarts > MAX_ATTEMPTS:
                    raise DownloadError(
                        f"download of {self.dest.name} failed after {MAX_ATTEMPTS} attempts: {exc}"
                    ) from None
                if ranged:
                    log.warning(
                        "%s ignores Range requests: downloading %s again from the start",
                        self.url,
                        self.dest.name,
                    )
                elif self.stop.wait(backoff(restarts)):
                    raise Stopped() from None
                ranged = False
                self._restart_clean()

    def _verify(self) -> str:
        expected = self.sha256 or self.blob_id
        if expected and self.digest != expected.lower():
            self._fail_digest(expected)
        return self.digest or ""

    def _fail_digest(self, expected: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.dest.unlink()
        kind = "sha256" if self.sha256 else "git blob id"
        raise DigestMismatch(
            f"digest mismatch for {self.dest.name} ({kind} {self.digest} != {expected}); "
            "the file was deleted and must be downloaded again"
        )

    def _restart_clean(self) -> None:
        with self._lock:
            self.parts = [[0, self.size or 0, 0]]
        os.ftruncate(self._fd, 0)
        os.ftruncate(self._fd, self.size or 0)
        self._abort.clear()

    # --- a file of unknown size --------------------------------------------------------------
    def _run_stream(self) -> None:
        """One GET without Range, written in order and hashed inline; failures start over."""
        failures = 0
        while True:
            if self.stop.is_set():
                raise Stopped()
            with self._lock:
                self.parts = [[0, 0, 0]]
            os.ftruncate(self._fd, 0)
            try:
                self._stream_whole()
                return
            except (_Retry, OSError, http.client.HTTPException) as exc:
                self._raise_if_final(exc)
                failures += 1
                self._raise_if_exhausted(failures, exc)
                log.info("downloading %s again from the start: %s", self.dest.name, describe(exc))
                if self.stop.wait(backoff(failures)):
                    raise Stopped() from exc

    def _raise_if_final(self, exc: BaseException) -> None:
        """A full disk or a stop ends the download; anything else may be retried."""
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            raise disk_full(self.dest) from exc
        if self.stop.is_set() or self._abort.is_set():
            raise Stopped() from exc

    def _raise_if_exhausted(self, failures: int, exc: BaseException) -> None:
        if failures > MAX_ATTEMPTS:
            raise DownloadError(
                f"download of {self.dest.name} failed after {MAX_ATTEMPTS} attempts: "
                f"{describe(exc)}"
            ) from exc

    def _stream_whole(self) -> None:
        conn, resp = self._open({**self.headers, "Accept-Encoding": "identity"})
        try:
            self._check_status(resp, ranged=False)
            length = resp.getheader("content-length")
            expected = int(length) if length and length.isdigit() else None
            h = self._stream_hasher(expected)
            offset = 0
            while True:
                if self.stop.is_set() or self._abort.is_set():
                    raise Stopped()
                data = resp.read1(READ_CHUNK)
                if not data:
                    break
                written = self._write(memoryview(data), offset)
                if h is not None:
                    h.update(data)
                offset += written
                with self._cond:
                    self.parts[0][1] = self.parts[0][2] = offset
                    self.fetched += written
            if expected is not None and offset != expected:
                raise _Retry(f"connection closed after byte {offset} of {expected}")
        finally:
            self._untrack(conn.sock)
            conn.close()
        self.size = offset
        if h is None:  # a git blob id of a size we learnt only now: hash the file read back
            h = hashlib.sha1(f"blob {offset}\0".encode())
            with open(self.dest, "rb") as fh:
                while chunk := fh.read(HASH_CHUNK):
                    h.update(chunk)
        self.digest = h.hexdigest()

    def _stream_hasher(self, size: int | None):
        """The hash to keep while streaming: sha256, or a git blob id, whose header holds the
        size (None when the size is not known yet)."""
        if self.sha256 or not self.blob_id:
            return hashlib.sha256()
        return hashlib.sha1(f"blob {size}\0".encode()) if size is not None else None

    def _write(self, data: memoryview, offset: int) -> int:
        total = 0
        while total < len(data):
            total += self.pwrite(self._fd, data[total:], offset + total)
        return total

    def _run_parts(self, ranged: bool) -> None:
        self._abort.clear()
        hasher = threading.Thread(target=self._hash, name=f"hash-{self.dest.name}", daemon=True)
        hasher.start()
        todo = [i for i, p in enumerate(self.parts) if p[2] < p[1] - p[0]]
        workers = min(self.connections, len(todo)) or 1
        try:
            if todo:
                queue = iter(todo)
                qlock = threading.Lock()

                def worker() -> None:
                    while not (self._abort.is_set() or self.stop.is_set()):
                        with qlock:
                            index = next(queue, None)
                        if index is None:
                            return
                        self._fetch_part(index, ranged)

                with ThreadPoolExecutor(workers, thread_name_prefix="part") as pool:
                    futures = [pool.submit(worker) for _ in range(workers)]
                    finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
                    if any(f.exception() for f in finished):
                        self._abort_all()
                    wait(futures)
                errors = [e for f in futures if (e := f.exception()) is not None]
                # A real failure explains more than the Stopped it caused in the others.
                errors.sort(key=lambda e: isinstance(e, Stopped))
                if errors:
                    raise errors[0]
                if self.stop.is_set() and self.done < (self.size or 0):
                    raise Stopped()
        except BaseException:
            self._abort_all()
            hasher.join()
            raise
        hasher.join()

    def _abort_all(self) -> None:
        """Wake every worker and the hasher now, even one blocked in a read."""
        self._abort.set()
        with self._cond:
            self._cond.notify_all()
            socks = list(self._sockets)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def interrupt(self) -> None:
        """Called (from any thread) after setting `stop`: don't wait for a slow read to end."""
        self._abort_all()

    # --- hashing -------------------------------------------------------------------------
    def _hash(self) -> None:
        h = (
            hashlib.sha256()
            if self.sha256 or not self.blob_id
            else hashlib.sha1(f"blob {self.size}\0".encode())
        )
        buf = bytearray(HASH_CHUNK)
        view = memoryview(buf)
        pos = 0
        size = self.size or 0
        while pos < size:
            with self._cond:
                while (frontier := self._frontier()) <= pos and not self._abort.is_set():
                    self._cond.wait(0.5)
            if self._abort.is_set() and frontier <= pos:
                return
            while pos < frontier:
                n = os.preadv(self._fd, [view[: min(HASH_CHUNK, frontier - pos)]], pos)
                if n <= 0:
                    return
                h.update(view[:n])
                pos += n
        self.digest = h.hexdigest()

    # --- one part ------------------------------------------------------------------------
    def _fetch_part(self, index: int, ranged: bool) -> None:
        failures = 0
        while True:
            with self._lock:
                start, end, done = self.parts[index]
            if done >= end - start:
                return
            if self.stop.is_set() or self._abort.is_set():
                raise Stopped()
            before = done
            try:
                self._stream(index, start + done, end, ranged)
                return
            except (_Retry, OSError, http.client.HTTPException) as exc:
                self._raise_if_final(exc)
                if not ranged:  # the server cannot resume: the whole file starts over
                    raise _RangeIgnored(describe(exc)) from exc
                with self._lock:
                    progressed = self.parts[index][2] > before
                failures = 1 if progressed else failures + 1
                self._raise_if_exhausted(failures, exc)
                delay = backoff(failures)
                log.info(
                    "retrying %s from byte %d in %.1fs: %s",
                    self.dest.name,
                    start + self.parts[index][2],
                    delay,
                    describe(exc),
                )
                if self.stop.wait(delay):
                    raise Stopped() from exc

    def _stream(self, index: int, offset: int, end: int, ranged: bool) -> None:
        headers = {**self.headers, "Accept-Encoding": "identity"}
        if ranged:
            headers["Range"] = f"bytes={offset}-{end - 1}"
        conn, resp = self._open(headers)
        try:
            self._check_status(resp, ranged)
            if ranged:
                content_range = resp.getheader("content-range") or ""
                if not content_range.startswith(f"bytes {offset}-"):
                    raise _RangeIgnored("the server answered another range")
                total = content_range.rpartition("/")[2]
                if total.isdigit() and int(total) != self.size:
                    raise self._size_mismatch(int(total))
            else:
                length = resp.getheader("content-length")
                if length and length.isdigit() and int(length) != self.size:
                    raise self._size_mismatch(int(length))
            self._copy(resp, index, offset, end)
        finally:
            self._untrack(conn.sock)
            conn.close()

    def _check_status(self, resp: http.client.HTTPResponse, ranged: bool) -> None:
        status = resp.status
        if status in (401, 403):
            raise (
                self.on_unauthorized()
                if self.on_unauthorized
                else Unauthorized(f"HTTP {status} for {self.url}")
            )
        if status == 404:
            raise NotFound(f"{self.dest.name} is no longer {self.where} (404)")
        if status == 429 or status >= 500:
            raise _Retry(f"HTTP {status}")
        if ranged and status == 200:
            raise _RangeIgnored("the server ignored a Range request")
        if status not in (200, 206):
            raise DownloadError(f"unexpected HTTP {status} while downloading {self.dest.name}")

    def _size_mismatch(self, sent: int) -> DownloadError:
        return DownloadError(
            f"size mismatch for {self.dest.name}: the server sends {sent} bytes "
            f"but the repo listed {self.size}"
        )

    def _open(
        self, headers: dict[str, str]
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        try:
            return open_get(self.url, headers, self.stall_secs, self._track, self._untrack)
        except TooManyRedirects:
            raise DownloadError(f"too many redirects while downloading {self.dest.name}") from None

    def _track(self, sock: socket.socket) -> None:
        """A connection's socket, so interrupt() can shut it down even in a blocking read."""
        with self._lock:
            self._sockets.add(sock)
        if self._abort.is_set() or self.stop.is_set():
            raise Stopped()

    def _untrack(self, sock: socket.socket | None) -> None:
        if sock is not None:
            with self._lock:
                self._sockets.discard(sock)

    def _copy(self, resp: http.client.HTTPResponse, index: int, offset: int, end: int) -> None:
        while offset < end:
            if self.stop.is_set() or self._abort.is_set():
                raise Stopped()
            data = resp.read1(min(READ_CHUNK, end - offset))
            if not data:
                break
            written = self._write(memoryview(data), offset)
            offset += written
            with self._cond:
                self.parts[index][2] += written
                self.fetched += written
                self._cond.notify_all()
        if offset < end:
            raise _Retry(f"connection closed after byte {offset} of {end}")
