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
    rows = [[m["model"], str(len(m["nodes"])), m["status"], _alias(m)] for m in models]
    click.echo(render.table(["MODEL", "NODES", "STATUS", "ALIAS"], rows))


def _alias(m: dict) -> str:
    """The alias nodes report for the model (a field older routers do not send)."""
    alias = m.get("alias")
    return alias if isinstance(alias, str) and alias != m["model"] else ""


def show_status() -> None:
    s = _get("/admin/cluster/status")
    vram = f"{s['vram_percent']:.0f}% average utilization" if s["vram_percent"] is not None else "-"
    click.echo(
        f"Cluster Status: {s['status']}\n\n"
        f"Nodes:      {s['nodes_online']} online / {s['nodes_offline']} offline\n"
        f"Models:     {s['models_available']} available\n"
        f"Requests:   {render.count(s['requests_last_hour'])} (last hour)\n"
        f"VRAM:       {vram}"
    )
