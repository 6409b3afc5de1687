"""Supervised background loops: a loop that fails is logged with its traceback and restarted.

A background task that dies silently is worse than a crash: the server keeps answering while
part of it (unloading idle models, watching nodes, writing history) has stopped. Every
long-running loop of both servers runs under `supervise`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("llmlb.tasks")

FIRST_DELAY, MAX_DELAY = 1.0, 30.0
HEALTHY_SECS = 60.0  # a loop that ran this long before failing starts again from the first delay


async def supervise(
    name: str,
    loop: Callable[[], Awaitable[None]],
    first_delay: float = FIRST_DELAY,
    max_delay: float = MAX_DELAY,
) -> None:
    """Run `loop()` until it returns or the task is cancelled; restart it after a failure,
    waiting `first_delay`, doubling with each failure in a row up to `max_delay`."""
    delay = first_delay
    while True:
        started = time.monotonic()
        try:
            await loop()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            if time.monotonic() - started >= HEALTHY_SECS:
                delay = first_delay
            log.exception("background task %s failed; restarting it in %.1f s", name, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay)


def start(name: str, loop: Callable[[], Awaitable[None]], **kwargs: float) -> asyncio.Task:
    """`supervise(name, loop)` as a named task; keep the task to cancel it at shutdown."""
    return asyncio.create_task(supervise(name, loop, **kwargs), name=name)


async def stop(*tasks: asyncio.Task | None) -> None:
    """Cancel tasks and wait until they have ended."""
    live = [t for t in tasks if t is not None and not t.done()]
    for task in live:
        task.cancel()
    if live:
        await asyncio.gather(*live, return_exceptions=True)
