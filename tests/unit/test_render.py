from datetime import UTC, datetime, timedelta

import pytest

from llmlb.cli import render


@pytest.mark.parametrize(
    "n, text",
    [
        (0, "0 B"),
        (999, "999 B"),
        (1_500, "2 KB"),
        (397_000_000, "397 MB"),
        (6_400_000_000, "6.4 GB"),
        (14_200_000_000, "14.2 GB"),
        (1_000_000_000, "1.0 GB"),
        (2_500_000_000_000, "2.5 TB"),
        (None, "-"),
    ],
)
def test_size(n, text):
    assert render.size(n) == text


NOW = datetime(2026, 1, 8, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "delta, text",
    [
        (timedelta(seconds=5), "Less than a minute ago"),
        (timedelta(minutes=1), "1 minute ago"),
        (timedelta(minutes=59), "59 minutes ago"),
        (timedelta(hours=2), "2 hours ago"),
        (timedelta(days=1), "1 day ago"),
        (timedelta(days=3), "3 days ago"),
        (timedelta(days=14), "2 weeks ago"),
        (timedelta(days=65), "2 months ago"),
        (timedelta(days=800), "2 years ago"),
    ],
)
def test_ago(delta, text):
    assert render.ago(NOW - delta, NOW) == text


def test_ago_accepts_iso_strings_and_naive():
    assert render.ago("2026-01-08T10:00:00Z", NOW) == "2 hours ago"
    assert render.ago(datetime(2026, 1, 8, 10, 0), NOW) == "2 hours ago"


@pytest.mark.parametrize(
    "secs, text",
    [
        (1, "1 second"),
        (45, "45 seconds"),
        (240, "4 minutes"),
        (7200, "2 hours"),
        (172800, "2 days"),
    ],
)
def test_duration(secs, text):
    assert render.duration(secs) == text


def test_table_aligns_columns():
    out = render.table(["NAME", "SIZE"], [["a-long-name", "1 GB"], ["b", "12 MB"]])
    lines = out.splitlines()
    assert lines[0] == "NAME          SIZE"
    assert lines[1] == "a-long-name   1 GB"
    assert lines[2] == "b             12 MB"


def test_bar():
    assert render.bar(0.45) == "▓" * 9 + "░" * 11
    assert render.bar(1.0) == "▓" * 20
    assert render.bar(-1) == "░" * 20
