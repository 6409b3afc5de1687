"""Who may use the router: client API keys, and nodes that may register.

Keys (LLMLB_API_KEYS) are compared in constant time and never stored or logged; the request
history records a key id, an HMAC of the key under a secret kept in the router's database
(shared by every router of a cluster, so that they agree on ids), so ids cannot be checked
against guessed keys by someone who reads the history alone. Without
LLMLB_NODE_TOKEN, only processes on the router's own machine may register nodes: a node
receives other people's prompts, so an open registration would let anyone on the network
collect them.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy.engine import Engine

from llmlb.errors import Forbidden, LlmlbError, Unauthorized
from llmlb.store import router_state

log = logging.getLogger("llmlb.router")
SECRET_FILE = "router.secret"  # where routers before the shared database kept it
SECRET_SETTING = "key_id_secret"


def _file_secret(home: Path) -> bytes | None:
    try:
        secret = bytes.fromhex((home / SECRET_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return secret if len(secret) >= 32 else None


def load_secret(engine: Engine, home: Path) -> bytes:
    """The HMAC secret of key ids, kept in the router's database so that every router of a
    cluster (and this one after a restart) computes the same ids. The first router to start
    makes it, from the $LLMLB_HOME/router.secret an older version made when there is one."""
    value = router_state.shared_setting(
        engine,
        SECRET_SETTING,
        lambda: (_file_secret(home) or secrets.token_bytes(32)).hex(),
    )
    try:
        secret = bytes.fromhex(value)
    except ValueError:
        secret = b""
    if len(secret) < 32:
        raise LlmlbError(
            f"the router's database holds a bad {SECRET_SETTING!r} in router_setting: "
            "delete that row to make a new one (key ids in the history then change)"
        )
    return secret


class ApiKeys:
    def __init__(self, keys: list[str], secret: bytes):
        self._keys = [k.encode() for k in keys]
        self._secret = secret
        self._ids = {key: self.key_id(key) for key in self._keys}

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
        return self._ids[found]


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
