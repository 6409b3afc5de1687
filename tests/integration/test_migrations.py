"""The two schemas (node catalog, router) and their Alembic chains: each database holds only its
own tables, each chain's head matches its SQLModel tables, and databases made by the former
shared chain (tests/support/legacy.py) upgrade cleanly. The router's chain runs on SQLite and
on a real PostgreSQL (tests/support/postgres.py) alike."""

import logging
import os
import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlmodel import SQLModel, select

from llmlb.store import db, schema
from llmlb.store.engine import make_url_engine
from llmlb.store.models import Message, Model, Session
from llmlb.store.router_models import RequestLog, RouterNode
from tests.support.legacy import make_legacy_db
from tests.support.procs import run_cli

LEGACY_NODE_TABLES = {"model", "node", "session", "message", "download_progress"}
NODE_TABLES = LEGACY_NODE_TABLES | {"stored_response"}
ROUTER_TABLES = {"router_node", "request_log", "router_setting"}
LEGACY_ROUTER_TABLES = {"router_node", "request_log"}  # what the former shared chain made
OWN = {schema.NODE: NODE_TABLES, schema.ROUTER: ROUTER_TABLES}
HEAD = {schema.NODE: "0006", schema.ROUTER: "0004"}
ENGINES = ("sqlite", "postgresql")


@pytest.fixture
def empty_db(request, tmp_path):
    """An empty database of the kind the test is parametrised with (`db_kind`)."""
    if request.param == "sqlite":
        engine = db.make_engine(tmp_path / "c.db")
    else:
        engine = make_url_engine(request.getfixturevalue("postgres_url"))
    yield engine
    engine.dispose()


# (schema, engine): the node catalog is SQLite only; the router's database is either
SCHEMA_ENGINES = [(schema.NODE, "sqlite"), *((schema.ROUTER, kind) for kind in ENGINES)]


def _diff(engine, name):
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"render_as_batch": True, "compare_type": True})
        return compare_metadata(ctx, schema.metadata(name))


def _tables(engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def test_every_table_belongs_to_exactly_one_schema():
    node = {t.name for t in schema.tables(schema.NODE)}
    router = {t.name for t in schema.tables(schema.ROUTER)}
    assert (node, router) == (NODE_TABLES, ROUTER_TABLES)
    assert set(SQLModel.metadata.tables) == node | router


@pytest.mark.parametrize(("name", "empty_db"), SCHEMA_ENGINES, indirect=["empty_db"])
def test_upgrade_head_matches_the_schemas_models(empty_db, name):
    engine = empty_db
    db.upgrade(engine, schema=name)
    assert _diff(engine, name) == []
    assert _tables(engine) == OWN[name] | {"alembic_version"}
    assert db.current_revision(engine) == HEAD[name]


def test_two_fresh_databases_hold_only_their_own_tables(llmlb_env):
    node = db.open_node_catalog(llmlb_env / "llmlb.db")
    router = db.open_router_catalog(llmlb_env / "router.db")
    assert _tables(node) == NODE_TABLES | {"alembic_version"}
    assert _tables(router) == ROUTER_TABLES | {"alembic_version"}


@pytest.mark.parametrize(("name", "empty_db"), SCHEMA_ENGINES, indirect=["empty_db"])
def test_downgrade_base_then_upgrade_again(empty_db, name):
    engine = empty_db
    db.upgrade(engine, schema=name)
    db.downgrade(engine, "base", schema=name)
    assert _tables(engine) <= {"alembic_version"}
    db.upgrade(engine, schema=name)
    assert _diff(engine, name) == []


@pytest.mark.parametrize(("name", "empty_db"), SCHEMA_ENGINES, indirect=["empty_db"])
def test_upgrade_is_idempotent(empty_db, name):
    engine = empty_db
    db.upgrade(engine, schema=name)
    db.upgrade(engine, schema=name)
    assert _diff(engine, name) == []


def test_pragmas(tmp_path):
    engine = db.open_node_catalog(tmp_path / "c.db")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 5000


def test_the_former_chain_put_every_table_into_both_databases(tmp_path):
    """The stand-in for old databases is faithful: what this branch's chains split apart."""
    engine = db.make_engine(tmp_path / "old.db")
    make_legacy_db(tmp_path / "old.db")
    assert _tables(engine) == LEGACY_NODE_TABLES | LEGACY_ROUTER_TABLES | {"alembic_version"}
    assert db.current_revision(engine) == "0002"


def _fill_node_catalog(engine) -> None:
    with engine.begin() as conn:  # the model table as that chain made it (no later columns)
        conn.execute(
            text(
                "INSERT INTO model (name, path, format, size_bytes, architecture, source, "
                "details, created_at) VALUES ('org/kept', '/m/kept.gguf', 'GGUF', 123, '', "
                "'Local', '{}', '2026-01-01 00:00:00')"
            )
        )
    with db.session(engine) as s:
        s.add(Session(id="s1", model_name="org/kept"))
        s.commit()  # before its message: no relationship tells the session the order
        s.add(Message(session_id="s1", position=0, role="User", content="still here"))
        s.commit()


@pytest.mark.parametrize("old_revision", ["0001", "0002"])
def test_a_node_catalog_from_the_former_chain_upgrades(tmp_path, old_revision):
    path = tmp_path / "llmlb.db"
    make_legacy_db(path, old_revision)
    engine = db.make_engine(path)
    _fill_node_catalog(engine)
    db.upgrade(engine, schema=schema.NODE)
    assert _tables(engine) == NODE_TABLES | {"alembic_version"}  # router tables dropped
    assert db.current_revision(engine) == HEAD[schema.NODE]
    assert _diff(engine, schema.NODE) == []
    with db.session(engine) as s:
        assert s.exec(select(Model.name)).all() == ["org/kept"]
        assert s.exec(select(Message.content)).all() == ["still here"]


def test_a_router_db_from_the_former_chain_upgrades(tmp_path):
    path = tmp_path / "router.db"
    make_legacy_db(path)
    engine = db.make_engine(path)
    with engine.begin() as conn:  # the tables as that chain made them: no model of today's
        conn.execute(
            text(
                "INSERT INTO router_node (id, host, port, status, vram_total_bytes, "
                "vram_used_bytes, uptime_secs, models, loaded_models, registered_at, last_seen) "
                "VALUES ('n1', '10.0.0.2', 32769, 'Running', 0, 0, 0, '[]', '[]', "
                "'2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO request_log (time, endpoint, model, status, duration_ms, tokens_in, "
                "tokens_out) VALUES ('2026-01-01 00:00:00', '/v1/chat/completions', 'm', 200, 5, "
                "0, 0)"
            )
        )
    db.upgrade(engine, schema=schema.ROUTER)
    assert _tables(engine) == ROUTER_TABLES | {"alembic_version"}  # catalog tables dropped
    assert db.current_revision(engine) == HEAD[schema.ROUTER]
    assert _diff(engine, schema.ROUTER) == []
    with db.session(engine) as s:
        assert s.exec(select(RouterNode.host)).all() == ["10.0.0.2"]
        assert s.exec(select(RequestLog.status)).all() == [200]


def test_positions_taken_twice_by_racing_appends_are_renumbered(tmp_path):
    """Before appends were serialised, two messages could share a position; 0004 makes the pair
    unique, moving the later of a pair after it, so nothing is lost."""
    engine = db.make_engine(tmp_path / "llmlb.db")
    db.upgrade(engine, "0003", schema=schema.NODE)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO session (id, model_name, settings, created_at, updated_at, token_count) "
                "VALUES ('s1', 'm', '{}', '2026-01-01', '2026-01-01', 0)"
            )
        )
        for position, content in [(0, "a"), (1, "b"), (1, "c"), (2, "d")]:
            conn.execute(
                text(
                    "INSERT INTO message (session_id, position, role, content, timestamp) "
                    "VALUES ('s1', :p, 'User', :c, '2026-01-01')"
                ),
                {"p": position, "c": content},
            )
    db.upgrade(engine, schema=schema.NODE)
    with db.session(engine) as s:
        rows = s.exec(select(Message.position, Message.content).order_by(Message.position)).all()
    assert [tuple(r) for r in rows] == [(0, "a"), (1, "b"), (2, "c"), (3, "d")]
    with pytest.raises(Exception, match="UNIQUE"), engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO message (session_id, position, role, content, timestamp) "
                "VALUES ('s1', 3, 'User', 'x', '2026-01-01')"
            )
        )


def test_foreign_tables_that_hold_rows_are_kept_with_a_warning(tmp_path, caplog):
    path = tmp_path / "llmlb.db"
    make_legacy_db(path)
    engine = db.make_engine(path)
    with db.session(engine) as s:
        s.add(RequestLog(endpoint="/api/chat", model="m", status=200, duration_ms=1))
        s.commit()
    with caplog.at_level(logging.WARNING, logger="llmlb.store"):
        db.upgrade(engine, schema=schema.NODE)
    assert _tables(engine) == NODE_TABLES | LEGACY_ROUTER_TABLES | {"alembic_version"}
    assert db.current_revision(engine) == HEAD[schema.NODE]
    assert any("request_log, router_node" in r.getMessage() for r in caplog.records)
    with db.session(engine) as s:
        assert s.exec(select(RequestLog.endpoint)).all() == ["/api/chat"]


def test_db_upgrade_command_migrates_each_database(llmlb_env):
    r = run_cli("db", "upgrade")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"node catalog {llmlb_env / 'llmlb.db'} is at revision {HEAD[schema.NODE]}\n"
    assert not (llmlb_env / "router.db").exists()
    r = run_cli("db", "upgrade", "--router")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"router database {llmlb_env / 'router.db'} is at revision 0004\n"
    node = db.make_engine(llmlb_env / "llmlb.db")
    router = db.make_engine(llmlb_env / "router.db")
    assert _tables(node) == NODE_TABLES | {"alembic_version"} and _diff(node, schema.NODE) == []
    assert _tables(router) == ROUTER_TABLES | {"alembic_version"}
    assert _diff(router, schema.ROUTER) == []


def test_db_upgrade_command_on_databases_from_the_former_chain(llmlb_env):
    make_legacy_db(llmlb_env / "llmlb.db")
    make_legacy_db(llmlb_env / "router.db")
    assert run_cli("db", "upgrade").returncode == 0
    assert run_cli("db", "upgrade", "--router").returncode == 0
    assert _tables(db.make_engine(llmlb_env / "llmlb.db")) == NODE_TABLES | {"alembic_version"}
    assert _tables(db.make_engine(llmlb_env / "router.db")) == ROUTER_TABLES | {"alembic_version"}


def test_db_upgrade_command_errors_are_one_line(llmlb_env):
    r = run_cli("db", "upgrade", "--revision", "nope")
    assert r.returncode == 1
    assert r.stderr == (
        f"Error: cannot upgrade the node catalog {llmlb_env / 'llmlb.db'}: "
        "Can't locate revision identified by 'nope'\n"
    )
    llmlb_env.mkdir(parents=True, exist_ok=True)
    (llmlb_env / "router.db").write_bytes(b"not a database, just bytes " * 100)
    r = run_cli("db", "upgrade", "--router")
    assert r.returncode == 1
    assert r.stderr == (
        f"Error: cannot upgrade the router database {llmlb_env / 'router.db'}: "
        "file is not a database\n"
    )


@pytest.mark.parametrize("empty_db", ENGINES, indirect=True)
def test_router_rows_from_0003_keep_their_data_and_take_64_bit_counts(empty_db):
    """0004 on a database in use: nodes and history stay, rows get their updated_at from
    last_seen, and a GPU's VRAM in bytes (over 2**31) fits, as PostgreSQL's INTEGER would not."""
    engine = empty_db
    db.upgrade(engine, "0003", schema=schema.ROUTER)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO router_node (id, host, port, status, vram_total_bytes, "
                "vram_used_bytes, uptime_secs, models, loaded_models, registered_at, last_seen) "
                "VALUES ('n1', '10.0.0.2', 32769, 'Running', 0, 0, 5, '[]', '[]', "
                "'2026-01-01 00:00:00+00', '2026-01-02 03:04:05+00')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO request_log (time, endpoint, model, status, duration_ms, "
                "tokens_in, tokens_out) VALUES ('2026-01-01 00:00:00+00', '/api/chat', 'm', "
                "200, 1.5, 3, 4)"
            )
        )
    db.upgrade(engine, schema=schema.ROUTER)
    big = 80 * 2**30  # an 80 GB GPU
    with db.session(engine) as s:
        node = s.get(RouterNode, "n1")
        assert node is not None and node.updated_at == node.last_seen
        node.vram_total_bytes, node.uptime_secs = big, 2**40
        s.add(node)
        s.add(
            RequestLog(
                endpoint="/v1/completions", model="m", status=200, duration_ms=1, tokens_in=2**33
            )
        )
        s.commit()
    with db.session(engine) as s:
        assert s.exec(select(RouterNode.vram_total_bytes)).one() == big
        assert sorted(s.exec(select(RequestLog.tokens_in)).all()) == [3, 2**33]
    assert _diff(engine, schema.ROUTER) == []


def test_routers_starting_together_on_one_postgres_migrate_once(postgres_url):
    """Each router migrates at start-up; on a shared PostgreSQL an advisory lock makes the
    others wait for the first instead of creating the same tables at the same time."""
    engines, errors = [], []

    def start() -> None:
        try:
            engines.append(db.open_router_database(postgres_url))
        except Exception as exc:  # reported below, with the others
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == [] and len(engines) == 4
    assert db.current_revision(engines[0]) == HEAD[schema.ROUTER]
    assert _diff(engines[0], schema.ROUTER) == []
    for engine in engines:
        engine.dispose()


def test_db_upgrade_command_migrates_a_postgres_router_database(postgres_url):
    env = {**os.environ, "LLMLB_DATABASE_URL": postgres_url.replace("postgres@", "postgres:pw@")}
    r = run_cli("db", "upgrade", "--router", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith(" is at revision 0004\n") and "pw" not in r.stdout
    assert "***" in r.stdout
    engine = make_url_engine(postgres_url)
    assert _tables(engine) == ROUTER_TABLES | {"alembic_version"}
    engine.dispose()


def test_db_upgrade_command_on_an_unreachable_postgres_is_one_line(llmlb_env):
    from tests.support.procs import free_port

    url = f"postgresql://u:secret@127.0.0.1:{free_port()}/llmlb"
    r = run_cli("db", "upgrade", "--router", env={**os.environ, "LLMLB_DATABASE_URL": url})
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1
    assert r.stderr.startswith(
        "Error: cannot upgrade the router database postgresql+psycopg://u:***@"
    )
    assert "secret" not in r.stderr
