"""Short aliases for model names.

Rule: take the last path segment (for `owner/repo/<tail>`, the repo plus the tail when the tail
is a quantization), lower-case it, and drop a trailing `-GGUF`/`_GGUF`/`.gguf`.
`meta-llama/Llama-3.2-3B-Instruct` -> `llama-3.2-3b-instruct`;
`Qwen/Qwen2.5-0.5B-Instruct-GGUF` -> `qwen2.5-0.5b-instruct`; `org/repo/Q8_0` -> `repo-q8_0`.
A taken alias gets `-2`, `-3`, ... appended.
"""

from __future__ import annotations

import re

_SUFFIX = re.compile(r"([-_.]gguf)$", re.IGNORECASE)
_QUANT = re.compile(r"^(?:[QF]\d|IQ\d|BF16|F16|F32)", re.IGNORECASE)


def base_alias(name: str) -> str:
    parts = [p for p in name.split("/") if p]
    last = parts[-1]
    # owner/repo/<QUANT or file stem>: the repo names the model, the tail tells it apart
    if len(parts) >= 3:
        repo = _SUFFIX.sub("", parts[1])
        tail = _SUFFIX.sub("", last)
        last = (
            f"{repo}-{tail}"
            if _QUANT.match(tail) or not tail.lower().startswith(repo.lower())
            else tail
        )
    alias = _SUFFIX.sub("", last).lower()
    alias = re.sub(r"[^a-z0-9._-]+", "-", alias).strip("-._")
    return alias or "model"


def unique_alias(name: str, taken: set[str]) -> str:
    alias = base_alias(name)
    if alias not in taken:
        return alias
    n = 2
    while f"{alias}-{n}" in taken:
        n += 1
    return f"{alias}-{n}"
