"""The download rows (DownloadProgress): every query and write of them, and what "an active
download" means.

A row is what a pull resumes from after a restart (its JSON state: jobs/pull_state.py) and
what `/api/tags` lists while a model downloads; how a running pull is doing right now is on
the board (jobs/board.py), in memory.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from llmlb.store import db
from llmlb.store.models import DownloadProgress, DownloadStatus, utcnow

# An active download: one that is still to finish (queued, or part-way through its files).
ACTIVE = frozenset({DownloadStatus.PENDING.value, DownloadStatus.DOWNLOADING.value})


def is_active(row: DownloadProgress | None) -> bool:
    return row is not None and row.status in ACTIVE


def is_completed(row: DownloadProgress | None) -> bool:
    """Its model was installed (a row left Failed or unfinished may resume instead)."""
    return row is not None and row.status == DownloadStatus.COMPLETED.value


def find(engine: Engine, name: str) -> DownloadProgress | None:
    """The row of the model `name` (one per model)."""
    with db.session(engine) as s:
        return s.exec(select(DownloadProgress).where(DownloadProgress.model_name == name)).first()


def get(engine: Engine, download_id: int) -> DownloadProgress | None:
    with db.session(engine) as s:
        return s.get(DownloadProgress, download_id)


def active(engine: Engine) -> list[DownloadProgress]:
    """Every active download, oldest first."""
    with db.session(engine) as s:
        query = select(DownloadProgress).where(col(DownloadProgress.status).in_(ACTIVE))
        return list(s.exec(query.order_by(col(DownloadProgress.id))))


def queue(engine: Engine, name: str, state: dict[str, Any], total: int, done: int) -> int:
    """Write the model's row as Pending with `state` (created, or reused from an earlier pull
    of that name): its id."""
    with db.session(engine) as s:
        row = s.exec(select(DownloadProgress).where(DownloadProgress.model_name == name)).first()
        if row is None:
            row = DownloadProgress(model_name=name)
        row.plan = state
        row.status = DownloadStatus.PENDING.value
        row.total_bytes, row.downloaded_bytes = total, done
        row.speed_bps, row.eta_secs, row.error, row.updated_at = 0.0, None, None, utcnow()
        s.add(row)
        s.commit()
        s.refresh(row)
        assert row.id is not None  # the row was just written
        return row.id


def update(engine: Engine, download_id: int, **values: Any) -> None:
    """Set columns of a row (a JSON `plan` must be a new object, so SQLAlchemy sees it change);
    nothing when the row is gone (cancelled)."""
    with db.session(engine) as s:
        row = s.get(DownloadProgress, download_id)
        if row is None:
            return
        for key, value in values.items():
            setattr(row, key, value)
        row.updated_at = utcnow()
        s.add(row)
        s.commit()


def remove(engine: Engine, name: str) -> bool:
    """Delete the model's row: True when it was a download still to finish."""
    with db.session(engine) as s:
        row = s.exec(select(DownloadProgress).where(DownloadProgress.model_name == name)).first()
        if row is None:
            return False
        unfinished = not is_completed(row)
        s.delete(row)
        s.commit()
        return unfinished
