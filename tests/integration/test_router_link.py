"""A node given several routers (`--router A,B`) sends its heartbeats to the first that answers,
and moves on when that one goes down; against real router processes."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from llmlb.balancer.router_link import RouterLink, router_urls
from llmlb.errors import BadRequest
from llmlb.store import db
from tests.support.procs import ServerProcess, free_port


class Idle:
    def snapshot(self) -> dict:
        return {}


def registered(router: ServerProcess) -> list[str]:
    return [n["id"] for n in httpx.get(router.url + "/admin/cluster/nodes").json()["nodes"]]


def test_router_urls_are_a_comma_separated_list():
    assert router_urls(" a:1 , http://b:2/,,a:1") == ["http://a:1", "http://b:2"]
    for bad in ("", " , ", "ftp://x", "http://"):
        with pytest.raises(BadRequest):
            router_urls(bad)


def test_heartbeats_move_to_the_next_router_when_one_is_down(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    b = ServerProcess(tmp_path / "b", kind="router").start()
    catalog = db.open_node_catalog(tmp_path / "node" / "llmlb.db")

    async def scenario() -> None:
        link = RouterLink(f"{dead},{b.url}", "node-1", "127.0.0.1", 1234, catalog, Idle(), 1.0)
        try:
            await link.beat()
            assert link.url == b.url and not link.failing  # A refused: B took the beat
            assert registered(b) == ["node-1"]
            b.stop()
            await link.beat()  # B is gone too: the next try goes back to A, and fails
            assert link.failing  # tried both in turn within the one beat
            b.start()
            await link.beat()
            assert link.url == b.url and not link.failing
        finally:
            await link.client.aclose()

    try:
        asyncio.run(scenario())
    finally:
        b.stop()
        catalog.dispose()
