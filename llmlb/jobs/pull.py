"""The pull job: DownloadProgress row -> files in LLMLB_HOME/partial/<name>/ -> verified ->
moved into LLMLB_HOME/models/<name>/ -> registered in the catalog (install.py).

The huey task carries only the row's id, and the row (its JSON state: pull_state.py) is what a
job that dies at any point continues from. Each step is published on the board (board.py),
which is what clients watch; a failure goes there before the row, since a full disk can refuse
the row's write. One job per model name runs at a time.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from sqlalchemy.engine import Engine

from llmlb import settings, validation
from llmlb.errors import LlmlbError
from llmlb.jobs import pull_state as ps
from llmlb.jobs.board import Board, Progress, Stage
from llmlb.jobs.downloader import DigestMismatch, FileDownload, Stopped, disk_full
from llmlb.jobs.install import install
from llmlb.jobs.partial import is_disk_full, record_failure, staging
from llmlb.sources import huggingface as hf
from llmlb.store import downloads
from llmlb.store.models import DownloadProgress, DownloadStatus

log = logging.getLogger("llmlb.pull")
ENDS = frozenset({Stage.DONE, Stage.FAILED, Stage.STOPPED, Stage.CANCELLED})


@dataclass
class Running:
    stop: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    download: FileDownload | None = None
    cancelled: bool = False
    ended: bool = False  # its last word (done, failed, stopped) is on the board


class PullJob:
    """The huey task body (`run`), and the jobs it is running in this process."""

    def __init__(
        self,
        catalog: Engine,
        home: Path,
        board: Board,
        token_for: Callable[[str], str | None],
        pwrite: Callable[[int, memoryview, int], int] = os.pwrite,
    ):
        self.catalog = catalog
        self.home = Path(home)
        self.board = board
        self.token_for = token_for  # the HF token sent with a model's pull (memory only)
        self.pwrite = pwrite  # the OS write of downloads: tests put a full disk here
        self.running: dict[str, Running] = {}
        self.cancelling: set[str] = set()
        self.lock = threading.Lock()

    def is_running(self, name: str) -> bool:
        with self.lock:
            return name in self.running

    def run(self, download_id: int) -> None:
        """The huey task body (a consumer thread)."""
        row = downloads.get(self.catalog, download_id)
        if row is None or not downloads.is_active(row):
            return  # cancelled meanwhile (its row is gone), or already finished
        name = row.model_name
        with self.lock:
            if name in self.running or name in self.cancelling:
                return
            job = self.running[name] = Running()
        try:
            self._run(row, job)
        finally:
            with self.lock:
                self.running.pop(name, None)
                if not job.ended and not job.cancelled:  # ended by something unforeseen
                    self.board.mark(name, Stage.STOPPED)
            job.finished.set()

    def _tell(self, job: Running, progress: Progress) -> None:
        if progress.stage in ENDS:
            job.ended = True
        self.board.publish(progress)

    def _run(self, row: DownloadProgress, job: Running) -> None:
        name, download_id = row.model_name, row.id
        assert download_id is not None  # rows read back from the catalog have ids
        state = row.plan
        plan: hf.Plan | None = None
        try:
            plan = hf.Plan.from_json(state["plan"])
            token = hf.download_token(plan, self.token_for(name))
            downloads.update(
                self.catalog, download_id, status=DownloadStatus.DOWNLOADING.value, error=None
            )
            self._tell(job, Progress.of(plan, state, Stage.DOWNLOADING))
            clock = ps.Speed(ps.downloaded_bytes(state))
            for f in plan.files:
                self._fetch(download_id, job, plan, state, f, token, clock)
            self._phase(download_id, job, plan, state, Stage.VERIFYING)
            self._phase(download_id, job, plan, state, Stage.WRITING)
            install(self.catalog, self.home, plan, state)
            done = {**state, "phase": "done"}
            downloads.update(
                self.catalog,
                download_id,
                status=DownloadStatus.COMPLETED.value,
                plan=done,
                total_bytes=ps.total_bytes(state),
                downloaded_bytes=ps.total_bytes(state),
                speed_bps=0.0,
                eta_secs=0.0,
            )
            self._tell(job, Progress.of(plan, done, Stage.DONE))
            log.info("pulled %s (%d bytes)", name, ps.total_bytes(state))
        except Stopped:
            if not job.cancelled:
                downloads.update(
                    self.catalog,
                    download_id,
                    plan=ps.copy(state),
                    downloaded_bytes=ps.downloaded_bytes(state),
                    speed_bps=0.0,
                )
                if plan is not None:  # (it is: only a download stops)
                    self._tell(job, Progress.of(plan, state, Stage.STOPPED))
                log.info("download of %s paused; it continues when the server starts again", name)
        except LlmlbError as exc:
            self._fail(download_id, job, name, plan, state, exc.message)
        except Exception as exc:  # a bug must still end the row, not leave it Downloading forever
            if is_disk_full(exc):
                message = disk_full(self.home / "llmlb.db").message
            else:
                log.exception("pull of %s failed", name)
                message = f"internal error: {type(exc).__name__}: {exc}"
            self._fail(download_id, job, name, plan, state, message)

    def _fetch(self, download_id, job, plan, state, f, token, clock) -> None:
        st = state["files"].setdefault(f.path, {"parts": None, "done": False, "digest": None})
        if st.get("done"):
            return
        dl = FileDownload(
            hf.file_url(plan, f.path),
            validation.inside(staging(self.home, plan.name), f.path),
            f.size,
            sha256=f.sha256,
            blob_id=f.blob_id,
            parts=st.get("parts"),
            headers=hf.auth_headers(token),
            connections=settings.pull_connections(),
            stall_secs=settings.pull_stall_secs(),
            stop=job.stop,
            on_unauthorized=lambda: hf.unauthorized(token),
            on_progress=partial(self._progress, download_id, job, plan, state, f.path, clock=clock),
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
        self._progress(download_id, job, plan, state, f.path, None, clock)

    def _fail(
        self,
        download_id: int,
        job: Running,
        name: str,
        plan: hf.Plan | None,
        state: dict,
        message: str,
    ) -> None:
        """On the board first (waiting clients see it at once, whatever the disk allows), then
        in the row (partial.record_failure frees room when the disk is full)."""
        log.warning("pull of %s failed: %s", name, message)
        if plan is not None:
            self._tell(job, Progress.of(plan, state, Stage.FAILED, message))
        else:  # a row whose plan cannot be read back
            job.ended = True
            self.board.mark(name, Stage.FAILED, message)
        record_failure(self.catalog, self.home, download_id, name, state, message)

    def _progress(
        self,
        download_id: int,
        job: Running,
        plan: hf.Plan,
        state: dict,
        path: str,
        dl: FileDownload | None,
        clock: ps.Speed,
    ) -> None:
        if dl is not None:
            state["files"][path]["parts"] = dl.snapshot()
        done = ps.downloaded_bytes(state)
        speed = clock.update(done)
        total = ps.total_bytes(state)
        eta = (total - done) / speed if speed > 0 and ps.sizes_known(state) else None
        try:
            downloads.update(
                self.catalog,
                download_id,
                plan=ps.copy(state),
                total_bytes=total,
                downloaded_bytes=done,
                speed_bps=speed,
                eta_secs=eta,
            )
        except Exception as exc:
            if is_disk_full(exc):  # stop the download with the reason, not a database error
                raise disk_full(staging(self.home, plan.name) / path) from exc
            raise
        self._tell(job, Progress.of(plan, state, Stage.DOWNLOADING))

    def _phase(
        self, download_id: int, job: Running, plan: hf.Plan, state: dict, stage: Stage
    ) -> None:
        state["phase"] = stage.value
        downloads.update(self.catalog, download_id, plan=ps.copy(state))
        self._tell(job, Progress.of(plan, state, stage))

    # --- stop --------------------------------------------------------------------------------
    @contextmanager
    def stopped(self, name: str, wait_secs: float = 30) -> Iterator[bool]:
        """For a cancel: stop `name`'s job and wait for it; no job of it starts inside the block.
        Yields whether one was running."""
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
            yield job is not None
        finally:
            with self.lock:
                self.cancelling.discard(name)

    def stop_all(self) -> None:
        """Server shutdown: stop every job now; rows stay Downloading and resume at next start."""
        with self.lock:
            jobs = list(self.running.values())
        for job in jobs:
            job.stop.set()
            if job.download is not None:
                job.download.interrupt()
