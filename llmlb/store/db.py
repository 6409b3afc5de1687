"""Engine set-up (WAL, busy_timeout, foreign keys) and each schema's Alembic migrations at
start-up (the schemas and their chains: schema.py). The router's database may also be a
PostgreSQL that several routers share (LLMLB_DATABASE_URL)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from llmlb.store import schema as schema_mod
from llmlb.store.engine import make_engine, make_url_engine
from llmlb.store.schema import NODE, ROUTER


def alembic_config(schema: str = NODE):
    """Alembic's Config built in code from the packaged chain, so an installed wheel needs no
    alembic.ini (that file is for developers running `alembic` by hand)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(schema_mod.script_location(schema)))
    return cfg


# Routers that share a PostgreSQL start together: the first to take this lock migrates, the
# others wait for it and find nothing left to do. (Any fixed 64-bit number: "llmlb" in ASCII.)
MIGRATION_LOCK = 0x6C6C6D6C62


def _serialise(conn) -> None:
    if conn.dialect.name == "postgresql":  # held until the migration's transaction ends
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})


def upgrade(engine: Engine, revision: str = "head", schema: str = NODE) -> None:
    """Bring the database to `revision` of `schema`'s chain; a no-op when it is already there."""
    from alembic import command

    cfg = alembic_config(schema)
    with engine.begin() as conn:
        _serialise(conn)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def downgrade(engine: Engine, revision: str = "base", schema: str = NODE) -> None:
    from alembic import command

    cfg = alembic_config(schema)
    with engine.begin() as conn:
        _serialise(conn)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None: never migrated)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def open_node_catalog(path: Path | str) -> Engine:
    """The node server's way in: an engine on its catalog (llmlb.db), migrated."""
    engine = make_engine(path)
    upgrade(engine, schema=NODE)
    return engine


def open_router_catalog(path: Path | str) -> Engine:
    """The router's way in: an engine on its database (router.db), migrated."""
    engine = make_engine(path)
    upgrade(engine, schema=ROUTER)
    return engine


def open_router_database(url: str) -> Engine:
    """The router's way in when its state lives at a URL (LLMLB_DATABASE_URL), migrated."""
    engine = make_url_engine(url)
    try:
        upgrade(engine, schema=ROUTER)
    except BaseException:
        engine.dispose()
        raise
    return engine


@contextmanager
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as s:
        yield s
