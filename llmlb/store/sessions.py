"""Chat sessions and their messages: the REPL's memory, kept in the catalog."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import delete, func
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from llmlb import validation
from llmlb.errors import BadRequest, Conflict, NotFound
from llmlb.store import db
from llmlb.store.models import Message, Role, Session, utcnow

# The contract's SessionSettings entity: temperature 0.0-2.0 (default 0.7), top_p 0.0-1.0
# (default 0.9), max_tokens (optional, >= 1), show_thinking (default false), stream (default
# true), plus the REPL's system prompt. `check_settings` holds the ranges; these are the defaults.
DEFAULT_SETTINGS = {
    "temperature": 0.7,
    "top_p": 0.9,
    "max_tokens": None,
    "show_thinking": False,
    "stream": True,
    "system": None,
}
ROLES = {"user": Role.USER.value, "assistant": Role.ASSISTANT.value, "system": Role.SYSTEM.value}
MIN_PREFIX = 4


def check_settings(settings: Any) -> dict[str, Any]:
    """The contract's SessionSettings ranges; unknown keys are refused."""
    if not isinstance(settings, dict):
        raise BadRequest("field 'settings' must be an object")
    out = {}
    for key, value in settings.items():
        if key == "temperature":
            value = validation.check_range("temperature", value, 0.0, 2.0)
        elif key == "top_p":
            value = validation.check_range("top_p", value, 0.0, 1.0)
        elif key == "max_tokens":
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise BadRequest(f"max_tokens must be a whole number of at least 1 (got {value!r})")
        elif key in ("show_thinking", "stream"):
            if not isinstance(value, bool):
                raise BadRequest(f"{key} must be true or false")
        elif key == "system":
            if value is not None and not isinstance(value, str):
                raise BadRequest("system must be a string")
        else:
            raise BadRequest(f"unknown session setting '{key}'")
        out[key] = value
    return out


def create(engine: Engine, model_name: str, settings: dict | None = None) -> Session:
    with db.session(engine) as s:
        row = Session(
            model_name=model_name, settings={**DEFAULT_SETTINGS, **check_settings(settings or {})}
        )
        s.add(row)
        s.commit()
        s.refresh(row)
        return row


def find(engine: Engine, ident: str) -> Session:
    """By full id or a unique prefix of at least four characters."""
    ident = ident.strip().lower()
    if len(ident) < MIN_PREFIX or not all(c in "0123456789abcdef-" for c in ident):
        raise BadRequest(f"session id '{ident}' must be at least {MIN_PREFIX} hex characters")
    with db.session(engine) as s:
        rows = s.exec(select(Session).where(col(Session.id).startswith(ident)).limit(2)).all()
    if not rows:
        raise NotFound(f"session '{ident}' not found")
    if len(rows) > 1:
        raise Conflict(f"session id '{ident}' is ambiguous; type more of it")
    return rows[0]


def recent(engine: Engine, model_name: str | None = None, limit: int = 10) -> list[dict[str, Any]]:
    with db.session(engine) as s:
        q = select(Session).order_by(col(Session.updated_at).desc()).limit(limit)
        if model_name:
            q = q.where(Session.model_name == model_name)
        rows = s.exec(q).all()
        out = []
        for row in rows:
            count = s.exec(
                select(func.count()).select_from(Message).where(Message.session_id == row.id)
            ).one()
            first = s.exec(
                select(Message.content)
                .where(Message.session_id == row.id, Message.role == Role.USER.value)
                .order_by(col(Message.position))
                .limit(1)
            ).first()
            out.append(
                {**summary(row), "message_count": count, "preview": readable(first or "")[:60]}
            )
        return out


def readable(text: str) -> str:
    """Text as it can be sent: a lone surrogate (stored by an older version, which accepted
    them) becomes U+FFFD instead of breaking every answer that includes it."""
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def summary(row: Session) -> dict[str, Any]:
    settings = {k: readable(v) if isinstance(v, str) else v for k, v in row.settings.items()}
    return {
        "id": row.id,
        "model": row.model_name,
        "settings": settings,
        "token_count": row.token_count,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


def messages(engine: Engine, session_id: str) -> list[dict[str, Any]]:
    with db.session(engine) as s:
        rows = s.exec(
            select(Message).where(Message.session_id == session_id).order_by(col(Message.position))
        ).all()
    return [
        {
            "role": r.role.lower(),
            "content": readable(r.content),
            "images": r.images or None,
            "thinking": readable(r.thinking) if r.thinking else None,
            "timestamp": r.timestamp.isoformat(),
        }
        for r in rows
    ]


def _message(raw: Any, i: int) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise BadRequest(f"field 'messages[{i}]' must be an object")
    role = ROLES.get(str(raw.get("role")))
    if role is None:
        raise BadRequest(f"field 'messages[{i}].role' must be user, assistant or system")
    content = raw.get("content", "")
    images = raw.get("images") or None
    thinking = raw.get("thinking") or None
    if not isinstance(content, str) or (thinking is not None and not isinstance(thinking, str)):
        raise BadRequest(f"field 'messages[{i}]' content and thinking must be strings")
    if images is not None and (
        not isinstance(images, list) or not all(isinstance(x, str) for x in images)
    ):
        raise BadRequest(f"field 'messages[{i}].images' must be a list of base64 strings")
    return {"role": role, "content": content, "images": images, "thinking": thinking}


def append(engine: Engine, session_id: str, raw_messages: Any, tokens: int = 0) -> Session:
    """Add messages (validated all first, written in one transaction) and count tokens.

    Appends to one catalog are serialised: reading the last position and writing after it is
    a read-modify-write, and two concurrent appends must never take the same position or lose
    each other's token counts."""
    if not isinstance(raw_messages, list):
        raise BadRequest("field 'messages' must be a list")
    items = [_message(m, i) for i, m in enumerate(raw_messages)]
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        raise BadRequest("field 'tokens' must be a whole number of at least 0")
    with _writer(engine), db.session(engine) as s:
        row = s.get(Session, session_id)
        if row is None:
            raise NotFound(f"session '{session_id}' not found")
        last = s.exec(
            select(func.max(Message.position)).where(Message.session_id == session_id)
        ).one()
        position = (last if last is not None else -1) + 1
        for item in items:
            s.add(Message(session_id=session_id, position=position, **item))
            position += 1
        row.token_count += tokens
        row.updated_at = utcnow()
        s.add(row)
        s.commit()
        s.refresh(row)
        return row


_WRITERS: dict[int, threading.Lock] = {}
_WRITERS_GUARD = threading.Lock()


def _writer(engine: Engine) -> threading.Lock:
    """The one writer of a catalog's sessions in this process (the node server)."""
    with _WRITERS_GUARD:
        return _WRITERS.setdefault(id(engine), threading.Lock())


def clear(engine: Engine, session_id: str) -> None:
    """Forget the conversation; the system prompt lives in the settings and stays."""
    with db.session(engine) as s:
        s.exec(
            delete(Message).where(
                col(Message.session_id) == session_id, col(Message.role) != Role.SYSTEM.value
            )
        )
        row = s.get(Session, session_id)
        if row is None:
            raise NotFound(f"session '{session_id}' not found")
        row.updated_at = utcnow()
        s.add(row)
        s.commit()


def update_settings(engine: Engine, session_id: str, settings: Any) -> Session:
    changes = check_settings(settings)
    with db.session(engine) as s:
        row = s.get(Session, session_id)
        if row is None:
            raise NotFound(f"session '{session_id}' not found")
        row.settings = {**row.settings, **changes}
        row.updated_at = utcnow()
        s.add(row)
        s.commit()
        s.refresh(row)
        return row
