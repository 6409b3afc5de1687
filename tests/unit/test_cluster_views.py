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
