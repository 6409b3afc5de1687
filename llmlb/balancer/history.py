"""Request history: recorded off the request path, written in batches, kept LLMLB_HISTORY_DAYS
days. Routers that share a database write into one history, and each lists all of it.

While the database cannot be reached, rows wait in memory, at most LLMLB_HISTORY_BUFFER of
them; past that the oldest are dropped and counted (llmlb_router_history_dropped_total). The
views then show what this router holds in memory, and say the database is unreachable.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import Any

from anyio import to_thread
from sqlalchemy.engine import Engine

from llmlb import tasks
from llmlb.balancer.database import Database
from llmlb.store import router_state

log = logging.getLogger("llmlb.router")
FLUSH_EVERY = 0.5
PRUNE_EVERY = timedelta(hours=1)
MAX_BATCH = 5000  # rows per INSERT: a long outage's backlog goes in several statements


class History:
    def __init__(
        self,
        engine: Engine,
        keep_days: int,
        buffer: int = 10_000,
        database: Database | None = None,
    ):
        """`database`: the reachability the router's parts share (one of its own if None)."""
        self.db = database or Database(engine, shared=False)
        self.keep_days = keep_days
        self.buffer = buffer
        self.pending: deque[dict[str, Any]] = deque()
        self.dropped = 0
        self._writing = threading.Lock()  # one flush at a time: rows keep their order
        self._task: asyncio.Task | None = None

    @property
    def engine(self):
        return self.db.engine

    def record(self, **fields: Any) -> None:
        """Called on the request path: only an append (a model instance here would cost a
        pydantic validation per request, a tenth of the router's CPU under load)."""
        fields["time"] = datetime.now(UTC)
        self.pending.append(fields)
        if len(self.pending) > self.buffer:
            self.pending.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning(
                    "request history: %d rows dropped, the database being unreachable and "
                    "LLMLB_HISTORY_BUFFER (%d) full",
                    self.dropped,
                    self.buffer,
                )

    async def start(self) -> None:
        try:
            await to_thread.run_sync(self.prune)
        except Exception as exc:
            self.db.failed("pruning the history", exc)
        self._task = tasks.start("request history", self._loop)

    async def stop(self) -> None:
        await tasks.stop(self._task)
        await to_thread.run_sync(self.flush)

    async def _loop(self) -> None:
        pruned = datetime.now(UTC)
        while True:
            await asyncio.sleep(FLUSH_EVERY if self.db.up else 1.0)
            if self.pending:
                await to_thread.run_sync(self.flush)
            if self.db.up and datetime.now(UTC) - pruned >= PRUNE_EVERY:
                await to_thread.run_sync(self.prune)  # a failure: logged, the loop restarted
                pruned = datetime.now(UTC)

    def flush(self) -> bool:
        """Write what is pending; True when nothing is left. Rows that could not be written
        stay, oldest first, for the next try."""
        with self._writing:
            if not self.pending:
                return True
            while self.pending:
                batch = [self.pending.popleft() for _ in range(min(MAX_BATCH, len(self.pending)))]
                try:
                    router_state.insert_requests(self.engine, batch)
                except Exception as exc:
                    self.pending.extendleft(reversed(batch))
                    while len(self.pending) > self.buffer:
                        self.pending.popleft()  # the oldest go, as in record()
                        self.dropped += 1
                    self.db.failed("writing the request history", exc)
                    return False
            self.db.worked()
            return True

    def prune(self) -> None:
        router_state.prune_requests(self.engine, datetime.now(UTC) - timedelta(days=self.keep_days))

    # -- views: from the database, or from memory while it is down ---------------------------------
    def _readable(self) -> bool:
        """Flush first, so a view includes this router's latest requests; False when the
        database is down (the view then comes from memory)."""
        return self.db.up and self.flush()

    def _read(self, what: str, query, fallback):
        if self._readable():
            try:
                return query()
            except Exception as exc:
                self.db.failed(what, exc)
        return fallback()

    def _buffered(self) -> list[dict[str, Any]]:
        return list(self.pending)

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        def from_memory() -> list[dict[str, Any]]:
            rows = self._buffered()[-limit:][::-1]
            return [{"id": None, **r, "time": r["time"].isoformat()} for r in rows]

        def from_db() -> list[dict[str, Any]]:
            rows = router_state.recent_requests(self.engine, limit)
            return [{**r, "time": r["time"].isoformat()} for r in rows]

        return self._read("listing the history", from_db, from_memory)

    def last_hour(self) -> int | None:
        """Requests in the last hour across all routers; None while the database is down."""
        cutoff = datetime.now(UTC) - timedelta(hours=1)
        return self._read(
            "counting the history",
            lambda: router_state.count_requests(self.engine, cutoff),
            lambda: None,
        )

    def by_node(self) -> dict[str, tuple[int, int]] | None:
        """node id -> (requests, failures) in the last hour, across all routers."""
        cutoff = datetime.now(UTC) - timedelta(hours=1)
        return self._read(
            "counting the history",
            lambda: router_state.requests_by_node(self.engine, cutoff),
            lambda: None,
        )

    def per_minute(self, minutes: int = 60) -> list[dict[str, Any]]:
        """Requests, errors and mean latency per minute for the chart."""
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        start = now - timedelta(minutes=minutes - 1)
        rows = self._read(
            "charting the history",
            lambda: router_state.request_times(self.engine, start),
            lambda: [(r["time"], r["status"], r["duration_ms"]) for r in self._buffered()],
        )
        buckets = {start + timedelta(minutes=i): [0, 0, 0.0] for i in range(minutes)}
        for when, status, duration in rows:
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
