"""Which node keeps a stored response of /v1/responses: its id says so (`resp_` and the first
8 hex digits of the node's id, server/responses_api.new_id). A request that continues one
(`previous_response_id`), and GET or DELETE of one, go to that node and no other: no other
node has it."""

from __future__ import annotations

import re

from llmlb.balancer.nodes import NodeEntry
from llmlb.balancer.registry import Registry
from llmlb.errors import NotFound, Unavailable

_NODE = re.compile(r"^resp_([0-9a-f]{8})[A-Za-z0-9]*$")


def owner(registry: Registry, response_id: str, what: str = "Response") -> NodeEntry:
    """The online node that stored `response_id`: NotFound when no registered node can have
    it, Unavailable when its node is not online."""
    found = _NODE.match(response_id)
    prefix = found.group(1) if found else None
    nodes = [n for n in registry.nodes.values() if prefix and n.id.lower().startswith(prefix)]
    if not nodes:
        raise NotFound(f"{what} with id '{response_id}' not found.")
    for node in nodes:
        if registry.online(node):
            return node
    node = nodes[0]
    raise Unavailable(
        f"{what.lower()} '{response_id}' is kept by node {node.id[:8]} "
        f"({node.host}:{node.port}), which is {registry.label(node)}"
    )
