"""`ps` and `stop`: what the node has loaded, and unloading it."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from llmlb.cli import render
from llmlb.client import Client


def _until(m: dict) -> str:
    if m.get("stopping"):
        return "Stopping..."
    if not m.get("expires_at"):
        return "Forever"
    when = datetime.fromisoformat(m["expires_at"].replace("Z", "+00:00"))
    left = (when - datetime.now(UTC)).total_seconds()
    return "Stopping..." if left <= 0 else render.duration(left)


def _gpu_columns(gpu: dict) -> tuple[str, str]:
    total, used = gpu.get("vram_total_bytes") or 0, gpu.get("vram_used_bytes") or 0
    vram = f"{100 * used / total:.0f}%" if total else "-"
    temp = gpu.get("gpu_temperature")
    return vram, (f"{temp:.0f}°C" if temp is not None else "-")


def list_running() -> None:
    data = Client.node().get("/api/ps")
    vram, temp = _gpu_columns(data.get("gpu") or {})
    rows = []
    for m in data["models"]:
        name = m["name"] + (" (embed)" if m.get("kind") == "embed" else "")
        rows.append(
            [
                name,
                (m.get("digest") or "-")[:12] or "-",
                render.size(m["size"]),
                m.get("processor") or "100% CPU",
                _until(m),
                vram,
                temp,
            ]
        )
    held = data.get("held_back") or []
    for h in held:
        when = datetime.fromisoformat(h["until"].replace("Z", "+00:00"))
        left = max(0.0, (when - datetime.now(UTC)).total_seconds())
        rows.append([h["name"], "-", "-", "-", f"Held back ({render.duration(left)})", vram, temp])
    click.echo(
        render.table(["NAME", "ID", "SIZE", "PROCESSOR", "UNTIL", "VRAM", "TEMP"], rows, gap=2)
    )
    for h in held:  # why, where a person reads it (the table stays one row per model)
        click.echo(h["reason"], err=True)


def stop_model(model: str) -> None:
    Client.node().post("/api/stop", {"model": model})
