"""Every environment variable llmlb reads, with its default, in one place."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from llmlb.errors import BadRequest

DEFAULT_NODE_PORT = 32769
DEFAULT_ROUTER_PORT = 32768

_ADDR = re.compile(
    r"^(?:(?P<scheme>https?)://)?(?P<host>\[[0-9a-fA-F:]+\]|[^:/\s\[\]]*)?(?::(?P<port>\d+))?/?$"
)


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


def _address(value: str, default_port: int, name: str) -> Address:
    """`host:port`, `:port`, a bare `port`, `host`, `http://host:port`; the rest is an error."""
    text = value.strip()
    if text.isdigit():  # `LLMLB_HOST=41001`: a port on loopback, not a host named 41001
        text = ":" + text
    m = _ADDR.match(text)
    if not text or not m:
        raise SettingsError(
            f"{name} must look like host:port, :port, port or http://host:port (got {value!r})"
        )
    port_text = m.group("port")
    port = int(port_text) if port_text else default_port
    if not 0 < port < 65536:
        raise SettingsError(f"{name} has a port out of range (got {value!r})")
    return Address(m.group("scheme") or "http", m.group("host") or "127.0.0.1", port)


def parse_address(value: str, default_port: int, name: str = "LLMLB_HOST") -> Address:
    """Where a client connects: a listen-everywhere address is reached through loopback."""
    addr = _address(value, default_port, name)
    if addr.host in ("0.0.0.0", "[::]"):
        return Address(addr.scheme, "127.0.0.1", addr.port)
    return addr


def listen_address(name: str, default_port: int) -> Address:
    """Where a server listens when --host/--port are not given: the same variable its clients
    read (LLMLB_HOST for a node, LLMLB_ROUTER for a router), as `ollama serve` reads
    OLLAMA_HOST; `0.0.0.0` stays 0.0.0.0 here."""
    return _address(_env(name) or f"127.0.0.1:{default_port}", default_port, name)


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
        _env("LLMLB_ROUTER") or f"127.0.0.1:{DEFAULT_ROUTER_PORT}",
        DEFAULT_ROUTER_PORT,
        "LLMLB_ROUTER",
    )


def hf_token() -> str | None:
    return _env("HF_TOKEN")


def ollama_models_dir() -> Path:
    return Path(_env("OLLAMA_MODELS") or Path.home() / ".ollama" / "models").expanduser()


def catalog_path() -> Path:
    return home() / "llmlb.db"


def router_db_path() -> Path:
    """The router's node registry and request history (a schema of its own)."""
    return home() / "router.db"


def history_path() -> Path:
    return home() / "history"


def parse_duration(value: object, name: str = "keep_alive") -> float:
    """ollama's keep_alive: seconds as a number, or `5m`, `1h30m`, `300ms`; negative = forever."""
    if isinstance(value, bool):
        raise SettingsError(f"{name} must be a number of seconds or a duration like 5m")
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    total, matched = 0.0, ""
    sign = -1.0 if text.startswith("-") else 1.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text.lstrip("-")):
        total += float(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
        matched += number + unit
    if not matched or matched != text.lstrip("-"):
        raise SettingsError(
            f"{name} must be a number of seconds or a duration like 5m (got {value!r})"
        )
    return sign * total


FOREVER_AFTER_SECS = 10 * 365 * 86400  # a keep-alive longer than ten years means "forever"


def keep_alive_secs(value: object, name: str = "keep_alive") -> float:
    """A keep-alive as the scheduler takes it: seconds, or -1 for forever.

    Bounded, because it ends up as a date: 1e12 seconds or "inf" mean forever, not a year
    past 9999; "nan" is an error."""
    secs = parse_duration(value, name)
    if math.isnan(secs):
        raise SettingsError(f"{name} must be a number of seconds or a duration like 5m")
    if secs < 0 or secs > FOREVER_AFTER_SECS:
        return -1.0
    return secs


def keep_alive() -> float:
    return keep_alive_secs(_env("LLMLB_KEEP_ALIVE") or "5m", "LLMLB_KEEP_ALIVE")


def _int_env(name: str, default: int, low: int = 1) -> int:
    raw = _env(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number (got {raw!r})") from None
    if value < low:
        raise SettingsError(f"{name} must be at least {low} (got {value})")
    return value


def max_loaded_models() -> int:
    return _int_env("LLMLB_MAX_LOADED_MODELS", 3)


def max_queue() -> int:
    return _int_env("LLMLB_MAX_QUEUE", 64, low=0)


def context_length() -> int:
    """Context window given to a loaded model (capped by what the model was trained for)."""
    return _int_env("LLMLB_CONTEXT_LENGTH", 4096, low=64)


def hf_endpoint() -> str:
    """HF_ENDPOINT as huggingface_hub reads it: a mirror or a test Hub."""
    return (_env("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def hf_endpoints() -> list[str]:
    """Hub endpoints a client may name for a pull (X-HF-Endpoint), besides HF_ENDPOINT itself
    (LLMLB_HF_ENDPOINTS, comma-separated URLs): a node fetches from no other URL a client
    chooses."""
    return [
        e.strip().rstrip("/") for e in (_env("LLMLB_HF_ENDPOINTS") or "").split(",") if e.strip()
    ]


def hf_endpoint_override() -> str | None:
    """HF_ENDPOINT only when it is set: what `llmlb node pull` forwards to the server."""
    return _env("HF_ENDPOINT")


def pull_connections() -> int:
    """Parallel ranged connections per downloaded file."""
    return _int_env("LLMLB_PULL_CONNECTIONS", 8)


def pull_stall_secs() -> int:
    """A download connection that receives no byte for this long is dropped and retried."""
    return _int_env("LLMLB_PULL_STALL_SECS", 30)


def read_timeout_secs() -> float:
    """How long a server waits for a request's headers, and for the next part of its body,
    before it closes the connection (slow or idle clients hold no connection longer)."""
    return float(_int_env("LLMLB_READ_TIMEOUT_SECS", 10))


def max_connections() -> int:
    """Open client connections one server keeps; one more is answered 503 and closed."""
    return _int_env("LLMLB_MAX_CONNECTIONS", 1024)


def node_first_byte_secs() -> float:
    """The router's wait for a node's first byte before it checks that the node is alive: it
    keeps waiting (a model loading, a long answer) only while the node answers that check."""
    return float(_int_env("LLMLB_NODE_FIRST_BYTE_SECS", 10))


def router_url() -> str | None:
    """The router a node registers with (`--router` or LLMLB_ROUTER_URL)."""
    return _env("LLMLB_ROUTER_URL")


def node_token() -> str | None:
    """Shared secret nodes present to the router; when set, nodes without it are refused."""
    return _env("LLMLB_NODE_TOKEN")


def api_keys() -> list[str]:
    """Keys clients must present to the router (bearer or X-API-Key); empty = open."""
    return [k.strip() for k in (_env("LLMLB_API_KEYS") or "").split(",") if k.strip()]


def api_key() -> str | None:
    """The key the `router` CLI commands send."""
    return _env("LLMLB_API_KEY")


def history_days() -> int:
    return _int_env("LLMLB_HISTORY_DAYS", 7)


def heartbeat_secs() -> float:
    return float(_int_env("LLMLB_HEARTBEAT_MS", 2000, low=50)) / 1000


def heartbeat_timeout_secs() -> float:
    """A node whose last heartbeat is older than this is offline (three missed beats)."""
    return 3 * heartbeat_secs() + 1


def node_max_in_flight() -> int:
    """Requests the router sends one node at once; more wait in the router's queue, where
    they go to whichever node frees first. The default matches a node's default
    LLMLB_NUM_PARALLEL: a node batches that many, and more would only queue on it while
    other nodes idle."""
    return _int_env("LLMLB_NODE_MAX_IN_FLIGHT", 4)


def router_queue() -> int:
    return _int_env("LLMLB_ROUTER_MAX_QUEUE", 256, low=0)


def router_queue_timeout() -> float:
    return float(_int_env("LLMLB_ROUTER_QUEUE_TIMEOUT", 30))


def threads() -> int:
    """CPU threads a loaded model computes with (ollama's num_thread); default: all cores."""
    return _int_env("LLMLB_THREADS", os.cpu_count() or 1)


def stall_secs() -> int:
    """A runner with work in hand that says nothing this long is stuck: its requests fail and
    it is ended. It speaks after every compute graph (512 prompt tokens or one token of every
    running request) and while a model loads, so only a model that slow per graph needs more."""
    return _int_env("LLMLB_STALL_SECS", 60)


def origins() -> list[str]:
    """Extra browser origins the servers accept (LLMLB_ORIGINS, comma-separated; `*` patterns)."""
    return [o.strip() for o in (_env("LLMLB_ORIGINS") or "").split(",") if o.strip()]


MAX_PARALLEL = 256  # llama.cpp's LLAMA_MAX_SEQ


def num_parallel() -> int:
    """Requests one loaded chat model decodes at once, batched (ollama's OLLAMA_NUM_PARALLEL).
    Each has its own LLMLB_CONTEXT_LENGTH of KV cache, so memory grows with it."""
    value = _int_env("LLMLB_NUM_PARALLEL", 4)
    if value > MAX_PARALLEL:
        raise SettingsError(f"LLMLB_NUM_PARALLEL must be at most {MAX_PARALLEL} (got {value})")
    return value


# -- several routers, one cluster (issue 18) ---------------------------------------------------
_DB_SCHEMES = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
    "sqlite": "sqlite",
}


def database_url() -> str | None:
    """Where the router keeps its state (LLMLB_DATABASE_URL); None: $LLMLB_HOME/router.db.

    `postgresql://`, `postgres://` and `postgresql+psycopg://` all mean PostgreSQL through
    psycopg 3; `sqlite:///path` a SQLite file. The password never appears in an error."""
    raw = _env("LLMLB_DATABASE_URL")
    if raw is None:
        return None
    scheme, sep, rest = raw.strip().partition("://")
    driver = _DB_SCHEMES.get(scheme.lower())
    if not sep or driver is None or not rest.strip("/"):
        shown = scheme if sep else "(no scheme)"
        raise SettingsError(
            "LLMLB_DATABASE_URL must be postgresql://user:password@host/database or "
            f"sqlite:///path (got a URL starting {shown!r})"
        )
    return f"{driver}://{rest}"


def redis_url() -> str | None:
    """The Redis that holds the routers' shared in-flight claims (LLMLB_REDIS_URL)."""
    raw = _env("LLMLB_REDIS_URL")
    if raw is None:
        return None
    scheme = raw.strip().partition("://")[0].lower()
    if "://" not in raw or scheme not in ("redis", "rediss", "unix"):
        raise SettingsError(
            "LLMLB_REDIS_URL must look like redis://host:6379/0, rediss://... or unix:///path"
        )
    return raw.strip()


def claim_lease_secs() -> float:
    """How long a claim in Redis lives unless its router renews it: the most a router that
    died can hold a node's slot."""
    return float(_int_env("LLMLB_CLAIM_LEASE_SECS", 30))


def history_buffer() -> int:
    """Request-history rows a router keeps in memory while its database is unreachable."""
    return _int_env("LLMLB_HISTORY_BUFFER", 10_000)


def _float_env(name: str, default: float) -> float:
    raw = _env(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number (got {raw!r})") from None
    if not 0 <= value < math.inf:
        raise SettingsError(f"{name} must be 0 or more (got {raw!r})")
    return value


# -- the prompt cache (issue 26) ---------------------------------------------------------------
def prompt_cache_bytes() -> int:
    """The prompt cache's files on disk, all models together (LLMLB_PROMPT_CACHE_GB, in GiB;
    decimals allowed; 0: no disk tier). Past it, the least recently used go."""
    return int(_float_env("LLMLB_PROMPT_CACHE_GB", 4.0) * (1 << 30))


def prefix_routing() -> bool:
    """Whether the router sends a request to the node that holds the longest prefix of it."""
    raw = _env("LLMLB_PREFIX_ROUTING")
    return True if raw is None else _flag(raw)


def prefix_balance() -> int:
    """The node holding a request's prefix gets it unless it has more than this many requests
    in flight beyond the least loaded node that could take it (then balance wins)."""
    return _int_env("LLMLB_PREFIX_BALANCE", 2, low=0)


def max_blob_gb() -> int:
    """The largest file a client may upload to /api/blobs (a model, a shard, an adapter), in GB."""
    return _int_env("LLMLB_MAX_BLOB_GB", 1024)


def responses_days() -> int:
    """How long a node keeps a stored response of /v1/responses (OpenAI keeps them 30 days)."""
    return _int_env("LLMLB_RESPONSES_DAYS", 30)


def responses_mb() -> int:
    """The stored responses' total size a node keeps, in MB; past it, the oldest go."""
    return _int_env("LLMLB_RESPONSES_MB", 256)
