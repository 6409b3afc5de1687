"""Queries on the model catalog: register, resolve a name or alias, list, delete.

Other parts use only these functions, never raw queries on the Model table.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, or_, select

from llmlb import settings, validation
from llmlb.errors import Conflict, LlmlbError, ValidationError
from llmlb.sources import metadata as meta
from llmlb.sources import ollama
from llmlb.store import db, downloads, files, names
from llmlb.store.alias import base_alias, unique_alias
from llmlb.store.models import DownloadProgress, Model, utcnow
from llmlb.validation import Source

log = logging.getLogger("llmlb.store")


def register_model(
    engine: Engine,
    *,
    name: str,
    path: str | Path,
    format: str,
    source: str,
    size_bytes: int | None = None,
    digest: str | None = None,
    **fields: Any,
) -> Model:
    """Validate, read the file's metadata, and insert (or replace) the row with a unique alias.

    Every check runs before the write: a bad name or a file that is not what it claims
    leaves the catalog as it was.
    """
    validation.check_name(name)
    validation.check_format(format)
    validation.check_source(source)
    validation.check_path(path)
    path = Path(path)
    info = meta.read_metadata(path, format)
    if info.is_projector:
        raise ValidationError(f"{path.name} is a vision projector, not a model")
    if size_bytes is None:
        size_bytes = files.size_of(path)
    validation.check_size(size_bytes)
    if digest is None and path.is_file():
        digest = files.sha256(path)
    values: dict[str, Any] = dict(
        path=str(path),
        format=format,
        source=source,
        size_bytes=size_bytes,
        digest=digest,
        architecture=info.architecture,
        parameters=info.parameters,
        quantization=info.quantization,
        context_length=info.context_length,
        license=info.license,
        chat_template=info.chat_template,
        projector_path=files.projector_beside(path),
        details={k: v for k, v in info.extra.items() if v is not None},
    )
    if "details" in fields:  # what the caller adds to what the file says
        values["details"] = {**values["details"], **(fields.pop("details") or {})}
    values.update(fields)
    with db.session(engine) as s:
        row = s.exec(select(Model).where(Model.name == name)).first()
        if row is None:
            alias = unique_alias(name, _taken(s))
            row = Model(name=name, alias=alias, created_at=utcnow(), **values)
        else:
            for key, value in values.items():
                setattr(row, key, value)
            row.created_at = utcnow()
        s.add(row)
        try:
            s.commit()
        except IntegrityError as exc:
            raise Conflict(f"model '{name}' could not be registered: {exc.orig}") from exc
        s.refresh(row)
        return row


def _taken(s: Session) -> set[str]:
    """Names and aliases a new alias may not be."""
    aliases = s.exec(select(Model.alias)).all()
    return {a for a in aliases if a} | set(s.exec(select(Model.name)).all())


def coming_aliases(engine: Engine, names: list[str]) -> dict[str, str]:
    """The alias each of `names` (models still downloading) will get when it is registered,
    as register_model chooses it now."""
    with db.session(engine) as s:
        taken = _taken(s)
    return {name: unique_alias(name, taken) for name in names}


def find(engine: Engine, name: str) -> Model | None:
    with db.session(engine) as s:
        return s.exec(select(Model).where(or_(Model.name == name, Model.alias == name))).first()


def _from_ollama(entry: ollama.OllamaEntry) -> Model:
    """An unsaved Model describing an ollama blob (never written to the catalog)."""
    info = meta.read_gguf(entry.model.blob_path)
    return Model(
        name=entry.display,
        alias=None,
        path=entry.model.blob_path,
        format="GGUF",
        size_bytes=entry.model.size_bytes,
        architecture=info.architecture,
        quantization=info.quantization,
        parameters=info.parameters,
        context_length=info.context_length,
        source=Source.OLLAMA.value,
        digest=entry.model.blob_digest.removeprefix("sha256:"),
        license=entry.license or info.license,
        chat_template=info.chat_template,
        system_prompt=entry.system,
        projector_path=entry.projector_path,
        details={"ollama_template": entry.template, "params": entry.params or {}, "readonly": True},
        created_at=entry.modified,
    )


def candidates(engine: Engine, typed: str) -> list[str]:
    """Catalog names `typed` can mean, most specific first (see store/names.py)."""
    base, tag = names.split_tag(typed)
    base = names.without_host(base)
    if tag is None:
        return [base]
    found = [names.tagged(base, tag)]
    m = find(engine, base)
    if m is not None:  # an alias with a tag, or the repo itself when it holds that quantization
        found.append(names.tagged(m.name, tag))
        if (m.quantization or "").upper() == tag:
            found.append(m.name)
    return list(dict.fromkeys(found))


def downloading(engine: Engine, wanted: list[str]) -> DownloadProgress | None:
    """An unfinished download of one of `wanted` (names, or the alias it will get)."""
    rows = downloads.active(engine)
    if not rows:
        return None
    with db.session(engine) as s:
        taken = _taken(s)
    for row in rows:
        aliases = {base_alias(row.model_name), unique_alias(row.model_name, taken)}
        if row.model_name in wanted or aliases & set(wanted):
            return row
    return None


def missing(engine: Engine, typed: str, wanted: list[str] | None = None) -> LlmlbError:
    """Why `typed` resolves to nothing: still downloading, or unknown (with close names)."""
    wanted = wanted if wanted is not None else [typed]
    row = downloading(engine, [typed, *wanted])
    if row is not None:
        percent = int(100 * row.downloaded_bytes / row.total_bytes) if row.total_bytes else 0
        return names.StillDownloading(typed, min(percent, 99))
    with db.session(engine) as s:
        choices = [n for pair in s.exec(select(Model.name, Model.alias)).all() for n in pair if n]
    choices += [e.display for e in ollama_models()]
    return names.UnknownModel(typed, names.closest(typed, choices))


def lookup(engine: Engine, typed: str) -> tuple[str, Model | None]:
    """(the catalog name `typed` means, its model or None): for `rm` of a model or a download."""
    wanted = candidates(engine, typed)
    m = _first(engine, wanted)
    if m is not None:
        return m.name, m
    row = downloading(engine, [typed, *wanted])
    return (row.model_name if row is not None else wanted[0]), None


def resolve(engine: Engine, name: str) -> Model:
    """A full name, an alias, either with `:latest` or a `:TAG`, or `ollama:<name>`.

    Otherwise StillDownloading (409) or UnknownModel (404, with the closest local names).
    """
    if name.startswith(ollama.PREFIX):
        entry = ollama.find(settings.ollama_models_dir(), name)
        if entry is None:
            raise missing(engine, name)
        return _from_ollama(entry)
    wanted = candidates(engine, name)
    m = _first(engine, wanted)
    if m is not None:
        return m
    raise missing(engine, name, wanted)


def _first(engine: Engine, wanted: list[str]) -> Model | None:
    """The first of the candidate names that is in the catalog."""
    return next((m for n in wanted if (m := find(engine, n)) is not None), None)


def all_models(engine: Engine) -> list[Model]:
    with db.session(engine) as s:
        return list(s.exec(select(Model).order_by(col(Model.created_at).desc())))


def ollama_models() -> list[ollama.OllamaEntry]:
    return ollama.scan(settings.ollama_models_dir())


def touch(engine: Engine, name: str) -> None:
    with db.session(engine) as s:
        row = s.exec(select(Model).where(Model.name == name)).first()
        if row is not None:
            row.last_used_at = utcnow()
            s.add(row)
            s.commit()


def delete_model(engine: Engine, name: str, models_root: Path) -> Model:
    """Delete the row first (so no row ever points at missing files), then the files.

    Files are only ever removed inside `models_root`; a model registered from elsewhere
    loses its row, never its files.
    """
    if name.startswith(ollama.PREFIX):
        if ollama.find(settings.ollama_models_dir(), name) is None:
            raise missing(engine, name)
        raise ValidationError(f"'{name}' is read-only (owned by ollama)")
    _, found = lookup(engine, name)
    if found is None:
        raise missing(engine, name)
    with db.session(engine) as s:
        row = s.get(Model, found.id)
        if row is None:  # deleted meanwhile
            raise missing(engine, name)
        directory = files.owned_dir(models_root, row.name, row.path)
        s.delete(row)
        s.commit()
    if directory is not None:
        files.remove_model_files(directory, models_root)
    return row


def file_with_digest(engine: Engine, hexdigest: str) -> str | None:
    """The path of a model's (or LoRA adapter's) file whose sha256 is `hexdigest`."""
    with db.session(engine) as s:
        m = s.exec(select(Model).where(Model.digest == hexdigest)).first()
        if m is not None and Path(m.path).is_file():
            return m.path
        for adapters in s.exec(select(Model.adapters).where(col(Model.adapters).is_not(None))):
            for a in adapters or []:
                if isinstance(a, dict) and a.get("digest") == hexdigest:
                    return str(a.get("path"))
    return None
