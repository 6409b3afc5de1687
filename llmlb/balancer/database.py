"""The router's database as the router uses it: whether it can be reached, the loop that writes
node rows, and, when several routers share it, the loop that reads the rows the others wrote.

Nothing on a request's path waits for the database. Heartbeats change the registry in memory and
are written here shortly after, the latest state of each node once; the registry read from the
shared database is at most one heartbeat interval old. When the database cannot be reached, the
router goes on from the registry it has, says so (`/admin/cluster/status`, `router status`, the
dashboard, /metrics), keeps what it owes the database, and writes it once it is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from anyio import to_thread
from sqlalchemy.engine import Engine

from llmlb import tasks
from llmlb.balancer.registry import Registry
from llmlb.store import router_state

log = logging.getLogger("llmlb.router")
WRITE_EVERY = 0.1  # seconds between writes of node rows (heartbeats, states)


class Database:
    """Reachability of the router's database, as every part of the router found it."""

    def __init__(self, engine: Engine, shared: bool):
        self.engine = engine
        self.shared = shared  # several routers may use it (LLMLB_DATABASE_URL)
        self.up = True
        self.error: str | None = None
        self.down_since: datetime | None = None
        self.failures = 0

    @property
    def kind(self) -> str:
        return self.engine.dialect.name

    @property
    def where(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def failed(self, what: str, exc: BaseException) -> None:
        self.failures += 1
        reason = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [repr(exc)])[0]
        if self.up:
            log.warning(
                "the router's database (%s) cannot be reached while %s: %s; serving on from "
                "the registry in memory, history is kept in memory until it is back",
                self.where,
                what,
                reason,
            )
            self.down_since = datetime.now(UTC)
        self.up, self.error = False, reason

    def worked(self) -> None:
        if not self.up:
            log.info("the router's database (%s) is reachable again", self.where)
        self.up, self.error, self.down_since = True, None, None

    def status(self) -> dict:
        return {
            "engine": self.kind,
            "shared": self.shared,
            "status": "ok" if self.up else "unreachable",
            "error": self.error,
            "down_since": self.down_since.isoformat() if self.down_since else None,
        }


class NodeRows:
    """Writes the registry's node rows, and in a shared database reads the other routers'."""

    def __init__(self, registry: Registry, database: Database, read_every: float):
        self.registry = registry
        self.db = database
        self.read_every = read_every
        self._loops: list[asyncio.Task] = []

    async def load(self) -> None:
        """At start-up: the nodes of the last run (offline until they beat again), or in a
        shared database, every node as the other routers see it now."""
        read_at = time.monotonic()
        rows, now = await to_thread.run_sync(router_state.load_nodes, self.db.engine)
        if self.db.shared:
            self.registry.apply_rows(rows, now, read_at)
        else:
            self.registry.load(rows)

    async def start(self) -> None:
        try:
            await self.load()
            self.db.worked()
        except Exception as exc:
            self.db.failed("loading the nodes", exc)
        self._loops = [tasks.start("node rows", self._write_forever)]
        if self.db.shared:
            self._loops.append(tasks.start("shared registry", self._read_forever))

    async def stop(self) -> None:
        await tasks.stop(*self._loops)
        await self.write()  # a goodbye that came last

    async def write(self) -> None:
        rows, errors, taken = self.registry.writes.take(self.registry.nodes)
        if not taken:
            return
        try:
            await to_thread.run_sync(self._write, rows, errors)
        except Exception as exc:
            self.registry.writes.untake(taken)
            self.db.failed("writing node heartbeats", exc)
            return
        self.registry.writes.written(self.registry.nodes, taken)
        self.db.worked()

    def _write(self, rows: list[router_state.NodeWrite], errors: list[str]) -> None:
        if rows:
            router_state.save_nodes(self.db.engine, rows)
        for node_id in errors:
            router_state.mark_error(self.db.engine, node_id, self.registry.timeout)

    async def _write_forever(self) -> None:
        while True:
            await asyncio.sleep(WRITE_EVERY if self.db.up else 1.0)
            await self.write()

    async def read(self) -> None:
        read_at = time.monotonic()
        try:
            rows, now = await to_thread.run_sync(router_state.load_nodes, self.db.engine)
        except Exception as exc:
            self.db.failed("reading the shared registry", exc)
            return
        self.db.worked()
        self.registry.apply_rows(rows, now, read_at)

    async def _read_forever(self) -> None:
        while True:
            await asyncio.sleep(self.read_every)
            await self.read()
