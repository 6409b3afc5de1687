"""The cluster as the CLI and the dashboard see it: nodes, models and a summary, as JSON."""

from __future__ import annotations

import time
from typing import Any

from llmlb.balancer.history import History
from llmlb.balancer.registry import NodeEntry, Registry


def node_json(registry: Registry, n: NodeEntry) -> dict[str, Any]:
    return {
        "id": n.id,
        "host": n.host,
        "port": n.port,
        "address": f"{n.host}:{n.port}",
        "status": registry.label(n),
        "state": n.status,
        "gpu": n.gpu_name or "CPU",
        "vram_total_bytes": n.vram_total_bytes,
        "vram_used_bytes": n.vram_used_bytes,
        "gpu_temperature": n.gpu_temperature,
        "models": [m["name"] for m in n.models],
        "loaded_models": n.loaded,
        "in_flight": n.in_flight,
        "node_in_flight": n.node_in_flight,
        "queued": n.node_queued,
        "uptime_secs": n.uptime_secs,
        "requests": n.requests,
        "errors": n.errors,
        "cooling_down": registry.cooling(n),
        "last_seen": n.last_seen_at.isoformat() if n.last_seen_at else None,
    }


def cluster_models(reg: Registry) -> list[dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for n in reg.nodes.values():
        for m in n.models:
            entry = out.setdefault(
                m["name"],
                {"model": m["name"], "alias": None, "nodes": [], "loaded_on": [], "known_on": []},
            )
            entry["alias"] = entry["alias"] or m.get("alias")
            entry["known_on"].append(n.id)
            if reg.online(n):
                entry["nodes"].append(n.id)
                if m["name"] in n.loaded:
                    entry["loaded_on"].append(n.id)
    for entry in out.values():
        entry["status"] = "available" if entry["nodes"] else "unavailable"
    return sorted(out.values(), key=lambda e: e["model"])


def cluster_status(reg: Registry, history: History, started_at: float) -> dict[str, Any]:
    """The cluster summary; reads the history (a database query): call it off the event loop."""
    nodes = list(reg.nodes.values())
    online = [n for n in nodes if reg.online(n)]
    gpus = [n for n in online if n.vram_total_bytes]
    vram = (
        (sum(100 * n.vram_used_bytes / n.vram_total_bytes for n in gpus) / len(gpus))
        if gpus
        else None
    )
    health = (
        "healthy" if nodes and len(online) == len(nodes) else ("down" if not online else "degraded")
    )
    return {
        "status": health,
        "nodes_online": len(online),
        "nodes_offline": len(nodes) - len(online),
        "models_available": sum(1 for m in cluster_models(reg) if m["status"] == "available"),
        "requests_last_hour": history.last_hour(),
        "vram_percent": vram,
        "queue_depth": reg.waiting,
        "uptime_secs": int(time.time() - started_at),
    }
