"""Alembic environment of the former single chain (0001 node tables, 0002 router tables), which
put every table into both llmlb.db and router.db. Frozen here so that tests can make a
database exactly as releases before the split did (see tests/support/legacy.py)."""

from alembic import context

context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=None,
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
