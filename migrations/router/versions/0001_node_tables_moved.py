"""node catalog tables: they have a chain of their own (a no-op here)

Revision ID: 0001
Revises:
Create Date: 2026-11-24 19:47:11.072900

Until the node catalog and the router got a chain each, one chain served both databases, and
its 0001 created the node catalog's tables (model, node, session, message, download_progress)
in router.db too. The revision stays, doing nothing, so that a router database stamped 0001
or 0002 by that chain still finds its place here; 0003 removes the catalog tables it holds.
"""

from collections.abc import Sequence

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
