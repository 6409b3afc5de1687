"""Fixtures for the real PostgreSQL and Redis that router clustering tests use (a pytest
plugin, loaded by tests/conftest.py).

Where a server cannot be found, its tests skip and say how to install it; on CI (`CI` set,
where `make test` installs both) they fail instead, so that a missing install never passes
as a green run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.support.postgres import Postgres
from tests.support.redis_server import RedisServer


def missing(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must have it: make test installs it)")
    pytest.skip(reason)


def new_postgres() -> Postgres:
    try:
        return Postgres()
    except FileNotFoundError as exc:
        missing(str(exc))
        raise


def new_redis() -> RedisServer:
    try:
        return RedisServer()
    except FileNotFoundError as exc:
        missing(str(exc))
        raise


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Postgres]:
    server = new_postgres().start()
    yield server
    server.close()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A fresh, empty database of its own for each test."""
    return postgres_server.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def redis_service() -> Iterator[RedisServer]:
    server = new_redis().start()
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_service) -> str:
    """The session's Redis, emptied for each test."""
    redis_service.client().flushall()
    return redis_service.url
