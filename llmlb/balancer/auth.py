"""Who may use the router: client API keys, and nodes that may register.

Keys (LLMLB_API_KEYS) are compared in constant time and never stored or logged; the request
history records a key id, an HMAC of the key under a secret of this router's own, so ids
cannot be checked against guessed keys by someone who reads the history. Without
LLMLB_NODE_TOKEN, only processes on the router's own machine may register nodes: a node
receives other people's prompts, so an open registration would let anyone on the network
collect them.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from llmlb.errors import LlmlbError, Unauthorized

log = logging.getLogger("llmlb.router")
SECRET_FILE = "router.secret"


class Forbidden(LlmlbError):
    status = 403
    kind = "permission_error"


def load_secret(home: Path) -> bytes:
    """The router's HMAC secret, made on first start (mode 0600) and kept across restarts so
    key ids in the history stay comparable."""
    path = home / SECRET_FILE
    try:
        secret = bytes.fromhex(path.read_text().strip())
        if len(secret) >= 32:
            return secret
    except (OSError, ValueError):
        pass
    secret = secrets.token_bytes(32)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret.hex())
    os.replace(tmp, path)
    return secret


class ApiKeys:
    def __init__(self, keys: list[str], secret: bytes):
        self._keys = [k.encode() for k in keys]
        self._secret = secret

    @property
    def required(self) -> bool:
        return bool(self._keys)

    def key_id(self, key: bytes) -> str:
        return "key-" + hmac.new(self._secret, key, hashlib.sha256).hexdigest()[:12]

    def identify(self, headers: Mapping[str, str]) -> str | None:
        """The caller's key id (None when no keys are configured); 401 for a missing or
        unknown key."""
        if not self._keys:
            return None
        auth = headers.get("authorization", "")
        given = (
            auth[7:].strip() if auth.lower().startswith("bearer ") else headers.get("x-api-key", "")
        )
        presented = given.encode()
        found = None
        for key in self._keys:  # every key compared, in constant time: no timing oracle
            if hmac.compare_digest(key, presented):
                found = key
        if found is None:
            raise Unauthorized(
                "a valid API key is required (Authorization: Bearer <key> or X-API-Key)"
            )
        return self.key_id(found)


def is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class NodeGate:
    """Registration and goodbyes from nodes: the token when set, else loopback only."""

    def __init__(self, token: str | None):
        self.token = token.encode() if token else None

    def check(self, headers: Mapping[str, str], client_address: str | None) -> None:
        if self.token is not None:
            given = headers.get("x-llmlb-node-token", "").encode()
            if not hmac.compare_digest(self.token, given):
                raise Unauthorized("this router requires the node token (LLMLB_NODE_TOKEN)")
            return
        if not is_loopback(client_address):
            raise Forbidden(
                "node registration from other machines needs LLMLB_NODE_TOKEN set on the router "
                "and the nodes"
            )
