"""FileDownload against the test Hub: parts, resume, faults, verification."""

import errno
import hashlib
import os
import threading

import pytest

from llmlb.errors import NotFound, Unauthorized
from llmlb.jobs.downloader import (
    MIN_PART,
    DigestMismatch,
    DiskFull,
    DownloadError,
    FileDownload,
    Stopped,
)
from tests.support.hub_server import HubServer

SIZE = MIN_PART * 3 + 12345  # three parts, the last one short


@pytest.fixture(scope="module")
def data():
    return os.urandom(SIZE)


@pytest.fixture
def hub(tmp_path, data):
    with HubServer(tmp_path / "hub") as server:
        server.add_repo("acme/r", {"m.gguf": data, "config.json": b'{"x": 1}'})
        yield server


def _dl(hub, tmp_path, name="m.gguf", **kw):
    f = hub.repos["acme/r"].files[name]
    digests = {"sha256": f.sha256} if f.lfs else {"blob_id": f.blob_id}
    return FileDownload(
        f"{hub.url}/acme/r/resolve/main/{name}",
        tmp_path / "out" / name,
        f.size,
        **{**digests, "stall_secs": 2, **kw},
    )


def test_parallel_parts_download_and_verify(hub, tmp_path, data):
    dl = _dl(hub, tmp_path)
    assert len(dl.parts) == 3
    assert dl.run() == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "out" / "m.gguf").read_bytes() == data
    ranges = [r for m, p, r in hub.stats.requests if p.startswith("/_cdn/")]
    assert len(ranges) == 3 and all(r.startswith("bytes=") for r in ranges)
    assert hub.sent("m.gguf") == SIZE


def test_small_non_lfs_file_is_checked_by_git_blob_id(hub, tmp_path):
    dl = _dl(hub, tmp_path, "config.json")
    assert dl.run() == hashlib.sha1(b'blob 8\0{"x": 1}').hexdigest()


def test_resume_from_a_snapshot_fetches_only_what_is_missing(hub, tmp_path, data):
    stop = threading.Event()
    hub.fault("m.gguf", rate=4 << 20)
    first = _dl(hub, tmp_path, stop=stop, on_progress=lambda d: d.done > SIZE // 3 and stop.set())
    with pytest.raises(Stopped):
        first.run()
    parts = first.snapshot()
    have = sum(p[2] for p in parts)
    assert 0 < have < SIZE
    hub.clear_faults()
    hub.reset_stats()
    second = _dl(hub, tmp_path, parts=parts)
    assert second.run() == hashlib.sha256(data).hexdigest()
    assert second.fetched == SIZE - have
    assert requested(hub) == SIZE - have  # what the server was asked for after the resume
    assert (tmp_path / "out" / "m.gguf").read_bytes() == data


def requested(hub) -> int:
    """Bytes asked for by Range requests (the server may have sent more into a closed socket)."""
    total = 0
    for _, path, rng in hub.stats.requests:
        if path.startswith("/_cdn/") and rng:
            first, last = rng.removeprefix("bytes=").split("-")
            total += int(last) - int(first) + 1
    return total


def test_dropped_connection_resumes_with_range(hub, tmp_path, data):
    hub.fault("m.gguf", drop_after=100_000, times=2)
    dl = _dl(hub, tmp_path)
    assert dl.run() == hashlib.sha256(data).hexdigest()
    assert hub.sent("m.gguf") == SIZE  # the retries asked only for the missing bytes
    starts = {
        int(r.removeprefix("bytes=").split("-")[0])
        for _, p, r in hub.stats.requests
        if p.startswith("/_cdn/")
    }
    assert starts - {p[0] for p in dl.parts}  # some requests began inside a part: resumed


def test_server_ignoring_range_restarts_the_file_cleanly(hub, tmp_path, data):
    hub.fault("m.gguf", ignore_range=True)
    dl = _dl(hub, tmp_path)
    assert dl.run() == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "out" / "m.gguf").read_bytes() == data
    assert dl.parts == [[0, SIZE, SIZE]]


def test_a_git_blob_id_is_hashed_as_the_whole_file_streams(hub, tmp_path, data):
    """A server ignoring Range sends the whole file with its length: the blob id's header is
    known up front, so the stream is hashed as it arrives."""
    hub.fault("m.gguf", ignore_range=True)
    blob_id = hashlib.sha1(f"blob {SIZE}\0".encode() + data).hexdigest()
    dl = _dl(hub, tmp_path, sha256=None, blob_id=blob_id)
    assert dl.run() == blob_id
    assert dl.parts == [[0, SIZE, SIZE]]
    assert (tmp_path / "out" / "m.gguf").read_bytes() == data


def test_resume_against_a_server_that_ignores_range_starts_over(hub, tmp_path, data):
    stop = threading.Event()
    hub.fault("m.gguf", rate=4 << 20)
    first = _dl(hub, tmp_path, stop=stop, on_progress=lambda d: d.done > SIZE // 3 and stop.set())
    with pytest.raises(Stopped):
        first.run()
    hub.fault("m.gguf", ignore_range=True)
    second = _dl(hub, tmp_path, parts=first.snapshot())
    assert second.run() == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "out" / "m.gguf").read_bytes() == data  # no whole body appended to a partial


def test_flipped_byte_is_a_digest_mismatch_and_the_file_is_deleted(hub, tmp_path):
    hub.fault("m.gguf", flip_byte=MIN_PART + 7)
    dl = _dl(hub, tmp_path)
    with pytest.raises(DigestMismatch, match=r"digest mismatch .* must be downloaded again"):
        dl.run()
    assert not (tmp_path / "out" / "m.gguf").exists()


def test_stall_is_detected_and_retried(hub, tmp_path, data):
    hub.fault("m.gguf", stall_after=50_000, stall_secs=30, times=1)
    dl = _dl(hub, tmp_path, stall_secs=1)
    assert dl.run() == hashlib.sha256(data).hexdigest()


def test_5xx_is_retried(hub, tmp_path, data):
    hub.fault("m.gguf", status=503, times=2)
    assert _dl(hub, tmp_path).run() == hashlib.sha256(data).hexdigest()


def test_persistent_5xx_fails_with_a_clear_message(hub, tmp_path, monkeypatch):
    monkeypatch.setattr("llmlb.jobs.downloader.BACKOFF", (0.01,))
    hub.fault("m.gguf", status=500)
    with pytest.raises(DownloadError, match="failed after 6 attempts: HTTP 500"):
        _dl(hub, tmp_path).run()


@pytest.mark.parametrize(
    "status, error", [(401, Unauthorized), (403, Unauthorized), (404, NotFound)]
)
def test_auth_and_missing_are_not_retried(hub, tmp_path, status, error):
    hub.fault("m.gguf", status=status)
    with pytest.raises(error):
        _dl(hub, tmp_path).run()
    assert (
        len([1 for m, p, r in hub.stats.requests if p.startswith("/_cdn/")]) <= 3
    )  # one per part at most


def test_interrupt_stops_a_blocked_read_at_once(hub, tmp_path):
    hub.fault("m.gguf", stall_after=1000, stall_secs=60)
    stop = threading.Event()
    dl = _dl(hub, tmp_path, stop=stop, stall_secs=60)
    timer = threading.Timer(0.5, lambda: (stop.set(), dl.interrupt()))
    timer.start()
    with pytest.raises(Stopped):
        dl.run()  # without interrupt() this would wait for the 60 s stall timeout


def test_a_server_sending_another_size_than_listed_fails_the_file(hub, tmp_path):
    f = hub.repos["acme/r"].files["m.gguf"]
    dl = FileDownload(f"{hub.url}/acme/r/resolve/main/m.gguf", tmp_path / "m.gguf", f.size - 10)
    with pytest.raises(DownloadError, match=r"size mismatch for m\.gguf"):
        dl.run()


def test_unknown_size_is_streamed_without_range_and_verified(tmp_path, data):
    with HubServer.unknown_sizes(tmp_path / "hub") as hub:
        f = hub.add_repo("acme/r", {"m.gguf": data}).files["m.gguf"]
        dl = FileDownload(
            f"{hub.url}/acme/r/resolve/main/m.gguf", tmp_path / "out.gguf", None, sha256=f.sha256
        )
        assert dl.run() == f.sha256
        gets = [r for r in hub.stats.requests if r[0] == "GET"]
        assert gets and all(rng is None for _, _, rng in gets)
    assert dl.size == SIZE and (tmp_path / "out.gguf").read_bytes() == data


def test_unknown_size_starts_over_after_a_dropped_connection(tmp_path, data):
    with HubServer.unknown_sizes(tmp_path / "hub") as hub:
        f = hub.add_repo("acme/r", {"m.gguf": data}).files["m.gguf"]
        hub.fault("m.gguf", drop_after=MIN_PART, times=1)
        dl = FileDownload(
            f"{hub.url}/acme/r/resolve/main/m.gguf",
            tmp_path / "out.gguf",
            None,
            blob_id=f.blob_id,  # a git blob id needs the size first: checked after the stream
        )
        assert dl.run() == f.blob_id
    assert (tmp_path / "out.gguf").read_bytes() == data


def test_a_full_disk_is_one_clear_error(hub, tmp_path):
    def full_after_first_mib(fd, data, offset):
        if offset >= 1 << 20:
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.pwrite(fd, data, offset)

    dl = _dl(hub, tmp_path, pwrite=full_after_first_mib)
    with pytest.raises(DiskFull, match=r"^disk full while writing m\.gguf \(.* free in .*\); free"):
        dl.run()
