"""one message per position in a session

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 22:00:00.000000

Concurrent appends could give two messages of a session the same position (issue 12). Appends
are serialised now; the unique index makes a repeat impossible. Positions already taken twice
are renumbered first, in their stored order (position, then id), so nothing is lost.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    bind = op.get_bind()
    message = sa.table("message", sa.column("id"), sa.column("session_id"), sa.column("position"))
    rows = bind.execute(
        sa.select(message.c.id, message.c.session_id, message.c.position).order_by(
            message.c.session_id, message.c.position, message.c.id
        )
    ).all()
    last_session, last_position = None, -1
    for row_id, session_id, position in rows:
        if session_id == last_session and position <= last_position:  # taken twice: move it
            position = last_position + 1
            bind.execute(message.update().where(message.c.id == row_id).values(position=position))
        last_session, last_position = session_id, position
    with op.batch_alter_table("message") as batch:
        batch.drop_index("ix_message_session_position")
        batch.create_index("ix_message_session_position", ["session_id", "position"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("message") as batch:
        batch.drop_index("ix_message_session_position")
        batch.create_index("ix_message_session_position", ["session_id", "position"], unique=False)
