"""Human units for sizes, rates and durations, shared by the CLI and the server side, and
the moving average a download's speed is measured with.

It lives at the bottom of the layers (beside settings and errors) because both the terminal
display (cli/render) and server-side messages (a pull's "not enough disk space") need it.
"""

from __future__ import annotations

from collections import deque


def size(n: int | float | None) -> str:
    """Decimal units as ollama prints them: `397 MB`, `6.4 GB`."""
    if n is None:
        return "-"
    n = float(n)
    for unit, scale, places in (("TB", 1e12, 1), ("GB", 1e9, 1), ("MB", 1e6, 0), ("KB", 1e3, 0)):
        if n >= scale:
            return f"{n / scale:.{places}f} {unit}"
    return f"{int(n)} B"


def rate(bytes_per_sec: float | None) -> str:
    """`12 MB/s`; `-` when nothing is known yet."""
    if not bytes_per_sec or bytes_per_sec <= 0:
        return "-"
    return f"{size(bytes_per_sec)}/s"


def clock(secs: float | None) -> str:
    """Time left as a pull shows it: `45s`, `3m12s`, `1h05m`; `-` when unknown."""
    if secs is None or secs < 0 or secs != secs:  # secs != secs: NaN
        return "-"
    secs = round(secs)
    if secs < 60:
        return f"{secs}s"
    if secs < 3600:
        return f"{secs // 60}m{secs % 60:02d}s"
    return f"{secs // 3600}h{secs % 3600 // 60:02d}m"


class Throughput:
    """Bytes per second over the last `window` seconds of time: the bytes counted between the
    oldest sample of the window (the last one at or before its start) and the newest, over
    the time between them.

    A rate of bytes over time, never an average of per-sample rates: bursts would inflate that
    (the many short samples of a burst outweigh the one long sample of the wait before it).
    Sample on a timer as well as when bytes arrive, and a stall brings the rate down.
    """

    def __init__(self, window: float = 10.0, settle: float = 1.0):
        self.window = window
        self.settle = settle  # no rate from less time than this: one burst is not a speed
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, total: int) -> None:
        """`total` bytes counted so far, at time `now` (seconds, any monotonic clock)."""
        if self.samples and (total < self.samples[-1][1] or now < self.samples[-1][0]):
            self.samples.clear()  # counted afresh (a file started over): measure afresh
        self.samples.append((now, total))
        while len(self.samples) > 2 and self.samples[1][0] <= now - self.window:
            self.samples.popleft()

    def rate(self) -> float:
        """Bytes per second; 0.0 until `settle` seconds were seen."""
        if len(self.samples) < 2:
            return 0.0
        (t0, d0), (t1, d1) = self.samples[0], self.samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 - t0 >= self.settle else 0.0
