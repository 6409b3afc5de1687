from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlmodel import SQLModel

import llmlb.store.models
import llmlb.store.router_models  # noqa: F401
from llmlb.store import db


def _diff(engine):
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"render_as_batch": True, "compare_type": True})
        return compare_metadata(ctx, SQLModel.metadata)


def test_upgrade_head_matches_models(tmp_path):
    engine = db.make_engine(tmp_path / "c.db")
    db.upgrade(engine)
    assert _diff(engine) == []
    tables = set(inspect(engine).get_table_names())
    assert {"model", "node", "session", "message", "download_progress", "alembic_version"} <= tables


def test_downgrade_base_then_upgrade_again(tmp_path):
    engine = db.make_engine(tmp_path / "c.db")
    db.upgrade(engine)
    db.downgrade(engine, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    db.upgrade(engine)
    assert _diff(engine) == []


def test_upgrade_is_idempotent(tmp_path):
    engine = db.make_engine(tmp_path / "c.db")
    db.upgrade(engine)
    db.upgrade(engine)
    assert _diff(engine) == []


def test_pragmas(tmp_path):
    engine = db.open_catalog(tmp_path / "c.db")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 5000


def test_db_upgrade_command(tmp_path, llmlb_env):
    from tests.support.procs import run_cli

    r = run_cli("db", "upgrade")
    assert r.returncode == 0, r.stderr
    engine = db.make_engine(llmlb_env / "llmlb.db")
    assert _diff(engine) == []
