"""Claims on nodes: how a router takes a place on a node for a request and gives it back.

Two kinds behind one protocol, chosen once where the router is assembled
(server/router_app.py): LocalClaims, this router's own counters, and RedisClaims
(balancer/redis_claims.py), which counts every router's claims in Redis so that
LLMLB_NODE_MAX_IN_FLIGHT holds across routers. Both pick by the policy (balancer/policy.py);
Admission (balancer/admission.py) does the rest: the queue, the node's counters, the prefix
outcomes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client.core import Metric

from llmlb.balancer.policy import NodeView, Saturated, candidates, choose
from llmlb.errors import Unavailable
from llmlb.prefix import Point


@dataclass
class Claimed:
    """A place taken on `chosen`, one of the candidates `pool` (each with how much of the
    request's prefix it holds); `claim_id` names a claim to release elsewhere (Redis)."""

    chosen: NodeView
    pool: list[NodeView]
    claim_id: str | None = None


class Claims(Protocol):
    on_release: Callable[[], None]  # a place may have come free (on any router)
    known_nodes: Callable[[], Sequence[str]]  # the registry's nodes

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def describe(self) -> str:
        """Where the claims are counted, for the log."""
        ...

    def cluster_counts(self) -> Mapping[str, int] | None:
        """Claims on each node across every router; None when only this router's are known."""
        ...

    async def claim(
        self,
        views: list[NodeView],
        model: str,
        exclude: frozenset[str],
        chain: Sequence[Point],
        balance: int | None,
        recent_secs: float,
    ) -> Claimed | None:
        """A place on the node the policy picks among `views` (`balance`: prefix routing's
        threshold, None without it); None when every candidate is full. Raises Unavailable
        when no online node has the model."""
        ...

    def release(self, claim_id: str | None) -> None:
        """Give a claim back; synchronous, for the `finally` of a cancelled request."""
        ...

    def publish_held(self, node_id: str, hashes: Sequence[int]) -> None:
        """What a node's heartbeat says its prompt cache holds, for the other routers."""
        ...

    def status(self) -> dict[str, Any]: ...

    def gauges(self) -> Iterator[Metric]: ...


class LocalClaims:
    """This router's own counters (NodeEntry.in_flight, which Admission keeps): the check and
    the claim are one step on the event loop, with nothing awaited in between."""

    def __init__(self) -> None:
        self.on_release: Callable[[], None] = lambda: None
        self.known_nodes: Callable[[], Sequence[str]] = list

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def describe(self) -> str:
        return "this router's counters"

    def cluster_counts(self) -> Mapping[str, int] | None:
        return None

    async def claim(
        self,
        views: list[NodeView],
        model: str,
        exclude: frozenset[str],
        chain: Sequence[Point],
        balance: int | None,
        recent_secs: float,
    ) -> Claimed | None:
        try:
            view = choose(views, model, exclude, balance if chain else None)
        except Saturated:
            return None
        if view is None:
            raise Unavailable(f"no online node has model '{model}'")
        return Claimed(view, candidates(views, model, exclude))

    def release(self, claim_id: str | None) -> None:
        return None

    def publish_held(self, node_id: str, hashes: Sequence[int]) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {"store": "local", "status": "ok", "scope": "router"}

    def gauges(self) -> Iterator[Metric]:
        return iter(())
