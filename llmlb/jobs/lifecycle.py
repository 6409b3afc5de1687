"""The download part of `node serve`: the huey consumer (threads), start-up recovery, stop, cancel."""

from __future__ import annotations

import logging
from pathlib import Path

from anyio import to_thread
from sqlalchemy.engine import Engine

from llmlb.jobs import queue
from llmlb.jobs.pull import Pulls

log = logging.getLogger("llmlb.pull")
WORKERS = (
    2  # pulls that run at the same time; more wait in the queue (each uses several connections)
)


class Downloads:
    """Every pull of a node server, and the huey consumer that runs them."""

    def __init__(self, catalog: Engine, home: Path):
        self.pulls = Pulls(catalog, home)
        self.huey = queue.make_queue(home / "queue.db")
        self._task = queue.register_pull(self.huey, self.pulls.run)
        self.consumer = queue.make_consumer(self.huey, workers=WORKERS)
        self.pulls.enqueue = self._enqueue
        self.started = False

    def _enqueue(self, download_id: int) -> None:
        self._task(download_id)
        self.consumer.wake.set()

    async def start(self) -> None:
        """Start the consumer and re-enqueue every download a previous run left unfinished."""
        await to_thread.run_sync(self.pulls.sweep_trash)
        # The rows are the truth: drop whatever the queue still holds, then rebuild it from them.
        await to_thread.run_sync(self.huey.flush)
        for row in await to_thread.run_sync(self.pulls.resume_unfinished):
            log.info(
                "resuming the download of %s (%d of %d bytes on disk)",
                row.model_name,
                row.downloaded_bytes,
                row.total_bytes,
            )
        self.consumer.start()
        self.started = True

    async def stop(self) -> None:
        if not self.started:
            return
        self.pulls.stop_all()  # jobs save their parts and leave their rows Downloading
        await to_thread.run_sync(self.consumer.stop, True)
        self.started = False

    async def cancel(self, name: str) -> bool:
        """Stop `name`'s download and remove its row and partial data; False when there was none."""
        return await to_thread.run_sync(self.pulls.cancel, name)
