"""The download part of `node serve`: the huey consumer (threads), start-up recovery, stop, cancel."""

from __future__ import annotations

import logging

from anyio import to_thread

from llmlb.jobs import queue
from llmlb.jobs.pull import Pulls

log = logging.getLogger("llmlb.pull")
WORKERS = (
    2  # pulls that run at the same time; more wait in the queue (each uses several connections)
)


class Downloads:
    """What other parts see as state.services["downloads"]."""

    def __init__(self, pulls: Pulls):
        self.pulls = pulls

    async def cancel(self, name: str) -> bool:
        return await to_thread.run_sync(self.pulls.cancel, name)


async def start(state) -> None:
    """Start the consumer and re-enqueue every download a previous run left unfinished."""
    home = state.config.home
    pulls = Pulls(state.catalog, home)
    huey = queue.make_queue(home / "queue.db")
    task = queue.register_pull(huey, pulls.run)
    consumer = queue.make_consumer(huey, workers=WORKERS)

    def enqueue(download_id: int) -> None:
        task(download_id)
        consumer.wake.set()

    pulls.enqueue = enqueue
    await to_thread.run_sync(pulls.sweep_trash)
    # The rows are the truth: drop whatever the queue still holds, then rebuild it from them.
    await to_thread.run_sync(huey.flush)
    unfinished = await to_thread.run_sync(pulls.resume_unfinished)
    for row in unfinished:
        log.info(
            "resuming the download of %s (%d of %d bytes on disk)",
            row.model_name,
            row.downloaded_bytes,
            row.total_bytes,
        )
    consumer.start()
    state.services["pulls"] = pulls
    state.services["downloads"] = Downloads(pulls)

    async def stop(_state) -> None:
        pulls.stop_all()  # jobs save their parts and leave their rows Downloading
        await to_thread.run_sync(consumer.stop, True)

    state.on_stop(stop)
