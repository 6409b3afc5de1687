"""A time limit for pure-Python work that may not end (a chat template is a program).

Python cannot stop another thread from outside, except by asking the interpreter to raise an
exception in it at its next bytecode (PyThreadState_SetAsyncExc). One watcher thread does that
to whichever thread holds a limit past its time. Native code is not interrupted this way; a
runner stuck there is ended by the node (engine/runner.py watches for silence).
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

ALIVE_EVERY = 1.0


class Overtime(BaseException):
    """Raised inside work that ran past its limit. A BaseException, so that the work's own
    `except Exception` (a template probe's, say) cannot swallow it."""


def _raise_in(thread_id: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None
    )


class Deadlines:
    """Limits for work on any number of threads, one limit per thread at a time. While some
    work is within its limit, `alive()` is called every ALIVE_EVERY seconds: that work is
    progress, bounded by its limit (past it, nothing vouches for it any more)."""

    def __init__(self, alive: Callable[[], None] | None = None) -> None:
        self._alive = alive
        self._cond = threading.Condition()
        self._armed: dict[int, float] = {}  # thread id -> monotonic deadline
        self._fired: set[int] = set()
        self._watcher = threading.Thread(target=self._watch, name="deadlines", daemon=True)
        self._watcher.start()

    @contextmanager
    def limit(self, secs: float) -> Iterator[None]:
        """Raise Overtime in this thread if the block runs longer than `secs`."""
        me = threading.get_ident()
        with self._cond:
            self._armed[me] = time.monotonic() + secs
            self._fired.discard(me)
            self._cond.notify()
        try:
            yield
        finally:
            with self._cond:
                del self._armed[me]
                if me in self._fired:  # raised, or still pending: never let it out of here
                    self._fired.discard(me)
                    _raise_in(me, None)

    def _watch(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                due = [t for t, at in self._armed.items() if at <= now and t not in self._fired]
                for thread_id in due:
                    self._fired.add(thread_id)
                    _raise_in(thread_id, Overtime)
                waiting = [at for t, at in self._armed.items() if t not in self._fired]
                if waiting and self._alive is not None:
                    self._alive()
                    self._cond.wait(min(ALIVE_EVERY, max(0.0, min(waiting) - now)))
                else:
                    self._cond.wait(max(0.0, min(waiting) - now) if waiting else None)
