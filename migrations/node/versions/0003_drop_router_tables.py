"""drop the router's tables that the former shared chain left in the node catalog

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 10:00:00.000000

A catalog made before the split holds empty router_node and request_log tables (the router
never wrote to llmlb.db): they go. Should one of them hold rows, someone put them there by
hand: the tables stay, with a warning, and nothing else changes. A fresh catalog has neither.
"""

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FOREIGN = ("request_log", "router_node")


def upgrade() -> None:
    bind = op.get_bind()
    present = [name for name in FOREIGN if sa.inspect(bind).has_table(name)]
    counts = sa.select(sa.func.count()).select_from
    if any(bind.execute(counts(sa.table(name))).scalar() for name in present):
        logging.getLogger("llmlb.store").warning(
            "kept the tables %s in the node catalog: they belong to the router but hold rows",
            ", ".join(present),
        )
        return
    for name in present:
        op.drop_table(name)


def downgrade() -> None:
    pass  # the router's tables live in router.db; they do not come back here
