"""`llmlb db ...`: catalog maintenance (the servers migrate by themselves at start-up)."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def db() -> None:
    """Maintain the SQLite catalog in $LLMLB_HOME."""


@db.command()
@click.option("--revision", default="head", show_default=True, help="Alembic revision to reach.")
def upgrade(revision: str) -> None:
    """Apply catalog migrations by hand (the servers do this at start-up)."""
    from llmlb import settings
    from llmlb.store import db as store_db

    engine = store_db.make_engine(settings.catalog_path())
    store_db.upgrade(engine, revision)
    click.echo(f"catalog at {settings.catalog_path()} is at revision {revision}")
