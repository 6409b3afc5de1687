"""`llmlb node pull`: ask the server to download, and show its progress.

On a terminal: one line per step, redrawn in place: each file by its name with a bar, speed
and time left; a step still running after half a second gets a spinner, so the display never
sits still. The speed is the bytes of the last seconds over their time (units.Throughput),
sampled at every redraw too, so a stalled download shows it falling, not its last value.
Otherwise plain lines, a few per file. Ctrl+C only detaches: the download goes on inside the
server.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field

import click

from llmlb import settings
from llmlb.cli import render
from llmlb.client import Client
from llmlb.errors import LlmlbError
from llmlb.units import Throughput

REDRAW_SECS = 0.1
SPIN_AFTER = 0.5  # a step that takes longer than this shows a spinner
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
NAME_WIDTH = 48


def _short(name: str) -> str:
    return name if len(name) <= NAME_WIDTH else "…" + name[-(NAME_WIDTH - 1) :]


@dataclass
class _File:
    name: str
    total: int = 0
    done: int = 0
    meter: Throughput = field(default_factory=Throughput)

    def update(self, done: int, total: int, now: float) -> None:
        self.done, self.total = done, total
        self.meter.add(now, done)

    def tick(self, now: float) -> None:
        """No news is news too: time passes with no more bytes, and the speed falls."""
        if not self.finished:
            self.meter.add(now, self.done)

    @property
    def finished(self) -> bool:
        return bool(self.total) and self.done >= self.total

    @property
    def speed(self) -> float:
        return self.meter.rate()

    def line(self, frame: str = "") -> str:
        label = f"pulling {_short(self.name)}..."
        if self.finished:
            return f"{label} 100% {render.bar(1.0)} {render.size(self.total)}"
        speed = self.speed
        rate = f"  {render.rate(speed)}" if speed > 0 else ""
        if not self.total:  # size unknown until the download ends
            return f"{label} {frame or ' '} {render.size(self.done)}{rate}"
        fraction = self.done / self.total
        eta = f"  {render.clock((self.total - self.done) / speed)}" if speed > 0 else ""
        return (
            f"{label} {int(fraction * 100):3d}% {render.bar(fraction)} "
            f"{render.size(self.done)}/{render.size(self.total)}{rate}{eta}"
        )


class Display:
    """Lines keyed by step (or file); on a TTY they are redrawn in place by a ticker thread."""

    def __init__(self, tty: bool, out=None):
        self.tty = tty
        self.out = out or sys.stdout
        self.lines: dict[str, str] = {}
        self.files: dict[str, _File] = {}
        self.drawn = 0
        self.last_draw = 0.0
        self.plain_step: dict[str, int] = {}
        self.open_status: str | None = None
        self.open_since = 0.0
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.ticker: threading.Thread | None = None

    # --- input ------------------------------------------------------------------------------
    def start(self, first_step: str) -> None:
        """Show `first_step` at once (the server answers only after it resolved the repo)."""
        if not self.tty:
            return
        with self.lock:
            self._open(first_step)
            self._draw(force=True)
        self.ticker = threading.Thread(target=self._tick, name="pull-display", daemon=True)
        self.ticker.start()

    def event(self, event: dict) -> None:
        with self.lock:
            self._event(event)

    def _event(self, event: dict) -> None:
        status = event.get("status", "")
        if "total" in event and "digest" in event:
            name = event.get("file") or status.removeprefix("pulling ")
            key = f"file:{event.get('digest') or name}"
            self._close_status()
            f = self.files.setdefault(key, _File(name))
            f.update(event.get("completed") or 0, event.get("total") or 0, time.monotonic())
            self.lines[key] = f.line()
            if not self.tty:
                step = 10 if not f.total else int(10 * f.done / f.total)
                if self.plain_step.get(key) != step:
                    self.plain_step[key] = step
                    click.echo(self.lines[key], file=self.out)
            self._draw()
            return
        if status == self.open_status:  # already shown (the first step, before the server spoke)
            return
        self._close_status()
        if status == "success":
            self.lines[status] = status
        else:
            self._open(status)
        if not self.tty:
            click.echo(status, file=self.out)
        self._draw(force=True)

    def finish(self) -> None:
        self._stop_ticker()
        with self.lock:
            self._close_status()
            self._draw(force=True)

    def abandon(self) -> None:
        """An error: stop spinning and leave the open step without a check mark."""
        self._stop_ticker()
        with self.lock:
            if self.open_status is not None:
                self.lines[self.open_status] = self.open_status
                self.open_status = None
            self._draw(force=True)

    def _stop_ticker(self) -> None:
        self.stopped.set()
        if self.ticker is not None:
            self.ticker.join()

    # --- lines -----------------------------------------------------------------------------
    def _open(self, status: str) -> None:
        self.lines[status] = status
        self.open_status, self.open_since = status, time.monotonic()

    def _close_status(self) -> None:
        if self.open_status is not None:
            self.lines[self.open_status] = f"{self.open_status} ✓"
            self.open_status = None

    def _tick(self) -> None:
        while not self.stopped.wait(REDRAW_SECS):
            with self.lock:
                self.spin(time.monotonic())

    def spin(self, now: float) -> None:
        """Advance the spinners (of a step running longer than SPIN_AFTER, and of files whose
        size is unknown) and redraw; the ticker calls it ten times a second."""
        frame = SPINNER[int(now / REDRAW_SECS) % len(SPINNER)]
        if self.open_status is not None and now - self.open_since >= SPIN_AFTER:
            self.lines[self.open_status] = f"{self.open_status} {frame}"
        for key, f in self.files.items():
            if not f.finished:  # speed and time left move on between the server's reports
                f.tick(now)
                self.lines[key] = f.line(frame if not f.total and f.done else "")
        self._draw(force=True)

    def _draw(self, force: bool = False) -> None:
        if not self.tty:
            return
        now = time.monotonic()
        if not force and now - self.last_draw < REDRAW_SECS:
            return
        self.last_draw = now
        out = "\x1b[1A" * self.drawn + "".join(f"\r\x1b[2K{line}\n" for line in self.lines.values())
        self.out.write(out)
        self.out.flush()
        self.drawn = len(self.lines)


def pull_headers() -> dict[str, str]:
    """HF_TOKEN and HF_ENDPOINT of this shell go with the request; the server keeps them in
    memory for this pull only (and never sends its own token to an endpoint named here)."""
    headers = {}
    if token := settings.hf_token():
        headers["X-HF-Token"] = token
    if endpoint := settings.hf_endpoint_override():
        headers["X-HF-Endpoint"] = endpoint
    return headers


def pull_model(model: str) -> None:
    client = Client.node()
    display = Display(sys.stdout.isatty())
    last: dict = {}
    display.start("pulling manifest")
    try:
        # No timeout: a big pull takes as long as it takes; the server keeps the stream alive.
        with client.stream(
            "POST", "/api/pull", {"model": model, "stream": True}, headers=pull_headers()
        ) as events:
            for event in events:
                last = event
                display.event(event)
        display.finish()
    except LlmlbError:
        display.abandon()
        raise
    except KeyboardInterrupt:
        display.abandon()
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
