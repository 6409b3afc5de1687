"""Alembic environment of the node catalog (llmlb.db); shared with the router's chain."""

from llmlb.store.schema import NODE, run_env

run_env(NODE)
