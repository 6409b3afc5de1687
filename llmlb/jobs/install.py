"""The last step of a pull: verified files move from partial/<name>/ into models/<name>/ and
are registered in the catalog, all or nothing (a pulled checkpoint converted to GGUF first).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from pathlib import Path

from sqlalchemy.engine import Engine

from llmlb import validation
from llmlb.errors import LlmlbError
from llmlb.jobs.child import run_child
from llmlb.sources.hf_refs import Plan
from llmlb.store import catalog, files
from llmlb.units import size
from llmlb.validation import Format, Source

log = logging.getLogger("llmlb.pull")
CONVERTED = "model-F16.gguf"  # a pulled checkpoint, converted
MARGIN = 64 << 20


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
        files.prune_empty_parents(staging.parent, home / "partial")
        if plan.format == Format.SAFETENSORS:
            _register_checkpoint(engine, plan.name, target)
        else:
            catalog.register_model(
                engine,
                name=plan.name,
                path=target / main.path,
                format=plan.format,
                source=Source.HUGGINGFACE,
                digest=state["files"][main.path].get("digest") or None,
            )
    except BaseException:
        if fresh:
            shutil.rmtree(target, ignore_errors=True)
        else:
            for p in placed:
                p.unlink(missing_ok=True)
        files.prune_empty(target, home / "models")
        raise


def _register_checkpoint(engine: Engine, name: str, directory: Path) -> None:
    """A pulled Safetensors checkpoint is converted to GGUF once, here, and then runs like any
    other model (show says where it came from); its shards are then removed. One that cannot
    be converted (an architecture llmlb does not cover) stays a Safetensors model, with why."""
    out = directory / CONVERTED
    shards = sorted(directory.glob("*.safetensors"))
    needed = sum(p.stat().st_size for p in shards) + MARGIN
    never = threading.Event()
    why = None
    if shutil.disk_usage(directory).free < needed:
        why = f"not enough disk space to convert it to GGUF ({size(needed)} needed)"
    else:
        try:
            made = run_child(
                ["llmlb.convert", str(directory), str(out), "F16"], never, None, "the conversion"
            )
            run_child(
                ["llmlb.engine.llama_quantize", "check", str(out)], never, None, "loading the model"
            )
        except LlmlbError as exc:
            why = exc.message
    if why is not None:
        out.unlink(missing_ok=True)
        log.warning("%s stays Safetensors: %s", name, why)
        catalog.register_model(
            engine, name=name, path=directory, format=Format.SAFETENSORS, source=Source.HUGGINGFACE,
            details={"convert_error": why},
        )  # fmt: skip
        return
    converted = {
        "format": Format.SAFETENSORS.value,
        "type": "F16",
        "peak_rss": made.get("peak_rss"),
    }
    try:
        cfg = json.loads((directory / "config.json").read_text())
        converted.update(
            architecture=(cfg.get("architectures") or [""])[0], dtype=cfg.get("torch_dtype")
        )
    except (OSError, ValueError, AttributeError):
        pass
    catalog.register_model(
        engine, name=name, path=out, format="GGUF", source=Source.HUGGINGFACE,
        details={"converted_from": converted},
    )  # fmt: skip
    for p in [*shards, directory / "model.safetensors.index.json"]:
        p.unlink(missing_ok=True)
