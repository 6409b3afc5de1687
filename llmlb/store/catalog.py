"""Queries on the model catalog: register, look up by name or alias, list, delete.

Other parts use only these functions, never raw queries on the Model table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import or_, select

from llmlb.errors import ModelNotFound
from llmlb.store import db, validation
from llmlb.store.models import Model


def register_model(engine: Engine, *, name: str, path: str | Path, format: str, source: str,
                   size_bytes: int | None = None, digest: str | None = None,
                   **fields: Any) -> Model:
    """Validate and insert (or replace) a model row. Nothing is written if a rule fails."""
    validation.check_name(name)
    validation.check_format(format)
    validation.check_source(source)
    validation.check_path(path)
    if size_bytes is None:
        p = Path(path)
        size_bytes = sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
    validation.check_size(size_bytes)
    with db.session(engine) as s:
        row = s.exec(select(Model).where(Model.name == name)).first() or Model(name=name, path="", format=format, size_bytes=1)
        row.path, row.format, row.source, row.size_bytes, row.digest = str(path), format, source, size_bytes, digest
        for key, value in fields.items():
            setattr(row, key, value)
        s.add(row)
        s.commit()
        s.refresh(row)
        return row


def find(engine: Engine, name: str) -> Model | None:
    with db.session(engine) as s:
        return s.exec(select(Model).where(or_(Model.name == name, Model.alias == name))).first()


def get(engine: Engine, name: str) -> Model:
    row = find(engine, name)
    if row is None:
        raise ModelNotFound(name)
    return row


def all_models(engine: Engine) -> list[Model]:
    with db.session(engine) as s:
        return list(s.exec(select(Model).order_by(Model.created_at.desc())))
