"""Databases as llmlb made them before each database got its own schema: one Alembic chain
(0001 node tables, 0002 router tables) applied to llmlb.db and router.db alike, so both
hold every table. The chain is a frozen copy of those migrations, run by Alembic as then."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from llmlb.store import db

SCRIPTS = Path(__file__).resolve().parent / "legacy_migrations"


def make_legacy_db(path: Path, revision: str = "0002") -> None:
    """Create `path` at `revision` of the former shared chain."""
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS))
    engine = db.make_engine(path)
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()
