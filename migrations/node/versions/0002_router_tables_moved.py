"""router tables: moved to the router's own chain (a no-op here)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 20:48:36.190957

Until the node catalog and the router got a chain each, one chain served both databases, and
its 0002 created the router's tables (router_node, request_log) in llmlb.db too. The revision
stays, doing nothing, so that a catalog stamped 0002 by that chain still finds its place here;
0003 removes the router's tables such a catalog holds.
"""

from collections.abc import Sequence

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
