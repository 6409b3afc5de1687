"""What people type for a model, as ollama users type it, and the errors that help them.

`smollm2:latest` is `smollm2` (the default file); `owner/repo:Q4_1` is what `pull` made of it,
`owner/repo/Q4_1`; an alias works with a tag too (`repo:Q8_0` -> `owner/repo/Q8_0`), and so
does ollama's `hf.co/owner/repo:TAG`. A name
that matches nothing answers with the closest local names, and a model still downloading says
so with its progress. Pure helpers; store/catalog.py asks the catalog with them.
"""

from __future__ import annotations

import difflib
import re

from llmlb import validation
from llmlb.errors import Conflict, ModelNotFound, ValidationError

_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_SUGGESTIONS = 3


def split_tag(typed: str) -> tuple[str, str | None]:
    """(`base`, `TAG` upper-cased, or None for no tag and for `:latest`)."""
    base, sep, tag = typed.rpartition(":")
    if not sep:
        validation.check_name(typed)
        return typed, None
    if not base or not _TAG.match(tag):
        raise ValidationError(
            f"invalid model name '{typed}': '{tag}' is not a tag like latest or Q4_K_M"
        )
    validation.check_name(base)
    return base, None if tag.lower() == "latest" else tag.upper()


def without_host(name: str) -> str:
    """`hf.co/owner/repo` (as ollama users write pulled models) is `owner/repo` here."""
    for host in ("hf.co/", "huggingface.co/"):
        if name.lower().startswith(host) and name.count("/") >= 2:
            return name[len(host) :]
    return name


def tagged(base: str, tag: str) -> str:
    """The name `pull owner/repo:TAG` registers."""
    return f"{base}/{tag}"


class UnknownModel(ModelNotFound):
    """`model 'x' not found`, with the closest local names when some are close."""

    def __init__(self, name: str, suggestions: list[str] | None = None):
        super().__init__(name)
        self.suggestions = suggestions or []
        if self.suggestions:
            self.message = f"{self.message}; did you mean {' or '.join(self.suggestions)}?"
            self.args = (self.message,)


class StillDownloading(Conflict):
    def __init__(self, name: str, percent: int):
        super().__init__(
            f"model '{name}' is still downloading ({percent}%); "
            f"`llmlb node pull {name}` shows its progress"
        )
        self.percent = percent


def closest(typed: str, choices: list[str]) -> list[str]:
    """Up to three local names or aliases that look like `typed` (case does not matter)."""
    by_lower: dict[str, str] = {}
    for choice in choices:
        by_lower.setdefault(choice.lower(), choice)
    base = typed.rpartition(":")[0] if ":" in typed and not typed.startswith("ollama:") else typed
    found: list[str] = []
    for key in (typed.lower(), base.lower()):
        for match in difflib.get_close_matches(key, list(by_lower), n=MAX_SUGGESTIONS, cutoff=0.75):
            if by_lower[match] not in found:
                found.append(by_lower[match])
    return found[:MAX_SUGGESTIONS]
