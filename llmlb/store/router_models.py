"""The router's tables (router.db, or the PostgreSQL database routers share): registered
nodes, the history of proxied requests, and settings the routers must agree on.
Migrations in migrations/router must match these.

Byte counts, uptimes and token counts are BIGINT: a GPU's VRAM does not fit PostgreSQL's
32-bit INTEGER (SQLite's INTEGER is 64-bit either way). The history's id stays INTEGER on
SQLite, where only `INTEGER PRIMARY KEY` numbers rows by itself.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Integer
from sqlmodel import Field, SQLModel

from llmlb.store.models import utcnow

ROW_ID = BigInteger().with_variant(Integer(), "sqlite")


class RouterNode(SQLModel, table=True):
    __tablename__ = "router_node"

    id: str = Field(primary_key=True)
    host: str
    port: int
    status: str = "Running"  # the contract's Node states: Running | Stopped | Error
    gpu_name: str | None = None
    vram_total_bytes: int = Field(default=0, sa_type=BigInteger)
    vram_used_bytes: int = Field(default=0, sa_type=BigInteger)
    gpu_temperature: float | None = None
    uptime_secs: int = Field(default=0, sa_type=BigInteger)
    models: list[Any] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    loaded_models: list[Any] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    registered_at: datetime = Field(default_factory=utcnow)
    last_seen: datetime = Field(default_factory=utcnow)  # the last heartbeat, any router's
    # Every write sets it (the database's clock): a router that reads the table takes the rows
    # whose updated_at it has not seen, whichever router wrote them.
    updated_at: datetime = Field(default_factory=utcnow)


class RequestLog(SQLModel, table=True):
    __tablename__ = "request_log"

    id: int | None = Field(default=None, sa_column=Column(ROW_ID, primary_key=True))
    time: datetime = Field(default_factory=utcnow, index=True)
    endpoint: str
    model: str
    node_id: str | None = None
    status: int
    duration_ms: float
    ttft_ms: float | None = None
    tokens_in: int = Field(default=0, sa_type=BigInteger)
    tokens_out: int = Field(default=0, sa_type=BigInteger)
    key_id: str | None = None


class RouterSetting(SQLModel, table=True):
    """Values every router of a cluster must share, such as the secret of the API-key ids."""

    __tablename__ = "router_setting"

    name: str = Field(primary_key=True)
    value: str
