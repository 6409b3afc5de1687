"""The router's tables (router.db): registered nodes and the history of proxied requests.
Migrations in migrations/router must match these."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from llmlb.store.models import utcnow


class RouterNode(SQLModel, table=True):
    __tablename__ = "router_node"

    id: str = Field(primary_key=True)
    host: str
    port: int
    status: str = "Running"  # the contract's Node states: Running | Stopped | Error
    gpu_name: str | None = None
    vram_total_bytes: int = 0
    vram_used_bytes: int = 0
    gpu_temperature: float | None = None
    uptime_secs: int = 0
    models: list[Any] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    loaded_models: list[Any] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    registered_at: datetime = Field(default_factory=utcnow)
    last_seen: datetime = Field(default_factory=utcnow)


class RequestLog(SQLModel, table=True):
    __tablename__ = "request_log"

    id: int | None = Field(default=None, primary_key=True)
    time: datetime = Field(default_factory=utcnow, index=True)
    endpoint: str
    model: str
    node_id: str | None = None
    status: int
    duration_ms: float
    ttft_ms: float | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    key_id: str | None = None
