"""A registered node as the router keeps it in memory, a request's hold on one, and the check
that a stored row still holds a valid node (rows come from a database other routers write to)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from llmlb.balancer.wire import Heartbeat, url_host
from llmlb.store.router_models import RouterNode

NODE_STATES = ("Running", "Stopped", "Error")


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
    models: list[dict[str, Any]] = field(default_factory=list)  # [{"name", "alias", "created"}]
    loaded: list[str] = field(default_factory=list)
    node_in_flight: int = 0
    node_queued: int = 0
    last_seen: float = 0.0  # time.monotonic()
    last_seen_at: datetime | None = None
    registered_at: datetime | None = None
    updated_at: datetime | None = None  # of its database row, as this router last read it
    written_at: float = 0.0  # time.monotonic() when this router last wrote its row
    in_flight: int = 0  # requests this router has on the node now
    last_used: float = 0.0
    requests: int = 0
    errors: int = 0
    failed_probes: int = 0
    failures: int = 0  # failed requests in a row
    cool_until: float = 0.0  # time.monotonic()
    prefixes: frozenset[int] = frozenset()  # what its prompt cache holds (its heartbeat)
    # prefixes of requests this router sent it, until its heartbeats can say: hash -> expiry
    recent: dict[int, float] = field(default_factory=dict)
    prompt_tokens: tuple[int, int, int] = (0, 0, 0)  # cached, restored, computed (heartbeat)

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


@dataclass(slots=True)
class Held:
    """One request's claim on a node: this router's counter, and its claim in Redis if any."""

    node: NodeEntry
    claim_id: str | None = None
    released: bool = False


def now_utc() -> datetime:
    return datetime.now(UTC)


def heartbeat_of(row: RouterNode) -> Heartbeat:
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
