"""The Modelfile, as ollama reads and writes it.

    FROM ./model.gguf | ./safetensors-dir | a model llmlb has     (a second FROM: a projector)
    ADAPTER ./lora.gguf
    TEMPLATE \"\"\"{{ .System }} ...\"\"\"      (Go template, or Jinja)
    SYSTEM \"\"\"You are ...\"\"\"
    PARAMETER temperature 0.2                  (PARAMETER stop "x" may repeat)
    MESSAGE user Hello
    LICENSE \"\"\"...\"\"\"

Instructions are case-insensitive; `#` starts a comment line; values are bare (to the end of
the line), "quoted" (with \\" and \\\\ escapes) or \"\"\"triple-quoted\"\"\" (spanning lines).
A mistake names its line. `render` writes a Modelfile that `parse` reads back to the same
values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from llmlb.errors import BadRequest

INSTRUCTIONS = ("FROM", "ADAPTER", "TEMPLATE", "SYSTEM", "PARAMETER", "MESSAGE", "LICENSE")
ROLES = ("system", "user", "assistant")
# ollama's parameters: the ones llmlb applies, then the ones it accepts and ignores (they
# tune ollama's runner: llmlb's own settings decide those, e.g. LLMLB_CONTEXT_LENGTH)
PARAMETERS: dict[str, type] = {
    "temperature": float,
    "top_k": int,
    "top_p": float,
    "min_p": float,
    "typical_p": float,
    "repeat_penalty": float,
    "repeat_last_n": int,
    "presence_penalty": float,
    "frequency_penalty": float,
    "seed": int,
    "stop": list,
    "num_predict": int,
}
IGNORED_PARAMETERS: dict[str, type] = {
    "num_ctx": int,
    "num_keep": int,
    "num_batch": int,
    "num_gpu": int,
    "main_gpu": int,
    "num_thread": int,
    "use_mmap": bool,
}
RANGES = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "min_p": (0.0, 1.0),
    "typical_p": (0.0, 1.0),
    "repeat_penalty": (0.0, 10.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
    "top_k": (0, 1_000_000),
    "repeat_last_n": (-1, 1_000_000),
    "num_predict": (-2, 10_000_000),
    "seed": (-(2**63), 2**63 - 1),
}
MAX_STOPS = 16


class ModelfileError(BadRequest):
    pass


@dataclass
class Modelfile:
    froms: list[tuple[int, str]] = field(default_factory=list)  # (line, value)
    adapters: list[tuple[int, str]] = field(default_factory=list)
    template: str | None = None
    system: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, str]] = field(default_factory=list)
    license: list[str] = field(default_factory=list)


def check_parameter(name: str, value: Any) -> Any:
    """`value` as the parameter's type, or ModelfileError saying why not."""
    kind = PARAMETERS.get(name) or IGNORED_PARAMETERS.get(name)
    if kind is None:
        known = ", ".join(sorted(PARAMETERS))
        raise ModelfileError(f"unknown parameter '{name}' (llmlb applies {known})")
    if kind is list:
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) and 0 < len(v) <= 512 for v in values):
            raise ModelfileError("parameter 'stop' must be strings of 1 to 512 characters")
        if len(values) > MAX_STOPS:
            raise ModelfileError(f"at most {MAX_STOPS} stop strings")
        return list(values)
    if kind is bool:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if isinstance(value, bool):
            return value
        raise ModelfileError(f"parameter '{name}' must be true or false")
    number = _number(value, kind)
    if number is None:
        raise ModelfileError(
            f"parameter '{name}' must be {'an integer' if kind is int else 'a number'}"
        )
    low, high = RANGES.get(name, (0, 1_000_000))
    if not low <= number <= high:
        raise ModelfileError(f"parameter '{name}' must be from {low} to {high} (got {value})")
    return number


def _number(value: Any, kind: type) -> int | float | None:
    """`value` (a number, or its text) as an int or a finite float; None if it is not one."""
    if isinstance(value, str):
        try:
            value = kind(value.strip())
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            return None
        return int(value)
    value = float(value)
    return value if value - value == 0 else None  # not inf or nan


def _value(text: str, pos: int, line: int) -> tuple[str, int]:
    """The value starting at `pos`: (text, position after it)."""
    if text.startswith('"""', pos):
        end = text.find('"""', pos + 3)
        if end < 0:
            raise ModelfileError(f'Modelfile line {line}: unterminated """ string')
        return text[pos + 3 : end], end + 3
    if text.startswith('"', pos):
        out, i = [], pos + 1
        while i < len(text):
            c = text[i]
            if c == "\\" and i + 1 < len(text) and text[i + 1] in '"\\':
                out.append(text[i + 1])
                i += 2
            elif c == '"':
                return "".join(out), i + 1
            else:
                out.append(c)
                i += 1
        raise ModelfileError(f'Modelfile line {line}: unterminated " string')
    end = text.find("\n", pos)
    end = len(text) if end < 0 else end
    return text[pos:end].strip(), end


def parse(text: str) -> Modelfile:
    mf = Modelfile()
    pos = 0
    while pos < len(text):
        line = text.count("\n", 0, pos) + 1
        m = re.compile(r"[ \t\r]*(\S+)?[ \t]*").match(text, pos)
        assert m is not None
        word = m.group(1)
        if word is None or word.startswith("#"):
            nl = text.find("\n", pos)
            pos = len(text) if nl < 0 else nl + 1
            continue
        instruction = word.upper()
        if instruction not in INSTRUCTIONS:
            raise ModelfileError(f"Modelfile line {line}: unknown instruction '{word}'")
        pos = m.end()
        if instruction in ("PARAMETER", "MESSAGE"):
            m2 = re.compile(r"(\S+)[ \t]+").match(text, pos)
            if m2 is None:
                raise ModelfileError(
                    f"Modelfile line {line}: {instruction} needs a name and a value"
                )
            key, pos = m2.group(1), m2.end()
        value, pos = _value(text, pos, line)
        rest_end = text.find("\n", pos)
        rest = text[pos : len(text) if rest_end < 0 else rest_end]
        if rest.strip():
            raise ModelfileError(
                f"Modelfile line {line}: unexpected text after the value: {rest.strip()[:40]}"
            )
        pos = len(text) if rest_end < 0 else rest_end + 1
        _apply(mf, instruction, key if instruction in ("PARAMETER", "MESSAGE") else "", value, line)
    if not mf.froms:
        raise ModelfileError("the Modelfile has no FROM line")
    return mf


def _apply(mf: Modelfile, instruction: str, key: str, value: str, line: int) -> None:
    if not value and instruction in ("FROM", "ADAPTER"):
        raise ModelfileError(f"Modelfile line {line}: {instruction} needs a value")
    if instruction == "FROM":
        mf.froms.append((line, value))
    elif instruction == "ADAPTER":
        mf.adapters.append((line, value))
    elif instruction == "TEMPLATE":
        mf.template = value
    elif instruction == "SYSTEM":
        mf.system = value
    elif instruction == "LICENSE":
        mf.license.append(value)
    elif instruction == "MESSAGE":
        if key.lower() not in ROLES:
            raise ModelfileError(
                f"Modelfile line {line}: MESSAGE role '{key}' is not one of {', '.join(ROLES)}"
            )
        mf.messages.append({"role": key.lower(), "content": value})
    else:
        name = key.lower()
        try:
            checked = check_parameter(name, value)
        except ModelfileError as exc:
            raise ModelfileError(f"Modelfile line {line}: {exc.message}") from None
        if name == "stop":
            stops = mf.parameters.setdefault("stop", [])
            stops.extend(checked)
            if len(stops) > MAX_STOPS:
                raise ModelfileError(f"Modelfile line {line}: at most {MAX_STOPS} stop strings")
        else:
            mf.parameters[name] = checked


def quote(value: str) -> str:
    """A value `parse` reads back as it is."""
    if '"""' not in value:
        return f'"""{value}"""'
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return (
            quote(value)
            if (not value or value != value.strip() or '"' in value[:1] or "\n" in value)
            else value
        )
    return str(value)


def render(
    froms: list[str],
    *,
    adapters: list[str] = (),  # type: ignore[assignment]
    template: str | None = None,
    system: str | None = None,
    parameters: dict[str, Any] | None = None,
    messages: list[dict[str, Any]] | None = None,
    license: str | None = None,
    header: str = '# Modelfile generated by "llmlb node show"',
) -> str:
    lines = [header] + [f"FROM {f}" for f in froms] + [f"ADAPTER {a}" for a in adapters]
    if template:
        lines.append(f"TEMPLATE {quote(template)}")
    if system:
        lines.append(f"SYSTEM {quote(system)}")
    for name, value in (parameters or {}).items():
        for v in value if isinstance(value, list) else [value]:
            lines.append(f"PARAMETER {name} {_scalar(v)}")
    for m in messages or []:
        lines.append(f"MESSAGE {m.get('role')} {_scalar(str(m.get('content') or ''))}")
    if license:
        lines.append(f"LICENSE {quote(license)}")
    return "\n".join(lines) + "\n"
