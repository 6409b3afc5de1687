"""The dashboard in a real headless Chromium, with a router and two real nodes."""

import shutil

import httpx
import pytest
from playwright.sync_api import sync_playwright

from tests.e2e.conftest import start_node
from tests.support.procs import ServerProcess

BEAT = {"LLMLB_HEARTBEAT_MS": "300", "LLMLB_THREADS": "1"}
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, (
        "Debian's chromium is needed for the browser tests: apt-get install chromium (make test does it)"
    )
    return path


@pytest.fixture
def browser_page(tmp_path):
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        yield page
        browser.close()


def check(page, tmp_path, name, js, timeout=15000):
    """Wait for `js` to hold on the live page; on failure save a screenshot and name it."""
    try:
        page.wait_for_function(js, timeout=timeout)
    except Exception as exc:
        shot = tmp_path / f"{name}.png"
        page.screenshot(path=str(shot), full_page=True)
        raise AssertionError(
            f"dashboard check '{name}' failed ({exc}); screenshot: {shot}"
        ) from None


def test_dashboard_follows_the_cluster_live(tmp_path, browser_page, endless_gguf):
    page = browser_page
    router = ServerProcess(tmp_path / "router", kind="router", env=BEAT).start()
    nodes = [
        start_node(
            tmp_path / f"node{i}",
            {"org/endless": endless_gguf},
            env=BEAT,
            extra_args=("--router", router.url),
        )
        for i in range(2)
    ]
    try:
        page.goto(router.url + "/dashboard")
        check(
            page,
            tmp_path,
            "two-nodes-online",
            "[...document.querySelectorAll('#nodes tbody tr[data-node] .pill')].filter("
            "p => p.textContent === 'online').length === 2",
        )
        check(
            page,
            tmp_path,
            "model-listed",
            "document.querySelector('#models tr[data-model=\"org/endless\"]')?.textContent.includes('available')",
        )
        assert page.locator("#health").inner_text() == "healthy"
        url_before = page.url

        for i in range(6):
            r = httpx.post(
                router.url + "/v1/chat/completions",
                json={
                    "model": "endless",
                    "messages": [{"role": "user", "content": f"q{i}"}],
                    "max_tokens": 3,
                },
                timeout=30,
            )
            assert r.status_code == 200
        check(
            page,
            tmp_path,
            "requests-shown",
            "document.querySelectorAll('#requests tbody tr').length >= 6 && "
            "document.querySelector('#requests tbody').textContent.includes('/v1/chat/completions')",
        )
        check(
            page,
            tmp_path,
            "chart-shows-requests",
            "[...document.querySelectorAll('#chart rect.reqbar')].reduce((n, r) => n + (+r.dataset.requests), 0) >= 6",
        )

        nodes[0].kill()
        check(
            page,
            tmp_path,
            "node-offline",
            "[...document.querySelectorAll('#nodes tbody tr[data-node] .pill')].some("
            "p => p.textContent === 'offline' || p.textContent === 'error')",
        )
        assert page.locator("#health").inner_text() == "degraded"
        assert page.url == url_before  # updated in place, never reloaded
        # a node cooling down after a failed request says so (rendered from the nodes JSON)
        row = httpx.get(router.url + "/admin/cluster/nodes").json()["nodes"][0]
        assert (
            page.evaluate(
                """row => { nodes([{...row, status: "online", cooling_down: true}]);
            return document.querySelector("#nodes tbody .cool").textContent; }""",
                row,
            )
            == "cooling down"
        )
        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

        router.stop()
        check(
            page,
            tmp_path,
            "router-unreachable",
            "getComputedStyle(document.getElementById('banner')).display === 'block'",
        )
    finally:
        for n in nodes:
            n.stop()
        router.stop()


def test_dashboard_asks_for_a_key(tmp_path, browser_page):
    router = ServerProcess(
        tmp_path / "router", kind="router", env={**BEAT, "LLMLB_API_KEYS": "dash-key-123"}
    ).start()
    page = browser_page
    try:
        page.goto(router.url + "/dashboard")
        assert "dash-key-123" not in page.content()
        check(
            page,
            tmp_path,
            "key-form",
            "getComputedStyle(document.getElementById('keyform')).display === 'block'",
        )
        page.fill("#key", "dash-key-123")
        page.click("#keyform button")
        check(
            page, tmp_path, "after-key", "document.getElementById('health').textContent === 'down'"
        )
        assert "dash-key-123" not in page.url and "dash-key-123" not in page.content()
        assert page.evaluate("sessionStorage.getItem('llmlb-key')") == "dash-key-123"
    finally:
        router.stop()


def test_dashboard_says_when_the_shared_database_is_down(tmp_path, browser_page):
    from tests.support.services import new_postgres

    pg = new_postgres().start()
    router = ServerProcess(
        tmp_path / "router",
        kind="router",
        env={**BEAT, "LLMLB_DATABASE_URL": pg.create_database("dash")},
    ).start()
    page = browser_page
    try:
        page.goto(router.url + "/dashboard")
        check(
            page,
            tmp_path,
            "database-card",
            "document.querySelector('[data-shared=\"Database (postgresql)\"]')?.textContent"
            ".includes('ok')",
        )
        assert not page.locator("#dbbanner").is_visible()
        pg.stop()
        check(
            page,
            tmp_path,
            "database-down-banner",
            "getComputedStyle(document.getElementById('dbbanner')).display === 'block' && "
            "document.getElementById('dbbanner').textContent.includes('cannot be reached')",
        )
        assert "unreachable" in page.locator("[data-shared='Database (postgresql)']").inner_text()
        assert not page.locator("#banner").is_visible()  # the router itself still answers
    finally:
        router.stop()
        pg.close()
