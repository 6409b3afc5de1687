"""Registered nodes, their health, and the router's claims on them.

Node states follow the contract: a heartbeat makes a node Running (also from Stopped or
Error: a restart), a goodbye makes it Stopped, and a Running node that stops sending
heartbeats and no longer answers probes ends in Error (it crashed). A Running node whose
heartbeats are late is shown offline and gets no traffic until they resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy.engine import Engine
from sqlmodel import select

from llmlb.balancer.policy import NodeView, Saturated, any_node, choose
from llmlb.balancer.wire import Heartbeat, url_host
from llmlb.errors import ModelNotFound, TooManyRequests, Unavailable
from llmlb.store import db
from llmlb.store.router_models import RouterNode

log = logging.getLogger("llmlb.router")
PROBE_FAILURES_FOR_ERROR = 2
NODE_STATES = ("Running", "Stopped", "Error")
# A node that fails a request (connection error, 5xx) cools down: 1 s, doubling with each
# further failure in a row, up to 30 s. Without it, a dead node that is still "online" until its
# heartbeats time out has the fewest requests in flight and would be every request's first try.
COOL_FIRST, COOL_MAX = 1.0, 30.0


@dataclass
class NodeEntry:
    id: str
    host: str
    port: int
    status: str = "Running"
    gpu_name: str | None = None
    vram_total_bytes: int = 0
    vram_used_bytes: int = 0
    gpu_temperature: float | None = None
    uptime_secs: int = 0
    models: list[dict[str, Any]] = field(default_factory=list)  # [{"name", "alias"}]
    loaded: list[str] = field(default_factory=list)
    node_in_flight: int = 0
    node_queued: int = 0
    last_seen: float = 0.0  # time.monotonic()
    last_seen_at: datetime | None = None
    registered_at: datetime | None = None
    in_flight: int = 0  # requests this router has on the node now
    last_used: float = 0.0
    requests: int = 0
    errors: int = 0
    failed_probes: int = 0
    failures: int = 0  # failed requests in a row
    cool_until: float = 0.0  # time.monotonic()

    @property
    def url(self) -> str:
        return f"http://{url_host(self.host)}:{self.port}"

    def names(self) -> dict[str, str]:
        """name and alias -> full name."""
        out: dict[str, str] = {}
        for m in self.models:
            out[m["name"]] = m["name"]
            if m.get("alias"):
                out.setdefault(m["alias"], m["name"])
        return out


def _now() -> datetime:
    return datetime.now(UTC)


def _from_row(row: RouterNode) -> Heartbeat:
    """A stored node, validated as strictly as a heartbeat from the network."""
    if row.status not in NODE_STATES:
        raise ValueError(f"unknown status {row.status!r}")
    fields = {
        "id": row.id,
        "host": row.host,
        "port": row.port,
        "models": row.models,
        "loaded_models": row.loaded_models,
        "vram_total_bytes": row.vram_total_bytes,
        "vram_used_bytes": row.vram_used_bytes,
        "gpu_name": row.gpu_name,
        "gpu_temperature": row.gpu_temperature,
        "uptime_secs": row.uptime_secs,
    }
    return msgspec.convert(fields, Heartbeat)


class Registry:
    def __init__(
        self, engine: Engine, capacity: int, timeout: float, max_queue: int, queue_timeout: float
    ):
        self.engine = engine
        self.capacity = capacity
        self.timeout = timeout
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self.nodes: dict[str, NodeEntry] = {}
        self.waiting = 0
        self._changed = asyncio.Condition()

    # -- views ----------------------------------------------------------------
    def online(self, node: NodeEntry) -> bool:
        return node.status == "Running" and time.monotonic() - node.last_seen <= self.timeout

    def label(self, node: NodeEntry) -> str:
        if self.online(node):
            return "online"
        return "error" if node.status == "Error" else "offline"

    def cooling(self, node: NodeEntry) -> bool:
        return node.cool_until > time.monotonic()

    def views(self) -> list[NodeView]:
        return [
            NodeView(
                n.id,
                self.online(n),
                frozenset(n.names().values()),
                frozenset(n.loaded),
                n.in_flight,
                self.capacity,
                n.last_used,
                max(0, n.vram_total_bytes - n.vram_used_bytes),
                self.cooling(n),
            )
            for n in self.nodes.values()
        ]

    def any_node(self, model: str, exclude: frozenset[str] = frozenset()) -> NodeEntry:
        """An online node with the model, without a claim: for cheap reads such as /api/show."""
        view = any_node(self.views(), model, exclude)
        if view is None:
            raise Unavailable(f"no online node has model '{model}'")
        return self.nodes[view.id]

    def canonical(self, model: str) -> str:
        """A model's full name from any node's names and aliases; online nodes first."""
        for node in sorted(self.nodes.values(), key=lambda n: not self.online(n)):
            full = node.names().get(model)
            if full:
                return full
        raise ModelNotFound(model)

    # -- node lifecycle ---------------------------------------------------------
    def load(self) -> None:
        """Nodes known from the last run: offline until they send a heartbeat. A row that does
        not hold a valid node (written by an older version, or edited by hand) is skipped."""
        with db.session(self.engine) as s:
            rows = s.exec(select(RouterNode)).all()
        for row in rows:
            try:
                beat = _from_row(row)
            except (msgspec.ValidationError, TypeError, ValueError) as exc:
                log.warning(
                    "skipping node %r from router.db: it is not a valid node (%s)", row.id, exc
                )
                continue
            node = self._apply(NodeEntry(id=beat.id, host=beat.host, port=beat.port), beat)
            node.status, node.last_seen = row.status, 0.0
            node.last_seen_at, node.registered_at = row.last_seen, row.registered_at
            self.nodes[node.id] = node

    def heartbeat(self, beat: Heartbeat) -> NodeEntry:
        """A validated heartbeat (wire.Heartbeat) makes its node Running."""
        node = self.nodes.get(beat.id)
        if node is None:
            node = NodeEntry(id=beat.id, host=beat.host, port=beat.port, registered_at=_now())
            self.nodes[beat.id] = node
            log.info("node %s registered from %s:%s", beat.id[:8], beat.host, beat.port)
        elif node.status != "Running" or not self.online(node):
            log.info("node %s is back (%s -> Running)", beat.id[:8], node.status)
            node.failures, node.cool_until = 0, 0.0  # restarted: a fresh start
        self._apply(node, beat)
        node.status = "Running"
        node.last_seen, node.last_seen_at, node.failed_probes = time.monotonic(), _now(), 0
        return node

    @staticmethod
    def _apply(node: NodeEntry, beat: Heartbeat) -> NodeEntry:
        node.host, node.port = beat.host, beat.port
        node.models = [{"name": m.name, "alias": m.alias} for m in beat.models]
        node.loaded = list(beat.loaded_models)
        node.node_in_flight, node.node_queued = beat.in_flight, beat.queued
        node.vram_total_bytes, node.vram_used_bytes = beat.vram_total_bytes, beat.vram_used_bytes
        node.gpu_name, node.gpu_temperature = beat.gpu_name, beat.gpu_temperature
        node.uptime_secs = beat.uptime_secs
        return node

    def stopped(self, node_id: str) -> None:
        node = self.nodes.get(node_id)
        if node is not None:
            node.status = "Stopped"
            log.info("node %s stopped", node_id[:8])

    def persist(self, node: NodeEntry) -> None:
        with db.session(self.engine) as s:
            row = s.get(RouterNode, node.id) or RouterNode(
                id=node.id, host=node.host, port=node.port
            )
            row.host, row.port, row.status = node.host, node.port, node.status
            row.gpu_name, row.gpu_temperature, row.uptime_secs = (
                node.gpu_name,
                node.gpu_temperature,
                node.uptime_secs,
            )
            row.vram_total_bytes, row.vram_used_bytes = node.vram_total_bytes, node.vram_used_bytes
            row.models, row.loaded_models = node.models, node.loaded
            row.last_seen = node.last_seen_at or _now()
            if node.registered_at:
                row.registered_at = node.registered_at
            s.add(row)
            s.commit()

    def stale(self) -> list[NodeEntry]:
        return [n for n in self.nodes.values() if n.status == "Running" and not self.online(n)]

    def probe_failed(self, node: NodeEntry) -> bool:
        """Count a failed probe; True when the node just moved to Error."""
        node.failed_probes += 1
        if node.failed_probes >= PROBE_FAILURES_FOR_ERROR and node.status == "Running":
            node.status = "Error"
            log.warning(
                "node %s at %s:%s stopped answering: Error", node.id[:8], node.host, node.port
            )
            return True
        return False

    # -- claims -------------------------------------------------------------
    async def acquire(self, model: str, exclude: frozenset[str] = frozenset()) -> NodeEntry:
        """Claim a node for `model`, waiting in a bounded queue while every candidate is full.

        The check and the wait happen under the condition's lock, and releases notify under
        it too, so a freed node can never be missed by a waiting request.
        """
        deadline = time.monotonic() + self.queue_timeout
        queued = False
        async with self._changed:
            try:
                while True:
                    saturated = False
                    try:
                        view = choose(self.views(), model, exclude)
                    except Saturated:
                        view, saturated = None, True
                    if view is None and not saturated:
                        raise Unavailable(f"no online node has model '{model}'")
                    if view is not None:
                        node = self.nodes[view.id]
                        node.in_flight += 1
                        node.last_used = time.monotonic()
                        return node
                    if not queued:
                        if self.waiting >= self.max_queue:
                            raise TooManyRequests(
                                f"every node with '{model}' is busy and the queue is full"
                            )
                        self.waiting += 1
                        queued = True
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise Unavailable(
                            f"every node with '{model}' stayed busy for {self.queue_timeout:.0f}s"
                        )
                    # the timeout also covers nodes coming back online, which notify nobody
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), timeout=min(left, 1.0))
            finally:
                if queued:
                    self.waiting -= 1

    def release(self, node: NodeEntry, ok: bool) -> None:
        """Synchronous, so that it also runs in the `finally` of a cancelled request."""
        node.in_flight = max(0, node.in_flight - 1)
        node.requests += 1
        if ok:
            node.failures, node.cool_until = 0, 0.0
        else:
            node.errors += 1
            node.failures += 1
            node.cool_until = time.monotonic() + min(
                COOL_MAX, COOL_FIRST * 2 ** min(node.failures - 1, 8)
            )
        asyncio.get_running_loop().create_task(self._wake())

    async def _wake(self) -> None:
        async with self._changed:
            self._changed.notify_all()
