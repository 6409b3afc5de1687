"""Everything /api/create checks before it claims anything: what the new model is made of
(a model llmlb has, a GGUF, or a Safetensors checkpoint, and LoRA adapters), whether those
fit together, its template, parameters and messages, and the disk space it needs.

A request that fails here leaves no trace. One that passes gets a staging directory
($LLMLB_HOME/creating/<id>/) holding hard links to its inputs (a copy only across file
systems), so the blobs it came from may go at once, and the rest of the work (create.py)
never reads outside it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from llmlb import validation
from llmlb.convert import ConvertError, archs
from llmlb.errors import BadRequest, LlmlbError
from llmlb.jobs.blobs import Blobs, NoSpace
from llmlb.jobs.create_checks import UNQUANTIZED, adapter_fits, parameters, quantize_type, template
from llmlb.sources import metadata
from llmlb.store import catalog
from llmlb.store.models import Model
from llmlb.units import size
from llmlb.validation import Format

PLAIN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,254}$")
SAFETENSORS_FILES = (".safetensors", ".json", ".model", ".jinja", ".txt")
MARGIN = 64 << 20  # bytes of free space kept on top of the estimate


@dataclass
class CreateRequest:
    """What /api/create asks for, already typed (server/requests.py checks types and sizes)."""

    name: str
    source: str | None = None  # `from`: a model llmlb has
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256 hex
    adapters: dict[str, str] = field(default_factory=dict)
    template: str | None = None
    system: str | None = None
    parameters: dict[str, Any] | None = None
    messages: list[dict[str, str]] | None = None
    license: str | None = None
    quantize: str | None = None


@dataclass
class Plan:
    name: str
    staging: Path
    model_file: Path  # the GGUF in staging (for a checkpoint: where the conversion writes it)
    checkpoint: Path | None = None  # a Safetensors checkpoint in staging/src, to convert
    projector: Path | None = None
    adapters: list[tuple[Path, str | None]] = field(default_factory=list)  # (staged, sha256)
    digest: str | None = None  # of model_file, when it is an input as it is
    quantize: str | None = None
    from_type: str = ""  # the weights' type before quantizing
    fields: dict[str, Any] = field(default_factory=dict)  # catalog columns of the new row
    blobs: list[str] = field(default_factory=list)  # uploaded blobs it consumed


def _plain(name: str, what: str) -> str:
    if not PLAIN.match(name or ""):
        raise BadRequest(f"{what} name '{name[:80]}' is not a plain file name")
    return name


class Planner:
    def __init__(self, engine: Engine, home: Path, blobs: Blobs):
        self.engine = engine
        self.home = Path(home)
        self.blobs = blobs

    def _blob(self, name: str, hexdigest: str) -> Path:
        found = self.blobs.find(hexdigest)
        if found is None:
            raise BadRequest(
                f"file '{name}' (sha256:{hexdigest[:12]}…) was not uploaded; "
                f"POST it to /api/blobs/sha256:{hexdigest} first"
            )
        return found

    def plan(self, req: CreateRequest) -> Plan:
        """Check everything, then stage the inputs (the only write)."""
        validation.check_name(req.name)
        if req.source and req.files:
            raise BadRequest("give either 'from' or 'files', not both")
        if not req.source and not req.files:
            raise BadRequest("a model needs 'from' (a model llmlb has) or 'files' (uploaded blobs)")
        jinja, written = template(req.template)
        params = parameters(req.parameters)
        quantize = quantize_type(req.quantize)
        inputs: list[tuple[Path, str]] = []  # (existing file, staged relative name)
        fields: dict[str, Any] = {"details": {}}
        base_model: Model | None = None
        checkpoint = None
        gguf: tuple[Path, str] | None = None
        projector: tuple[Path, str] | None = None
        digest = None
        if req.source:
            base_model = catalog.resolve(self.engine, req.source)
            fields = _inherited(base_model)
            if base_model.format == Format.SAFETENSORS:
                checkpoint = Path(base_model.path)
                inputs += [
                    (p, f"src/{p.name}") for p in sorted(checkpoint.iterdir()) if p.is_file()
                ]
            else:
                gguf = (Path(base_model.path), Path(base_model.path).name)
                digest = (
                    base_model.digest
                    if re.fullmatch(r"[0-9a-f]{64}", base_model.digest or "")
                    else None
                )
                if base_model.projector_path:
                    projector = (
                        Path(base_model.projector_path),
                        Path(base_model.projector_path).name,
                    )
        else:
            found = {_plain(n, "file"): self._blob(n, h) for n, h in req.files.items()}
            if any(n.endswith(".safetensors") for n in found):
                checkpoint = self._checkpoint(found)
                inputs += [(p, f"src/{n}") for n, p in found.items()]
            else:
                gguf, projector = self._ggufs(found)
                digest = req.files[gguf[1]]
            fields["details"]["created_from"] = sorted(req.files)
        base_arch, base_header, from_type = self._base(gguf, checkpoint, base_model, req)
        if quantize and from_type not in UNQUANTIZED:
            raise BadRequest(
                f"cannot quantize a model that is already {from_type}; quantize an F16, BF16 or F32 "
                "model (a Safetensors checkpoint is converted to F16 first)"
            )
        adapters: list[tuple[Path, str, str | None]] = []
        if req.adapters:
            adapters = [
                (p, f"adapter-{i}-{name}", d)
                for i, (p, name, d) in enumerate(self._adapters(req, base_arch, base_header))
            ]
            fields["adapters"] = None  # replaced by the request's, not added to the base's
        else:
            adapters = [
                (Path(a["path"]), f"adapter-{i}-{_bare(Path(a['path']).name)}", a.get("digest"))
                for i, a in enumerate(fields.get("adapters") or [])
            ]
            for a in adapters:
                adapter_fits(a[0], a[1], base_arch, base_header)
        self._check_space(checkpoint, gguf, quantize)
        if jinja is not None:
            fields["chat_template"] = jinja
            fields["details"]["template"] = written
        if req.system is not None:
            fields["system_prompt"] = req.system or None
        if params is not None:
            fields["options"] = params or None
        if req.messages is not None:
            fields["messages"] = list(req.messages) or None
        if req.license is not None:
            fields["license"] = req.license or None
        return self._stage(
            req, inputs, gguf, projector, adapters, checkpoint, digest, quantize, from_type, fields
        )

    def _checkpoint(self, found: dict[str, Path]) -> Path:
        bad = [n for n in found if not n.endswith(SAFETENSORS_FILES)]
        if bad:
            raise BadRequest(f"file '{bad[0]}' does not belong in a Safetensors model")
        if "config.json" not in found:
            raise BadRequest("a Safetensors model needs its config.json; none was given")
        try:
            cfg = json.loads(found["config.json"].read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest("config.json is not valid JSON") from exc
        if not isinstance(cfg, dict):
            raise BadRequest("config.json is not a JSON object")
        archs.arch_of(
            {**cfg, **(cfg.get("text_config") or {})}
            if isinstance(cfg.get("text_config"), dict)
            else cfg
        )
        if "tokenizer.json" not in found and "tokenizer.model" not in found:
            raise BadRequest(
                "a Safetensors model needs tokenizer.json or tokenizer.model; neither was given"
            )
        return found["config.json"].parent

    def _ggufs(self, found: dict[str, Path]) -> tuple[tuple[Path, str], tuple[Path, str] | None]:
        models: list[tuple[Path, str]] = []
        projectors: list[tuple[Path, str]] = []
        for name, path in found.items():
            if not name.endswith(".gguf"):
                raise BadRequest(f"file '{name}' is neither a GGUF nor part of a Safetensors model")
            info = metadata.read_gguf(path)
            (projectors if info.is_projector else models).append((path, name))
        if len(models) != 1 or len(projectors) > 1:
            raise BadRequest(
                f"give one model GGUF (and at most one projector); got {len(models)} models"
            )
        return models[0], (projectors[0] if projectors else None)

    def _base(self, gguf, checkpoint, base_model, req) -> tuple[str, Any, str]:
        """(architecture, GGUF header or None, weight type) of what the model is built on."""
        if gguf is not None:
            header = metadata.gguf_header(gguf[0], gguf[1])
            info = metadata.read_gguf(gguf[0])
            if info.is_projector:
                raise BadRequest(f"'{gguf[1]}' is a vision projector, not a model")
            return info.architecture, header, (info.quantization or "").upper()
        try:
            cfg_path = (
                checkpoint / "config.json"
                if base_model is not None
                else self._blob("config.json", req.files["config.json"])
            )
            cfg = json.loads(Path(cfg_path).read_text())
            cfg = {**cfg, **cfg["text_config"]} if isinstance(cfg.get("text_config"), dict) else cfg
            return archs.arch_of(cfg)[1].name, None, "F16"
        except ConvertError:  # names the architecture and those covered
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BadRequest(f"the model's config.json cannot be read: {exc}") from exc

    def _adapters(
        self, req: CreateRequest, base_arch: str, base_header: Any
    ) -> list[tuple[Path, str, str]]:
        """(file, name as given, sha256) of each adapter of the request."""
        out = []
        for name, hexdigest in req.adapters.items():
            _plain(name, "adapter")
            if not name.endswith(".gguf"):
                raise BadRequest(
                    f"adapter '{name}' must be a LoRA adapter in GGUF (Safetensors adapters are not converted)"
                )
            path = self._blob(name, hexdigest)
            adapter_fits(path, name, base_arch, base_header)
            out.append((path, name, hexdigest))
        return out

    def _check_space(self, checkpoint: Path | None, gguf, quantize: str | None) -> None:
        """Free space for what is written (links to inputs take none)."""
        if checkpoint is not None:
            shards = (
                sum(p.stat().st_size for p in checkpoint.glob("*.safetensors"))
                if checkpoint.is_dir()
                else 0
            )
            needed = shards * (2 if quantize else 1)  # F16 output, then the quantized one
        elif quantize and gguf is not None:
            needed = gguf[0].stat().st_size
        else:
            return
        free = shutil.disk_usage(self.home if self.home.exists() else self.home.parent).free
        if needed + MARGIN > free:
            raise NoSpace(
                f"not enough disk space to create the model: it needs about {size(needed)} "
                f"but only {size(free)} is free"
            )

    def _stage(
        self,
        req,
        inputs,
        gguf,
        projector,
        adapters,
        checkpoint,
        digest,
        quantize,
        from_type,
        fields,
    ) -> Plan:
        staging = self.home / "creating" / uuid.uuid4().hex
        (staging / "src").mkdir(parents=True)
        try:
            for src, rel in inputs:
                link(src, staging / rel)
            plan = Plan(
                req.name,
                staging,
                staging / "model-F16.gguf",
                quantize=quantize,
                from_type=from_type,
                fields=fields,
            )
            if checkpoint is not None:
                plan.checkpoint = staging / "src"
            else:
                plan.model_file = staging / gguf[1]
                link(gguf[0], plan.model_file)
                plan.digest = digest
            if projector is not None:
                plan.projector = staging / ("projector-" + projector[1])
                link(projector[0], plan.projector)
            for src, rel, d in adapters:
                link(src, staging / rel)
                plan.adapters.append((staging / rel, d))
            plan.blobs = sorted(set(req.files.values()) | set(req.adapters.values()))
            return plan
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def _bare(name: str) -> str:
    """An adapter's file name without the `adapter-N-` a created model gave it."""
    return re.sub(r"^adapter-\d+-", "", name)


def _inherited(m: Model) -> dict[str, Any]:
    """What a model made `from` another keeps of it, unless the request says otherwise."""
    details = dict(m.details or {})
    keep: dict[str, Any] = {
        k: details[k] for k in ("template", "converted_from", "created_from") if k in details
    }
    keep["parent"] = m.name
    return {
        "chat_template": m.chat_template,
        "system_prompt": m.system_prompt,
        "options": m.options or (details.get("params") or None),
        "messages": m.messages,
        "adapters": m.adapters,
        "license": m.license,
        "details": keep,
    }


def link(src: Path, dst: Path) -> None:
    """`dst` as another name of `src` (no bytes copied), or a copy across file systems."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        free = shutil.disk_usage(dst.parent).free
        if src.stat().st_size + MARGIN > free:
            raise NoSpace(
                f"not enough disk space to copy {src.name} ({size(src.stat().st_size)})"
            ) from None
        try:
            shutil.copyfile(src, dst)
        except OSError as exc:
            dst.unlink(missing_ok=True)
            raise LlmlbError(f"could not copy {src.name}: {exc.strerror or exc}") from exc
