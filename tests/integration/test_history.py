"""The router's request history, in process on a real router database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from llmlb.balancer import history as history_mod
from llmlb.balancer.history import History
from llmlb.store import db
from llmlb.store.router_models import RequestLog


@pytest.fixture
def history(tmp_path):
    engine = db.open_router_catalog(tmp_path / "router.db")
    yield History(engine, keep_days=7)
    engine.dispose()


def record(h: History, status: int = 200, **extra) -> None:
    fields = {
        "endpoint": "/api/chat",
        "model": "m",
        "node_id": "n1",
        "status": status,
        "duration_ms": 10.0,
    }
    h.record(**{**fields, **extra})


def test_records_are_listed_newest_first_and_counted(history):
    for status in (200, 500, 499):
        record(history, status)
    recent = history.recent(10)
    assert [r["status"] for r in recent] == [499, 500, 200]
    assert history.last_hour() == 3
    minutes = history.per_minute(2)
    assert sum(m["requests"] for m in minutes) == 3
    assert sum(m["errors"] for m in minutes) == 1  # a client hanging up (499) is not an error


def test_prune_drops_rows_past_the_keep_days(history):
    with db.session(history.engine) as s:
        s.add(
            RequestLog(
                time=datetime.now(UTC) - timedelta(days=8),
                endpoint="/x",
                model="m",
                status=200,
                duration_ms=1,
            )
        )
        s.commit()
    record(history)
    history.flush()
    history.prune()
    assert [r["endpoint"] for r in history.recent(10)] == ["/api/chat"]


def test_the_writer_loop_survives_a_failure(history, monkeypatch, caplog):
    """A failing prune used to end the loop for good; supervised, it restarts and writes on."""
    monkeypatch.setattr(history_mod, "FLUSH_EVERY", 0.01)
    monkeypatch.setattr(history_mod, "PRUNE_EVERY", timedelta(0))  # prune on every turn
    calls = {"n": 0}
    real_prune = history.prune

    def flaky_prune() -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the loop's first prune (the first call is start()'s own)
            raise RuntimeError("disk hiccup")
        real_prune()

    monkeypatch.setattr(history, "prune", flaky_prune)

    async def scenario() -> None:
        await history.start()
        record(history)
        for _ in range(500):  # the restart waits 1 s: poll for up to 10 s
            if calls["n"] >= 3 and not history.pending:
                break
            await asyncio.sleep(0.02)
        record(history)
        await history.stop()

    asyncio.run(scenario())
    assert calls["n"] >= 3  # failed once, then pruned again after the restart
    assert "background task request history failed" in caplog.text and "disk hiccup" in caplog.text
    assert history.last_hour() == 2  # every record written
