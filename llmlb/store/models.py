"""SQLModel tables of a node's catalog (llmlb.db). Migrations in migrations/node must match these."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, CheckConstraint, Column, ForeignKey, Index, String
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    """Aware UTC: sqlmodel's UTCDateTime columns store UTC and refuse naive values."""
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class Format(StrEnum):
    GGUF = "GGUF"
    SAFETENSORS = "Safetensors"


class Source(StrEnum):
    LOCAL = "Local"
    OLLAMA = "Ollama"
    HUGGINGFACE = "HuggingFace"


class NodeStatus(StrEnum):
    RUNNING = "Running"
    STOPPED = "Stopped"
    ERROR = "Error"


class Role(StrEnum):
    USER = "User"
    ASSISTANT = "Assistant"
    SYSTEM = "System"


class DownloadStatus(StrEnum):
    PENDING = "Pending"
    DOWNLOADING = "Downloading"
    COMPLETED = "Completed"
    FAILED = "Failed"


class Model(SQLModel, table=True):
    __tablename__ = "model"
    __table_args__ = (
        CheckConstraint("size_bytes > 0", name="ck_model_size_positive"),
        CheckConstraint("format IN ('GGUF', 'Safetensors')", name="ck_model_format"),
        CheckConstraint("source IN ('Local', 'Ollama', 'HuggingFace')", name="ck_model_source"),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    alias: str | None = Field(default=None, index=True, unique=True)
    path: str
    format: str
    size_bytes: int
    architecture: str = ""
    quantization: str | None = None
    parameters: int | None = None
    context_length: int | None = None
    source: str = Source.LOCAL.value
    digest: str | None = None
    license: str | None = None
    chat_template: str | None = None
    system_prompt: str | None = None
    projector_path: str | None = None
    # what a created model (Modelfile) adds: LoRA adapters [{"path", "digest", "scale"}],
    # default parameters {"temperature": 0.2, "stop": [...]}, messages put before every chat
    adapters: list[dict[str, Any]] | None = Field(
        default=None, sa_column=Column(JSON, nullable=True)
    )
    options: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    messages: list[dict[str, Any]] | None = Field(
        default=None, sa_column=Column(JSON, nullable=True)
    )
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, index=True)
    last_used_at: datetime | None = None


class Node(SQLModel, table=True):
    __tablename__ = "node"

    id: str = Field(default_factory=new_id, primary_key=True)
    host: str
    port: int
    status: str = NodeStatus.STOPPED.value
    loaded_models: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    vram_total_bytes: int = 0
    vram_used_bytes: int = 0
    gpu_temperature: float | None = None
    uptime_secs: int = 0
    started_at: datetime | None = None
    updated_at: datetime = Field(default_factory=utcnow)


class Session(SQLModel, table=True):
    __tablename__ = "session"

    id: str = Field(default_factory=new_id, primary_key=True)
    model_name: str = Field(index=True)
    settings: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow, index=True)
    token_count: int = 0


class Message(SQLModel, table=True):
    __tablename__ = "message"
    __table_args__ = (Index("ix_message_session_position", "session_id", "position", unique=True),)

    id: int | None = Field(default=None, primary_key=True)
    session_id: str = Field(
        sa_column=Column(String, ForeignKey("session.id", ondelete="CASCADE"), nullable=False)
    )
    position: int = 0
    role: str
    content: str = ""
    images: list[str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    thinking: str | None = None
    timestamp: datetime = Field(default_factory=utcnow)


class DownloadProgress(SQLModel, table=True):
    __tablename__ = "download_progress"

    id: int | None = Field(default=None, primary_key=True)
    model_name: str = Field(index=True, unique=True)
    total_bytes: int = 0
    downloaded_bytes: int = 0
    speed_bps: float = 0.0
    eta_secs: float | None = None
    status: str = DownloadStatus.PENDING.value
    error: str | None = None
    plan: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class StoredResponse(SQLModel, table=True):
    """A response of /v1/responses kept for `previous_response_id` and GET, as OpenAI keeps
    them (`store`, default true); bounded by age and total size (store/responses.py)."""

    __tablename__ = "stored_response"

    id: str = Field(primary_key=True)
    model: str
    # the response object as it was answered, and the conversation that led to it (the input
    # items of its chain, oldest first): a continuation is input + output + its own input
    body: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    input: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    size_bytes: int = 0
    created_at: datetime = Field(default_factory=utcnow, index=True)
