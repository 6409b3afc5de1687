"""Everything one running node server owns, created at start-up and closed at shutdown."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from llmlb import settings
from llmlb.store import db

log = logging.getLogger("llmlb.node")

Hook = Callable[["NodeState"], Awaitable[None]]


@dataclass
class NodeConfig:
    host: str = "127.0.0.1"
    port: int = settings.DEFAULT_NODE_PORT
    home: Path = field(default_factory=settings.home)
    router_url: str | None = None


@dataclass
class NodeState:
    config: NodeConfig
    catalog: Engine
    started_at: float = field(default_factory=time.time)
    node_id: str = ""
    # Filled by the parts that need them (engine scheduler, download jobs, router link).
    services: dict[str, Any] = field(default_factory=dict)
    _stops: list[Hook] = field(default_factory=list)

    @property
    def uptime_secs(self) -> int:
        return int(time.time() - self.started_at)

    def on_stop(self, hook: Hook) -> None:
        """Run `hook` at shutdown; the last registered runs first."""
        self._stops.append(hook)

    async def stop(self) -> None:
        while self._stops:
            hook = self._stops.pop()
            try:
                await hook(self)
            except Exception:  # one part failing must not keep the others running
                log.exception("error while stopping")


def open_state(config: NodeConfig) -> NodeState:
    config.home.mkdir(parents=True, exist_ok=True)
    engine = db.open_catalog(config.home / "llmlb.db")
    from llmlb.store.catalog import sweep_trash

    sweep_trash(config.home / "models")
    return NodeState(config=config, catalog=engine)
