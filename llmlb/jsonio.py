"""JSON bodies from the network, decoded one way for both servers: every failure is one 400.

msgspec decodes in C with strict UTF-8 (no lone surrogates); what it cannot take (bytes that
are not UTF-8, nesting deep enough to exhaust the recursion limit, malformed JSON) becomes a
BadRequest instead of an exception that would surface as a 500.
"""

from __future__ import annotations

from typing import Any

import msgspec

from llmlb.errors import BadRequest


def decode(raw: bytes) -> Any:
    """Any JSON value."""
    return decode_as(raw, Any)


def decode_as(raw: bytes, kind: Any) -> Any:
    """Decode and validate into a typed struct; a validation failure names the field."""
    try:
        return msgspec.json.decode(raw, type=kind)
    except RecursionError as exc:
        raise BadRequest("request body is nested too deeply") from exc
    except UnicodeDecodeError as exc:
        raise BadRequest("request body is not valid UTF-8") from exc
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid request: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
