"""Which node holds how much of a request: the router's side of prefix routing.

The router has no tokenizer, so a request's prefix is named by its text (llmlb/prefix.py):
`request_chain` reads the messages or the prompt of a proxied body. A node reports the hashes
its prompt cache holds in each heartbeat (NodeEntry.prefixes); a request the router has just
sent there is remembered for a while (NodeEntry.recent), so that the next turn of a
conversation finds its node before a heartbeat could tell. Nothing here decides: the policy
does (balancer/policy.py), with `matched` in each node's view.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from llmlb import prefix
from llmlb.balancer.nodes import NodeEntry
from llmlb.prefix import Point

MAX_RECENT = 4 * prefix.MAX_HELD  # hashes remembered per node; the oldest go first
CHAT_PATHS = frozenset({"/v1/chat/completions", "/api/chat"})


class _Body(msgspec.Struct):
    """What a request's prefix is made of; every other field is skipped unbuilt."""

    messages: Any = None
    prompt: Any = None
    system: Any = None
    raw: Any = None
    images: Any = None


def request_chain(path: str, model: str, body: bytes) -> list[Point]:
    """The text-prefix chain of a proxied request ([] for those without one: embeddings,
    images, a body the node will refuse)."""
    try:
        data = msgspec.json.decode(body or b"{}", type=_Body)
    except (msgspec.MsgspecError, RecursionError, ValueError):
        return []
    if path in CHAT_PATHS:
        chat = prefix.messages_of(data.messages)
        return prefix.chat_chain(model, chat) if chat else []
    text = data.prompt[0] if isinstance(data.prompt, list) and data.prompt else data.prompt
    if not isinstance(text, str) or not text or data.images:
        return []
    if path == "/v1/completions" or (path == "/api/generate" and data.raw is True):
        return prefix.prompt_chain(model, text)
    if path == "/api/generate":  # a chat of the system prompt (if any) and the prompt
        system = [("system", data.system)] if isinstance(data.system, str) and data.system else []
        return prefix.chat_chain(model, [*system, ("user", text)])
    return []


def matched(node: NodeEntry, chain: list[Point], now: float | None = None) -> int:
    """Characters of the request the node holds: reported, or sent there lately."""
    if not chain:
        return 0
    now = time.monotonic() if now is None else now
    held, recent = node.prefixes, node.recent
    for point in reversed(chain):
        if point.hash in held or recent.get(point.hash, 0.0) > now:
            return point.chars
    return 0


def remember(node: NodeEntry, chain: list[Point], secs: float) -> None:
    """The request goes to `node`: it will hold its prefix, before a heartbeat says so."""
    if not chain:
        return
    now = time.monotonic()
    recent = node.recent
    for point in chain:
        recent.pop(point.hash, None)
        recent[point.hash] = now + secs
    if len(recent) > MAX_RECENT:
        for h in [h for h, until in recent.items() if until <= now]:
            del recent[h]
        while len(recent) > MAX_RECENT:
            del recent[next(iter(recent))]
