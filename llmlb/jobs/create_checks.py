"""The checks of a create request that need no catalog: its template (Go translated to
Jinja), parameters, quantization type, and whether a LoRA adapter fits the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from llmlb.convert.quant import QUANT_TYPES
from llmlb.errors import BadRequest
from llmlb.sources import go_template, metadata
from llmlb.sources.modelfile import ModelfileError, check_parameter

UNQUANTIZED = ("F32", "F16", "BF16")


def template(source: str | None) -> tuple[str | None, str | None]:
    """(Jinja for the catalog, the text as written) of a TEMPLATE."""
    if source is None or not source.strip():
        return None, None
    jinja = go_template.translate(source) if go_template.is_go_template(source) else source
    try:
        ImmutableSandboxedEnvironment().parse(jinja)
    except jinja2.TemplateSyntaxError as exc:
        raise BadRequest(f"the TEMPLATE is not a valid Jinja template: {exc.message}") from exc
    return jinja, source


def parameters(params: dict[str, Any] | None) -> dict[str, Any] | None:
    if params is None:
        return None
    out = {}
    for name, value in params.items():
        try:
            out[name] = check_parameter(name, value)
        except ModelfileError as exc:
            raise BadRequest(exc.message) from None
    return out


def quantize_type(kind: str | None) -> str | None:
    if not kind:
        return None
    upper = kind.upper().replace("-", "_")
    if upper not in QUANT_TYPES:
        raise BadRequest(f"cannot quantize to '{kind}'; choose one of {', '.join(QUANT_TYPES)}")
    return upper


def adapter_fits(path: Path, shown: str, base_arch: str, base: Any | None) -> None:
    """A LoRA in GGUF, for the base's architecture and (when the base is a GGUF) its shapes:
    llama.cpp's own checks, before anything is loaded."""
    header = metadata.gguf_header(path, f"adapter '{shown}'")
    v = header.values
    if v.get("general.type") != "adapter" or v.get("adapter.type") != "lora":
        raise BadRequest(
            f"adapter '{shown}' is not a LoRA adapter (general.type is {v.get('general.type')!r})"
        )
    arch = v.get("general.architecture")
    if base_arch and arch != base_arch:
        raise BadRequest(
            f"adapter '{shown}' is a LoRA for a {arch} model, not for this {base_arch} model"
        )
    if base is None:
        return
    shapes = {t.name: t.shape for t in base.tensors}
    pairs: dict[str, dict[str, tuple[int, ...]]] = {}
    for t in header.tensors:
        stem, _, part = t.name.rpartition(".lora_")
        if part in ("a", "b"):
            pairs.setdefault(stem, {})[part] = t.shape
    if not pairs:
        raise BadRequest(f"adapter '{shown}' holds no LoRA tensors")
    for stem, ab in pairs.items():
        w, a, b = shapes.get(stem), ab.get("a"), ab.get("b")
        if w is None:
            raise BadRequest(f"adapter '{shown}' changes '{stem}', which this model does not have")
        if a is None or b is None or len(w) < 2 or a[0] != w[0] or b[1] != w[1] or a[1] != b[0]:
            raise BadRequest(
                f"adapter '{shown}' does not fit this model: '{stem}' is {list(w)}, "
                f"the adapter's pair is {list(a or ())} x {list(b or ())}"
            )
