"""responses of /v1/responses kept for previous_response_id

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-10 10:00:00.000000

OpenAI's Responses API keeps a response (`store`, default true) so that a later request can
continue from it with `previous_response_id`, and so that GET /v1/responses/{id} finds it.
A node keeps them here, bounded by age and total size (LLMLB_RESPONSES_DAYS,
LLMLB_RESPONSES_MB); the oldest go first.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "stored_response",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("model", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("input", sa.JSON(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_stored_response_created_at", "stored_response", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_stored_response_created_at", table_name="stored_response")
    op.drop_table("stored_response")
