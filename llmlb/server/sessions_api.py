"""Chat sessions for the REPL: create, list, load (by id prefix), append, clear, settings."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from anyio import to_thread
from litestar import delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter, QueryParameter
from msgspec import UNSET, Meta, UnsetType
from sqlalchemy.engine import Engine

from llmlb.server.requests import Image, ModelName, Text
from llmlb.store import catalog as store
from llmlb.store import sessions
from llmlb.store.models import Session


class SessionSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The contract's SessionSettings; only the keys sent are changed. Types are checked here,
    ranges by the data model's own rules (store.sessions.check_settings), which say more."""

    temperature: float | UnsetType = UNSET
    top_p: float | UnsetType = UNSET
    max_tokens: int | UnsetType | None = UNSET
    show_thinking: bool | UnsetType = UNSET
    stream: bool | UnsetType = UNSET
    system: Annotated[str, Meta(max_length=1024 * 1024)] | UnsetType | None = UNSET

    def changes(self) -> dict:
        return {k: v for k in self.__struct_fields__ if (v := getattr(self, k)) is not UNSET}


class NewSession(msgspec.Struct, kw_only=True):
    model: ModelName
    settings: SessionSettings | None = None


class SessionMessage(msgspec.Struct, kw_only=True):
    role: Literal["user", "assistant", "system"]
    content: Text = ""
    images: Annotated[list[Image], Meta(max_length=16)] | None = None
    thinking: Text | None = None


class Append(msgspec.Struct, kw_only=True):
    messages: Annotated[list[SessionMessage], Meta(max_length=1000)]
    tokens: Annotated[int, Meta(ge=0, le=10_000_000)] = 0


class SettingsChange(msgspec.Struct, kw_only=True):
    settings: SessionSettings


SessionId = Annotated[str, PathParameter(max_length=64)]


async def _full(engine: Engine, row: Session) -> dict:
    msgs = await to_thread.run_sync(sessions.messages, engine, row.id)
    return {**sessions.summary(row), "messages": msgs}


@post("/api/sessions", status_code=201)
async def create(data: JSONBody[NewSession], catalog: NamedDependency[Engine]) -> dict:
    model = await to_thread.run_sync(store.resolve, catalog, data.model)
    changes = data.settings.changes() if data.settings else {}
    row = await to_thread.run_sync(sessions.create, catalog, model.name, changes)
    return await _full(catalog, row)


@get("/api/sessions")
async def recent(
    catalog: NamedDependency[Engine],
    model: Annotated[str | None, QueryParameter(max_length=512)] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=100)] = 10,
) -> dict:
    if model:
        model = (await to_thread.run_sync(store.resolve, catalog, model)).name
    return {"sessions": await to_thread.run_sync(sessions.recent, catalog, model, limit)}


@get("/api/sessions/{ident:str}")
async def load(ident: SessionId, catalog: NamedDependency[Engine]) -> dict:
    return await _full(catalog, await to_thread.run_sync(sessions.find, catalog, ident))


@post("/api/sessions/{ident:str}/messages", status_code=200)
async def append(
    ident: SessionId, data: JSONBody[Append], catalog: NamedDependency[Engine]
) -> dict:
    row = await to_thread.run_sync(sessions.find, catalog, ident)
    messages = [msgspec.to_builtins(m) for m in data.messages]
    row = await to_thread.run_sync(sessions.append, catalog, row.id, messages, data.tokens)
    return sessions.summary(row)


@delete("/api/sessions/{ident:str}/messages", status_code=200)
async def clear(ident: SessionId, catalog: NamedDependency[Engine]) -> dict:
    row = await to_thread.run_sync(sessions.find, catalog, ident)
    await to_thread.run_sync(sessions.clear, catalog, row.id)
    return {"status": "cleared"}


@patch("/api/sessions/{ident:str}", status_code=200)
async def settings(
    ident: SessionId, data: JSONBody[SettingsChange], catalog: NamedDependency[Engine]
) -> dict:
    row = await to_thread.run_sync(sessions.find, catalog, ident)
    row = await to_thread.run_sync(
        sessions.update_settings, catalog, row.id, data.settings.changes()
    )
    return sessions.summary(row)


routes = [create, recent, load, append, clear, settings]
