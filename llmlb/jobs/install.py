"""The last step of a pull: verified files move from partial/<name>/ into models/<name>/ and
are registered in the catalog, all or nothing; and the tidying that keeps no empty directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from sqlalchemy.engine import Engine

from llmlb import validation
from llmlb.errors import LlmlbError
from llmlb.sources.hf_refs import Plan
from llmlb.store import catalog


def install(engine: Engine, home: Path, plan: Plan, state: dict) -> None:
    """Move the files into models/<name>/ (one atomic rename when it is new) and register."""
    staging, target = home / "partial" / plan.name, home / "models" / plan.name
    main = plan.main
    if main is None:
        raise LlmlbError(f"the plan for '{plan.name}' names no model file")
    # Every destination is checked before the first move: a bad name moves nothing.
    moves = [
        (validation.inside(staging, f.path), validation.inside(target, f.path)) for f in plan.files
    ]
    placed: list[Path] = []
    fresh = not target.exists()
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        if fresh:
            os.replace(staging, target)
        else:  # an update (or a nested model's directory): replace only our files, each atomically
            for source, dest in moves:
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(source, dest)
                placed.append(dest)
            shutil.rmtree(staging, ignore_errors=True)
        catalog.prune_empty_parents(staging.parent, home / "partial")
        path = target if plan.format == "Safetensors" else target / main.path
        catalog.register_model(
            engine,
            name=plan.name,
            path=path,
            format=plan.format,
            source="HuggingFace",
            digest=state["files"][main.path].get("digest") or None,
        )
    except BaseException:
        if fresh:
            shutil.rmtree(target, ignore_errors=True)
        else:
            for p in placed:
                p.unlink(missing_ok=True)
        prune_empty(target, home / "models")
        raise


def prune_empty(directory: Path, root: Path) -> None:
    """Remove empty directories inside `directory` (bottom-up), then `directory` and its empty
    parents up to `root`: a failed or cancelled pull leaves no empty folder behind."""
    if directory.is_dir() and not directory.is_symlink():
        for sub in sorted((p for p in directory.rglob("*") if p.is_dir()), reverse=True):
            with contextlib.suppress(OSError):
                sub.rmdir()
    catalog.prune_empty_parents(directory, root)
