"""The parts a node server is made of: their routes and their start-up hooks.

Each part lives in its own module; this list is the one place that wires them in.
"""

from __future__ import annotations

import importlib

# module -> (attribute with a list of route handlers or None, async start(state) or None)
PARTS: list[tuple[str, str | None, str | None]] = [
    ("llmlb.server.node_status", None, "start"),  # the node's own catalog row
    ("llmlb.server.store_api", "routes", None),  # tags, show, delete
    ("llmlb.jobs.lifecycle", None, "start"),  # huey consumer for pulls
    ("llmlb.server.pull_api", "routes", None),  # pull with NDJSON progress
    ("llmlb.engine.scheduler", None, "start"),  # loaded models, keep-alive, queues
    ("llmlb.server.ollama_api", "routes", None),  # generate, chat, embed, ps
    ("llmlb.server.openai_api", "routes", None),  # /v1/*
    ("llmlb.server.sessions_api", "routes", None),  # chat sessions for the REPL
    ("llmlb.server.metrics_api", "routes", None),  # /metrics
    ("llmlb.balancer.router_link", None, "start"),  # registration + heartbeat to a router
]


def routes() -> list:
    handlers: list = []
    for module, attr, _ in PARTS:
        if attr:
            handlers.extend(getattr(importlib.import_module(module), attr))
    return handlers


def starters() -> list:
    return [getattr(importlib.import_module(m), s) for m, _, s in PARTS if s]
