"""state several routers share: when each node row was last written, a table of shared
settings (the API-key id secret), and 64-bit counts for PostgreSQL

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-10 10:00:00.000000

Routers that share one database read the node registry from it: `updated_at` tells each
which rows another router changed. PostgreSQL's INTEGER is 32-bit, too small for a GPU's VRAM
in bytes, so those counts become BIGINT (a no-op in effect on SQLite, whose INTEGER is 64-bit);
the history's id too, with its sequence, where SQLite keeps INTEGER PRIMARY KEY (its row id).
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WIDENED = {
    "router_node": ("vram_total_bytes", "vram_used_bytes", "uptime_secs"),
    "request_log": ("tokens_in", "tokens_out"),
}


def _types(old: sa.types.TypeEngine, new: sa.types.TypeEngine) -> None:
    for table, columns in WIDENED.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in columns:
                batch_op.alter_column(column, existing_type=old, type_=new, existing_nullable=False)
    if op.get_bind().dialect.name == "postgresql":
        id_type = "bigint" if isinstance(new, sa.BigInteger) else "integer"
        op.execute(f"ALTER TABLE request_log ALTER COLUMN id TYPE {id_type}")
        op.execute(f"ALTER SEQUENCE request_log_id_seq AS {id_type}")


def upgrade() -> None:
    stamp = sqlmodel.sql.sqltypes.UTCDateTime()
    with op.batch_alter_table("router_node", schema=None) as batch_op:
        batch_op.add_column(sa.Column("updated_at", stamp, nullable=True))
    op.execute("UPDATE router_node SET updated_at = last_seen")
    with op.batch_alter_table("router_node", schema=None) as batch_op:
        batch_op.alter_column("updated_at", existing_type=stamp, nullable=False)
    _types(sa.Integer(), sa.BigInteger())
    op.create_table(
        "router_setting",
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("value", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("router_setting")
    _types(sa.BigInteger(), sa.Integer())
    with op.batch_alter_table("router_node", schema=None) as batch_op:
        batch_op.drop_column("updated_at")
