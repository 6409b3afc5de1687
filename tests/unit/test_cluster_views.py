"""`router models` renders the alias the router reports, and copes with routers that do not."""

from llmlb.cli import cluster


def test_router_models_shows_the_alias_and_treats_a_missing_one_as_none(monkeypatch, capsys):
    models = [
        {
            "model": "Qwen/Qwen2.5-0.5B-Instruct-GGUF",
            "nodes": ["a", "b"],
            "status": "available",
            "alias": "qwen2.5-0.5b-instruct",
        },
        {"model": "org/old", "nodes": ["a"], "status": "available"},  # an older router
        {"model": "org/none", "nodes": [], "status": "unavailable", "alias": None},
    ]
    monkeypatch.setattr(cluster, "_get", lambda path: {"models": models})
    cluster.show_models()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["MODEL", "NODES", "STATUS", "ALIAS"]
    assert lines[1].split() == [
        "Qwen/Qwen2.5-0.5B-Instruct-GGUF",
        "2",
        "available",
        "qwen2.5-0.5b-instruct",
    ]
    assert lines[2].split() == ["org/old", "1", "available"]
    assert lines[3].split() == ["org/none", "0", "unavailable"]


STATUS = {
    "status": "healthy",
    "nodes_online": 3,
    "nodes_offline": 0,
    "models_available": 2,
    "requests_last_hour": 1234,
    "vram_percent": None,
}


def test_router_status_of_one_router_on_sqlite_is_the_contracts(monkeypatch, capsys):
    s = {**STATUS, "database": {"engine": "sqlite", "shared": False, "status": "ok"}}
    monkeypatch.setattr(cluster, "_get", lambda path: {**s, "claims": {"store": "local"}})
    cluster.show_status()
    assert capsys.readouterr().out == (
        "Cluster Status: healthy\n\nNodes:      3 online / 0 offline\nModels:     2 available\n"
        "Requests:   1,234 (last hour)\nVRAM:       -\n"
    )


def test_router_status_says_the_shared_database_and_redis_are_down(monkeypatch, capsys):
    s = {
        **STATUS,
        "status": "degraded",
        "requests_last_hour": None,
        "database": {
            "engine": "postgresql",
            "shared": True,
            "status": "unreachable",
            "error": "connection refused",
            "down_since": "2026-01-01T00:00:00+00:00",
        },
        "claims": {"store": "redis", "status": "unreachable"},
        "history_pending": 1500,
        "history_dropped": 0,
    }
    monkeypatch.setattr(cluster, "_get", lambda path: s)
    cluster.show_status()
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Cluster Status: degraded" and out[4] == "Requests:   -"
    assert out[6].startswith("Database:   postgresql, UNREACHABLE (down since ")
    assert out[6].endswith(": connection refused)")
    assert out[7] == "History:    1,500 requests held in memory until it is back (0 dropped)"
    assert out[8] == "In flight:  Redis UNREACHABLE: each router counts alone meanwhile"
