"""The node's own row in the catalog: Running while we serve, Stopped after a clean exit.

A row still Running at start-up means the last run crashed: it passes through Error,
the contract's Running -> Error -> Running.
"""

from __future__ import annotations

import logging

from sqlmodel import select

from llmlb.store import db
from llmlb.store.models import Node, NodeStatus, utcnow

log = logging.getLogger("llmlb.node")


def _record(state, status: str) -> None:
    with db.session(state.catalog) as s:
        node = s.exec(select(Node).where(Node.port == state.config.port)).first()
        if node is None:
            node = Node(host=state.config.host, port=state.config.port)
        elif status == NodeStatus.RUNNING and node.status == NodeStatus.RUNNING:
            log.warning("the previous run on port %s did not stop cleanly", state.config.port)
            node.status = NodeStatus.ERROR.value
            s.add(node)
            s.commit()
        node.host = state.config.host
        node.status = status
        node.uptime_secs = state.uptime_secs
        node.updated_at = utcnow()
        if status == NodeStatus.RUNNING:
            node.started_at = utcnow()
        s.add(node)
        s.commit()
        state.node_id = node.id


async def start(state) -> None:
    _record(state, NodeStatus.RUNNING.value)

    async def stop(state) -> None:
        _record(state, NodeStatus.STOPPED.value)

    state.on_stop(stop)
