"""Chat sessions for the REPL: create, list, load (by id prefix), append, clear, settings."""

from __future__ import annotations

from anyio import to_thread
from litestar import Request, delete, get, patch, post

from llmlb.errors import BadRequest
from llmlb.server.body import field, json_object
from llmlb.store import catalog, sessions


def _engine(request: Request):
    return request.app.state.node.catalog


async def _full(request: Request, row) -> dict:
    msgs = await to_thread.run_sync(sessions.messages, _engine(request), row.id)
    return {**sessions.summary(row), "messages": msgs}


@post("/api/sessions", status_code=201)
async def create(request: Request) -> dict:
    data = await json_object(request)
    name = field(data, "model", str, required=True)
    model = await to_thread.run_sync(catalog.resolve, _engine(request), name)
    row = await to_thread.run_sync(
        sessions.create, _engine(request), model.name, data.get("settings")
    )
    return await _full(request, row)


@get("/api/sessions")
async def recent(request: Request, model: str | None = None, limit: int = 10) -> dict:
    if not 1 <= limit <= 100:
        raise BadRequest("limit must be from 1 to 100")
    if model:
        model = (await to_thread.run_sync(catalog.resolve, _engine(request), model)).name
    return {"sessions": await to_thread.run_sync(sessions.recent, _engine(request), model, limit)}


@get("/api/sessions/{ident:str}")
async def load(request: Request, ident: str) -> dict:
    return await _full(request, await to_thread.run_sync(sessions.find, _engine(request), ident))


@post("/api/sessions/{ident:str}/messages", status_code=200)
async def append(request: Request, ident: str) -> dict:
    data = await json_object(request)
    row = await to_thread.run_sync(sessions.find, _engine(request), ident)
    row = await to_thread.run_sync(
        sessions.append, _engine(request), row.id, data.get("messages"), data.get("tokens", 0)
    )
    return sessions.summary(row)


@delete("/api/sessions/{ident:str}/messages", status_code=200)
async def clear(request: Request, ident: str) -> dict:
    row = await to_thread.run_sync(sessions.find, _engine(request), ident)
    await to_thread.run_sync(sessions.clear, _engine(request), row.id)
    return {"status": "cleared"}


@patch("/api/sessions/{ident:str}", status_code=200)
async def settings(request: Request, ident: str) -> dict:
    data = await json_object(request)
    row = await to_thread.run_sync(sessions.find, _engine(request), ident)
    row = await to_thread.run_sync(
        sessions.update_settings, _engine(request), row.id, data.get("settings")
    )
    return sessions.summary(row)


routes = [create, recent, load, append, clear, settings]
