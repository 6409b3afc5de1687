"""Which models are loaded, who may use them, and when they go.

Each loaded model lives in a runner process (engine/runner.py). A runner that dies or stalls
fails only its own requests; the next request loads the model afresh, unless its runners died
too often (engine/crashes.py). A loaded chat model decodes up to LLMLB_NUM_PARALLEL requests
at once (batched in its decode loop); more wait in a bounded queue (LLMLB_MAX_QUEUE, then
503). An embedding context takes one request at a time (its inputs are batched). Concurrent
requests for a cold model share one load. Before a load, the model's memory (weights, KV cache
for every parallel sequence, and the runner process) is compared with what is free; idle
models make room, least recently used first, also when LLMLB_MAX_LOADED_MODELS would be
exceeded. Idle models unload when their keep-alive runs out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from anyio import to_thread
from sqlalchemy.engine import Engine

from llmlb import settings, tasks
from llmlb.engine import memory
from llmlb.engine.base import Backend, Crashed, Generation, Piece, check_runnable
from llmlb.engine.crashes import Crashes, HeldBack, fingerprint
from llmlb.engine.gpu import Gpus
from llmlb.engine.holdings import Holdings, saved_on_disk
from llmlb.errors import LlmlbError, Unavailable
from llmlb.store import catalog
from llmlb.store.models import Model
from llmlb.validation import Source

log = logging.getLogger("llmlb.scheduler")
REAP_EVERY = 0.25
TOUCH_EVERY = 5.0  # seconds between two writes of a model's last use: not one per request
STOP_GRACE = 3.0  # `stop` lets running requests finish this long, then ends them
RUNNER_BASE = 100 * 1000 * 1000  # a runner's own memory, until one has said what it takes


@dataclass
class Resident:
    """One loaded context of a model ("chat" or "embed": embeddings need their own)."""

    name: str
    kind: str
    model: Model
    ready: asyncio.Future
    capacity: int  # requests it runs at once
    permits: asyncio.Semaphore
    waiting: int = 0
    active: int = 0
    keep_alive: float = 300.0
    expires_at: float | None = None  # time.time(); None = forever or in use
    last_used: float = field(default_factory=time.monotonic)
    backend: Backend | None = None
    loading: asyncio.Task | None = None  # held so the load task is not garbage-collected
    generations: set[Generation] = field(default_factory=set)

    @property
    def loaded(self) -> bool:
        return self.ready.done() and not self.ready.cancelled() and self.ready.exception() is None

    @property
    def busy(self) -> bool:
        return self.active > 0

    @property
    def idle(self) -> bool:
        return self.loaded and self.active == 0 and self.waiting == 0


class Lease:
    """A claim on one of a loaded model's parallel places, for one request. release() is
    idempotent and never waits: the place is handed back once the engine has let go of the
    request's sequence, even when the client left mid-stream."""

    def __init__(self, scheduler: Scheduler, slot: Resident, keep_alive: float | None):
        self.scheduler, self.slot, self.keep_alive = scheduler, slot, keep_alive
        self.released = False
        self.generation: Generation | None = None

    @property
    def backend(self):
        return self.slot.backend

    def stream(self, produce: Callable[[], Generation]) -> AsyncIterator[Piece]:
        return self.scheduler.stream(self, produce)

    async def release(self) -> None:
        if not self.released:
            self.released = True
            self.scheduler._release(self)


class Scheduler:
    def __init__(
        self,
        engine: Engine,
        loader: Callable[[Model, int, bool, int], Awaitable[Backend]],
        gpus: Gpus | None = None,
        max_loaded: int | None = None,
        max_queue: int | None = None,
        keep_alive: float | None = None,
        n_ctx: int | None = None,
        num_parallel: int | None = None,
        gpu_offload: bool = False,
        holdings: Holdings | None = None,
    ):
        """`await loader(model, n_ctx, embedding, parallel)` loads a model (in a runner); the
        settings values come as arguments (None: read the environment)."""
        self.engine = engine
        self.loader = loader
        self.gpus = gpus or Gpus()
        self.max_loaded = max_loaded or settings.max_loaded_models()
        self.max_queue = settings.max_queue() if max_queue is None else max_queue
        self.default_keep_alive = settings.keep_alive() if keep_alive is None else keep_alive
        self.n_ctx = n_ctx or settings.context_length()
        self.num_parallel = num_parallel or settings.num_parallel()
        self.gpu_offload = gpu_offload
        self.slots: dict[tuple[str, str], Resident] = {}
        self.in_flight = 0
        self._reaper: asyncio.Task | None = None
        self._guard = asyncio.Lock()
        self._running: set[Generation] = set()
        self._touched: dict[str, float] = {}
        self.crashes = Crashes()
        self.runner_base = RUNNER_BASE
        self.holdings = holdings or Holdings()  # what the prompt cache holds, for the router

    # -- life -------------------------------------------------------------
    async def start(self) -> None:
        self._reaper = tasks.start("model reaper", self._reap_forever)
        if settings.prompt_cache_bytes() > 0:
            self.holdings.add_saved(await to_thread.run_sync(saved_on_disk, settings.home()))

    def drain(self) -> None:
        """Shutting down: every running generation ends at its next step."""
        for generation in list(self._running):
            generation.cancel()

    async def close(self) -> None:
        await tasks.stop(self._reaper)
        self.drain()  # and wait for the engine to let go before freeing any model
        pending = [g.done for g in self._running if not g.done.done()]
        if pending:
            await asyncio.wait(pending, timeout=30)
        # together: each runner saves its prompt cache before it leaves
        await asyncio.gather(*(self._unload(slot) for slot in list(self.slots.values())))
        self.gpus.close()

    # -- claiming a model -----------------------------------------------------
    def _capacity(self, kind: str) -> int:
        return 1 if kind == "embed" else self.num_parallel

    async def acquire(
        self, model: Model, kind: str = "chat", keep_alive: float | None = None
    ) -> Lease:
        """A place on `model` (resolve() found it) for one request, loading it if need be."""
        key = (model.name, kind)
        need = None
        if key not in self.slots:
            check_runnable(model)
            hold = self.crashes.held(model.name, fingerprint(model))
            if hold is not None:
                raise Unavailable(hold.reason)
            need = self.runner_base + await to_thread.run_sync(
                memory.estimate, model, self.n_ctx, self._capacity(kind)
            )
        async with self._guard:
            slot = self.slots.get(key)
            if slot is None:
                await self._make_room(model, kind, need or 0)
                capacity = self._capacity(kind)
                slot = Resident(
                    model.name,
                    kind,
                    model,
                    asyncio.get_running_loop().create_future(),
                    capacity,
                    asyncio.Semaphore(capacity),
                )
                self.slots[key] = slot
                slot.loading = asyncio.create_task(self._load(slot))
            elif slot.active + slot.waiting >= slot.capacity + self.max_queue:
                raise Unavailable(
                    f"model '{model.name}' is busy: {self.max_queue} requests already queued"
                )
            slot.waiting += 1
            slot.expires_at = None
        try:
            await asyncio.shield(slot.ready)
            await slot.permits.acquire()
        except BaseException:
            slot.waiting -= 1
            raise
        slot.waiting -= 1
        if slot.backend is None:  # unloaded while we waited: start over
            slot.permits.release()
            return await self.acquire(model, kind, keep_alive)
        now = time.monotonic()
        try:
            if (
                model.source != Source.OLLAMA
                and now - self._touched.get(model.name, -TOUCH_EVERY) >= TOUCH_EVERY
            ):
                self._touched[model.name] = now
                await to_thread.run_sync(catalog.touch, self.engine, model.name)
        except BaseException:  # cancelled or failed before the lease exists: give the permit back
            slot.permits.release()
            raise
        slot.active += 1
        self.in_flight += 1
        return Lease(self, slot, keep_alive)

    def _loaded_model(self, name: str) -> Model | None:
        """A loaded model's row, when `name` is its full name or its alias: no catalog
        query per request."""
        for (loaded, _kind), slot in self.slots.items():
            if loaded == name or (slot.model.alias and slot.model.alias == name):
                return slot.model
        return None

    async def resolve(self, name: str) -> Model:
        """The model `name` means (catalog.resolve), at once when it is loaded."""
        model = self._loaded_model(name)
        if model is None:
            model = await to_thread.run_sync(catalog.resolve, self.engine, name)
        return model

    def _release(self, lease: Lease) -> None:
        slot = lease.slot
        if lease.keep_alive is not None:
            slot.keep_alive = lease.keep_alive
        generation = lease.generation
        if generation is not None and not generation.done.done():
            generation.done.add_done_callback(lambda _: self._hand_back(slot))
        else:
            self._hand_back(slot)

    def _hand_back(self, slot: Resident) -> None:
        slot.active -= 1
        self.in_flight -= 1
        slot.last_used = time.monotonic()
        slot.permits.release()
        if slot.active > 0:
            return
        slot.expires_at = None if slot.keep_alive < 0 else time.time() + slot.keep_alive
        if slot.keep_alive == 0 and slot.waiting == 0:
            # as ollama: keep_alive 0 unloads the model, its other context (embeddings) too
            for other in [s for s in self.slots.values() if s.name == slot.name]:
                if other is slot or other.idle:
                    asyncio.get_running_loop().create_task(self._unload(other))

    async def _load(self, slot: Resident) -> None:
        try:
            started = time.perf_counter()
            backend = await self.loader(slot.model, self.n_ctx, slot.kind == "embed", slot.capacity)
            slot.backend = backend
            slot.keep_alive = self.default_keep_alive
            base = backend.base_rss
            if base:
                self.runner_base = base
            exited = backend.exited
            if exited is not None:
                exited.add_done_callback(lambda f: self._runner_ended(slot, backend, f))
            log.info("loaded %s (%s) in %.2fs", slot.name, slot.kind, time.perf_counter() - started)
            slot.ready.set_result(True)
        except BaseException as exc:
            self.slots.pop((slot.name, slot.kind), None)
            if isinstance(exc, Crashed):
                self._crashed(slot.model, exc.message)
            if not slot.ready.done():
                slot.ready.set_exception(
                    exc if isinstance(exc, Exception) else LlmlbError("load cancelled")
                )
                slot.ready.exception()  # mark retrieved: waiters re-raise it

    async def _make_room(self, model: Model, kind: str, need: int) -> None:
        """Unload idle models (least recently used first) until one more fits, in count
        (LLMLB_MAX_LOADED_MODELS) and in memory."""
        while True:
            free = await to_thread.run_sync(
                lambda: memory.free_bytes(self.gpus.read(), self.gpu_offload)
            )
            too_many = len(self.slots) >= self.max_loaded
            short = free is not None and need > free
            if not too_many and not short:
                return
            idle = [s for s in self.slots.values() if s.idle]
            reclaimable = sum(s.backend.size_bytes for s in idle if s.backend is not None)
            if short and free is not None and need > free + reclaimable:
                ctx = memory.context_for(model, self.n_ctx)
                per = f"{self._capacity(kind)} x {ctx} tokens of context and its runner"
                raise Unavailable(
                    f"not enough memory to load '{model.name}': it needs "
                    f"{memory.human(need)} (weights and {per}), {memory.human(free)} is free"
                    + (" once idle models unload" if reclaimable else "")
                    + "; lower LLMLB_NUM_PARALLEL or LLMLB_CONTEXT_LENGTH"
                )
            if not idle:
                raise Unavailable(
                    f"all {self.max_loaded} loaded models are busy (LLMLB_MAX_LOADED_MODELS); try again shortly"
                )
            victim = min(idle, key=lambda s: s.last_used)
            log.info("evicting %s to make room", victim.name)
            await self._unload(victim)

    def _runner_ended(self, slot: Resident, backend: Any, exited: asyncio.Future) -> None:
        """A runner process ended: by our hand (nothing to do), or on its own (a crash)."""
        if exited.cancelled() or exited.result() is None:
            return
        if self.slots.get((slot.name, slot.kind)) is slot and slot.backend is backend:
            del self.slots[(slot.name, slot.kind)]
            slot.backend = None
        self._crashed(slot.model, exited.result())

    def _crashed(self, model: Model, words: str) -> None:
        hold = self.crashes.record(model.name, fingerprint(model), words)
        if hold is not None:
            log.error("%s", hold.reason)

    def held_back(self) -> list[HeldBack]:
        return self.crashes.all_held()

    async def _unload(self, slot: Resident) -> None:
        if self.slots.get((slot.name, slot.kind)) is slot:
            del self.slots[(slot.name, slot.kind)]
        backend, slot.backend = slot.backend, None
        if backend is not None:
            await backend.close()
            log.info("unloaded %s (%s)", slot.name, slot.kind)

    async def unload(self, name: str) -> bool:
        """Unload every context of `name`: its running requests get STOP_GRACE seconds to
        finish, then are ended, and its runner with them. Returns once it is gone. A model
        held back for its crashes is let go too."""
        found = self.crashes.forget(name)
        slots = [s for s in self.slots.values() if s.name == name or s.model.alias == name]
        for slot in slots:
            found = True
            slot.keep_alive = 0
            slot.expires_at = time.time()
        running = [g.done for s in slots for g in s.generations if not g.done.done()]
        if running:
            await asyncio.wait(running, timeout=STOP_GRACE)
        for slot in slots:
            for generation in list(slot.generations):  # an error, not a reply cut short
                generation.abort(Unavailable(f"model '{slot.name}' was unloaded"))
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
    async def stream(self, lease: Lease, produce: Callable[[], Generation]) -> AsyncIterator[Piece]:
        """Start a generation and pass its pieces on; cancel it when the consumer goes away."""
        generation = produce()
        lease.generation = generation
        slot = lease.slot
        self._running.add(generation)
        slot.generations.add(generation)

        def forget(_: asyncio.Future) -> None:
            self._running.discard(generation)
            slot.generations.discard(generation)

        generation.done.add_done_callback(forget)
        try:
            async for piece in generation:
                yield piece
        finally:
            if not generation.done.done():
                generation.cancel()  # the engine frees the sequence; release() waits for it

    # -- views ----------------------------------------------------------------
    def running(self) -> list[dict[str, Any]]:
        """One row per loaded model: its chat and embedding contexts together."""
        rows: dict[str, dict[str, Any]] = {}
        for slot in self.slots.values():
            if not slot.loaded or slot.backend is None:
                continue
            forever = slot.keep_alive is not None and slot.keep_alive < 0
            expires = (
                None
                if forever or not slot.expires_at
                else datetime.fromtimestamp(slot.expires_at, UTC)
            )
            row = rows.get(slot.name)
            if row is None:
                rows[slot.name] = {
                    "name": slot.name,
                    "kind": slot.kind,
                    "model": slot.model,
                    "size": slot.backend.size_bytes,
                    "processor": slot.backend.processor,
                    "busy": slot.busy,
                    "waiting": slot.waiting,
                    "expires_at": expires,
                    "forever": forever,
                    "context_length": slot.backend.n_ctx,
                    "parallel": slot.capacity if slot.kind == "chat" else None,
                    "stopping": slot.keep_alive == 0 and slot.busy,
                    "pids": [p for p in [slot.backend.pid] if p],
                    "runner_bytes": slot.backend.base_rss,
                }
                continue
            row["kind"] = "chat+embed"
            row["size"] += slot.backend.size_bytes
            row["busy"] = row["busy"] or slot.busy
            row["waiting"] += slot.waiting
            row["stopping"] = row["stopping"] or (slot.keep_alive == 0 and slot.busy)
            pid = slot.backend.pid
            if pid:
                row["pids"].append(pid)
            row["runner_bytes"] += slot.backend.base_rss
            row["forever"] = row["forever"] or forever
            if slot.kind == "chat":
                row["context_length"] = slot.backend.n_ctx
                row["parallel"] = slot.capacity
            if row["forever"]:
                row["expires_at"] = None
            elif expires is not None and (row["expires_at"] is None or expires > row["expires_at"]):
                row["expires_at"] = expires
        for row in rows.values():
            row.pop("forever")
        return list(rows.values())

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
            "prefixes": self.holdings.summary(),
            **gpu.as_dict(),
        }
