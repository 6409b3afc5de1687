"""what a created model adds to its weights: LoRA adapters, default parameters, messages

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 09:30:00.000000

`llmlb node create` (and /api/create) make Local models from a Modelfile. What such a model
needs when it is loaded and run, beside its file, lives in its catalog row: the LoRA adapters
applied on load, the default sampling parameters (PARAMETER) and the conversation put before
every chat (MESSAGE). The template and system prompt already had columns. All three are
nullable: models registered before have none.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("model") as batch:
        batch.add_column(sa.Column("adapters", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("options", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("messages", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model") as batch:
        batch.drop_column("messages")
        batch.drop_column("options")
        batch.drop_column("adapters")
