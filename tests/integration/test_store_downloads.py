"""The download rows on a real SQLite catalog (store/downloads.py): the one place that reads
and writes them, and the one meaning of "an active download"."""

from __future__ import annotations

import pytest

from llmlb.server.store_api import _tags
from llmlb.store import catalog, db, downloads
from llmlb.store.models import DownloadStatus

STATE = {"plan": {"name": "x", "files": []}, "files": {}, "phase": "downloading"}


@pytest.fixture
def engine(llmlb_env):
    eng = db.open_node_catalog(llmlb_env / "llmlb.db")
    yield eng
    eng.dispose()


def _row(engine, name: str, status: DownloadStatus) -> int:
    download_id = downloads.queue(engine, name, STATE, 100, 10)
    downloads.update(engine, download_id, status=status.value)
    return download_id


def test_queue_writes_a_pending_row_and_a_second_pull_reuses_it(engine):
    first = downloads.queue(engine, "acme/a", STATE, 100, 10)
    row = downloads.find(engine, "acme/a")
    assert row is not None and row.id == first
    assert (row.status, row.total_bytes, row.downloaded_bytes) == ("Pending", 100, 10)
    downloads.update(engine, first, status="Failed", error="boom", speed_bps=5.0)
    assert downloads.get(engine, first).error == "boom"

    again = downloads.queue(engine, "acme/a", {**STATE, "phase": "x"}, 200, 0)
    row = downloads.get(engine, again)
    assert again == first  # one row per model
    assert (row.status, row.error, row.speed_bps, row.plan["phase"]) == ("Pending", None, 0.0, "x")


def test_active_means_pending_or_downloading_everywhere(engine):
    for status in DownloadStatus:
        _row(engine, f"acme/{status.value.lower()}", status)
    active = {r.model_name for r in downloads.active(engine)}
    assert active == {"acme/pending", "acme/downloading"}
    for status in DownloadStatus:
        row = downloads.find(engine, f"acme/{status.value.lower()}")
        assert downloads.is_active(row) == (row.model_name in active)
    # the catalog ("still downloading") and /api/tags read the same definition
    for status in DownloadStatus:
        name = f"acme/{status.value.lower()}"
        assert (catalog.downloading(engine, [name]) is not None) == (name in active)
    listed = {m["name"] for m in _tags(engine)["models"] if m.get("downloading")}
    assert listed == {f"{n}:latest" for n in active}


def test_update_of_a_row_that_is_gone_writes_nothing(engine):
    download_id = _row(engine, "acme/a", DownloadStatus.DOWNLOADING)
    assert downloads.remove(engine, "acme/a")
    downloads.update(engine, download_id, status="Failed")
    assert downloads.get(engine, download_id) is None and downloads.active(engine) == []


def test_remove_says_whether_the_download_was_unfinished(engine):
    _row(engine, "acme/done", DownloadStatus.COMPLETED)
    _row(engine, "acme/failed", DownloadStatus.FAILED)
    _row(engine, "acme/running", DownloadStatus.DOWNLOADING)
    assert downloads.remove(engine, "acme/done") is False
    assert downloads.remove(engine, "acme/failed") is True
    assert downloads.remove(engine, "acme/running") is True
    assert downloads.remove(engine, "acme/never") is False
    assert [downloads.find(engine, n) for n in ("acme/done", "acme/failed", "acme/running")] == [
        None
    ] * 3
