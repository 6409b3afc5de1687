"""Stored responses of /v1/responses are bounded by age and total size, oldest first, in a
real (migrated) catalog."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import select

from llmlb.store import db
from llmlb.store import responses as stored
from llmlb.store.models import StoredResponse, utcnow

DAYS = 30


def body(rid: str, text: str = "") -> dict:
    return {"id": rid, "object": "response", "output": [{"type": "message", "text": text}]}


def keep(engine, rid: str, text: str = "", max_bytes: int = 1 << 20) -> bool:
    return stored.save(
        engine, rid, "m", body(rid, text), [], max_bytes=max_bytes, max_age_days=DAYS
    )


def kept(engine) -> set[str]:
    with db.session(engine) as s:
        return set(s.exec(select(StoredResponse.id)).all())


def test_past_the_size_budget_the_oldest_go_first(tmp_path):
    engine = db.open_node_catalog(tmp_path / "llmlb.db")
    one = stored.size_of(body("resp_a", "x" * 1000), [])
    for rid in ("resp_a", "resp_b", "resp_c"):
        assert keep(engine, rid, "x" * 1000, max_bytes=2 * one + 10)
    assert kept(engine) == {"resp_b", "resp_c"}
    assert stored.get(engine, "resp_a", DAYS) is None
    assert stored.get(engine, "resp_c", DAYS).body["id"] == "resp_c"


def test_a_response_larger_than_the_budget_is_not_kept_and_drops_nothing(tmp_path):
    engine = db.open_node_catalog(tmp_path / "llmlb.db")
    assert keep(engine, "resp_small")
    assert not keep(engine, "resp_huge", "x" * 5000, max_bytes=4000)
    assert kept(engine) == {"resp_small"}


def test_responses_past_their_age_are_gone(tmp_path):
    engine = db.open_node_catalog(tmp_path / "llmlb.db")
    assert keep(engine, "resp_old")
    with db.session(engine) as s:  # as if it had been kept 31 days ago
        row = s.get(StoredResponse, "resp_old")
        row.created_at = utcnow() - timedelta(days=DAYS + 1)
        s.add(row)
        s.commit()
    assert stored.get(engine, "resp_old", DAYS) is None  # expired, even before a trim
    assert keep(engine, "resp_new")
    assert kept(engine) == {"resp_new"}


def test_remove_says_whether_there_was_one(tmp_path):
    engine = db.open_node_catalog(tmp_path / "llmlb.db")
    assert keep(engine, "resp_a")
    assert stored.remove(engine, "resp_a") and not stored.remove(engine, "resp_a")
    assert kept(engine) == set()
