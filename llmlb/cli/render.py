"""Terminal rendering: relative times, tables, progress bars (sizes come from llmlb.units)."""

from __future__ import annotations

from datetime import UTC, datetime

from llmlb.units import clock, rate, size

__all__ = ["ago", "bar", "clock", "count", "duration", "rate", "size", "table"]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def ago(when: datetime | str | None, now: datetime | None = None) -> str:
    """`Less than a minute ago`, `2 hours ago`, `1 day ago`, `3 weeks ago`."""
    if when is None:
        return "-"
    if isinstance(when, str):
        when = datetime.fromisoformat(when.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    secs = max(0, int((now - when).total_seconds()))
    if secs < 60:
        return "Less than a minute ago"
    for word, unit in (
        ("year", 365 * 86400),
        ("month", 30 * 86400),
        ("week", 7 * 86400),
        ("day", 86400),
        ("hour", 3600),
        ("minute", 60),
    ):
        if secs >= unit:
            return f"{_plural(secs // unit, word)} ago"
    return "Less than a minute ago"


def duration(secs: float | None) -> str:
    """Time left, as `ps` shows it: `4 minutes`, `30 seconds`, `2 hours`."""
    if secs is None:
        return "-"
    secs = max(0, int(secs))
    if secs < 60:
        return _plural(secs, "second")
    if secs < 3600:
        return _plural(secs // 60, "minute")
    if secs < 86400:
        return _plural(secs // 3600, "hour")
    return _plural(secs // 86400, "day")


def alias(value: object, name: str | None) -> str:
    """An ALIAS cell: the alias when there is one that differs from the name, else blank
    (older servers send none)."""
    return value if isinstance(value, str) and value and value != name else ""


def table(headers: list[str], rows: list[list[str]], gap: int = 3) -> str:
    """Left-aligned columns; each column as wide as its widest cell plus a gap."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(str(cell)))
    lines = []
    for row in [headers, *rows]:
        cells = [
            str(c).ljust(widths[i] + gap) if i < len(row) - 1 else str(c) for i, c in enumerate(row)
        ]
        lines.append("".join(cells).rstrip())
    return "\n".join(lines)


def bar(fraction: float, width: int = 20) -> str:
    """`▓▓▓▓▓▓▓▓░░░░░░░░░░░░` for 40%."""
    fraction = min(1.0, max(0.0, fraction))
    full = round(fraction * width)
    return "▓" * full + "░" * (width - full)


def count(n: int) -> str:
    """`1,234`."""
    return f"{n:,}"
