"""`router nodes|models|status`: the cluster as the load balancer sees it."""

from __future__ import annotations

import click

from llmlb import settings
from llmlb.cli import render
from llmlb.client import Client


def _get(path: str):
    key = settings.api_key()
    headers = {"Authorization": f"Bearer {key}"} if key else None
    return Client.router().get(path, headers=headers)


def show_nodes() -> None:
    nodes = _get("/admin/cluster/nodes")["nodes"]
    rows = [
        [n["id"][:8], n["address"], n["status"], n["gpu"], str(len(n["models"]))] for n in nodes
    ]
    click.echo(render.table(["ID", "HOST", "STATUS", "GPU", "MODELS"], rows))


def show_models() -> None:
    models = _get("/admin/cluster/models")["models"]
    rows = [
        [m["model"], str(len(m["nodes"])), m["status"], render.alias(m.get("alias"), m["model"])]
        for m in models
    ]
    click.echo(render.table(["MODEL", "NODES", "STATUS", "ALIAS"], rows))


def show_status() -> None:
    s = _get("/admin/cluster/status")
    vram = f"{s['vram_percent']:.0f}% average utilization" if s["vram_percent"] is not None else "-"
    requests = s["requests_last_hour"]
    lines = [
        f"Cluster Status: {s['status']}",
        "",
        f"Nodes:      {s['nodes_online']} online / {s['nodes_offline']} offline",
        f"Models:     {s['models_available']} available",
        f"Requests:   {render.count(requests) + ' (last hour)' if requests is not None else '-'}",
        f"VRAM:       {vram}",
    ]
    click.echo("\n".join(lines + _prompt_cache(s) + _shared_state(s)))


def _percent(rate: float) -> str:
    return f"{100 * rate:.0f}%"


def _prompt_cache(s: dict) -> list[str]:
    """The hit rates of prefix routing and of the nodes' prompt caches (absent from older
    routers' answers)."""
    cache = s.get("prompt_cache")
    if not isinstance(cache, dict):
        return []
    lines = []
    if cache.get("routing"):
        routed = sum(cache.get(k, 0) for k in ("hit", "balanced", "miss"))
        rate = cache.get("hit_rate")
        lines.append(
            f"Prefixes:   {_percent(rate)} of {render.count(routed)} requests sent to the node "
            "holding their prefix"
            if rate is not None
            else "Prefixes:   no request with a prefix yet"
        )
    else:
        lines.append("Prefixes:   prefix routing is off (LLMLB_PREFIX_ROUTING=0)")
    reused, restored = cache.get("reused_rate"), cache.get("restored_rate")
    if reused is not None:
        lines.append(
            f"Prompt:     {_percent(reused)} of prompt tokens reused ({_percent(restored or 0)} "
            "restored from disk)"
        )
    return lines


def _shared_state(s: dict) -> list[str]:
    """The database and Redis lines: shown for a cluster, or when something is wrong (fields
    that older routers do not send are simply absent)."""
    lines = []
    db = s.get("database")
    if isinstance(db, dict) and (db.get("shared") or db.get("status") != "ok"):
        if db.get("status") == "ok":
            lines.append(f"Database:   {db.get('engine')}, reachable")
        else:
            since = render.ago(db.get("down_since")).lower()
            lines.append(
                f"Database:   {db.get('engine')}, UNREACHABLE (down since {since}: "
                f"{db.get('error')})"
            )
            lines.append(
                f"History:    {render.count(s.get('history_pending', 0))} requests held in "
                f"memory until it is back ({render.count(s.get('history_dropped', 0))} dropped)"
            )
    claims = s.get("claims")
    if isinstance(claims, dict) and claims.get("store") == "redis":
        if claims.get("status") == "ok":
            lines.append("In flight:  shared in Redis, the per-node limit holds across routers")
        else:
            lines.append("In flight:  Redis UNREACHABLE: each router counts alone meanwhile")
    return lines
