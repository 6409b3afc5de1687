"""Which models are loaded, who may use them, and when they go.

One generation at a time per loaded model (a llama.cpp context is single-sequence); others
wait in a bounded queue. Concurrent requests for a cold model share one load. Idle models
unload when their keep-alive runs out, and the least recently used idle model makes room
when LLMLB_MAX_LOADED_MODELS would be exceeded.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from anyio import to_thread

from llmlb import settings, tasks
from llmlb.engine.gpu import Gpus
from llmlb.errors import LlmlbError, Unavailable
from llmlb.store import catalog

log = logging.getLogger("llmlb.scheduler")
REAP_EVERY = 0.25


@dataclass
class Slot:
    name: str
    kind: str  # "chat" or "embed": embeddings need their own llama.cpp context
    model: Any
    ready: asyncio.Future
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiting: int = 0
    busy: bool = False
    keep_alive: float = 300.0
    expires_at: float | None = None  # time.time(); None = forever or in use
    last_used: float = field(default_factory=time.monotonic)
    backend: Any = None
    loading: asyncio.Task | None = None  # held so the load task is not garbage-collected

    @property
    def loaded(self) -> bool:
        return self.ready.done() and not self.ready.cancelled() and self.ready.exception() is None

    @property
    def idle(self) -> bool:
        return self.loaded and not self.busy and self.waiting == 0


class Lease:
    """A claim on a loaded model for one request; release() is idempotent and never waits.

    The model's lock is handed back only once the generation thread has finished, even
    when the request was cancelled mid-stream: a llama.cpp context must never run two
    generations at once.
    """

    def __init__(self, scheduler: Scheduler, slot: Slot, keep_alive: float | None):
        self.scheduler, self.slot, self.keep_alive = scheduler, slot, keep_alive
        self.released = False
        self.worker: asyncio.Future | None = None

    @property
    def backend(self):
        return self.slot.backend

    def stream(self, produce: Callable[[threading.Event], Iterator[str]]) -> AsyncIterator[str]:
        return self.scheduler.stream(self, produce)

    async def release(self) -> None:
        if not self.released:
            self.released = True
            self.scheduler._release(self)


class Scheduler:
    def __init__(
        self,
        engine,
        loader: Callable[..., Any],
        gpus: Gpus | None = None,
        max_loaded: int | None = None,
        max_queue: int | None = None,
        keep_alive: float | None = None,
        n_ctx: int | None = None,
    ):
        self.engine = engine
        self.loader = loader
        self.gpus = gpus or Gpus()
        self.max_loaded = max_loaded or settings.max_loaded_models()
        self.max_queue = settings.max_queue() if max_queue is None else max_queue
        self.default_keep_alive = settings.keep_alive() if keep_alive is None else keep_alive
        self.n_ctx = n_ctx or settings.context_length()
        self.slots: dict[tuple[str, str], Slot] = {}
        self.in_flight = 0
        self._reaper: asyncio.Task | None = None
        self._guard = asyncio.Lock()
        self._workers: dict[asyncio.Future, threading.Event] = {}  # generations running in threads

    # -- life -------------------------------------------------------------
    async def start(self) -> None:
        self._reaper = tasks.start("model reaper", self._reap_forever)

    def drain(self) -> None:
        """Shutting down: every running generation ends at its next token."""
        for cancel in self._workers.values():
            cancel.set()

    async def close(self) -> None:
        await tasks.stop(self._reaper)
        self.drain()  # and wait for the threads before freeing any model
        if self._workers:
            await asyncio.wait(list(self._workers), timeout=30)
        for key in list(self.slots):
            await self._unload(self.slots[key])
        self.gpus.close()

    # -- claiming a model -----------------------------------------------------
    async def acquire(
        self, name: str, kind: str = "chat", keep_alive: float | None = None
    ) -> Lease:
        model = await to_thread.run_sync(catalog.resolve, self.engine, name)
        key = (model.name, kind)
        async with self._guard:
            slot = self.slots.get(key)
            if slot is None:
                await self._make_room()
                slot = Slot(model.name, kind, model, asyncio.get_running_loop().create_future())
                self.slots[key] = slot
                slot.loading = asyncio.create_task(self._load(slot))
            elif slot.waiting + slot.busy > self.max_queue:  # one runs, max_queue wait behind it
                raise Unavailable(
                    f"model '{model.name}' is busy: {self.max_queue} requests already queued"
                )
            slot.waiting += 1
            slot.expires_at = None
        try:
            await asyncio.shield(slot.ready)
            await slot.lock.acquire()
        except BaseException:
            slot.waiting -= 1
            raise
        slot.waiting -= 1
        if slot.backend is None:  # unloaded while we waited: start over
            slot.lock.release()
            return await self.acquire(name, kind, keep_alive)
        try:
            if model.source != "Ollama":
                await to_thread.run_sync(catalog.touch, self.engine, model.name)
        except BaseException:  # cancelled or failed before the lease exists: give the lock back
            slot.lock.release()
            raise
        slot.busy = True
        self.in_flight += 1
        return Lease(self, slot, keep_alive)

    def _release(self, lease: Lease) -> None:
        slot = lease.slot
        if lease.keep_alive is not None:
            slot.keep_alive = lease.keep_alive
        if lease.worker is not None and not lease.worker.done():
            lease.worker.add_done_callback(lambda _: self._hand_back(slot))
        else:
            self._hand_back(slot)

    def _hand_back(self, slot: Slot) -> None:
        slot.busy = False
        self.in_flight -= 1
        slot.last_used = time.monotonic()
        slot.expires_at = None if slot.keep_alive < 0 else time.time() + slot.keep_alive
        slot.lock.release()
        if slot.keep_alive == 0 and slot.waiting == 0:
            asyncio.get_running_loop().create_task(self._unload(slot))

    async def _load(self, slot: Slot) -> None:
        try:
            started = time.perf_counter()
            backend = await to_thread.run_sync(
                self.loader, slot.model, self.n_ctx, slot.kind == "embed"
            )
            slot.backend = backend
            slot.keep_alive = self.default_keep_alive
            log.info("loaded %s (%s) in %.2fs", slot.name, slot.kind, time.perf_counter() - started)
            slot.ready.set_result(True)
        except BaseException as exc:
            self.slots.pop((slot.name, slot.kind), None)
            if not slot.ready.done():
                slot.ready.set_exception(
                    exc if isinstance(exc, Exception) else LlmlbError("load cancelled")
                )
                slot.ready.exception()  # mark retrieved: waiters re-raise it

    async def _make_room(self) -> None:
        while len(self.slots) >= self.max_loaded:
            idle = [s for s in self.slots.values() if s.idle]
            if not idle:
                raise Unavailable(
                    f"all {self.max_loaded} loaded models are busy (LLMLB_MAX_LOADED_MODELS); try again shortly"
                )
            victim = min(idle, key=lambda s: s.last_used)
            log.info("evicting %s to make room", victim.name)
            await self._unload(victim)

    async def _unload(self, slot: Slot) -> None:
        if self.slots.get((slot.name, slot.kind)) is slot:
            del self.slots[(slot.name, slot.kind)]
        backend, slot.backend = slot.backend, None
        if backend is not None:
            await to_thread.run_sync(backend.close)
            log.info("unloaded %s (%s)", slot.name, slot.kind)

    async def unload(self, name: str) -> bool:
        """Unload every context of `name` now, or right after its running request."""
        found = False
        for slot in [s for s in self.slots.values() if s.name == name or s.model.alias == name]:
            found = True
            if slot.busy or slot.waiting:
                slot.keep_alive = 0
                slot.expires_at = time.time()
            else:
                await self._unload(slot)
        return found

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(REAP_EVERY)
            now = time.time()
            for slot in list(self.slots.values()):
                if slot.idle and slot.expires_at is not None and slot.expires_at <= now:
                    await self._unload(slot)

    # -- running work -------------------------------------------------------
    async def stream(
        self, lease: Lease, produce: Callable[[threading.Event], Iterator[str]]
    ) -> AsyncIterator[str]:
        """Run a blocking token iterator in a thread; stop it when the consumer goes away."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()
        done = object()

        def work() -> None:
            try:
                for piece in produce(cancel):
                    loop.call_soon_threadsafe(queue.put_nowait, piece)
                    if cancel.is_set():
                        break
                loop.call_soon_threadsafe(queue.put_nowait, done)
            except BaseException as exc:  # surfaces in the consumer
                loop.call_soon_threadsafe(queue.put_nowait, exc)

        lease.worker = loop.run_in_executor(None, work)
        self._workers[lease.worker] = cancel
        lease.worker.add_done_callback(lambda f: self._workers.pop(f, None))
        pending: Any = None
        try:
            while True:
                item, pending = (
                    (pending, None) if pending is not None else (await queue.get(), None)
                )
                # a consumer that fell behind takes the backlog as one piece: fewer writes
                while isinstance(item, str) and not queue.empty():
                    nxt = queue.get_nowait()
                    if not isinstance(nxt, str):
                        pending = nxt  # the end or an error: handled after this piece
                        break
                    item += nxt
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancel.set()  # the thread stops within a token; release() waits for it

    # -- views ----------------------------------------------------------------
    def running(self) -> list[dict[str, Any]]:
        out = []
        for slot in self.slots.values():
            if not slot.loaded or slot.backend is None:
                continue
            out.append(
                {
                    "name": slot.name,
                    "kind": slot.kind,
                    "model": slot.model,
                    "size": slot.backend.size_bytes,
                    "processor": slot.backend.processor,
                    "busy": slot.busy,
                    "waiting": slot.waiting,
                    "expires_at": None
                    if slot.keep_alive is not None and slot.keep_alive < 0
                    else (
                        datetime.fromtimestamp(slot.expires_at, UTC) if slot.expires_at else None
                    ),
                    "context_length": getattr(slot.backend, "n_ctx", None),
                    "stopping": slot.keep_alive == 0 and slot.busy,
                }
            )
        return out

    def queued(self) -> int:
        return sum(s.waiting for s in self.slots.values())

    def snapshot(self) -> dict[str, Any]:
        gpu = self.gpus.read()
        return {
            "loaded_models": [
                {
                    "name": r["name"],
                    "size": r["size"],
                    "processor": r["processor"],
                    "expires_at": r["expires_at"].isoformat() if r["expires_at"] else None,
                }
                for r in self.running()
            ],
            "in_flight": self.in_flight,
            "queued": self.queued(),
            **gpu.as_dict(),
        }
