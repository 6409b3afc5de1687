"""Routers sharing one real PostgreSQL, in process (balancer/database.py, history.py): one
router's heartbeats and states reach the other, Error is marked only when no router hears the
node, the key-id secret is shared, and history waits in memory (bounded) while the database
is down, to be written when it is back."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from llmlb.balancer.auth import load_secret
from llmlb.balancer.database import Database, NodeRows
from llmlb.balancer.history import History
from llmlb.balancer.registry import Registry
from llmlb.balancer.wire import Heartbeat
from llmlb.store import db
from tests.support.procs import wait_for
from tests.support.services import new_postgres

TIMEOUT = 5.0


class Router:
    """The database parts of one router."""

    def __init__(self, url: str):
        self.engine = db.open_router_database(url)
        self.db = Database(self.engine, shared=True)
        self.registry = Registry(2, TIMEOUT)
        self.rows = NodeRows(self.registry, self.db, read_every=0.1)

    def beat(self, node_id: str = "n1", **extra) -> None:
        payload = {"id": node_id, "host": "127.0.0.1", "port": 1, "models": [{"name": "m"}]}
        self.registry.heartbeat(msgspec.convert({**payload, **extra}, Heartbeat))


@pytest.fixture
def routers(postgres_url):
    pair = Router(postgres_url), Router(postgres_url)
    yield pair
    for r in pair:
        r.engine.dispose()


def test_a_heartbeat_to_one_router_reaches_the_other(routers):
    a, b = routers

    async def scenario() -> None:
        a.beat(vram_total_bytes=80 * 2**30, gpu_name="H100")
        await a.rows.write()
        await b.rows.read()
        node = b.registry.nodes["n1"]
        assert b.registry.label(node) == "online" and node.vram_total_bytes == 80 * 2**30
        a.registry.stopped("n1")
        await a.rows.write()
        await b.rows.read()
        assert node.status == "Stopped" and b.registry.label(node) == "offline"
        a.beat()  # restarted
        await a.rows.write()
        await b.rows.read()
        assert node.status == "Running" and b.registry.label(node) == "online"

    asyncio.run(scenario())


def test_a_node_silent_to_every_router_is_error_for_all(routers):
    a, b = routers

    async def scenario() -> None:
        a.beat()
        await a.rows.write()
        await b.rows.read()
        # b's probes fail twice, but a heard the node just now: the database keeps it Running
        node = b.registry.nodes["n1"]
        b.registry.probe_failed(node)
        assert b.registry.probe_failed(node) and node.status == "Error"
        await b.rows.write()
        await a.rows.read()
        assert a.registry.nodes["n1"].status == "Running"
        # the node really went silent: its row's last heartbeat is past the timeout
        with a.engine.begin() as conn:
            conn.exec_driver_sql(
                "UPDATE router_node SET last_seen = now() - interval '1 minute', updated_at = now()"
            )
        await b.rows.read()
        b.registry.probe_failed(node)
        b.registry.probe_failed(node)
        await b.rows.write()
        await a.rows.read()
        assert a.registry.nodes["n1"].status == "Error"

    asyncio.run(scenario())


def test_routers_on_one_database_share_the_key_id_secret(routers, tmp_path):
    a, b = routers
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert load_secret(a.engine, tmp_path / "a") == load_secret(b.engine, tmp_path / "b")


def test_a_router_secret_file_from_before_is_kept(tmp_path):
    (tmp_path / "router.secret").write_text("ab" * 32)
    engine = db.open_router_catalog(tmp_path / "router.db")
    assert load_secret(engine, tmp_path) == bytes.fromhex("ab" * 32)
    (tmp_path / "router.secret").unlink()
    assert load_secret(engine, tmp_path) == bytes.fromhex("ab" * 32)  # now in the database


def test_history_waits_in_memory_while_postgres_is_down_then_is_written():
    pg = new_postgres().start()
    engine = db.open_router_database(pg.create_database("llmlb"))
    database = Database(engine, shared=True)
    history = History(engine, keep_days=7, buffer=5, database=database)

    def record(n: int) -> None:
        history.record(
            endpoint="/api/chat",
            model="m",
            node_id="n1",
            status=200,
            duration_ms=1.0,
            tokens_out=n,
        )

    try:
        record(0)
        assert history.flush() and history.last_hour() == 1
        pg.stop()
        for n in range(1, 9):
            record(n)
        assert not history.flush()
        assert not database.up and "connect" in (database.error or "").lower()
        assert history.dropped == 3  # the buffer holds 5: the three oldest went
        assert history.last_hour() is None  # a count it cannot know
        assert [r["tokens_out"] for r in history.recent(3)] == [8, 7, 6]  # from memory
        pg.start()
        assert wait_for(history.flush, 60)  # a new connection each try, until one is accepted
        assert database.up and history.last_hour() == 6
        assert sorted(r["tokens_out"] for r in history.recent(10)) == [0, 4, 5, 6, 7, 8]
    finally:
        engine.dispose()
        pg.close()
