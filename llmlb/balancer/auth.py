"""Client API keys: checked on every request when LLMLB_API_KEYS is set; never stored or logged."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from llmlb.errors import Unauthorized


def key_ids(keys: list[str]) -> dict[str, str]:
    """key -> the short id the request history shows instead of the key."""
    return {k: "key-" + hashlib.sha256(k.encode()).hexdigest()[:8] for k in keys}


def client_key(ids: dict[str, str], headers: Mapping[str, str]) -> str | None:
    """The key's id (None when no keys are configured); 401 for a missing or unknown key."""
    if not ids:
        return None
    auth = headers.get("authorization", "")
    key = auth[7:].strip() if auth.lower().startswith("bearer ") else headers.get("x-api-key", "")
    if key not in ids:
        raise Unauthorized("a valid API key is required (Authorization: Bearer <key> or X-API-Key)")
    return ids[key]
