"""The router's services in one typed object: node table, admission, claims, database, history,
metrics, keys, the upstream HTTP client, and the background loops that watch nodes. The router
app builds one and hands it to both its Litestar handlers and the proxy.

All HTTP towards nodes goes through one aiohttp session: its C parser is what keeps the
proxy's per-chunk cost low, and probes and fan-out reads reuse its connection pools.

A node is a peer, not a trusted part: a fan-out read (/api/tags, /api/ps) takes at most
FANOUT_BYTES from each node within FANOUT_TIMEOUT, decoded into a type whose depth is
fixed, so one node's huge, deep or slow answer drops that node from the answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec

from llmlb import tasks
from llmlb.balancer.admission import Admission
from llmlb.balancer.auth import ApiKeys, NodeGate
from llmlb.balancer.claims import Claims
from llmlb.balancer.database import Database, NodeRows
from llmlb.balancer.history import History
from llmlb.balancer.metrics import RouterMetrics
from llmlb.balancer.nodes import NodeEntry
from llmlb.balancer.registry import Registry

log = logging.getLogger("llmlb.router")
PROBE_TIMEOUT = aiohttp.ClientTimeout(total=1.0)
FANOUT_TIMEOUT = aiohttp.ClientTimeout(total=5.0)
FANOUT_BYTES = 8 * 1024 * 1024  # a node's list of models; thousands of entries fit
# what a node's list entry may hold: values, lists of values, objects of those (`details`,
# `downloading`); anything deeper is not an entry a node writes
Scalar = str | int | float | bool | None
Leaf = Scalar | list[Scalar]
Entry = dict[str, Leaf | dict[str, Leaf]]


class Listing(msgspec.Struct):
    models: list[Entry] = []


class TooBig(ValueError):
    """A node's answer is larger than the router takes from it."""


async def read_capped(response: aiohttp.ClientResponse, cap: int) -> bytes:
    """A node's whole answer, when it is at most `cap` bytes; TooBig as soon as it is not."""
    if (response.content_length or 0) > cap:
        response.close()  # the rest is never read: the connection is not reused
        raise TooBig(f"answered {response.content_length} bytes (at most {cap} are read)")
    parts, size = [], 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > cap:
            response.close()
            raise TooBig(f"answered more than {cap} bytes")
        parts.append(chunk)
    return b"".join(parts)


@dataclass
class Cluster:
    registry: Registry
    admission: Admission
    claims: Claims
    database: Database
    rows: NodeRows
    history: History
    metrics: RouterMetrics
    keys: ApiKeys
    gate: NodeGate
    probe_every: float
    first_byte_secs: float = 10.0
    started_at: float = field(default_factory=time.time)
    upstream: aiohttp.ClientSession | None = None
    _watch: asyncio.Task | None = None

    @property
    def http(self) -> aiohttp.ClientSession:
        if self.upstream is None:
            raise RuntimeError("the router's HTTP client is not started")
        return self.upstream

    async def start(self) -> None:
        self.upstream = aiohttp.ClientSession(
            # idle connections are dropped before a node's own keep-alive (uvicorn's 5 s) ends
            # them: one closed by the node as a request goes out would look like a drop
            connector=aiohttp.TCPConnector(
                limit=2000, limit_per_host=0, enable_cleanup_closed=True, keepalive_timeout=3
            ),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=3, sock_read=600),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )
        await self.claims.start()
        await self.rows.start()
        await self.history.start()
        self._watch = tasks.start("node watch", self.watch_forever)

    async def stop(self) -> None:
        await tasks.stop(self._watch)
        for part, step in (("history", self.history.stop), ("node rows", self.rows.stop)):
            try:
                await step()
            except Exception as exc:
                log.warning("could not write the %s at shutdown: %s", part, exc)
        if self.history.pending:  # the database is down: what it is owed is lost
            log.warning(
                "%d requests of the history could not be written: the database is unreachable",
                len(self.history.pending),
            )
        await self.claims.stop()
        if self.upstream is not None:
            await self.upstream.close()

    # -- health -------------------------------------------------------------------------------
    async def probe(self, node: NodeEntry) -> bool:
        try:
            async with self.http.get(node.url + "/", timeout=PROBE_TIMEOUT) as r:
                return r.status < 500
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def watch_forever(self) -> None:
        """Probe nodes whose heartbeats are late; two failed probes mean the node crashed.

        While a shared database is down, heartbeats that other routers receive cannot be
        seen here: nodes that go quiet are probed before they would count as offline, and
        one that answers stays online."""
        while True:
            await asyncio.sleep(self.probe_every)
            answered: dict[str, bool] = {}  # node id -> this tick's probe (one per node)
            if self.database.shared and not self.database.up:
                quiet = self.registry.quiet(2 * self.probe_every)
                answered = await self._probe_all(quiet)
                for node in quiet:
                    if answered[node.id]:
                        self.registry.alive(node)
            stale = self.registry.stale()
            answered |= await self._probe_all([n for n in stale if n.id not in answered])
            for node in stale:
                if not answered[node.id]:
                    self.registry.probe_failed(node)

    async def _probe_all(self, nodes: list[NodeEntry]) -> dict[str, bool]:
        results = await asyncio.gather(*(self.probe(n) for n in nodes))
        return {n.id: ok for n, ok in zip(nodes, results, strict=True)}

    # -- fan-out reads --------------------------------------------------------------------------
    async def gather(self, path: str) -> list[tuple[NodeEntry, list[dict[str, Any]]]]:
        """GET `path` on every online node; each node's `models` list. A node that fails (an
        error, no answer in time, too large, not a list of entries) is left out, with a log
        line saying why."""
        nodes = [n for n in self.registry.nodes.values() if self.registry.online(n)]

        async def one(node: NodeEntry) -> tuple[NodeEntry, list[dict[str, Any]]]:
            try:
                async with self.http.get(node.url + path, timeout=FANOUT_TIMEOUT) as r:
                    if r.status != 200:
                        raise ValueError(f"HTTP {r.status}")
                    raw = await read_capped(r, FANOUT_BYTES)
                return node, msgspec.json.decode(raw, type=Listing).models
            except (
                aiohttp.ClientError,
                TimeoutError,
                ValueError,
                RecursionError,
                msgspec.MsgspecError,
            ) as exc:
                log.warning("node %s left out of %s: %s", node.id[:8], path, str(exc)[:200])
                return node, []

        return list(await asyncio.gather(*(one(n) for n in nodes)))

    async def union(self, path: str) -> list[dict[str, Any]]:
        """The union of every online node's list by name, for /api/tags."""
        seen: dict[str, dict[str, Any]] = {}
        for _, items in await self.gather(path):
            for item in items:
                name = item.get("name")
                if isinstance(name, str):
                    seen.setdefault(name, item)
        return list(seen.values())
