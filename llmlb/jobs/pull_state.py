"""The JSON a pull keeps in its DownloadProgress row, and the numbers derived from it.

{"plan": <what to fetch>, "files": {path: {"parts": [[start, end, done], ...], "done": bool,
"digest": hex, "size": bytes once known}}, "phase": "downloading" | "verifying" | "writing" |
"done"}. A job that dies at any point continues from it.
"""

from __future__ import annotations

import time

from llmlb.sources.hf_refs import Plan
from llmlb.units import Throughput


def fresh_state(plan: Plan) -> dict:
    return {
        "plan": plan.to_json(),
        "files": {f.path: {"parts": None, "done": False, "digest": None} for f in plan.files},
        "phase": "downloading",
    }


def file_done(state: dict, path: str, size: int | None) -> int:
    """Bytes of one file on disk: all of it once done, else what its parts hold."""
    st = (state.get("files") or {}).get(path) or {}
    if st.get("done"):
        return int(st.get("size") or size or 0)
    return sum(p[2] for p in st.get("parts") or [])


def file_size(state: dict, path: str, size: int | None) -> int | None:
    """The size the plan listed, or the one measured when a file of unknown size finished."""
    st = (state.get("files") or {}).get(path) or {}
    return size if size is not None else st.get("size")


def downloaded_bytes(state: dict) -> int:
    return sum(file_done(state, f["path"], f["size"]) for f in state["plan"]["files"])


def total_bytes(state: dict) -> int:
    """What is known of the total: listed sizes, plus measured ones of finished files."""
    return sum(file_size(state, f["path"], f["size"]) or 0 for f in state["plan"]["files"])


def sizes_known(state: dict) -> bool:
    return all(file_size(state, f["path"], f["size"]) is not None for f in state["plan"]["files"])


def copy(state: dict) -> dict:
    """A new object, so SQLAlchemy sees the JSON column change."""
    return {**state, "files": {k: dict(v) for k, v in state["files"].items()}}


class Speed:
    """A pull's bytes per second over the last seconds (units.Throughput): what the row's
    speed and time left are computed from."""

    def __init__(self, done: int):
        self.meter = Throughput()
        self.meter.add(time.monotonic(), done)

    def update(self, done: int) -> float:
        self.meter.add(time.monotonic(), done)
        return self.meter.rate()
