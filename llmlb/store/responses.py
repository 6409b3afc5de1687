"""Stored responses of /v1/responses: save (then trim to the bounds), get, delete.

Bounds: rows older than `max_age` days go, and past `max_bytes` in all, the oldest go until
the rest fit; a response larger than the whole budget is not kept. Saves are serialised per
catalog (one writer), so two saves never trim each other's rows twice.
"""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from llmlb.store import db
from llmlb.store.models import StoredResponse, utcnow

_WRITERS: dict[int, threading.Lock] = {}
_WRITERS_GUARD = threading.Lock()


def _writer(engine: Engine) -> threading.Lock:
    with _WRITERS_GUARD:
        return _WRITERS.setdefault(id(engine), threading.Lock())


def size_of(body: dict[str, Any], items: list[dict[str, Any]]) -> int:
    return len(json.dumps(body)) + len(json.dumps(items))


def save(
    engine: Engine,
    rid: str,
    model: str,
    body: dict[str, Any],
    items: list[dict[str, Any]],
    *,
    max_bytes: int,
    max_age_days: int,
) -> bool:
    """Keep a response; False when it alone is larger than `max_bytes` (nothing is kept)."""
    size = size_of(body, items)
    if size > max_bytes:
        return False
    with _writer(engine), db.session(engine) as s:
        s.add(StoredResponse(id=rid, model=model, body=body, input=items, size_bytes=size))
        s.commit()
        _trim(s, max_bytes, max_age_days)
    return True


def _trim(s, max_bytes: int, max_age_days: int) -> None:
    cutoff = utcnow() - timedelta(days=max_age_days)
    s.exec(delete(StoredResponse).where(col(StoredResponse.created_at) < cutoff))
    rows = s.exec(
        select(StoredResponse.id, StoredResponse.size_bytes).order_by(
            col(StoredResponse.created_at).desc(), col(StoredResponse.id).desc()
        )
    ).all()
    total, drop = 0, []
    for rid, size in rows:
        total += size
        if total > max_bytes:
            drop.append(rid)
    if drop:
        s.exec(delete(StoredResponse).where(col(StoredResponse.id).in_(drop)))
    s.commit()


def get(engine: Engine, rid: str, max_age_days: int) -> StoredResponse | None:
    """A stored response, unless it is past its age (then it is as good as gone)."""
    with db.session(engine) as s:
        row = s.get(StoredResponse, rid)
    if row is None or row.created_at < utcnow() - timedelta(days=max_age_days):
        return None
    return row


def remove(engine: Engine, rid: str) -> bool:
    with _writer(engine), db.session(engine) as s:
        row = s.get(StoredResponse, rid)
        if row is None:
            return False
        s.delete(row)
        s.commit()
        return True
