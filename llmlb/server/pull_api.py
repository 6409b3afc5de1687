"""POST /api/pull: ollama-compatible NDJSON progress of a download that runs in the background.

Resolving the repo (404, gated, bad name, disk space) happens before the first line, so those
are plain HTTP errors. Then the handler only watches the DownloadProgress row: a client that
goes away leaves the download running, and a second pull of the same model attaches to it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import anyio
from anyio import to_thread
from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.response import Stream
from sqlalchemy.engine import Engine

from llmlb.jobs.downloader import DownloadError
from llmlb.jobs.lifecycle import Downloads
from llmlb.jobs.pull import Pulls
from llmlb.server.requests import PullRequest
from llmlb.sources import huggingface as hf
from llmlb.store import catalog
from llmlb.store.models import DownloadStatus

NDJSON = "application/x-ndjson"
POLL_SECS = 0.1
TOKEN_HEADER = "x-hf-token"  # the CLI forwards its HF_TOKEN; kept in memory only


def _file_event(f: hf.PlanFile, completed: int) -> dict:
    digest = f.sha256 or f.blob_id or ""
    return {
        "status": f"pulling {digest[:12]}",
        "digest": f"sha256:{f.sha256}" if f.sha256 else digest,
        "total": f.size,
        "completed": completed,
    }


def _file_done(state: dict, f: hf.PlanFile) -> int:
    st = (state.get("files") or {}).get(f.path) or {}
    if st.get("done"):
        return f.size
    return sum(p[2] for p in st.get("parts") or [])


async def _watch(pulls, name: str) -> AsyncIterator[dict]:
    sent: dict[str, int] = {}
    phases = ["verifying sha256 digest", "writing manifest"]
    shown = 0
    while True:
        row = await to_thread.run_sync(pulls.row, name)
        if row is None:
            yield {"error": f"the download of '{name}' was cancelled"}
            return
        state = row.plan or {}
        plan = hf.Plan.from_json(state["plan"])
        for f in plan.files:
            done = _file_done(state, f)
            if sent.get(f.path) != done:
                sent[f.path] = done
                yield _file_event(f, done)
        if row.status == DownloadStatus.FAILED.value:
            yield {"error": row.error or "download failed"}
            return
        phase = state.get("phase")
        reached = {"verifying": 1, "writing": 2, "done": 2}.get(str(phase), 0)
        if row.status == DownloadStatus.COMPLETED.value:
            reached = 2
        while shown < reached:
            yield {"status": phases[shown]}
            shown += 1
        if row.status == DownloadStatus.COMPLETED.value:
            yield {"status": "success"}
            return
        await anyio.sleep(POLL_SECS)


def _installed(engine: Engine, plan: hf.Plan) -> bool:
    """Already pulled at this revision: nothing to download."""
    m = catalog.find(engine, plan.name)
    main = plan.main
    return bool(m and main and m.digest and m.digest == main.digest and m.source == "HuggingFace")


def _start(pulls: Pulls, text: str, token: str | None) -> tuple[str, hf.Plan | None]:
    """(model name, plan) after starting or attaching to its download; plan None when installed."""
    ref = hf.parse_ref(text)
    row = pulls.row(ref.model_name)
    if row is not None and row.status in (
        DownloadStatus.PENDING.value,
        DownloadStatus.DOWNLOADING.value,
    ):
        return ref.model_name, hf.Plan.from_json(row.plan["plan"])  # attach: no second download
    plan = hf.plan_pull(ref, token)
    if _installed(pulls.engine, plan):
        return plan.name, None
    pulls.submit(plan, token)
    return plan.name, plan


async def _events(pulls: Pulls, name: str, plan: hf.Plan | None) -> AsyncIterator[dict]:
    yield {"status": "pulling manifest"}
    if plan is None:
        m = await to_thread.run_sync(catalog.resolve, pulls.engine, name)
        main = hf.PlanFile(path=m.path, size=m.size_bytes, sha256=m.digest)
        yield _file_event(main, main.size)
        for status in ("verifying sha256 digest", "writing manifest", "success"):
            yield {"status": status}
        return
    async for event in _watch(pulls, name):
        yield event


@post("/api/pull", status_code=200)
async def pull(
    request: Request, data: JSONBody[PullRequest], downloads: NamedDependency[Downloads]
) -> Response:
    token = request.headers.get(TOKEN_HEADER) or None
    name, plan = await to_thread.run_sync(_start, downloads.pulls, data.target, token)
    events = _events(downloads.pulls, name, plan)
    if data.stream:

        async def body() -> AsyncIterator[bytes]:
            async for event in events:
                yield (json.dumps(event) + "\n").encode()

        return Stream(body(), media_type=NDJSON)
    last: dict = {}
    async for event in events:
        last = event
    if "error" in last:
        raise DownloadError(last["error"])
    return Response(last, media_type="application/json")


routes = [pull]
