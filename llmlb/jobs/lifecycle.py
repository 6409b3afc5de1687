"""The download part of `node serve`: the board, the pull job on huey's consumer (threads),
starting or attaching to a pull, start-up recovery, stop and cancel.

Everything is built here, each part given what it uses: the board (what clients watch), the
job (pull.py), huey's queue and consumer. The rows are the store's (store/downloads.py).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from anyio import to_thread
from sqlalchemy.engine import Engine

from llmlb.jobs import partial, queue
from llmlb.jobs import pull_state as ps
from llmlb.jobs.board import Board, Progress, Stage
from llmlb.jobs.pull import PullJob
from llmlb.sources import huggingface as hf
from llmlb.store import downloads
from llmlb.store.models import DownloadProgress

log = logging.getLogger("llmlb.pull")
WORKERS = (
    2  # pulls that run at the same time; more wait in the queue (each uses several connections)
)


class Downloads:
    """Every pull of a node server, and the huey consumer that runs them."""

    def __init__(
        self,
        catalog: Engine,
        home: Path,
        pwrite: Callable[[int, memoryview, int], int] = os.pwrite,
    ):
        self.catalog = catalog
        self.home = Path(home)
        self.board = Board()
        self.tokens: dict[str, str] = {}  # HF tokens sent with a pull: memory only, never stored
        self.job = PullJob(catalog, self.home, self.board, self.tokens.get, pwrite)
        self.huey = queue.make_queue(self.home / "queue.db")
        self._task = queue.register_pull(self.huey, self.job.run)
        self.consumer = queue.make_consumer(self.huey, workers=WORKERS)
        self._submitting = threading.Lock()
        self.started = False

    # --- a pull --------------------------------------------------------------------------------
    def under_way(self, name: str) -> Progress | None:
        """`name`'s progress when its download is queued or running here: a pull attaches to it."""
        progress = self.board.status(name)
        if progress is None:
            return None
        if progress.stage.under_way or self.job.is_running(name):  # (its job may be ending)
            return progress
        return None

    def submit(self, plan: hf.Plan, token: str | None = None) -> tuple[int, bool]:
        """Write (or reuse) the model's row and enqueue it: (row id, attached to a running one).

        A row left Failed, or left Downloading by a job that is gone (its failure could not be
        written), resumes from its parts when the plan is the same; otherwise it starts over.
        """
        partial.check_paths(self.home, plan)
        name = plan.name
        with self._submitting:
            row = downloads.find(self.catalog, name)
            if row is not None and row.id is not None and self.under_way(name) is not None:
                if token:
                    self.tokens[name] = token
                return row.id, True
            state = row.plan if row is not None else None
            reusable = row is not None and not downloads.is_completed(row)
            if not (reusable and state and state.get("plan") == plan.to_json()):
                # Another plan (first pull, or the repo changed): stale partial data goes.
                partial.drop(self.home, name)
                state = ps.fresh_state(plan)
            else:
                state = partial.still_on_disk(self.home, name, {**state, "phase": "downloading"})
            partial.check_space(self.home, plan, state)
            download_id = downloads.queue(
                self.catalog, name, state, ps.total_bytes(state), ps.downloaded_bytes(state)
            )
            if token:
                self.tokens[name] = token
            self.board.publish(Progress.of(plan, state, Stage.QUEUED))
        self._enqueue(name, download_id)
        return download_id, False

    def _enqueue(self, name: str, download_id: int) -> None:
        try:
            self._task(download_id)
        except BaseException:
            self.board.mark(name, Stage.STOPPED)
            raise
        self.consumer.wake.set()

    # --- the server's start and stop -----------------------------------------------------------
    async def start(self) -> None:
        """Start the consumer and re-enqueue every download a previous run left unfinished."""
        await to_thread.run_sync(partial.sweep_trash, self.home)
        # The rows are the truth: drop whatever the queue still holds, then rebuild it from them.
        await to_thread.run_sync(self.huey.flush)
        for row in await to_thread.run_sync(self.resume_unfinished):
            log.info(
                "resuming the download of %s (%d of %d bytes on disk)",
                row.model_name,
                row.downloaded_bytes,
                row.total_bytes,
            )
        self.consumer.start()
        self.started = True

    def resume_unfinished(self) -> list[DownloadProgress]:
        """Enqueue every download a previous run left unfinished."""
        rows = downloads.active(self.catalog)
        for row in rows:
            assert row.id is not None
            try:
                plan = hf.Plan.from_json(row.plan["plan"])
            except Exception:  # the job fails it, with the reason, in its row
                log.warning("the saved plan of %s cannot be read back", row.model_name)
            else:
                self.board.publish(Progress.of(plan, row.plan, Stage.QUEUED))
            self._enqueue(row.model_name, row.id)
        return rows

    async def stop(self) -> None:
        if not self.started:
            return
        self.job.stop_all()  # jobs save their parts and leave their rows Downloading
        await to_thread.run_sync(self.consumer.stop, True)
        self.started = False

    # --- cancel ----------------------------------------------------------------------------------
    async def cancel(self, name: str) -> bool:
        """Stop `name`'s download and remove its row and partial data; False when there was none."""
        return await to_thread.run_sync(self.cancel_now, name)

    def cancel_now(self, name: str, wait_secs: float = 30) -> bool:
        with self.job.stopped(name, wait_secs) as stopped, self._submitting:
            unfinished = downloads.remove(self.catalog, name)
            partial.discard(self.home, name)
            self.tokens.pop(name, None)
            self.board.mark(name, Stage.CANCELLED)
        return unfinished or stopped
