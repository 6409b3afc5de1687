"""The cluster as the CLI and the dashboard see it: nodes, models and a summary, as JSON.

With a shared database the figures are the cluster's: every router's nodes (the registry read
from the database), requests counted over every router's history, and with Redis the requests
each node has from all routers.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from llmlb.balancer.admission import Admission
from llmlb.balancer.cluster import Cluster
from llmlb.balancer.nodes import NodeEntry
from llmlb.balancer.registry import Registry


def node_json(
    registry: Registry,
    n: NodeEntry,
    by_node: dict[str, tuple[int, int]] | None = None,
    counts: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """One node; `by_node` (node id -> requests, failures in the last hour, from the
    database) adds the cluster-wide counts when the database could be read, `counts` the
    requests every router has on it (the claims in Redis, while it answers)."""
    last_hour = by_node.get(n.id, (0, 0)) if by_node is not None else None
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
        "cluster_in_flight": counts.get(n.id, 0) if counts is not None else None,
        "node_in_flight": n.node_in_flight,
        "queued": n.node_queued,
        "uptime_secs": n.uptime_secs,
        "requests": n.requests,
        "errors": n.errors,
        "requests_last_hour": last_hour[0] if last_hour else None,
        "errors_last_hour": last_hour[1] if last_hour else None,
        "cooling_down": registry.cooling(n),
        "last_seen": n.last_seen_at.isoformat() if n.last_seen_at else None,
        "prefixes_held": len(n.prefixes),
        "prompt_tokens": dict(zip(SOURCES, n.prompt_tokens, strict=True)),
    }


SOURCES = ("cached", "restored", "computed")


def prompt_cache_status(reg: Registry, admission: Admission) -> dict[str, Any]:
    """The hit rates: requests prefix routing sent to the node holding their prefix, and the
    prompt tokens online nodes did not have to evaluate (their counts since they started)."""
    outcomes = admission.prefix_outcomes
    routed = sum(outcomes.values())
    tokens = [
        sum(n.prompt_tokens[i] for n in reg.nodes.values() if reg.online(n)) for i in range(3)
    ]
    total = sum(tokens)
    return {
        "routing": admission.balance is not None,
        "balance": admission.balance,
        **outcomes,
        "hit_rate": outcomes["hit"] / routed if routed else None,
        "prompt_tokens": dict(zip(SOURCES, tokens, strict=True)),
        "reused_rate": (tokens[0] + tokens[1]) / total if total else None,
        "restored_rate": tokens[1] / total if total else None,
    }


def cluster_nodes(cluster: Cluster) -> list[dict[str, Any]]:
    """Every node; reads the history (a database query): call it off the event loop."""
    reg = cluster.registry
    by_node = cluster.history.by_node()
    counts = cluster.claims.cluster_counts()
    return [node_json(reg, n, by_node, counts) for n in list(reg.nodes.values())]


def cluster_models(reg: Registry) -> list[dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for n in reg.nodes.values():
        for m in n.models:
            entry = out.setdefault(
                m["name"],
                {
                    "model": m["name"],
                    "alias": None,
                    "created": None,
                    "nodes": [],
                    "loaded_on": [],
                    "known_on": [],
                },
            )
            entry["alias"] = entry["alias"] or m.get("alias")
            entry["known_on"].append(n.id)
            if reg.online(n):
                entry["nodes"].append(n.id)
                # when it was made: the earliest an online node says (unix seconds)
                created = m.get("created")
                if created and (entry["created"] is None or created < entry["created"]):
                    entry["created"] = created
                if m["name"] in n.loaded:
                    entry["loaded_on"].append(n.id)
    for entry in out.values():
        entry["status"] = "available" if entry["nodes"] else "unavailable"
    return sorted(out.values(), key=lambda e: e["model"])


def cluster_status(cluster: Cluster) -> dict[str, Any]:
    """The cluster summary; reads the history (a database query): call it off the event loop."""
    reg = cluster.registry
    nodes = list(reg.nodes.values())
    online = [n for n in nodes if reg.online(n)]
    gpus = [n for n in online if n.vram_total_bytes]
    vram = (
        (sum(100 * n.vram_used_bytes / n.vram_total_bytes for n in gpus) / len(gpus))
        if gpus
        else None
    )
    requests = cluster.history.last_hour()  # None while the database is down
    if not online:
        health = "down"
    elif len(online) < len(nodes) or not cluster.database.up:
        health = "degraded"
    else:
        health = "healthy"
    return {
        "status": health,
        "nodes_online": len(online),
        "nodes_offline": len(nodes) - len(online),
        "models_available": sum(1 for m in cluster_models(reg) if m["status"] == "available"),
        "requests_last_hour": requests,
        "vram_percent": vram,
        "queue_depth": cluster.admission.waiting,
        "uptime_secs": int(time.time() - cluster.started_at),
        "database": cluster.database.status(),
        "claims": cluster.claims.status(),
        "history_pending": len(cluster.history.pending),
        "history_dropped": cluster.history.dropped,
        "prompt_cache": prompt_cache_status(reg, cluster.admission),
    }
