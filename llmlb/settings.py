"""Every environment variable llmlb reads, with its default, in one place."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from llmlb.errors import BadRequest

DEFAULT_NODE_PORT = 32769
DEFAULT_ROUTER_PORT = 32768

_ADDR = re.compile(r"^(?:(?P<scheme>https?)://)?(?P<host>\[[0-9a-fA-F:]+\]|[^:/\s\[\]]*)?(?::(?P<port>\d+))?/?$")


class SettingsError(BadRequest):
    """A setting has a value we cannot use."""


@dataclass(frozen=True)
class Address:
    scheme: str
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_address(value: str, default_port: int, name: str = "LLMLB_HOST") -> Address:
    """Accept `host:port`, `:port`, `host`, `http://host:port`; the rest is an error."""
    text = value.strip()
    m = _ADDR.match(text)
    if not text or not m:
        raise SettingsError(f"{name} must look like host:port, :port or http://host:port (got {value!r})")
    port_text = m.group("port")
    port = int(port_text) if port_text else default_port
    if not 0 < port < 65536:
        raise SettingsError(f"{name} has a port out of range (got {value!r})")
    host = m.group("host") or "127.0.0.1"
    if host == "0.0.0.0":
        host = "127.0.0.1"  # a listen-everywhere address is reached through loopback
    return Address(m.group("scheme") or "http", host, port)


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else None


def debug() -> bool:
    return _flag(_env("LLMLB_DEBUG"))


def home() -> Path:
    return Path(_env("LLMLB_HOME") or Path.home() / ".llmlb").expanduser()


def node_address() -> Address:
    return parse_address(_env("LLMLB_HOST") or f"127.0.0.1:{DEFAULT_NODE_PORT}", DEFAULT_NODE_PORT)


def router_address() -> Address:
    return parse_address(
        _env("LLMLB_ROUTER") or f"127.0.0.1:{DEFAULT_ROUTER_PORT}", DEFAULT_ROUTER_PORT, "LLMLB_ROUTER"
    )


def hf_token() -> str | None:
    return _env("HF_TOKEN")


def ollama_models_dir() -> Path:
    return Path(_env("OLLAMA_MODELS") or Path.home() / ".ollama" / "models").expanduser()


def catalog_path() -> Path:
    return home() / "llmlb.db"


def queue_path() -> Path:
    return home() / "queue.db"


def models_dir() -> Path:
    return home() / "models"


def partial_dir() -> Path:
    return home() / "partial"


def history_path() -> Path:
    return home() / "history"
