"""The contract's Node transitions as the router records them."""

import asyncio
import json

import msgspec
import pytest

from llmlb.balancer import registry as reg
from llmlb.balancer.admission import COOL_MAX, Admission
from llmlb.balancer.claims import LocalClaims
from llmlb.balancer.nodes import Held
from llmlb.balancer.wire import Heartbeat
from llmlb.errors import BadRequest
from llmlb.jsonio import decode_as
from llmlb.store import db, router_state
from llmlb.store.router_models import RouterNode


@pytest.fixture
def engine(tmp_path):
    return db.open_router_catalog(tmp_path / "router.db")


@pytest.fixture
def registry(engine):
    return reg.Registry(capacity=2, timeout=5.0)


@pytest.fixture
def admission(registry):
    return Admission(registry, LocalClaims(), max_queue=1, queue_timeout=0.3)


def write(r, engine) -> None:
    """What the router's node-rows loop does (balancer/database.py), here in one call."""
    rows, errors, taken = r.writes.take(r.nodes)
    router_state.save_nodes(engine, rows)
    for node_id in errors:
        router_state.mark_error(engine, node_id, r.timeout)
    r.writes.written(r.nodes, taken)


def reload(engine) -> reg.Registry:
    """A router started again on the same database."""
    again = reg.Registry(2, 5.0)
    again.load(router_state.load_nodes(engine)[0])
    return again


def beat(r, node_id="n1", **extra):
    payload = {
        "id": node_id,
        "host": "10.0.0.1",
        "port": 32769,
        "models": [{"name": "org/m", "alias": "m"}],
        **extra,
    }
    return r.heartbeat(msgspec.convert(payload, Heartbeat))


def test_register_then_stop_then_restart(registry):
    node = beat(registry)
    assert node.status == "Running" and registry.label(node) == "online"
    registry.stopped("n1")
    assert node.status == "Stopped" and registry.label(node) == "offline"
    beat(registry)  # Stopped -> Running (serve again)
    assert node.status == "Running"


def test_missed_heartbeats_then_failed_probes_is_error_then_restart(registry, monkeypatch):
    node = beat(registry)
    node.last_seen -= 10  # heartbeats stopped
    assert registry.label(node) == "offline" and registry.stale() == [node]
    assert registry.probe_failed(node) is False  # one failed probe: still just offline
    assert registry.probe_failed(node) is True
    assert node.status == "Error" and registry.label(node) == "error"
    beat(registry)  # Error -> Running (restart)
    assert node.status == "Running" and registry.label(node) == "online" and node.failed_probes == 0


def test_persisted_and_reloaded_as_offline(registry, engine):
    beat(
        registry, gpu_name="RTX4090", vram_total_bytes=100, vram_used_bytes=40, gpu_temperature=61.5
    )
    write(registry, engine)
    again = reload(engine)
    copy = again.nodes["n1"]
    assert (copy.gpu_name, copy.vram_used_bytes, copy.gpu_temperature) == ("RTX4090", 40, 61.5)
    assert again.label(copy) == "offline"  # until it sends a heartbeat to this router


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b'{"id": "x", "host": "h", "port": "80"}',
        b'{"id": "x", "host": "h", "port": 1, "models": "m"}',
        b'{"id": "x", "host": "h", "port": 1, "vram_used_bytes": -5}',
        # what broke every proxied request before (issue 12): an alias that is not a string
        b'{"id": "x", "host": "127.0.0.1", "port": 1, "models": [{"name": "m", "alias": [1]}]}',
        b'{"id": "x", "host": "h", "port": 1, "loaded_models": 5}',
        b'{"id": "x", "host": "h", "port": 1, "gpu_temperature": NaN}',
        b'{"id": "x", "host": "h", "port": 1, "gpu_temperature": Infinity}',
        b'{"id": "x", "host": "h", "port": 1, "uptime_secs": 1180591620717411303424}',
        b'{"id": "x", "host": "evil.example/x?", "port": 1}',
        b'{"id": "../x", "host": "h", "port": 1}',
    ],
)
def test_bad_heartbeats_are_refused_at_the_door(registry, body):
    with pytest.raises(BadRequest):
        registry.heartbeat(decode_as(body, Heartbeat))
    assert registry.nodes == {}


def test_a_bad_row_in_router_db_is_skipped_at_load(registry, engine, caplog):
    beat(registry)
    write(registry, engine)
    with db.session(engine) as s:  # as an older version could have stored it
        s.add(RouterNode(id="bad", host="127.0.0.1", port=1, models=[{"name": "m", "alias": [1]}]))
        s.commit()
    again = reload(engine)
    assert list(again.nodes) == ["n1"]
    assert "skipping node 'bad'" in caplog.text
    assert again.canonical("m") == "org/m"  # the registry works: no unhashable alias inside
    json.dumps([n.models for n in again.nodes.values()])


def test_claims_never_go_negative_and_queue_is_bounded(registry, admission):
    async def scenario():
        node = beat(registry)
        a = await admission.acquire("org/m")
        b = await admission.acquire("org/m")
        assert node.in_flight == 2
        from llmlb.errors import TooManyRequests, Unavailable

        waiter = asyncio.create_task(admission.acquire("org/m"))
        await asyncio.sleep(0.05)
        with pytest.raises(TooManyRequests):  # one already waits: the queue (1) is full
            await admission.acquire("org/m")
        admission.release(a, ok=True)
        c = await waiter
        assert c.node is node
        admission.release(b, ok=False)
        admission.release(c, ok=True)
        admission.release(c, ok=True)  # released twice: counted once
        admission.release(Held(node), ok=True)  # one too many: still 0
        assert node.in_flight == 0 and node.errors == 1 and node.requests == 4
        node.in_flight = 2
        with pytest.raises(Unavailable, match="stayed busy"):
            await admission.acquire("org/m")
        with pytest.raises(Unavailable, match="no online node"):
            await admission.acquire("org/other")

    asyncio.run(scenario())


def test_canonical_names(registry):
    beat(registry)
    assert registry.canonical("m") == "org/m" and registry.canonical("org/m") == "org/m"
    from llmlb.errors import ModelNotFound

    with pytest.raises(ModelNotFound):
        registry.canonical("ghost")


def test_failures_cool_a_node_down_and_success_or_restart_ends_it(registry, admission):
    import time

    async def scenario():
        node = beat(registry)
        for expected in (1.0, 2.0, 4.0):  # doubling with each failure in a row
            admission.release(await admission.acquire("org/m"), ok=False)
            assert registry.cooling(node)
            assert expected - 0.5 < node.cool_until - time.monotonic() <= expected
        last = await admission.acquire("org/m")
        assert last.node is node  # still the only node: a last resort
        admission.release(last, ok=True)
        assert node.failures == 0 and not registry.cooling(node)
        for _ in range(50):
            admission.release(Held(node), ok=False)
        assert COOL_MAX - 0.5 < node.cool_until - time.monotonic() <= COOL_MAX
        registry.stopped("n1")
        beat(registry)  # it came back
        assert node.failures == 0 and not registry.cooling(node)

    asyncio.run(scenario())
