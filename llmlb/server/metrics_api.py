"""GET /metrics: Prometheus text for requests, tokens, time to first token, models and queues."""

from __future__ import annotations

import threading
from collections import Counter

from litestar import MediaType, Request, get

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self.requests: Counter = Counter()  # (endpoint, status) -> n
        self.tokens_generated = 0
        self.tokens_prompt = 0
        self.ttft_buckets = [0] * len(TTFT_BUCKETS)
        self.ttft_count = 0
        self.ttft_sum = 0.0

    def request(self, endpoint: str, status: int) -> None:
        with self._lock:
            self.requests[(endpoint, status)] += 1

    def generation(self, prompt_tokens: int, completion_tokens: int, ttft: float | None) -> None:
        with self._lock:
            self.tokens_prompt += prompt_tokens
            self.tokens_generated += completion_tokens
            if ttft is not None:
                self.ttft_count += 1
                self.ttft_sum += ttft
                for i, bound in enumerate(TTFT_BUCKETS):
                    if ttft <= bound:
                        self.ttft_buckets[i] += 1

    def render(self, scheduler) -> str:
        lines = [
            "# HELP llmlb_requests_total Inference requests by endpoint and HTTP status.",
            "# TYPE llmlb_requests_total counter",
        ]
        with self._lock:
            for (endpoint, status), n in sorted(self.requests.items()):
                lines.append(f'llmlb_requests_total{{endpoint="{endpoint}",status="{status}"}} {n}')
            lines += [
                "# HELP llmlb_tokens_generated_total Completion tokens generated.",
                "# TYPE llmlb_tokens_generated_total counter",
                f"llmlb_tokens_generated_total {self.tokens_generated}",
                "# HELP llmlb_prompt_tokens_total Prompt tokens evaluated.",
                "# TYPE llmlb_prompt_tokens_total counter",
                f"llmlb_prompt_tokens_total {self.tokens_prompt}",
                "# HELP llmlb_time_to_first_token_seconds Time from request to first token.",
                "# TYPE llmlb_time_to_first_token_seconds histogram",
            ]
            for bound, n in zip(TTFT_BUCKETS, self.ttft_buckets, strict=False):
                lines.append(f'llmlb_time_to_first_token_seconds_bucket{{le="{bound}"}} {n}')
            lines += [
                f'llmlb_time_to_first_token_seconds_bucket{{le="+Inf"}} {self.ttft_count}',
                f"llmlb_time_to_first_token_seconds_sum {self.ttft_sum:.6f}",
                f"llmlb_time_to_first_token_seconds_count {self.ttft_count}",
            ]
        running = scheduler.running() if scheduler else []
        lines += [
            "# HELP llmlb_loaded_models Models loaded in memory.",
            "# TYPE llmlb_loaded_models gauge",
            f"llmlb_loaded_models {len(running)}",
            "# HELP llmlb_queue_depth Requests waiting for a busy model.",
            "# TYPE llmlb_queue_depth gauge",
            f"llmlb_queue_depth {scheduler.queued() if scheduler else 0}",
            "# HELP llmlb_in_flight Requests generating now.",
            "# TYPE llmlb_in_flight gauge",
            f"llmlb_in_flight {scheduler.in_flight if scheduler else 0}",
        ]
        return "\n".join(lines) + "\n"


def metrics_of(state) -> Metrics:
    return state.services.setdefault("metrics", Metrics())


@get("/metrics", media_type=MediaType.TEXT, sync_to_thread=False)
def metrics(request: Request) -> str:
    state = request.app.state.node
    return metrics_of(state).render(state.services.get("scheduler"))


routes = [metrics]
