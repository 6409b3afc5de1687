"""Models whose runners keep dying are held back for a while, not restarted for ever.

A runner that dies costs its requests; the next request starts a fresh one. A model whose
runner died CRASH_LIMIT times within CRASH_WINDOW is held back: requests get a 503 with the
reason until the window has passed, the model is stopped by hand (`llmlb node stop`), or its
file changes (a new pull). Pure bookkeeping, tested without processes.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

CRASH_LIMIT = 3
CRASH_WINDOW = 600.0  # seconds


@dataclass
class Record:
    fingerprint: str  # which file the crashes were of: a new pull starts afresh
    times: deque[float] = field(default_factory=lambda: deque(maxlen=CRASH_LIMIT))
    last: str = ""  # the last crash's words


@dataclass(frozen=True)
class HeldBack:
    name: str
    why: str
    until: float  # time.time()

    @property
    def reason(self) -> str:
        return f"model '{self.name}' is held back: {self.why}"


class Crashes:
    def __init__(self, clock=time.time):
        self.clock = clock
        self._records: dict[str, Record] = {}

    def record(self, name: str, fingerprint: str, words: str) -> HeldBack | None:
        """A runner of `name` died saying `words`; the hold it now earns, if any."""
        rec = self._records.get(name)
        if rec is None or rec.fingerprint != fingerprint:
            rec = self._records[name] = Record(fingerprint)
        rec.times.append(self.clock())
        rec.last = words
        return self.held(name, fingerprint)

    def held(self, name: str, fingerprint: str) -> HeldBack | None:
        rec = self._records.get(name)
        if rec is None or rec.fingerprint != fingerprint or len(rec.times) < CRASH_LIMIT:
            return None
        until = rec.times[0] + CRASH_WINDOW  # the oldest of the last CRASH_LIMIT crashes
        if until <= self.clock():
            return None
        why = (
            f"its runner stopped unexpectedly {CRASH_LIMIT} times in {CRASH_WINDOW / 60:g} "
            f"minutes (last: {rec.last}); `llmlb node stop {name}` or a new pull lets it run again"
        )
        return HeldBack(name, why, until)

    def forget(self, name: str) -> bool:
        return self._records.pop(name, None) is not None

    def all_held(self) -> list[HeldBack]:
        out = []
        for name, rec in self._records.items():
            hold = self.held(name, rec.fingerprint)
            if hold is not None:
                out.append(hold)
        return out


def fingerprint(model) -> str:
    """What identifies a model's file across re-registrations: a new pull changes it."""
    return f"{model.path}|{model.size_bytes}|{model.digest}|{model.created_at}"
