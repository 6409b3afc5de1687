"""The two databases' schemas, each with its own Alembic chain.

A node keeps its catalog (models, sessions, downloads) in llmlb.db; the router keeps its node
registry and request history in router.db. Each schema has its own chain of migrations, so each
database holds only its own tables: `migrations/node` and `migrations/router` at the top of a
source checkout, `llmlb/migrations/...` inside an installed wheel (pyproject maps one onto the
other). The tables of a schema are the SQLModel tables of its module: models.py for the node,
router_models.py for the router.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, Table
from sqlmodel import SQLModel

from llmlb.store import models, router_models

NODE = "node"
ROUTER = "router"
SCHEMAS = (NODE, ROUTER)

_MODULES: dict[str, types.ModuleType] = {NODE: models, ROUTER: router_models}
_PACKAGE = Path(__file__).resolve().parents[1]


def migrations_dir() -> Path:
    """Where the chains live: inside the installed package, else at the checkout's top."""
    packaged = _PACKAGE / "migrations"
    return packaged if packaged.is_dir() else _PACKAGE.parent / "migrations"


def script_location(schema: str) -> Path:
    return migrations_dir() / _check(schema)


def tables(schema: str) -> list[Table]:
    """The tables of `schema`: every SQLModel table class its module defines."""
    module = _MODULES[_check(schema)]
    found = []
    for obj in vars(module).values():
        table = getattr(obj, "__table__", None)
        if (
            isinstance(obj, type)
            and issubclass(obj, SQLModel)
            and obj.__module__ == module.__name__
            and isinstance(table, Table)
        ):
            found.append(table)
    return found


def metadata(schema: str) -> MetaData:
    """A MetaData holding only `schema`'s tables (SQLModel.metadata holds both schemas')."""
    md = MetaData()
    for table in tables(schema):
        table.to_metadata(md)
    return md


def default_url(schema: str) -> str:
    from llmlb import settings

    if _check(schema) == ROUTER and settings.database_url():
        return str(settings.database_url())
    path = settings.catalog_path() if schema == NODE else settings.router_db_path()
    return f"sqlite:///{path}"


def run_env(schema: str) -> None:
    """The body of both chains' env.py. The servers hand Alembic an open connection; a
    developer running `alembic` by hand gets the URL of alembic.ini or $LLMLB_HOME's file."""
    from alembic import context

    config = context.config
    opts: dict[str, Any] = {"target_metadata": metadata(schema), "render_as_batch": True}
    url = config.get_main_option("sqlalchemy.url") or default_url(schema)
    if context.is_offline_mode():
        context.configure(url=url, literal_binds=True, **opts)
        with context.begin_transaction():
            context.run_migrations()
        return
    conn = config.attributes.get("connection")
    if conn is not None:
        context.configure(connection=conn, **opts)
        with context.begin_transaction():
            context.run_migrations()
        return
    from llmlb.store.engine import make_url_engine

    engine = make_url_engine(url)
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, **opts)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


def _check(schema: str) -> str:
    if schema not in SCHEMAS:
        raise ValueError(f"unknown schema {schema!r}: expected one of {', '.join(SCHEMAS)}")
    return schema
