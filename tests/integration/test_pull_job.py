"""The pull job in-process (`Downloads` and its job against the Hub stand-in, a real SQLite
catalog), with the disk filling up.

Simulated, at the library boundaries only: the OS write of the download (the `pwrite` given to
Downloads raises ENOSPC past a byte count) and, in the second test, SQLite refusing writes with its own
SQLITE_FULL error ("database or disk is full") through a sqlite3.Connection subclass.
tests/e2e/test_pull_disk_full.py fills a real (tmpfs) disk under a real server instead.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading

import pytest
from sqlalchemy import create_engine

from llmlb.jobs.board import Stage
from llmlb.jobs.lifecycle import Downloads
from llmlb.sources import huggingface as hf
from llmlb.store import catalog, db, downloads
from tests.support.hub_server import HubServer
from tests.support.tiny_model import TinySpec, make_tiny_gguf

FULL_AT = 1 << 20  # the disk has room for the first MiB of the file
DISK_FULL = threading.Event()  # set: SQLite refuses every write, as on a full disk


class _FullDiskCursor(sqlite3.Cursor):
    def execute(self, sql, parameters=(), /):
        if DISK_FULL.is_set() and sql.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            raise sqlite3.OperationalError("database or disk is full")
        return super().execute(sql, parameters)


class _FullDiskConnection(sqlite3.Connection):
    def cursor(self, factory=None):  # type: ignore[override]
        return super().cursor(factory or _FullDiskCursor)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    spec = TinySpec(n_embd=128, n_layer=2, n_ff=1024, seed=11)
    path = make_tiny_gguf(tmp_path_factory.mktemp("src") / "mid-F32.gguf", spec)
    assert path.stat().st_size > 2 * FULL_AT
    return path


@pytest.fixture
def hub(tmp_path, model_file, monkeypatch):
    with HubServer(tmp_path / "hub") as server:
        server.add_repo("acme/mid-GGUF", {"mid-F32.gguf": model_file})
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


@pytest.fixture
def engine(llmlb_env):
    DISK_FULL.clear()
    llmlb_env.mkdir(parents=True, exist_ok=True)
    eng = create_engine(
        f"sqlite:///{llmlb_env / 'llmlb.db'}",
        connect_args={"factory": _FullDiskConnection, "check_same_thread": False},
    )
    db.upgrade(eng)
    yield eng
    DISK_FULL.clear()
    eng.dispose()


class Disk:
    """The OS write of downloads: while `full`, ENOSPC past the first `limit` bytes of a file
    (and, with `also_database`, SQLite refuses writes from then on)."""

    def __init__(self, limit: int, also_database: bool = False):
        self.limit, self.also_database, self.full = limit, also_database, True

    def pwrite(self, fd: int, data, offset: int) -> int:
        if self.full and offset + len(data) > self.limit:
            if self.also_database:
                DISK_FULL.set()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return os.pwrite(fd, data, offset)

    def free(self) -> None:
        self.full = False
        DISK_FULL.clear()


def requested(hub) -> int:
    total = 0
    for _, path, rng in hub.stats.requests:
        if path.startswith("/_cdn/") and rng:
            first, last = rng.removeprefix("bytes=").split("-")
            total += int(last) - int(first) + 1
    return total


def test_disk_full_fails_the_pull_and_a_new_pull_resumes(hub, engine, llmlb_env, model_file):
    disk = Disk(FULL_AT)
    pulls = Downloads(engine, llmlb_env, pwrite=disk.pwrite)
    plan = hf.plan_pull(hf.parse_ref("acme/mid-GGUF"))
    download_id, attached = pulls.submit(plan)
    assert not attached
    pulls.job.run(download_id)  # the huey task body, here in the test's thread

    row = downloads.find(engine, plan.name)
    assert row is not None and row.status == "Failed"
    assert row.error.startswith("disk full while writing mid-F32.gguf (")
    told = pulls.board.status(plan.name)  # what waiting clients are told
    assert told is not None and (told.stage, told.error) == (Stage.FAILED, row.error)
    assert pulls.under_way(plan.name) is None  # a new pull must not attach to a dead one
    partial = llmlb_env / "partial" / "acme" / "mid-GGUF" / "mid-F32.gguf"
    assert partial.exists()  # kept: the next pull resumes from it
    assert 0 < row.downloaded_bytes <= FULL_AT

    disk.free()
    hub.reset_stats()
    download_id, attached = pulls.submit(plan)
    assert not attached and pulls.board.status(plan.name).stage is Stage.QUEUED
    pulls.job.run(download_id)
    assert downloads.find(engine, plan.name).status == "Completed"
    assert pulls.board.status(plan.name).stage is Stage.DONE
    assert requested(hub) == model_file.stat().st_size - row.downloaded_bytes  # resumed
    model = catalog.find(engine, plan.name)
    assert model is not None and model.digest == plan.main.sha256


def test_disk_full_for_the_database_too_is_kept_in_memory_and_nothing_hangs(
    hub, engine, llmlb_env, model_file
):
    disk = Disk(FULL_AT, also_database=True)
    pulls = Downloads(engine, llmlb_env, pwrite=disk.pwrite)
    plan = hf.plan_pull(hf.parse_ref("acme/mid-GGUF"))
    download_id, _ = pulls.submit(plan)
    pulls.job.run(download_id)  # returns: nothing waits on a write that cannot happen

    told = pulls.board.status(plan.name)
    assert told is not None and told.stage is Stage.FAILED
    assert told.error.startswith("disk full while writing ")
    assert downloads.find(engine, plan.name).status == "Downloading"  # not written ...
    assert pulls.under_way(plan.name) is None  # ... but it is known to be dead
    assert not (llmlb_env / "partial" / "acme").exists()  # its data was freed for the retry

    disk.free()
    hub.reset_stats()
    download_id, attached = pulls.submit(plan)
    assert not attached
    pulls.job.run(download_id)
    assert downloads.find(engine, plan.name).status == "Completed"
    assert requested(hub) == model_file.stat().st_size  # started over: no stale parts trusted
    path = llmlb_env / "models" / "acme" / "mid-GGUF" / "mid-F32.gguf"
    assert path.read_bytes() == model_file.read_bytes()
