"""Request history: recorded off the request path in batches, kept LLMLB_HISTORY_DAYS days."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from anyio import to_thread
from sqlalchemy import delete, func, insert
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from llmlb import tasks
from llmlb.store import db
from llmlb.store.router_models import RequestLog

log = logging.getLogger("llmlb.router")
FLUSH_EVERY = 0.5
PRUNE_EVERY = timedelta(hours=1)


class History:
    def __init__(self, engine: Engine, keep_days: int):
        self.engine = engine
        self.keep_days = keep_days
        self.pending: list[dict[str, Any]] = []
        self._task: asyncio.Task | None = None

    def record(self, **fields: Any) -> None:
        """Called on the request path: only an append to a list (a model instance here would
        cost a pydantic validation per request, a tenth of the router's CPU under load)."""
        fields["time"] = datetime.now(UTC)
        self.pending.append(fields)

    async def start(self) -> None:
        await to_thread.run_sync(self.prune)
        self._task = tasks.start("request history", self._loop)

    async def stop(self) -> None:
        await tasks.stop(self._task)
        await to_thread.run_sync(self.flush)

    async def _loop(self) -> None:
        pruned = datetime.now(UTC)
        while True:
            await asyncio.sleep(FLUSH_EVERY)
            if self.pending:
                await to_thread.run_sync(self.flush)
            if datetime.now(UTC) - pruned >= PRUNE_EVERY:
                await to_thread.run_sync(self.prune)
                pruned = datetime.now(UTC)

    def flush(self) -> None:
        batch, self.pending = self.pending, []
        if not batch:
            return
        try:
            with self.engine.begin() as conn:  # one executemany for the batch
                conn.execute(insert(RequestLog), batch)
        except Exception:
            log.exception("could not record %d requests", len(batch))

    def prune(self) -> None:
        cutoff = datetime.now(UTC) - timedelta(days=self.keep_days)
        with db.session(self.engine) as s:
            s.exec(delete(RequestLog).where(col(RequestLog.time) < cutoff))
            s.commit()

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        self.flush()
        with db.session(self.engine) as s:
            rows = s.exec(select(RequestLog).order_by(col(RequestLog.id).desc()).limit(limit)).all()
        return [{**r.model_dump(exclude={"time"}), "time": r.time.isoformat()} for r in rows]

    def last_hour(self) -> int:
        self.flush()
        cutoff = datetime.now(UTC) - timedelta(hours=1)
        with db.session(self.engine) as s:
            return s.exec(
                select(func.count()).select_from(RequestLog).where(RequestLog.time >= cutoff)
            ).one()

    def per_minute(self, minutes: int = 60) -> list[dict[str, Any]]:
        """Requests, errors and mean latency per minute for the chart."""
        self.flush()
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        start = now - timedelta(minutes=minutes - 1)
        with db.session(self.engine) as s:
            rows = s.exec(
                select(RequestLog.time, RequestLog.status, RequestLog.duration_ms).where(
                    RequestLog.time >= start
                )
            ).all()
        buckets = {start + timedelta(minutes=i): [0, 0, 0.0] for i in range(minutes)}
        for when, status, duration in rows:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            key = when.replace(second=0, microsecond=0)
            if key in buckets:
                b = buckets[key]
                b[0] += 1
                b[1] += status >= 400 and status != 499  # a client hanging up is not an error
                b[2] += duration
        return [
            {
                "minute": k.isoformat(),
                "requests": v[0],
                "errors": v[1],
                "latency_ms": round(v[2] / v[0], 1) if v[0] else None,
            }
            for k, v in buckets.items()
        ]
