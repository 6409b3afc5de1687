"""Every router route takes the API key, except the exemptions listed in router_app.EXEMPT."""

from __future__ import annotations

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from llmlb.balancer.proxy import PROXIED
from llmlb.server import router_app
from llmlb.server.router_app import EXEMPT, RouterConfig, create_router_app

KEY = "sk-test-key"


@pytest.fixture
def router(tmp_path):
    app = create_router_app(
        RouterConfig(home=tmp_path / "router", api_keys=[KEY], node_token="t0k")
    )
    with TestClient(app, base_url="http://127.0.0.1:32768") as client:
        yield client, litestar_app(app)


def litestar_app(app) -> Litestar:
    inner = app.app.app  # BrowserGuard -> ProxyApp -> Litestar
    assert isinstance(inner, Litestar)
    return inner


def routes(app: Litestar):
    for route in app.routes:
        for handler in route.route_handlers:
            for method in sorted(handler.http_methods):
                yield route.path_format, method, handler


def test_the_key_guard_is_on_the_app_and_exemptions_are_listed(router):
    _, app = router
    assert router_app.require_key in app.guards
    seen = set()
    for path, method, handler in routes(app):
        kind = handler.opt.get("access")
        assert kind is None or kind in EXEMPT, f"{method} {path} has an unlisted exemption {kind!r}"
        if kind:
            seen.add((path, kind))
    assert seen == {
        ("/", "public"),
        ("/dashboard", "public"),
        ("/admin/nodes/heartbeat", "node"),
        ("/admin/nodes/{node_id}/stopped", "node"),
    }


def concrete(path: str) -> str:
    return path.replace("{node_id}", "n1").replace("{model_id}", "org/m")


def test_every_guarded_route_refuses_a_request_without_the_key(router):
    client, app = router
    checked = 0
    for path, method, handler in routes(app):
        if handler.opt.get("access") or method in ("HEAD", "OPTIONS"):
            continue
        r = client.request(method, concrete(path), json={} if method != "GET" else None)
        assert r.status_code == 401, f"{method} {path} answered {r.status_code} without a key"
        ok = client.request(method, concrete(path), headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code != 401, f"{method} {path} refused the right key"
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize("path", sorted(PROXIED))
def test_proxied_routes_take_the_key_too(router, path):
    client, _ = router
    r = client.post(path, json={"model": "m"})
    assert r.status_code == 401
    r = client.post(path, json={"model": "m"}, headers={"X-API-Key": KEY})
    assert r.status_code == 404  # past the key: no node has the model


def test_node_routes_take_the_node_token_not_the_key(router):
    client, _ = router
    beat = {"id": "n1", "host": "127.0.0.1", "port": 1}
    assert client.post("/admin/nodes/heartbeat", json=beat).status_code == 401
    r = client.post("/admin/nodes/heartbeat", json=beat, headers={"x-llmlb-node-token": "t0k"})
    assert r.status_code == 200
    assert client.get("/dashboard").status_code == 200
