"""`llmlb node pull`: ask the server to download, and show its progress.

On a terminal: the contract's display (one bar per file, redrawn in place). Otherwise plain
lines, a few per file. Ctrl+C only detaches: the download goes on inside the server.
"""

from __future__ import annotations

import sys
import time

import click

from llmlb import settings
from llmlb.cli import render
from llmlb.client import Client
from llmlb.errors import LlmlbError

REDRAW_SECS = 0.1


def _file_line(event: dict) -> str:
    total, done = event.get("total") or 0, event.get("completed") or 0
    label = f"{event['status']}..."
    if total and done >= total:
        return f"{label} 100% {render.bar(1.0)} {render.size(total)}"
    fraction = done / total if total else 0.0
    return f"{label} {int(fraction * 100):3d}% {render.bar(fraction)} {render.size(done)}/{render.size(total)}"


class _Display:
    """Lines keyed by status (or file digest); on a TTY they are redrawn in place."""

    def __init__(self, tty: bool):
        self.tty = tty
        self.lines: dict[str, str] = {}
        self.drawn = 0
        self.last_draw = 0.0
        self.plain_step: dict[str, int] = {}
        self.open_status: str | None = None

    def event(self, event: dict) -> None:
        status = event.get("status", "")
        if "total" in event and "digest" in event:
            key = event["digest"] or status
            self._close_status()
            self.lines[key] = _file_line(event)
            if not self.tty:
                total, done = event.get("total") or 0, event.get("completed") or 0
                step = 10 if not total else int(10 * done / total)
                if self.plain_step.get(key) != step:
                    self.plain_step[key] = step
                    click.echo(self.lines[key])
            self._draw()
            return
        self._close_status()
        self.lines[status] = status
        self.open_status = None if status == "success" else status
        if not self.tty:
            click.echo(status)
        self._draw(force=True)

    def _close_status(self) -> None:
        if self.open_status is not None:
            self.lines[self.open_status] = f"{self.open_status} ✓"
            self.open_status = None

    def _draw(self, force: bool = False) -> None:
        if not self.tty:
            return
        now = time.monotonic()
        if not force and now - self.last_draw < REDRAW_SECS:
            return
        self.last_draw = now
        out = "\x1b[1A" * self.drawn + "".join(f"\r\x1b[2K{line}\n" for line in self.lines.values())
        sys.stdout.write(out)
        sys.stdout.flush()
        self.drawn = len(self.lines)

    def finish(self) -> None:
        self._close_status()
        self._draw(force=True)


def pull_model(model: str) -> None:
    client = Client.node()
    token = settings.hf_token()
    headers = {"X-HF-Token": token} if token else None
    display = _Display(sys.stdout.isatty())
    last: dict = {}
    try:
        # No timeout: a big pull takes as long as it takes; the server keeps the stream alive.
        with client.stream(
            "POST", "/api/pull", {"model": model, "stream": True}, headers=headers
        ) as events:
            for event in events:
                last = event
                display.event(event)
        display.finish()
    except LlmlbError:
        display.finish()
        raise
    except KeyboardInterrupt:
        display.finish()
        click.echo(
            f"\nThe download continues in the background; run `llmlb node pull {model}` "
            "again to see its progress.",
            err=True,
        )
        raise click.exceptions.Exit(130) from None  # 130: interrupted, as shells report Ctrl+C
    if last.get("status") != "success":
        raise LlmlbError(
            "the server closed the connection before the pull finished; "
            f"run `llmlb node pull {model}` again to see its progress"
        )
