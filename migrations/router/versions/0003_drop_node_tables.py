"""drop the node catalog's tables that the former shared chain left in router.db

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 10:00:00.000000

A router database made before the split holds empty model, node, session, message and
download_progress tables (the router never wrote them): they go. Should one of them hold rows,
someone put them there by hand: the tables stay, with a warning. A fresh database has none.
"""

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# message first: it refers to session
FOREIGN = ("message", "session", "model", "node", "download_progress")


def upgrade() -> None:
    bind = op.get_bind()
    present = [name for name in FOREIGN if sa.inspect(bind).has_table(name)]
    counts = sa.select(sa.func.count()).select_from
    if any(bind.execute(counts(sa.table(name))).scalar() for name in present):
        logging.getLogger("llmlb.store").warning(
            "kept the tables %s in the router's database: they belong to a node catalog "
            "but hold rows",
            ", ".join(present),
        )
        return
    for name in present:
        op.drop_table(name)


def downgrade() -> None:
    pass  # the catalog's tables live in a node's llmlb.db; they do not come back here
