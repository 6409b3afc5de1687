"""Every query and write of the router's database: node rows, the request history and the
shared settings. SQLite for one router; PostgreSQL when several routers share their state.

Timestamps that routers compare (a node's last heartbeat, when its row last changed) come from
the database's clock on PostgreSQL, so routers whose clocks differ still agree on a node's age.
Writes are upserts, so that any router may write any node's row, in any order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Integer, case, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, col
from sqlmodel import select as orm_select

from llmlb.store.router_models import RequestLog, RouterNode, RouterSetting


def _now(conn: Connection) -> Any:
    """The clock routers share: PostgreSQL's now(); a SQLite file has one router."""
    if conn.dialect.name == "postgresql":
        return func.now()
    return datetime.now(UTC)


def _insert(conn: Connection, table):
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


@dataclass
class NodeWrite:
    """One node's row to write: its fields, and whether a heartbeat came (which moves
    last_seen to now) or only its state changed."""

    id: str
    fields: dict[str, Any]
    registered_at: datetime
    heartbeat: bool


def save_nodes(engine: Engine, writes: Iterable[NodeWrite]) -> None:
    """Upsert each node's row, in one transaction."""
    with engine.begin() as conn:
        now = _now(conn)
        table = RouterNode.__table__  # type: ignore[attr-defined]
        for w in writes:
            values = {**w.fields, "updated_at": now}
            if w.heartbeat:
                values["last_seen"] = now
            stmt = _insert(conn, table).values(
                {"id": w.id, "registered_at": w.registered_at, "last_seen": now, **values}
            )
            conn.execute(stmt.on_conflict_do_update(index_elements=["id"], set_=values))


def mark_error(engine: Engine, node_id: str, silent_for_secs: float) -> bool:
    """Running -> Error, unless a heartbeat reached any router in the last `silent_for_secs`
    (written after this router decided the node was silent). True when the row changed."""
    with engine.begin() as conn:
        now = _now(conn)
        table = RouterNode.__table__  # type: ignore[attr-defined]
        if conn.dialect.name == "postgresql":
            silent = table.c.last_seen < now - func.make_interval(0, 0, 0, 0, 0, 0, silent_for_secs)
        else:
            from datetime import timedelta

            silent = table.c.last_seen < now - timedelta(seconds=silent_for_secs)
        result = conn.execute(
            update(table)
            .where(table.c.id == node_id, table.c.status == "Running", silent)
            .values(status="Error", updated_at=now)
        )
        return bool(result.rowcount)


def load_nodes(engine: Engine) -> tuple[list[RouterNode], datetime]:
    """Every node row, and the database's time of the read (to age last_seen against)."""
    with Session(engine, expire_on_commit=False) as s:
        rows = list(s.exec(orm_select(RouterNode)).all())
        shared = engine.dialect.name == "postgresql"
        now = s.connection().execute(select(func.now())).scalar_one() if shared else None
    return rows, _aware(now) if isinstance(now, datetime) else datetime.now(UTC)


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=UTC)


# -- request history ------------------------------------------------------------------------
def insert_requests(engine: Engine, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:  # one executemany for the batch
        conn.execute(insert(RequestLog), rows)


def prune_requests(engine: Engine, before: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(delete(RequestLog).where(col(RequestLog.time) < before))


def recent_requests(engine: Engine, limit: int) -> list[dict[str, Any]]:
    """The newest rows, whichever router wrote them: by time, then id."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(RequestLog)
            .order_by(col(RequestLog.time).desc(), col(RequestLog.id).desc())
            .limit(limit)
        ).all()
    return [dict(r._mapping) for r in rows]


def count_requests(engine: Engine, since: datetime) -> int:
    with engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(RequestLog).where(col(RequestLog.time) >= since)
        ).scalar_one()


def request_times(engine: Engine, since: datetime) -> list[tuple[datetime, int, float]]:
    """(time, status, duration_ms) of every request since `since`, for per-minute charts."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(col(RequestLog.time), col(RequestLog.status), col(RequestLog.duration_ms)).where(
                col(RequestLog.time) >= since
            )
        ).all()
    return [(_aware(t), s, d) for t, s, d in rows]


def requests_by_node(engine: Engine, since: datetime) -> dict[str, tuple[int, int]]:
    """node id -> (requests, errors) since `since`, counted over every router's history."""
    errors = func.sum(case((col(RequestLog.status) >= 500, 1), else_=0), type_=Integer())
    with engine.connect() as conn:
        rows = conn.execute(
            select(col(RequestLog.node_id), func.count(), errors)
            .where(col(RequestLog.time) >= since, col(RequestLog.node_id).is_not(None))
            .group_by(RequestLog.node_id)
        ).all()
    return {node: (int(n), int(e or 0)) for node, n, e in rows}


# -- settings every router shares -------------------------------------------------------------
def shared_setting(engine: Engine, name: str, make: Callable[[], str]) -> str:
    """The value of `name`; the first router to ask stores `make()`, and every router reads
    the same value back (a race between two first routers is settled by the primary key)."""
    with engine.begin() as conn:
        row = conn.execute(
            select(col(RouterSetting.value)).where(col(RouterSetting.name) == name)
        ).first()
        if row is not None:
            return row[0]
        stmt = _insert(conn, RouterSetting.__table__).values(  # type: ignore[attr-defined]
            name=name, value=make()
        )
        conn.execute(stmt.on_conflict_do_nothing(index_elements=["name"]))
        return conn.execute(
            select(col(RouterSetting.value)).where(col(RouterSetting.name) == name)
        ).scalar_one()
