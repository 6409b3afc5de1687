"""The board: how each pull of this node is doing now, in memory, and a feed of it.

The pull job (on huey's consumer threads) publishes a `Progress` at every step; `status(name)`
reads the latest, and the `/api/pull` stream subscribes to a name's feed on its event loop.
A failure is published before the job tries to write it into the row, so it is known even
when a full disk refuses that write.

A feed holds only the latest progress: a slow subscriber skips states it had no time for and
never grows a queue. The hand-off to the subscriber's loop is one `call_soon_threadsafe`
at a time, whatever the number of publishes meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from enum import StrEnum

from llmlb.jobs import pull_state
from llmlb.sources.hf_refs import Plan, PlanFile


class Stage(StrEnum):
    QUEUED = "queued"  # its row is written and its task enqueued
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    WRITING = "writing"  # moving into models/ and registering
    DONE = "done"
    FAILED = "failed"
    STOPPED = "stopped"  # the job ended unfinished (the server stopping): it resumes at start
    CANCELLED = "cancelled"

    @property
    def under_way(self) -> bool:
        """A job of this process is queued or running for it: a new pull attaches to it."""
        return self in UNDER_WAY


UNDER_WAY = frozenset({Stage.QUEUED, Stage.DOWNLOADING, Stage.VERIFYING, Stage.WRITING})


@dataclass(frozen=True)
class FileProgress:
    file: PlanFile
    done: int  # bytes on disk
    size: int | None  # listed, or measured once a file of unknown size finished


@dataclass(frozen=True)
class Progress:
    name: str
    stage: Stage
    plan: Plan
    files: tuple[FileProgress, ...]  # in the plan's order
    error: str | None = None  # why it failed

    @classmethod
    def of(cls, plan: Plan, state: dict, stage: Stage, error: str | None = None) -> Progress:
        """The progress a pull's saved state (pull_state.py) stands for."""
        files = tuple(
            FileProgress(
                f,
                pull_state.file_done(state, f.path, f.size),
                pull_state.file_size(state, f.path, f.size),
            )
            for f in plan.files
        )
        return cls(plan.name, stage, plan, files, error)

    def at(self, stage: Stage, error: str | None = None) -> Progress:
        return replace(self, stage=stage, error=error)


class Feed:
    """One subscriber's view of one name: the latest progress, awaited on its event loop.

    `async for progress in feed` yields the state when subscribing (None: no pull of that name
    is known), then each newer one it gets to; it never ends by itself."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._lock = threading.Lock()
        self._latest: Progress | None = None
        self._version = 0
        self._seen = 0
        self._waking = False  # a wake-up is scheduled on the loop and has not run yet
        self._news = asyncio.Event()

    def push(self, progress: Progress | None) -> None:
        """From any thread: replace the latest, and wake the subscriber unless already due."""
        with self._lock:
            self._latest, self._version = progress, self._version + 1
            if self._waking:
                return
            self._waking = True
        with contextlib.suppress(RuntimeError):  # its loop is closed: nobody is listening
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        with self._lock:
            self._waking = False
        self._news.set()

    def __aiter__(self) -> Feed:
        return self

    async def __anext__(self) -> Progress | None:
        while True:
            with self._lock:
                if self._version != self._seen:
                    self._seen = self._version
                    return self._latest
            self._news.clear()
            await self._news.wait()


class Board:
    """Every pull's latest progress, by model name; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[str, Progress] = {}
        self._feeds: dict[str, set[Feed]] = {}

    def publish(self, progress: Progress) -> None:
        """From any thread. Feeds get it in publishing order (pushed under the lock)."""
        with self._lock:
            self._put(progress)

    def mark(self, name: str, stage: Stage, error: str | None = None) -> None:
        """Publish `name`'s latest progress at another stage (nothing when none is known)."""
        with self._lock:
            latest = self._latest.get(name)
            if latest is not None:
                self._put(latest.at(stage, error))

    def _put(self, progress: Progress) -> None:
        self._latest[progress.name] = progress
        for feed in self._feeds.get(progress.name, ()):
            feed.push(progress)

    def status(self, name: str) -> Progress | None:
        with self._lock:
            return self._latest.get(name)

    def under_way(self, name: str) -> Progress | None:
        """`name`'s progress when a job of this process is queued or running for it."""
        progress = self.status(name)
        return progress if progress is not None and progress.stage.under_way else None

    @contextmanager
    def subscribe(self, name: str) -> Iterator[Feed]:
        """A feed of `name`'s progress for the running event loop, until the block is left."""
        feed = Feed(asyncio.get_running_loop())
        with self._lock:
            self._feeds.setdefault(name, set()).add(feed)
            feed.push(self._latest.get(name))
        try:
            yield feed
        finally:
            with self._lock:
                feeds = self._feeds.get(name, set())
                feeds.discard(feed)
                if not feeds:
                    self._feeds.pop(name, None)

    def subscribers(self, name: str) -> int:
        with self._lock:
            return len(self._feeds.get(name, ()))
