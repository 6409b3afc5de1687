"""The pull job: DownloadProgress row -> files in LLMLB_HOME/partial/<name>/ -> verified ->
moved into LLMLB_HOME/models/<name>/ -> registered in the catalog.

The row is the truth. Its JSON `plan` column holds {"plan": <what to fetch>, "files": {path:
{"parts": [[start, end, done], ...], "done": bool, "digest": hex}}, "phase": ...}, so a job that
dies at any point continues from the row. One job per model name runs at a time.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from llmlb import settings
from llmlb.errors import LlmlbError
from llmlb.jobs.downloader import DigestMismatch, FileDownload, Stopped
from llmlb.sources import huggingface as hf
from llmlb.store import catalog, db
from llmlb.store.models import DownloadProgress, DownloadStatus, utcnow
from llmlb.units import size

log = logging.getLogger("llmlb.pull")

ACTIVE = (DownloadStatus.PENDING.value, DownloadStatus.DOWNLOADING.value)


class NoSpace(LlmlbError):
    status = 507
    kind = "server_error"


@dataclass
class Running:
    stop: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    download: FileDownload | None = None
    cancelled: bool = False


def _fresh_state(plan: hf.Plan) -> dict:
    return {
        "plan": plan.to_json(),
        "files": {f.path: {"parts": None, "done": False, "digest": None} for f in plan.files},
        "phase": "downloading",
    }


def downloaded_bytes(state: dict) -> int:
    plan = hf.Plan.from_json(state["plan"])
    total = 0
    for f in plan.files:
        st = state["files"].get(f.path) or {}
        if st.get("done"):
            total += f.size
        elif st.get("parts"):
            total += sum(p[2] for p in st["parts"])
    return total


def free_bytes(path: Path) -> int:
    """Free space on the file system that holds `path` (or its nearest existing parent)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


class Pulls:
    """Every pull of one node server: rows, the huey task, running jobs, cancel and stop."""

    def __init__(self, engine: Engine, home: Path):
        self.engine = engine
        self.home = Path(home)
        self.enqueue: Callable[[int], None] | None = (
            None  # set by lifecycle: the huey task (call it with a row id)
        )
        self.running: dict[str, Running] = {}
        self.cancelling: set[str] = set()
        self.tokens: dict[str, str] = {}  # HF tokens sent with a pull: memory only, never stored
        self.lock = threading.Lock()

    def staging(self, name: str) -> Path:
        return self.home / "partial" / name

    def target(self, name: str) -> Path:
        return self.home / "models" / name

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

    def submit(self, plan: hf.Plan, token: str | None = None) -> tuple[int, bool]:
        """Create (or reuse) the model's row and enqueue it: (row id, attached to a running one)."""
        with self.lock:
            if token:
                self.tokens[plan.name] = token
            with db.session(self.engine) as s:
                row = s.exec(
                    select(DownloadProgress).where(DownloadProgress.model_name == plan.name)
                ).first()
                if row is not None and row.id is not None and row.status in ACTIVE:
                    return row.id, True
                state = row.plan if row is not None else None
                reusable = row is not None and row.status == DownloadStatus.FAILED.value
                if not (reusable and state and state.get("plan") == plan.to_json()):
                    # Another plan (first pull, or the repo changed): stale partial data goes.
                    shutil.rmtree(self.staging(plan.name), ignore_errors=True)
                    state = _fresh_state(plan)
                else:
                    state = {**state, "phase": "downloading"}
                self._check_space(plan, state)
                if row is None:
                    row = DownloadProgress(model_name=plan.name)
                row.plan = state
                row.status = DownloadStatus.PENDING.value
                row.total_bytes = plan.total
                row.downloaded_bytes = downloaded_bytes(state)
                row.speed_bps, row.eta_secs, row.error, row.updated_at = 0.0, None, None, utcnow()
                s.add(row)
                s.commit()
                s.refresh(row)
                assert row.id is not None  # the row was just written
                download_id = row.id
        if self.enqueue is not None:
            self.enqueue(download_id)
        return download_id, False

    def _check_space(self, plan: hf.Plan, state: dict) -> None:
        needed = plan.total - downloaded_bytes(state)
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
            return
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
            job.finished.set()

    def _run(self, row: DownloadProgress, job: Running) -> None:
        name, download_id = row.model_name, row.id
        assert download_id is not None  # rows read back from the catalog have ids
        state = row.plan
        plan = hf.Plan.from_json(state["plan"])
        token = hf.resolve_token(self.tokens.get(name))
        self._update(download_id, status=DownloadStatus.DOWNLOADING.value, error=None)
        clock = _Speed(downloaded_bytes(state))
        try:
            for f in plan.files:
                st = state["files"].setdefault(
                    f.path, {"parts": None, "done": False, "digest": None}
                )
                if st.get("done"):
                    continue
                dl = FileDownload(
                    hf.file_url(plan, f.path),
                    self.staging(name) / f.path,
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
                )
                job.download = dl
                if job.stop.is_set():
                    raise Stopped()
                try:
                    digest = dl.run()
                except DigestMismatch:
                    st.update(
                        parts=None, done=False
                    )  # the file was deleted: start it over next time
                    raise
                except BaseException:
                    st["parts"] = dl.snapshot()
                    raise
                st.update(done=True, digest=digest, parts=dl.snapshot())
                self._progress(download_id, state, f.path, None, clock)
            self._phase(download_id, state, "verifying")
            self._phase(download_id, state, "writing")
            self._install(plan, state)
            self._update(
                download_id,
                status=DownloadStatus.COMPLETED.value,
                plan={**state, "phase": "done"},
                downloaded_bytes=plan.total,
                speed_bps=0.0,
                eta_secs=0.0,
            )
            log.info("pulled %s (%d bytes)", name, plan.total)
        except Stopped:
            if not job.cancelled:
                self._update(
                    download_id,
                    plan=_copy(state),
                    downloaded_bytes=downloaded_bytes(state),
                    speed_bps=0.0,
                )
                log.info("download of %s paused; it continues when the server starts again", name)
        except LlmlbError as exc:
            self._fail(download_id, state, name, exc.message)
        except Exception as exc:  # a bug must still end the row, not leave it Downloading forever
            log.exception("pull of %s failed", name)
            self._fail(download_id, state, name, f"internal error: {type(exc).__name__}: {exc}")

    def _fail(self, download_id: int, state: dict, name: str, message: str) -> None:
        log.warning("pull of %s failed: %s", name, message)
        self._update(
            download_id,
            status=DownloadStatus.FAILED.value,
            error=message,
            plan=_copy(state),
            downloaded_bytes=downloaded_bytes(state),
            speed_bps=0.0,
            eta_secs=None,
        )

    def _progress(
        self, download_id: int, state: dict, path: str, dl: FileDownload | None, clock: _Speed
    ) -> None:
        if dl is not None:
            state["files"][path]["parts"] = dl.snapshot()
        done = downloaded_bytes(state)
        speed = clock.update(done)
        total = sum(f["size"] for f in state["plan"]["files"])
        eta = (total - done) / speed if speed > 0 else None
        self._update(
            download_id, plan=_copy(state), downloaded_bytes=done, speed_bps=speed, eta_secs=eta
        )

    def _phase(self, download_id: int, state: dict, phase: str) -> None:
        state["phase"] = phase
        self._update(download_id, plan=_copy(state))

    def _install(self, plan: hf.Plan, state: dict) -> None:
        """Move the verified files into models/<name>/ and register them; all or nothing."""
        staging, target = self.staging(plan.name), self.target(plan.name)
        placed: list[Path] = []
        fresh = not target.exists()
        target.parent.mkdir(parents=True, exist_ok=True)
        if fresh:
            os.replace(staging, target)  # one atomic rename
        else:  # an update (or a nested model's directory): replace only our files, each atomically
            for f in plan.files:
                dest = target / f.path
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / f.path, dest)
                placed.append(dest)
            shutil.rmtree(staging, ignore_errors=True)
        _prune(staging.parent, self.home / "partial")
        main = plan.main
        if main is None:
            raise LlmlbError(f"the plan for '{plan.name}' names no model file")
        path = target if plan.format == "Safetensors" else target / main.path
        digest = state["files"][main.path].get("digest")
        try:
            catalog.register_model(
                self.engine,
                name=plan.name,
                path=path,
                format=plan.format,
                source="HuggingFace",
                digest=digest,
            )
        except Exception:
            if fresh:
                shutil.rmtree(target, ignore_errors=True)
            else:
                for p in placed:
                    p.unlink(missing_ok=True)
            raise

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
                _prune(staging.parent, self.home / "partial")
            self.tokens.pop(name, None)
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


class _Speed:
    """Bytes per second, smoothed over the last few seconds."""

    def __init__(self, done: int):
        self.last_done, self.last_time, self.speed = done, time.monotonic(), 0.0

    def update(self, done: int) -> float:
        now = time.monotonic()
        dt = now - self.last_time
        if dt >= 0.2:
            current = max(0, done - self.last_done) / dt
            self.speed = current if self.speed == 0 else 0.7 * self.speed + 0.3 * current
            self.last_done, self.last_time = done, now
        return self.speed


def _copy(state: dict) -> dict:
    """A new object, so SQLAlchemy sees the JSON column change."""
    return {**state, "files": {k: dict(v) for k, v in state["files"].items()}}


def _prune(directory: Path, root: Path) -> None:
    """Remove empty parents left by nested names (owner/repo/...), never `root` itself."""
    root = root.resolve()
    while (
        directory.exists() and directory.resolve() != root and root in directory.resolve().parents
    ):
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent
