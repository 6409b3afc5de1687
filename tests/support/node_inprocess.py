"""A node app in this process, built by the real factory around a scripted engine."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from litestar.testing import TestClient

from llmlb.engine.scheduler import Scheduler
from llmlb.jobs.lifecycle import Downloads
from llmlb.server.metrics_api import NodeMetrics
from llmlb.server.node_app import create_node_app
from llmlb.server.node_services import NodeConfig, NodeServices
from llmlb.store import db
from tests.support.catalog import register_file
from tests.support.fake_engine import FakeLoader


@contextmanager
def node_client(
    home: Path, models: dict[str, Path], loader: FakeLoader, **config
) -> Iterator[tuple[TestClient, NodeServices]]:
    """(client, services) for a node whose scheduler loads FakeBackends."""
    for name, path in models.items():
        register_file(home, name, path)
    cfg = NodeConfig(home=home, **config)
    catalog = db.open_node_catalog(home / "llmlb.db")
    scheduler = Scheduler(catalog, loader, max_queue=4, keep_alive=300)
    services = NodeServices(
        config=cfg,
        catalog=catalog,
        scheduler=scheduler,
        downloads=Downloads(catalog, home),
        metrics=NodeMetrics(scheduler),
    )
    app = create_node_app(cfg, services)
    with TestClient(
        app, base_url="http://127.0.0.1:32769", raise_server_exceptions=False
    ) as client:
        yield client, services
