"""GET /metrics: Prometheus metrics of the node (requests, tokens, time to first token, models,
queues), kept by prometheus_client in a registry of this app's own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import prometheus_client
from litestar import MediaType, Response, get
from litestar.di import NamedDependency
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from llmlb.engine.base import GenStats

prometheus_client.disable_created_metrics()  # no *_created series: nobody reads them

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST


class EngineView(Protocol):
    """What the gauges read from the engine at scrape time."""

    in_flight: int

    def running(self) -> list: ...

    def queued(self) -> int: ...


class _EngineGauges(Collector):
    def __init__(self, engine: EngineView):
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "llmlb_loaded_models", "Models loaded in memory.", len(self.engine.running())
        )
        yield GaugeMetricFamily(
            "llmlb_queue_depth", "Requests waiting for a busy model.", self.engine.queued()
        )
        yield GaugeMetricFamily(
            "llmlb_in_flight", "Requests generating now.", self.engine.in_flight
        )


class NodeMetrics:
    def __init__(self, engine: EngineView):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "llmlb_requests",
            "API requests by endpoint and HTTP status.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.tokens_generated = Counter(
            "llmlb_tokens_generated", "Completion tokens generated.", registry=self.registry
        )
        self.tokens_prompt = Counter(
            "llmlb_prompt_tokens", "Prompt tokens evaluated.", registry=self.registry
        )
        self.prompt_totals = {"cached": 0, "restored": 0, "computed": 0}  # for the heartbeat
        self.prompt_sources = Counter(
            "llmlb_prompt_cache_tokens",
            "Prompt tokens by where their KV cells came from: kept in a sequence (cached), "
            "restored from the prompt cache on disk (restored), or evaluated (computed).",
            ["source"],
            registry=self.registry,
        )
        self.ttft = Histogram(
            "llmlb_time_to_first_token_seconds",
            "Time from a request's arrival to its first generated token.",
            buckets=TTFT_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_EngineGauges(engine))

    def request(self, endpoint: str, status: int) -> None:
        self.requests.labels(endpoint, str(status)).inc()

    def generation(self, prompt_tokens: int, completion_tokens: int, ttft: float | None) -> None:
        self.tokens_prompt.inc(prompt_tokens)
        self.tokens_generated.inc(completion_tokens)
        if ttft is not None:
            self.ttft.observe(ttft)

    def prompt_cache(self, stats: GenStats) -> None:
        if not stats.prompt_tokens:
            return  # (it never started: nothing came from anywhere)
        counts = {
            "cached": stats.cached_tokens - stats.restored_tokens,
            "restored": stats.restored_tokens,
            "computed": stats.prompt_tokens - stats.cached_tokens,
        }
        for source, n in counts.items():
            self.prompt_sources.labels(source).inc(max(0, n))
            self.prompt_totals[source] += max(0, n)

    def render(self) -> bytes:
        return prometheus_client.generate_latest(self.registry)


@get("/metrics", media_type=MediaType.TEXT, sync_to_thread=False)
def metrics_page(metrics: NamedDependency[NodeMetrics]) -> Response:
    return Response(metrics.render(), media_type=CONTENT_TYPE)


routes = [metrics_page]
