"""What the router owes its database about nodes: the rows to write, taken by the node-rows
loop (balancer/database.py) and given back when a write fails.

A heartbeat owes the node's row with its last-seen time ("beat"), a state change owes the
row ("state"), a node that stopped answering owes its Error mark ("error"); a newer debt
replaces an older one, except that a pending beat already writes the state.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from llmlb.balancer.nodes import NodeEntry, now_utc
from llmlb.store.router_state import NodeWrite


class WriteBack:
    def __init__(self) -> None:
        self.owed: dict[str, str] = {}  # node id -> "beat", "state" or "error"

    def beat(self, node_id: str) -> None:
        self.owed[node_id] = "beat"

    def state(self, node_id: str) -> None:
        if self.owed.get(node_id) != "beat":  # a pending beat writes the status too
            self.owed[node_id] = "state"

    def error(self, node_id: str) -> None:
        self.owed.setdefault(node_id, "error")

    def take(
        self, nodes: Mapping[str, NodeEntry]
    ) -> tuple[list[NodeWrite], list[str], dict[str, str]]:
        """The rows to write now (heartbeats and states), the nodes to mark Error, and what
        was taken (to give back with `untake` should the write fail)."""
        taken, self.owed = self.owed, {}
        rows, errors = [], []
        for node_id, kind in taken.items():
            node = nodes.get(node_id)
            if node is None:
                continue
            if kind == "error":
                errors.append(node_id)
                continue
            rows.append(
                NodeWrite(
                    id=node.id,
                    fields={
                        "host": node.host,
                        "port": node.port,
                        "status": node.status,
                        "gpu_name": node.gpu_name,
                        "vram_total_bytes": node.vram_total_bytes,
                        "vram_used_bytes": node.vram_used_bytes,
                        "gpu_temperature": node.gpu_temperature,
                        "uptime_secs": node.uptime_secs,
                        "models": node.models,
                        "loaded_models": node.loaded,
                    },
                    registered_at=node.registered_at or now_utc(),
                    heartbeat=kind == "beat",
                )
            )
        return rows, errors, taken

    def untake(self, taken: dict[str, str]) -> None:
        """Writes that failed: owed again, unless something newer is owed for the node."""
        for node_id, kind in taken.items():
            self.owed.setdefault(node_id, kind)

    def written(self, nodes: Mapping[str, NodeEntry], taken: dict[str, str]) -> None:
        now = time.monotonic()
        for node_id in taken:
            node = nodes.get(node_id)
            if node is not None:
                node.written_at = now
