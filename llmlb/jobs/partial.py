"""A pull's partial data, LLMLB_HOME/partial/<name>/: where it is, what of it is still on
disk, whether the disk has room for the rest, and freeing it (a cancel, a full disk, what a
crash left in the trash).

A full disk can refuse the very write that records a pull's failure: `record_failure` then
frees that pull's partial data and writes again, so the row never stays Downloading.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
from pathlib import Path

from sqlalchemy.engine import Engine

from llmlb import validation
from llmlb.errors import LlmlbError
from llmlb.jobs import pull_state as ps
from llmlb.jobs.downloader import DISK_FULL_ERRNOS, free_bytes
from llmlb.sources.hf_refs import Plan
from llmlb.store import downloads, files
from llmlb.store.models import DownloadStatus
from llmlb.units import size

log = logging.getLogger("llmlb.pull")


class NoSpace(LlmlbError):
    status = 507
    kind = "server_error"


def root(home: Path) -> Path:
    return home / "partial"


def staging(home: Path, name: str) -> Path:
    return root(home) / name


def check_paths(home: Path, plan: Plan) -> None:
    """Every file of the plan lands inside its staging directory (else ValidationError)."""
    for f in plan.files:
        validation.inside(staging(home, plan.name), f.path)


def still_on_disk(home: Path, name: str, state: dict) -> dict:
    """Forget the progress of files whose partial data is gone (freed after a full disk, or
    deleted by hand): they start over instead of trusting parts that are not there."""
    kept = {}
    for path, st in state["files"].items():
        if (st.get("done") or st.get("parts")) and not validation.inside(
            staging(home, name), path
        ).exists():
            st = {"parts": None, "done": False, "digest": None}
        kept[path] = st
    return {**state, "files": kept}


def check_space(home: Path, plan: Plan, state: dict) -> None:
    needed = ps.total_bytes(state) - ps.downloaded_bytes(state)
    free = free_bytes(home)
    if needed > free:
        raise NoSpace(
            f"not enough disk space to pull '{plan.name}': it needs {size(needed)} "
            f"but only {size(free)} is free in {home}"
        )


def drop(home: Path, name: str) -> None:
    """Delete the partial data at once (another plan starts over)."""
    shutil.rmtree(staging(home, name), ignore_errors=True)


def tidy(home: Path, name: str) -> None:
    """Remove the empty folders a failed pull leaves; its data stays for the next pull."""
    files.prune_empty(staging(home, name), root(home))


def discard(home: Path, name: str) -> None:
    """A cancel: the partial data goes (through the trash), and its empty parents."""
    files.discard(staging(home, name), root(home))


def sweep_trash(home: Path) -> None:
    """Finish cancellations that a crash interrupted (partial/.trash-*)."""
    files.sweep_trash(root(home))


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


def record_failure(
    catalog: Engine, home: Path, download_id: int, name: str, state: dict, message: str
) -> None:
    """Write the failure into `name`'s row. When the disk is too full for that write, this
    pull's partial data is freed and the write tried again (the next pull then starts over)."""
    tidy(home, name)
    values = dict(status=DownloadStatus.FAILED.value, error=message, speed_bps=0.0, eta_secs=None)
    try:
        downloads.update(
            catalog,
            download_id,
            **values,
            plan=ps.copy(state),
            downloaded_bytes=ps.downloaded_bytes(state),
        )
        return
    except Exception as exc:
        if not is_disk_full(exc):
            log.exception("could not record the failure of the pull of %s", name)
            return
    shutil.rmtree(staging(home, name), ignore_errors=True)
    files.prune_empty_parents(staging(home, name).parent, root(home))
    fresh = ps.fresh_state(Plan.from_json(state["plan"]))
    try:
        downloads.update(catalog, download_id, **values, plan=fresh, downloaded_bytes=0)
        log.warning("the disk was full: freed the partial download of %s", name)
    except Exception:
        log.error(
            "could not record the failure of %s (%s) even after freeing its partial data; "
            "it is kept in memory and a new pull starts over",
            name,
            message,
        )
