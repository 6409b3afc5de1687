"""`llmlb db ...`: schema maintenance by hand (the servers migrate by themselves at start-up)."""

from __future__ import annotations

import click

from llmlb.errors import LlmlbError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def db() -> None:
    """Maintain the databases: the SQLite files in $LLMLB_HOME, or LLMLB_DATABASE_URL's."""


@db.command()
@click.option(
    "--router",
    "router",
    is_flag=True,
    help="Upgrade the router's database (router.db, or LLMLB_DATABASE_URL) instead of the node "
    "catalog (llmlb.db).",
)
@click.option("--revision", default="head", show_default=True, help="Alembic revision to reach.")
def upgrade(router: bool, revision: str) -> None:
    """Migrate the node catalog, or with --router the router's database, by hand.

    The servers do this by themselves at start-up.
    """
    from alembic.util import CommandError
    from sqlalchemy.exc import DatabaseError

    from llmlb import settings
    from llmlb.store import db as store_db
    from llmlb.store.engine import make_url_engine, shown_url
    from llmlb.store.schema import NODE, ROUTER

    what = "router database" if router else "node catalog"
    url = settings.database_url() if router else None
    if url:
        path: object = shown_url(url)
        engine = make_url_engine(url)
    else:
        path = settings.router_db_path() if router else settings.catalog_path()
        engine = store_db.make_engine(path)
    try:
        store_db.upgrade(engine, revision, schema=ROUTER if router else NODE)
        reached = store_db.current_revision(engine)
    except CommandError as exc:
        raise LlmlbError(f"cannot upgrade the {what} {path}: {exc}") from exc
    except DatabaseError as exc:
        reason = (str(exc.orig).strip().splitlines() or ["unknown error"])[0]
        raise LlmlbError(f"cannot upgrade the {what} {path}: {reason}") from exc
    finally:
        engine.dispose()
    click.echo(f"{what} {path} is at revision {reached or 'base'}")
