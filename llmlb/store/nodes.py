"""The node's own row in its catalog: Running while it serves, Stopped after a clean exit.

A row still Running at start-up means the last run crashed: it passes through Error,
the contract's Running -> Error -> Running.
"""

from __future__ import annotations

import logging

from sqlalchemy.engine import Engine
from sqlmodel import select

from llmlb.store import db
from llmlb.store.models import Node, NodeStatus, utcnow

log = logging.getLogger("llmlb.node")


def record_status(engine: Engine, host: str, port: int, status: NodeStatus, uptime: int = 0) -> str:
    """Write this node's status; returns its id (stable across restarts on the same port)."""
    with db.session(engine) as s:
        node = s.exec(select(Node).where(Node.port == port)).first()
        if node is None:
            node = Node(host=host, port=port)
        elif status == NodeStatus.RUNNING and node.status == NodeStatus.RUNNING:
            log.warning("the previous run on port %s did not stop cleanly", port)
            node.status = NodeStatus.ERROR.value
            s.add(node)
            s.commit()
        node.host = host
        node.status = status.value
        node.uptime_secs = uptime
        node.updated_at = utcnow()
        if status == NodeStatus.RUNNING:
            node.started_at = utcnow()
        s.add(node)
        s.commit()
        return node.id
