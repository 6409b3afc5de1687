"""The router's Prometheus metrics, kept by prometheus_client in a registry of this router's own.

Requests are counted with the status the client really got (a router-side refusal counts under
node="none"); durations are histograms in seconds. Gauges are read from the registry at
scrape time, as are the health of the database and of Redis, and the history's backlog.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from llmlb.balancer.admission import Admission
    from llmlb.balancer.claims import Claims
    from llmlb.balancer.database import Database
    from llmlb.balancer.history import History
    from llmlb.balancer.registry import Registry

prometheus_client.disable_created_metrics()

CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
NO_NODE = "none"


class _RegistryGauges(Collector):
    def __init__(self, registry: Registry, admission: Admission):
        self.registry, self.admission = registry, admission

    def collect(self) -> Iterator[Metric]:
        nodes = list(self.registry.nodes.values())
        errors = CounterMetricFamily(
            "llmlb_router_errors",
            "Failed requests per node (connection errors, 5xx).",
            labels=["node"],
        )
        in_flight = GaugeMetricFamily(
            "llmlb_router_in_flight", "Requests this router has on each node now.", labels=["node"]
        )
        for n in nodes:
            errors.add_metric([n.id[:8]], n.errors)
            in_flight.add_metric([n.id[:8]], n.in_flight)
        yield errors
        yield in_flight
        if self.admission.balance is not None:
            routed = CounterMetricFamily(
                "llmlb_router_prefix_requests",
                "Requests with a text prefix, by where prefix routing sent them: to a node "
                "holding the longest prefix any node held (hit), elsewhere for load or health "
                "(balanced), or no node held any of it (miss).",
                labels=["result"],
            )
            for result, count in self.admission.prefix_outcomes.items():
                routed.add_metric([result], count)
            yield routed
        yield GaugeMetricFamily(
            "llmlb_router_queue_depth", "Requests waiting for a free node.", self.admission.waiting
        )
        yield GaugeMetricFamily(
            "llmlb_router_nodes_online",
            "Nodes online now.",
            sum(self.registry.online(n) for n in nodes),
        )


class _SharedStateGauges(Collector):
    """The database, Redis and the history's backlog: what a cluster's routers depend on."""

    def __init__(self, database: Database, history: History, claims: Claims):
        self.database, self.history, self.claims = database, history, claims

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "llmlb_router_database_up",
            "1 when the router's database answered its last query, 0 when it could not be reached.",
            int(self.database.up),
        )
        yield CounterMetricFamily(
            "llmlb_router_database_errors",
            "Reads and writes of the router's database that failed.",
            self.database.failures,
        )
        yield GaugeMetricFamily(
            "llmlb_router_history_pending",
            "Request-history rows waiting in memory to be written.",
            len(self.history.pending),
        )
        yield CounterMetricFamily(
            "llmlb_router_history_dropped",
            "Request-history rows dropped: the database was unreachable and the buffer full.",
            self.history.dropped,
        )
        yield from self.claims.gauges()  # Redis's health and counts, when it keeps them


class RouterMetrics:
    def __init__(
        self,
        registry: Registry,
        admission: Admission,
        database: Database,
        history: History,
        claims: Claims,
    ):
        self.prom = CollectorRegistry()
        self.requests = Counter(
            "llmlb_router_requests",
            "Proxied requests by node and the HTTP status the client got.",
            ["node", "status"],
            registry=self.prom,
        )
        self.duration = Histogram(
            "llmlb_router_request_duration_seconds",
            "Time from a proxied request's arrival to the end of its answer, per node.",
            ["node"],
            buckets=DURATION_BUCKETS,
            registry=self.prom,
        )
        self.prom.register(_RegistryGauges(registry, admission))
        self.prom.register(_SharedStateGauges(database, history, claims))

    def observe(self, node_id: str | None, status: int, seconds: float | None) -> None:
        label = node_id[:8] if node_id else NO_NODE
        self.requests.labels(label, str(status)).inc()
        if seconds is not None:
            self.duration.labels(label).observe(seconds)

    def render(self) -> bytes:
        return prometheus_client.generate_latest(self.prom)
