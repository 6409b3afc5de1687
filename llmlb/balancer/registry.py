"""The node table: registered nodes and their health.

Node states follow the contract: a heartbeat makes a node Running (also from Stopped or
Error: a restart), a goodbye makes it Stopped, and a Running node that stops sending
heartbeats and no longer answers probes ends in Error (it crashed). A Running node whose
heartbeats are late is shown offline and gets no traffic until they resume.

The table in memory is what requests use (admission: balancer/admission.py); the database
holds it for restarts and, when several routers share one database, for each other: what is
owed to it is kept in `writes` (balancer/write_back.py), written and read back by the
node-rows loop (balancer/database.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec

from llmlb import prefix
from llmlb.balancer import affinity
from llmlb.balancer.nodes import NodeEntry, heartbeat_of, now_utc
from llmlb.balancer.policy import NodeView, any_node
from llmlb.balancer.wire import Heartbeat
from llmlb.balancer.write_back import WriteBack
from llmlb.errors import ModelNotFound, Unavailable
from llmlb.prefix import Point
from llmlb.store.router_models import RouterNode

log = logging.getLogger("llmlb.router")
PROBE_FAILURES_FOR_ERROR = 2


class Registry:
    def __init__(self, capacity: int, timeout: float):
        """`capacity`: requests a node takes at once; `timeout`: how late its heartbeats may
        be before it counts as offline."""
        self.capacity = capacity
        self.timeout = timeout
        self.nodes: dict[str, NodeEntry] = {}
        self.writes = WriteBack()
        self._skipped: set[tuple[str, Any]] = set()  # bad rows already reported

    # -- views ----------------------------------------------------------------
    def online(self, node: NodeEntry) -> bool:
        return node.status == "Running" and time.monotonic() - node.last_seen <= self.timeout

    def label(self, node: NodeEntry) -> str:
        if self.online(node):
            return "online"
        return "error" if node.status == "Error" else "offline"

    def cooling(self, node: NodeEntry) -> bool:
        return node.cool_until > time.monotonic()

    def views(
        self, counts: Mapping[str, int] | None = None, chain: list[Point] | None = None
    ) -> list[NodeView]:
        """The nodes as the policy sees them; `counts`: claims across every router, when
        known (a node's load is the larger of those and this router's own)."""
        now = time.monotonic()
        return [
            NodeView(
                n.id,
                self.online(n),
                frozenset(n.names().values()),
                frozenset(n.loaded),
                max(n.in_flight, counts.get(n.id, 0)) if counts is not None else n.in_flight,
                self.capacity,
                n.last_used,
                max(0, n.vram_total_bytes - n.vram_used_bytes),
                self.cooling(n),
                affinity.matched(n, chain, now) if chain else 0,
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
    def load(self, rows: list[RouterNode]) -> None:
        """Nodes known from the last run: offline until they send a heartbeat."""
        for row in rows:
            node = self._from_row(row)
            if node is not None:
                node.last_seen = 0.0

    def apply_rows(self, rows: list[RouterNode], db_now: datetime, read_at: float) -> None:
        """Rows read from the database that routers share (at `read_at`, monotonic): take
        those another router changed. A node this router has changed since is kept as it is
        here: its own write is on the way, or landed after the read."""
        now = time.monotonic()
        for row in rows:
            node = self.nodes.get(row.id)
            if node is not None and (
                node.updated_at == row.updated_at
                or node.id in self.writes.owed
                or node.written_at >= read_at
            ):
                continue
            was = node.status if node is not None else None
            node = self._from_row(row)
            if node is None:
                continue
            node.last_seen = now - max(0.0, (db_now - row.last_seen).total_seconds())
            if self.online(node):
                node.failed_probes = 0  # another router hears it: our failed probes are moot
            if was is None:
                log.info(
                    "node %s at %s:%s known from the shared database",
                    node.id[:8],
                    node.host,
                    node.port,
                )
            elif node.status == "Running" and was != "Running":
                node.failures, node.cool_until = 0, 0.0  # restarted: a fresh start
            elif node.status == "Error" and was == "Running":
                log.warning("node %s is in Error (another router's probes)", node.id[:8])

    def _from_row(self, row: RouterNode) -> NodeEntry | None:
        """A stored node into the registry; a row that does not hold a valid node (written by
        an older version, or edited by hand) is skipped, and said so once."""
        try:
            beat = heartbeat_of(row)
        except (msgspec.ValidationError, TypeError, ValueError) as exc:
            if (row.id, row.updated_at) not in self._skipped:
                self._skipped.add((row.id, row.updated_at))
                log.warning(
                    "skipping node %r from the router's database: it is not a valid node (%s)",
                    row.id,
                    exc,
                )
            return None
        node = self.nodes.get(beat.id) or NodeEntry(id=beat.id, host=beat.host, port=beat.port)
        self._apply(node, beat)
        node.status = row.status
        node.last_seen_at, node.registered_at = row.last_seen, row.registered_at
        node.updated_at = row.updated_at
        self.nodes[node.id] = node
        return node

    def heartbeat(self, beat: Heartbeat) -> NodeEntry:
        """A validated heartbeat (wire.Heartbeat) makes its node Running."""
        node = self.nodes.get(beat.id)
        if node is None:
            node = NodeEntry(id=beat.id, host=beat.host, port=beat.port, registered_at=now_utc())
            self.nodes[beat.id] = node
            log.info("node %s registered from %s:%s", beat.id[:8], beat.host, beat.port)
        elif node.status != "Running" or not self.online(node):
            log.info("node %s is back (%s -> Running)", beat.id[:8], node.status)
            node.failures, node.cool_until = 0, 0.0  # restarted: a fresh start
        self._apply(node, beat)
        node.status = "Running"
        node.last_seen, node.last_seen_at, node.failed_probes = time.monotonic(), now_utc(), 0
        self.writes.beat(node.id)
        node.prefixes = frozenset(prefix.unpack(beat.prefixes))
        node.prompt_tokens = (
            beat.prompt_tokens_cached,
            beat.prompt_tokens_restored,
            beat.prompt_tokens_computed,
        )
        return node

    def alive(self, node: NodeEntry) -> None:
        """The node answered a probe while its heartbeats cannot be known (the shared database
        is down, and they may go to another router): keep it online."""
        node.last_seen, node.failed_probes = time.monotonic(), 0

    @staticmethod
    def _apply(node: NodeEntry, beat: Heartbeat) -> NodeEntry:
        node.host, node.port = beat.host, beat.port
        node.models = [
            {"name": m.name, "alias": m.alias, "created": m.created} for m in beat.models
        ]
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
            self.writes.state(node_id)

    def quiet(self, secs: float) -> list[NodeEntry]:
        """Running nodes not heard from for `secs`, whether or not yet offline."""
        since = time.monotonic() - secs
        return [n for n in self.nodes.values() if n.status == "Running" and n.last_seen < since]

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
            self.writes.error(node.id)
            return True
        return False
