"""Everything one running node owns: its catalog, engine, downloads, metrics and router link,
built once by `build_services`, started in order and stopped in reverse."""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import Engine

from llmlb import settings
from llmlb.balancer.router_link import RouterLink
from llmlb.engine import runner
from llmlb.engine.gpu import Gpus
from llmlb.engine.holdings import Holdings
from llmlb.engine.llama_cpp import gpu_offload_supported
from llmlb.engine.scheduler import Scheduler
from llmlb.engine.templates import Templates
from llmlb.jobs.create import Creations
from llmlb.jobs.lifecycle import Downloads
from llmlb.server.metrics_api import NodeMetrics
from llmlb.store import db
from llmlb.store.files import sweep_trash
from llmlb.store.models import NodeStatus
from llmlb.store.nodes import record_status

log = logging.getLogger("llmlb.node")


@dataclass
class NodeConfig:
    host: str = "127.0.0.1"
    port: int = settings.DEFAULT_NODE_PORT
    home: Path = field(default_factory=settings.home)
    router_url: str | None = None
    origins: list[str] = field(default_factory=settings.origins)


@dataclass
class NodeServices:
    """Everything one running node owns, started in order and stopped in reverse."""

    config: NodeConfig
    catalog: Engine
    scheduler: Scheduler
    downloads: Downloads
    metrics: NodeMetrics
    templates: Templates = field(default_factory=Templates)
    started_at: float = field(default_factory=time.time)
    node_id: str = ""
    link: RouterLink | None = None
    # how long and how much of /v1/responses' stored responses to keep (read at start)
    responses_days: int = field(default_factory=settings.responses_days)
    responses_bytes: int = field(default_factory=lambda: settings.responses_mb() << 20)
    creations: Creations = field(init=False)

    def __post_init__(self) -> None:
        self.creations = Creations(self.catalog, self.config.home)

    @property
    def models_dir(self) -> Path:
        return self.config.home / "models"

    @property
    def uptime_secs(self) -> int:
        return int(time.time() - self.started_at)

    async def start(self) -> None:
        cfg = self.config
        self.node_id = record_status(self.catalog, cfg.host, cfg.port, NodeStatus.RUNNING)
        await self.downloads.start()
        await self.scheduler.start()
        url = cfg.router_url or settings.router_url()
        if url:
            self.link = RouterLink(
                url,
                self.node_id,
                cfg.host,
                cfg.port,
                self.catalog,
                self.scheduler,
                settings.heartbeat_secs(),
                settings.node_token(),
                prompt_counts=lambda: dict(self.metrics.prompt_totals),
            )
            await self.link.start()

    async def stop(self) -> None:
        cfg = self.config
        steps = [
            ("router link", self.link.stop() if self.link else None),
            ("engine", self.scheduler.close()),
            ("template renderer", self.templates.close()),
            ("downloads", self.downloads.stop()),
        ]
        for what, step in steps:
            if step is None:
                continue
            try:
                await step
            except Exception:  # one part failing must not keep the others running
                log.exception("error while stopping the %s", what)
        try:
            record_status(self.catalog, cfg.host, cfg.port, NodeStatus.STOPPED, self.uptime_secs)
        finally:
            self.catalog.dispose()


def build_services(config: NodeConfig) -> NodeServices:
    settings.prompt_cache_bytes()  # a bad value stops the start, not each model's load
    config.home.mkdir(parents=True, exist_ok=True)
    catalog = db.open_node_catalog(config.home / "llmlb.db")
    sweep_trash(config.home / "models")
    Creations(catalog, config.home).sweep()  # what a killed node left half-made
    # the engine: every model in a runner process (engine/runner.py), on llama.cpp
    gpus = Gpus()
    offload = gpu_offload_supported() and gpus.read().available
    holdings = Holdings()  # what each runner's prompt cache holds, for the router
    load = functools.partial(runner.load, holdings=holdings)
    scheduler = Scheduler(catalog, load, gpus=gpus, gpu_offload=offload, holdings=holdings)
    return NodeServices(
        config=config,
        catalog=catalog,
        scheduler=scheduler,
        downloads=Downloads(catalog, config.home),
        metrics=NodeMetrics(scheduler),
    )
