"""Engines as both servers use them: SQLite files (WAL, a busy timeout, foreign keys on), and
for routers that share their state, PostgreSQL through psycopg 3 (LLMLB_DATABASE_URL)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlmodel import create_engine

from llmlb.errors import LlmlbError

# A PostgreSQL that is down or unreachable must cost a router seconds, not minutes: the
# connection attempt, and a connection whose server stopped answering, give up after these.
CONNECT_TIMEOUT_SECS = 3
TCP_USER_TIMEOUT_MS = 5000


def _on_connect(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def make_engine(path: Path | str) -> Engine:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        f"sqlite:///{path}", connect_args={"check_same_thread": False, "timeout": 5}
    )
    event.listen(engine, "connect", _on_connect)
    return engine


def shown_url(url: str) -> str:
    """A database URL fit for a log line or an error: the password masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(an unreadable URL)"


def make_url_engine(url: str) -> Engine:
    """An engine for a database URL: `sqlite:///path` or `postgresql+psycopg://...`."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise LlmlbError(f"cannot read the database URL {shown_url(url)}") from exc
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database:
            raise LlmlbError("a sqlite:/// database URL needs a file path")
        return make_engine(parsed.database)
    if parsed.get_backend_name() != "postgresql":
        raise LlmlbError(f"unsupported database {shown_url(url)}: use PostgreSQL or SQLite")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise LlmlbError(
            "LLMLB_DATABASE_URL names PostgreSQL, but its driver is not installed: "
            "pip install 'llmlb[cluster]' (psycopg 3)"
        ) from None
    return create_engine(
        parsed,
        pool_pre_ping=True,  # a connection the server dropped is replaced, not handed out
        pool_size=5,
        max_overflow=10,
        pool_timeout=CONNECT_TIMEOUT_SECS,
        connect_args={
            "connect_timeout": CONNECT_TIMEOUT_SECS,
            "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
            "application_name": "llmlb-router",
        },
    )
