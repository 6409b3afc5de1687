"""JSON bodies from the network, decoded one way for both servers: every failure is one 400.

msgspec decodes in C with strict UTF-8 (no lone surrogates). Decoded straight into a typed
struct, fields the struct does not name are skipped by the parser without building a Python
object for them, so a body's cost is what its known fields hold. What it cannot take (bytes
that are not UTF-8, nesting deeper than the recursion limit, malformed JSON, a value of the
wrong type) becomes a BadRequest instead of an exception that would surface as a 500.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from llmlb.errors import BadRequest

_AT = re.compile(r" - at `\$\.?([^`]*)`$")


class InvalidField(BadRequest):
    """A value of the wrong type or range. `where` is its path in the body (`think`,
    `messages[0].role`), empty for the body itself; `problem` is msgspec's own words."""

    def __init__(self, problem: str, where: str):
        super().__init__(f"invalid request: {problem}" + (f" at '{where}'" if where else ""))
        self.problem, self.where = problem, where


def decode(raw: bytes) -> Any:
    """Any JSON value."""
    return decode_as(raw, Any)


def decode_as(raw: bytes, kind: Any) -> Any:
    """Decode and validate into `kind` in one pass; a validation failure names the field."""
    try:
        return msgspec.json.decode(raw, type=kind)
    except RecursionError as exc:
        raise BadRequest("request body is nested too deeply") from exc
    except UnicodeDecodeError as exc:
        raise BadRequest("request body is not valid UTF-8") from exc
    except msgspec.ValidationError as exc:
        text = str(exc)
        at = _AT.search(text)
        raise InvalidField(text[: at.start()] if at else text, at.group(1) if at else "") from exc
    except msgspec.DecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
