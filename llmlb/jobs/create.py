"""Making a Local model from a checked plan (create_plan.py): convert a checkpoint, quantize,
load-check, then move the staging directory into models/<name>/ and register it.

The native and numeric work runs in child processes (`python -m llmlb.convert`, `python -m
llmlb.engine.llama_quantize`): a crash or an abort there is a one-line error here, never the
node's end. Whatever stops the work (an error, the client hanging up, the child killed)
removes the staging directory and registers nothing; a node killed meanwhile leaves a
staging directory that `sweep` removes at the next start. So a create can always be run
again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from llmlb.errors import Conflict, LlmlbError
from llmlb.jobs.blobs import Blobs
from llmlb.jobs.child import Cancelled, run_child
from llmlb.jobs.create_plan import CreateRequest, Plan, Planner
from llmlb.store import catalog
from llmlb.store.files import model_dir, prune_empty_parents
from llmlb.store.models import Model
from llmlb.validation import Format, Source

log = logging.getLogger("llmlb.create")
Say = Callable[[dict[str, Any]], None]


class Creations:
    """Every /api/create and /api/copy of one node: at most one at a time per model name."""

    def __init__(self, engine: Engine, home: Path):
        self.engine = engine
        self.home = Path(home)
        self.blobs = Blobs(engine, home)
        self.planner = Planner(engine, home, self.blobs)
        self.busy: set[str] = set()
        self.lock = threading.Lock()

    def sweep(self) -> None:
        """At start-up: what a killed node left half-made."""
        shutil.rmtree(self.home / "creating", ignore_errors=True)
        self.blobs.sweep()

    def claim(self, name: str) -> None:
        with self.lock:
            if name in self.busy:
                raise Conflict(f"model '{name}' is being created already")
            self.busy.add(name)

    def release(self, name: str) -> None:
        with self.lock:
            self.busy.discard(name)

    def plan(self, req: CreateRequest) -> Plan:
        if catalog.downloading(self.engine, [req.name]) is not None:
            raise Conflict(f"model '{req.name}' is being downloaded; wait for it or rm it first")
        return self.planner.plan(req)

    def run(
        self, plan: Plan, say: Say, cancel: threading.Event, unload: Callable[[str], None]
    ) -> Model:
        """The slow part (blocking: run it in a worker thread). `unload` frees a model of the
        same name before it is replaced."""
        try:
            return self._run(plan, say, cancel, unload)
        finally:
            shutil.rmtree(plan.staging, ignore_errors=True)

    def _run(
        self, plan: Plan, say: Say, cancel: threading.Event, unload: Callable[[str], None]
    ) -> Model:
        details = plan.fields.setdefault("details", {})
        if plan.checkpoint is not None:
            say({"status": "converting model"})
            converted = run_child(
                ["llmlb.convert", str(plan.checkpoint), str(plan.model_file), "F16"],
                cancel,
                lambda item: (
                    say(
                        {
                            "status": "converting model",
                            "completed": item["done"],
                            "total": item["total"],
                        }
                    )
                    if "done" in item
                    else None
                ),
                "the conversion",
            )
            details["converted_from"] = _checkpoint_info(plan.checkpoint, converted)
            shutil.rmtree(plan.checkpoint, ignore_errors=True)
            plan.digest = None
        if plan.quantize:
            target = plan.staging / f"model-{plan.quantize}.gguf"
            say({"status": f"quantizing {plan.from_type or 'F16'} model to {plan.quantize}"})
            run_child(
                [
                    "llmlb.engine.llama_quantize",
                    "quantize",
                    str(plan.model_file),
                    str(target),
                    plan.quantize,
                ],
                cancel,
                None,
                "quantizing",
            )
            plan.model_file.unlink()
            plan.model_file, plan.digest = target, None
        say({"status": "verifying model"})
        run_child(
            [
                "llmlb.engine.llama_quantize",
                "check",
                str(plan.model_file),
                *(str(a) for a, _ in plan.adapters),
            ],
            cancel,
            None,
            "loading the model",
        )
        if plan.digest is None:
            say({"status": "computing sha256 digest"})
            plan.digest = _sha256(plan.model_file, cancel)
        if cancel.is_set():
            raise Cancelled("the client disconnected; nothing was created")
        say({"status": "writing manifest"})
        model = self._place(plan, unload)
        self.blobs.discard(plan.blobs)
        say({"status": "success"})
        return model

    def _place(self, plan: Plan, unload: Callable[[str], None]) -> Model:
        """Replace a model of that name (as ollama does), move the files in, register."""
        models = self.home / "models"
        existing = catalog.find(self.engine, plan.name)
        if existing is not None and existing.name == plan.name:
            unload(plan.name)
            catalog.delete_model(self.engine, plan.name, models)
        target = model_dir(models, plan.name)
        if target is None:
            raise LlmlbError(f"model '{plan.name}' would be stored outside {models}")
        files = [p for p in plan.staging.iterdir() if p.is_file()]
        placed: list[Path] = []
        target.mkdir(parents=True, exist_ok=True)
        try:
            for f in files:
                os.replace(f, target / f.name)
                placed.append(target / f.name)
            fields = dict(plan.fields)
            if plan.adapters:
                fields["adapters"] = [
                    {"path": str(target / a.name), "digest": d, "scale": 1.0}
                    for a, d in plan.adapters
                ]
            return catalog.register_model(
                self.engine,
                name=plan.name,
                path=target / plan.model_file.name,
                format="GGUF",
                source=Source.LOCAL.value,
                digest=plan.digest,
                projector_path=str(target / plan.projector.name) if plan.projector else None,
                **fields,
            )
        except BaseException:
            for p in placed:
                p.unlink(missing_ok=True)
            prune_empty_parents(target, models)
            raise


def _checkpoint_info(directory: Path, child: dict[str, Any]) -> dict[str, Any]:
    info: dict[str, Any] = {"format": Format.SAFETENSORS.value, "type": "F16"}
    try:
        cfg = json.loads((directory / "config.json").read_text())
        info["architecture"] = (cfg.get("architectures") or [""])[0]
        info["dtype"] = cfg.get("torch_dtype") or cfg.get("dtype")
    except (OSError, ValueError, AttributeError):
        pass
    if "peak_rss" in child:
        info["peak_rss"] = child["peak_rss"]
    return info


def _sha256(path: Path, cancel: threading.Event) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(4 << 20):
            if cancel.is_set():
                raise Cancelled("the client disconnected; nothing was created")
            h.update(chunk)
    return h.hexdigest()
