"""The download queue: huey on its own SQLite file (LLMLB_HOME/queue.db), consumed in-process.

huey is only the executor: a task carries a DownloadProgress id, and the catalog row is the
truth. At start-up the queue is emptied and rebuilt from the rows (see lifecycle.py), so a
task lost in a kill -9 (dequeued, never finished) is never lost for good.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from huey import SqliteHuey
from huey.consumer import Consumer, Worker

TASK_NAME = "llmlb.pull"


class _WakeableWorker(Worker):
    """Sleeps between polls like huey's worker, but wakes at once when we enqueue."""

    wake: threading.Event
    delay: float  # huey sets these in __init__, untyped
    max_delay: float
    backoff: float

    def sleep(self) -> None:
        self.delay = min(self.delay, self.max_delay)
        if self.wake.wait(self.delay):
            self.wake.clear()
        self.delay *= self.backoff


class InProcessConsumer(Consumer):
    """huey's consumer in `node serve`'s process: no signal handlers (uvicorn owns them), and a
    `wake` event so a new pull starts now instead of at the next poll."""

    worker_class = _WakeableWorker

    def __init__(self, *args, **kwargs):
        self.wake = threading.Event()
        super().__init__(*args, **kwargs)

    def _create_worker(self):
        worker = super()._create_worker()
        worker.wake = self.wake
        return worker

    def _set_signal_handlers(self) -> None:
        pass

    def stop(self, graceful: bool = False) -> None:
        self.stop_flag.set()
        self.wake.set()
        super().stop(graceful)


def make_queue(path: Path | str) -> SqliteHuey:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return SqliteHuey(name="llmlb", filename=str(path), results=False, utc=True)


def register_pull(huey: SqliteHuey, run: Callable[[int], None]):
    """The pull task: `task(download_id)` enqueues; the consumer calls `run(download_id)`."""

    def pull(download_id: int) -> None:
        run(download_id)

    return huey.task(name=TASK_NAME)(pull)


def make_consumer(huey: SqliteHuey, workers: int = 2) -> Consumer:
    # Idle workers poll every 2 s at most; enqueuing through `wake` starts a pull at once.
    return InProcessConsumer(
        huey,
        workers=workers,
        worker_type="thread",
        periodic=False,
        initial_delay=0.1,
        backoff=1.5,
        max_delay=2.0,
        check_worker_health=False,
        shutdown_timeout=5,
    )
