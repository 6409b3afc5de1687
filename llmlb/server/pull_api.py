"""POST /api/pull: ollama-compatible NDJSON progress of a download that runs in the background.

Resolving the repo (404, gated, bad name, disk space) happens before the first line, so those
are plain HTTP errors. Then the handler only follows the pull on the board (jobs/board.py),
which the job publishes to: a client that goes away leaves the download running, and a second
pull of the same model attaches to it.

Each line keeps ollama's fields (`status`, `digest`, `total`, `completed`), so ollama clients
work; file lines add `file` (the name in the repo), which `llmlb node pull` shows.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from anyio import to_thread
from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.response import Stream
from sqlalchemy.engine import Engine

from llmlb.jobs.board import Board, Stage
from llmlb.jobs.downloader import DownloadError
from llmlb.jobs.lifecycle import Downloads
from llmlb.server.requests import ModelOnly, PullRequest, push_refused
from llmlb.sources import huggingface as hf
from llmlb.store import catalog
from llmlb.validation import Source

NDJSON = "application/x-ndjson"
TOKEN_HEADER = "x-hf-token"  # the CLI forwards its HF_TOKEN; kept in memory only
ENDPOINT_HEADER = "x-hf-endpoint"  # the CLI forwards its HF_ENDPOINT (a mirror) for this pull
NO_CHECKSUM = "no checksum published; size checked"
STOPPED = "the download of '{name}' stopped; run `llmlb node pull {name}` to resume it"
STEPS_REACHED = {Stage.VERIFYING: 1, Stage.WRITING: 2, Stage.DONE: 2}  # of _steps' two


def _file_event(f: hf.PlanFile, completed: int, total: int | None) -> dict:
    return {
        "status": f"pulling {f.path}",
        # ollama clients key their bars by digest: a file without one still needs its own key
        "digest": f"sha256:{f.sha256}" if f.sha256 else (f.blob_id or f.path),
        "total": total or 0,
        "completed": completed,
        "file": f.path,
    }


def checksum_step(plan: hf.Plan) -> str:
    """Says what is verified, never more: sha256 (LFS files), git blob ids (small files, and
    what mirrors' tree listings give), or only the size when nothing was published."""
    kinds = {"sha256" if f.sha256 else "git blob" if f.blob_id else "none" for f in plan.files}
    known = sorted(kinds - {"none"}, reverse=True)
    if not known:
        return NO_CHECKSUM
    step = f"verifying {' and '.join(known)} digest{'s' if len(known) > 1 else ''}"
    if "none" in kinds:
        step += " (some files publish no checksum; their size is checked)"
    return step


def _steps(plan: hf.Plan) -> list[str]:
    return [checksum_step(plan), "writing manifest"]


async def _watch(board: Board, name: str) -> AsyncIterator[dict]:
    """The board's news of `name`'s pull as ollama's lines: a file's line when its bytes
    change, each step once, then success or an error."""
    sent: dict[str, int] = {}
    shown = 0
    with board.subscribe(name) as feed:
        async for progress in feed:
            if progress is None or progress.stage is Stage.CANCELLED:
                yield {"error": f"the download of '{name}' was cancelled"}
                return
            for f in progress.files:
                if sent.get(f.file.path) != f.done:
                    sent[f.file.path] = f.done
                    yield _file_event(f.file, f.done, f.size)
            if progress.stage is Stage.FAILED:
                yield {"error": progress.error or "download failed"}
                return
            if progress.stage is Stage.STOPPED:  # the job is gone: never wait on
                yield {"error": STOPPED.format(name=name)}
                return
            reached = STEPS_REACHED.get(progress.stage, 0)
            steps = _steps(progress.plan)
            while shown < reached:
                yield {"status": steps[shown]}
                shown += 1
            if progress.stage is Stage.DONE:
                yield {"status": "success"}
                return


def _installed(engine: Engine, plan: hf.Plan) -> bool:
    """Already pulled at this revision: nothing to download."""
    m = catalog.find(engine, plan.name)
    main = plan.main
    return bool(
        m and main and m.digest and m.digest == main.digest and m.source == Source.HUGGINGFACE
    )


def _start(
    downloads: Downloads, text: str, token: str | None, endpoint: str | None
) -> tuple[str, hf.Plan | None]:
    """(model name, plan) after starting or attaching to its download; plan None when installed."""
    if endpoint:
        endpoint = hf.allowed_endpoint(endpoint)
    ref = hf.parse_ref(text, endpoint)
    running = downloads.under_way(ref.model_name)
    if running is not None:
        return ref.model_name, running.plan  # attach: no second download
    plan = hf.plan_pull(ref, token, endpoint)
    if _installed(downloads.catalog, plan):
        return plan.name, None
    downloads.submit(plan, token)
    return plan.name, plan


async def _events(downloads: Downloads, name: str, plan: hf.Plan | None) -> AsyncIterator[dict]:
    yield {"status": "pulling manifest"}
    if plan is None:
        m = await to_thread.run_sync(catalog.resolve, downloads.catalog, name)
        main = hf.PlanFile(path=m.path.rsplit("/", 1)[-1], size=m.size_bytes, sha256=m.digest)
        yield _file_event(main, m.size_bytes, m.size_bytes)
        for status in ("verifying sha256 digest" if m.digest else NO_CHECKSUM, "writing manifest"):
            yield {"status": status}
        yield {"status": "success"}
        return
    async for event in _watch(downloads.board, name):
        yield event


@post("/api/pull", status_code=200)
async def pull(
    request: Request, data: JSONBody[PullRequest], downloads: NamedDependency[Downloads]
) -> Response:
    token = request.headers.get(TOKEN_HEADER) or None
    endpoint = request.headers.get(ENDPOINT_HEADER) or None
    name, plan = await to_thread.run_sync(_start, downloads, data.target, token, endpoint)
    events = _events(downloads, name, plan)
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


@post("/api/push", status_code=200)
async def push(data: JSONBody[ModelOnly]) -> None:
    """ollama's push; llmlb answers 400 with what to do instead."""
    raise push_refused(data.target)


routes = [pull, push]
