"""Alembic environment of the router's database (router.db); shared with the node's chain."""

from llmlb.store.schema import ROUTER, run_env

run_env(ROUTER)
