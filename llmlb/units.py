"""Human units for sizes, rates and durations, shared by the CLI and the server side.

It lives at the bottom of the layers (beside settings and errors) because both the terminal
display (cli/render) and server-side messages (a pull's "not enough disk space") need it.
"""

from __future__ import annotations


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
