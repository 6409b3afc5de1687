"""What a node sends the router, typed once for both ends: the sender builds it, the router
decodes and validates it at the door (types, ranges, sizes) before anything is stored.

A heartbeat comes from the network, so every field has a bound: a malformed one is a 400 and
is never written to the registry or to router.db.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from llmlb import prefix

MAX_MODELS = 10_000
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")

NODE_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
NodeId = Annotated[str, Meta(pattern=NODE_ID)]
ModelName = Annotated[str, Meta(min_length=1, max_length=512)]
Count = Annotated[int, Meta(ge=0, le=2**31)]
Bytes = Annotated[int, Meta(ge=0, le=2**62)]
Total = Annotated[int, Meta(ge=0, le=2**62)]
MAX_PREFIX_BYTES = prefix.MAX_HELD * prefix.HASH_BYTES


class ModelRef(msgspec.Struct, frozen=True):
    name: ModelName
    alias: ModelName | None = None
    created: Annotated[int, Meta(ge=0, le=2**40)] | None = None  # unix seconds (/v1/models)


class Heartbeat(msgspec.Struct, kw_only=True):
    """A node's registration and periodic state (POST /admin/nodes/heartbeat)."""

    id: NodeId
    host: Annotated[str, Meta(min_length=1, max_length=253)]
    port: Annotated[int, Meta(ge=1, le=65535)]
    status: Literal["Running"] = "Running"
    models: Annotated[list[ModelRef], Meta(max_length=MAX_MODELS)] = []
    loaded_models: Annotated[list[ModelName], Meta(max_length=MAX_MODELS)] = []
    in_flight: Count = 0
    queued: Count = 0
    vram_total_bytes: Bytes = 0
    vram_used_bytes: Bytes = 0
    gpu_name: Annotated[str, Meta(max_length=200)] | None = None
    gpu_temperature: Annotated[float, Meta(ge=-100, le=250)] | None = None
    uptime_secs: Annotated[int, Meta(ge=0, le=2**40)] = 0
    # what its prompt cache holds: packed text-prefix hashes (llmlb/prefix.py), base64 in JSON
    prefixes: Annotated[bytes, Meta(max_length=MAX_PREFIX_BYTES)] = b""
    # prompt tokens since it started, by where their cells came from
    prompt_tokens_cached: Total = 0
    prompt_tokens_restored: Total = 0
    prompt_tokens_computed: Total = 0

    def __post_init__(self) -> None:
        if not valid_host(self.host):
            raise ValueError(f"'{self.host}' is not a host name or IP address")
        if len(self.prefixes) % prefix.HASH_BYTES:
            raise ValueError(f"'prefixes' must hold whole {prefix.HASH_BYTES}-byte hashes")


def valid_host(host: str) -> bool:
    """An IP address or a DNS host name: nothing that could change a URL built from it."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_HOSTNAME.match(host))


def url_host(host: str) -> str:
    """The host as it goes into a URL (IPv6 in brackets)."""
    return f"[{host}]" if ":" in host else host
