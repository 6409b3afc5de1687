"""The pull job: DownloadProgress row -> files in LLMLB_HOME/partial/<name>/ -> verified ->
moved into LLMLB_HOME/models/<name>/ -> registered in the catalog (install.py).

The row is the truth (its JSON state: pull_state.py), so a job that dies at any point continues
from it. One job per model name runs at a time. Two things live only in memory, because a full
disk can refuse the row write that would record them: which downloads are really under way in
this process (`live`), and the last failure of each name (`failures`), which waiting clients
read, so a pull that failed is never shown to them as still running.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from llmlb import settings, validation
from llmlb.errors import LlmlbError
from llmlb.jobs import pull_state as ps
from llmlb.jobs.downloader import (
    DISK_FULL_ERRNOS,
    DigestMismatch,
    FileDownload,
    Stopped,
    disk_full,
    free_bytes,
)
from llmlb.jobs.install import install
from llmlb.sources import huggingface as hf
from llmlb.store import db, downloads
from llmlb.store.files import prune_empty, prune_empty_parents
from llmlb.store.models import DownloadProgress, DownloadStatus, utcnow
from llmlb.units import size

log = logging.getLogger("llmlb.pull")

ACTIVE = downloads.ACTIVE


class NoSpace(LlmlbError):
    status = 507
    kind = "server_error"


@dataclass
class Running:
    stop: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    download: FileDownload | None = None
    cancelled: bool = False


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC from a file write, or SQLite's SQLITE_FULL ("database or disk is full")."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in DISK_FULL_ERRNOS:
            return True
        if isinstance(seen, sqlite3.OperationalError) and "disk is full" in str(seen):
            return True
        orig = getattr(seen, "orig", None)  # SQLAlchemy wraps the driver's error
        seen = orig if isinstance(orig, BaseException) else seen.__cause__
    return False


class Pulls:
    """Every pull of one node server: rows, the huey task, running jobs, cancel and stop."""

    def __init__(self, engine: Engine, home: Path):
        self.engine = engine
        self.home = Path(home)
        self.enqueue: Callable[[int], None] | None = (
            None  # set by lifecycle: the huey task (call it with a row id)
        )
        self.running: dict[str, Running] = {}
        self.live: set[str] = set()  # enqueued or running in this process
        self.failures: dict[str, str] = {}  # name -> why its last pull failed
        self.cancelling: set[str] = set()
        self.tokens: dict[str, str] = {}  # HF tokens sent with a pull: memory only, never stored
        self.lock = threading.Lock()
        self.pwrite = os.pwrite  # the OS write of downloads: tests put a full disk here

    def staging(self, name: str) -> Path:
        return self.home / "partial" / name

    # --- rows --------------------------------------------------------------------------------
    def row(self, name: str) -> DownloadProgress | None:
        with db.session(self.engine) as s:
            return s.exec(
                select(DownloadProgress).where(DownloadProgress.model_name == name)
            ).first()

    def row_by_id(self, download_id: int) -> DownloadProgress | None:
        with db.session(self.engine) as s:
            return s.get(DownloadProgress, download_id)

    def active_rows(self) -> list[DownloadProgress]:
        with db.session(self.engine) as s:
            return list(
                s.exec(select(DownloadProgress).where(col(DownloadProgress.status).in_(ACTIVE)))
            )

    def _update(self, download_id: int, **values) -> None:
        with db.session(self.engine) as s:
            row = s.get(DownloadProgress, download_id)
            if row is None:
                return
            for key, value in values.items():
                setattr(row, key, value)
            row.updated_at = utcnow()
            s.add(row)
            s.commit()

    def is_live(self, name: str) -> bool:
        """A job for `name` is queued or running in this process."""
        with self.lock:
            return name in self.live

    def under_way(self, name: str) -> hf.Plan | None:
        """The plan of `name`'s download when one is really queued or running here."""
        with self.lock:
            if name not in self.live:
                return None
        row = self.row(name)
        if row is None or row.status not in ACTIVE:
            return None
        return hf.Plan.from_json(row.plan["plan"])

    def submit(self, plan: hf.Plan, token: str | None = None) -> tuple[int, bool]:
        """Create (or reuse) the model's row and enqueue it: (row id, attached to a running one).

        A row left Failed, or left Downloading by a job that is gone (its failure could not be
        written), resumes from its parts when the plan is the same; otherwise it starts over.
        """
        for f in plan.files:
            validation.inside(self.staging(plan.name), f.path)
        with self.lock:
            with db.session(self.engine) as s:
                row = s.exec(
                    select(DownloadProgress).where(DownloadProgress.model_name == plan.name)
                ).first()
                live = plan.name in self.live
                if row is not None and row.id is not None and row.status in ACTIVE and live:
                    if token:
                        self.tokens[plan.name] = token
                    return row.id, True
                state = row.plan if row is not None else None
                reusable = row is not None and row.status != DownloadStatus.COMPLETED.value
                if not (reusable and state and state.get("plan") == plan.to_json()):
                    # Another plan (first pull, or the repo changed): stale partial data goes.
                    shutil.rmtree(self.staging(plan.name), ignore_errors=True)
                    state = ps.fresh_state(plan)
                else:
                    state = self._still_on_disk(plan.name, {**state, "phase": "downloading"})
                self._check_space(plan, state)
                if row is None:
                    row = DownloadProgress(model_name=plan.name)
                row.plan = state
                row.status = DownloadStatus.PENDING.value
                row.total_bytes = ps.total_bytes(state)
                row.downloaded_bytes = ps.downloaded_bytes(state)
                row.speed_bps, row.eta_secs, row.error, row.updated_at = 0.0, None, None, utcnow()
                s.add(row)
                s.commit()
                s.refresh(row)
                assert row.id is not None  # the row was just written
                download_id = row.id
            if token:
                self.tokens[plan.name] = token
            self.failures.pop(plan.name, None)
            self.live.add(plan.name)
        self._enqueue(plan.name, download_id)
        return download_id, False

    def _still_on_disk(self, name: str, state: dict) -> dict:
        """Forget the progress of files whose partial data is gone (freed after a full disk,
        or deleted by hand): they start over instead of trusting parts that are not there."""
        files = {}
        for path, st in state["files"].items():
            if (st.get("done") or st.get("parts")) and not validation.inside(
                self.staging(name), path
            ).exists():
                st = {"parts": None, "done": False, "digest": None}
            files[path] = st
        return {**state, "files": files}

    def _enqueue(self, name: str, download_id: int) -> None:
        if self.enqueue is None:
            return
        try:
            self.enqueue(download_id)
        except BaseException:
            with self.lock:
                self.live.discard(name)
            raise

    def resume_unfinished(self) -> list[DownloadProgress]:
        """At start-up: enqueue every download a previous run left unfinished."""
        rows = self.active_rows()
        for row in rows:
            assert row.id is not None
            with self.lock:
                self.live.add(row.model_name)
            self._enqueue(row.model_name, row.id)
        return rows

    def _check_space(self, plan: hf.Plan, state: dict) -> None:
        needed = ps.total_bytes(state) - ps.downloaded_bytes(state)
        free = free_bytes(self.home)
        if needed > free:
            raise NoSpace(
                f"not enough disk space to pull '{plan.name}': it needs {size(needed)} "
                f"but only {size(free)} is free in {self.home}"
            )

    # --- the task ----------------------------------------------------------------------------
    def run(self, download_id: int) -> None:
        """The huey task body (a consumer thread)."""
        row = self.row_by_id(download_id)
        if row is None or row.status not in ACTIVE:
            if row is not None:
                with self.lock:
                    if row.model_name not in self.running:
                        self.live.discard(row.model_name)
            return
        name = row.model_name
        with self.lock:
            if name in self.running or name in self.cancelling:
                return
            job = self.running[name] = Running()
            self.live.add(name)
        try:
            self._run(row, job)
        finally:
            with self.lock:
                self.running.pop(name, None)
                self.live.discard(name)
            job.finished.set()

    def _run(self, row: DownloadProgress, job: Running) -> None:
        name, download_id = row.model_name, row.id
        assert download_id is not None  # rows read back from the catalog have ids
        state = row.plan
        try:
            plan = hf.Plan.from_json(state["plan"])
            token = hf.download_token(plan, self.tokens.get(name))
            self._update(download_id, status=DownloadStatus.DOWNLOADING.value, error=None)
            clock = ps.Speed(ps.downloaded_bytes(state))
            for f in plan.files:
                self._fetch(download_id, job, plan, state, f, token, clock)
            self._phase(download_id, state, "verifying")
            self._phase(download_id, state, "writing")
            install(self.engine, self.home, plan, state)
            self._update(
                download_id,
                status=DownloadStatus.COMPLETED.value,
                plan={**state, "phase": "done"},
                total_bytes=ps.total_bytes(state),
                downloaded_bytes=ps.total_bytes(state),
                speed_bps=0.0,
                eta_secs=0.0,
            )
            log.info("pulled %s (%d bytes)", name, ps.total_bytes(state))
        except Stopped:
            if not job.cancelled:
                self._update(
                    download_id,
                    plan=ps.copy(state),
                    downloaded_bytes=ps.downloaded_bytes(state),
                    speed_bps=0.0,
                )
                log.info("download of %s paused; it continues when the server starts again", name)
        except LlmlbError as exc:
            self._fail(download_id, state, name, exc.message)
        except Exception as exc:  # a bug must still end the row, not leave it Downloading forever
            if is_disk_full(exc):
                message = disk_full(self.home / "llmlb.db").message
            else:
                log.exception("pull of %s failed", name)
                message = f"internal error: {type(exc).__name__}: {exc}"
            self._fail(download_id, state, name, message)

    def _fetch(self, download_id, job, plan, state, f, token, clock) -> None:
        st = state["files"].setdefault(f.path, {"parts": None, "done": False, "digest": None})
        if st.get("done"):
            return
        dl = FileDownload(
            hf.file_url(plan, f.path),
            validation.inside(self.staging(plan.name), f.path),
            f.size,
            sha256=f.sha256,
            blob_id=f.blob_id,
            parts=st.get("parts"),
            headers=hf.auth_headers(token),
            connections=settings.pull_connections(),
            stall_secs=settings.pull_stall_secs(),
            stop=job.stop,
            on_unauthorized=lambda: hf.unauthorized(token),
            on_progress=partial(self._progress, download_id, state, f.path, clock=clock),
            where=hf.hub_where(plan.endpoint),
            pwrite=self.pwrite,
        )
        job.download = dl
        if job.stop.is_set():
            raise Stopped()
        try:
            digest = dl.run()
        except DigestMismatch:
            st.update(parts=None, done=False)  # the file was deleted: start it over next time
            raise
        except BaseException:
            st["parts"] = dl.snapshot() if f.size is not None else None
            raise
        st.update(done=True, digest=digest, parts=dl.snapshot(), size=dl.size)
        self._progress(download_id, state, f.path, None, clock)

    def _fail(self, download_id: int, state: dict, name: str, message: str) -> None:
        """Record the failure: in memory first (waiting clients see it at once), then in the
        row. When the disk is too full for that write, this pull's partial data is freed and
        the write tried again (the next pull then starts over)."""
        log.warning("pull of %s failed: %s", name, message)
        with self.lock:
            self.failures[name] = message
        prune_empty(self.staging(name), self.home / "partial")
        values = dict(status=DownloadStatus.FAILED.value, error=message, speed_bps=0.0)
        try:
            self._update(
                download_id,
                **values,
                plan=ps.copy(state),
                downloaded_bytes=ps.downloaded_bytes(state),
                eta_secs=None,
            )
            return
        except Exception as exc:
            if not is_disk_full(exc):
                log.exception("could not record the failure of the pull of %s", name)
                return
        shutil.rmtree(self.staging(name), ignore_errors=True)
        prune_empty_parents(self.staging(name).parent, self.home / "partial")
        fresh = ps.fresh_state(hf.Plan.from_json(state["plan"]))
        try:
            self._update(download_id, **values, plan=fresh, downloaded_bytes=0, eta_secs=None)
            log.warning("the disk was full: freed the partial download of %s", name)
        except Exception:
            log.error(
                "could not record the failure of %s (%s) even after freeing its partial data; "
                "it is kept in memory and a new pull starts over",
                name,
                message,
            )

    def _progress(
        self, download_id: int, state: dict, path: str, dl: FileDownload | None, clock: ps.Speed
    ) -> None:
        if dl is not None:
            state["files"][path]["parts"] = dl.snapshot()
        done = ps.downloaded_bytes(state)
        speed = clock.update(done)
        total = ps.total_bytes(state)
        eta = (total - done) / speed if speed > 0 and ps.sizes_known(state) else None
        try:
            self._update(
                download_id,
                plan=ps.copy(state),
                total_bytes=total,
                downloaded_bytes=done,
                speed_bps=speed,
                eta_secs=eta,
            )
        except Exception as exc:
            if is_disk_full(exc):  # stop the download with the reason, not a database error
                raise disk_full(self.staging(state["plan"]["name"]) / path) from exc
            raise

    def _phase(self, download_id: int, state: dict, phase: str) -> None:
        state["phase"] = phase
        self._update(download_id, plan=ps.copy(state))

    # --- cancel and stop ---------------------------------------------------------------------
    def cancel(self, name: str, wait_secs: float = 30) -> bool:
        """Stop the model's download and remove its row and partial data (blocking)."""
        with self.lock:
            self.cancelling.add(name)
            job = self.running.get(name)
        try:
            if job is not None:
                job.cancelled = True
                job.stop.set()
                if job.download is not None:
                    job.download.interrupt()
                job.finished.wait(wait_secs)
            row = self.row(name)
            existed = row is not None and row.status != DownloadStatus.COMPLETED.value
            if row is not None:
                with db.session(self.engine) as s:
                    found = s.get(DownloadProgress, row.id)
                    if found is not None:
                        s.delete(found)
                        s.commit()
            staging = self.staging(name)
            if staging.exists():
                trash = self.home / "partial" / f".trash-{uuid.uuid4().hex}"
                staging.rename(trash)
                shutil.rmtree(trash, ignore_errors=True)
                prune_empty_parents(staging.parent, self.home / "partial")
            with self.lock:
                self.tokens.pop(name, None)
                self.failures.pop(name, None)
                self.live.discard(name)
            return existed or job is not None
        finally:
            with self.lock:
                self.cancelling.discard(name)

    def sweep_trash(self) -> None:
        """Finish cancellations that a crash interrupted (partial/.trash-*)."""
        for trash in (self.home / "partial").glob(".trash-*"):
            shutil.rmtree(trash, ignore_errors=True)

    def stop_all(self) -> None:
        """Server shutdown: stop every job now; rows stay Downloading and resume at next start."""
        with self.lock:
            jobs = list(self.running.values())
        for job in jobs:
            job.stop.set()
            if job.download is not None:
                job.download.interrupt()
