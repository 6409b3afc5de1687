import pytest

from llmlb import settings
from llmlb.errors import EXIT_ERROR


@pytest.mark.parametrize(
    "value, host, port, scheme",
    [
        ("127.0.0.1:32769", "127.0.0.1", 32769, "http"),
        ("localhost:8000", "localhost", 8000, "http"),
        (":9000", "127.0.0.1", 9000, "http"),
        ("http://10.1.2.3:1234", "10.1.2.3", 1234, "http"),
        ("https://gpu-box:443/", "gpu-box", 443, "https"),
        ("gpu-box", "gpu-box", 32769, "http"),
        ("http://gpu-box", "gpu-box", 32769, "http"),
        ("[::1]:5000", "[::1]", 5000, "http"),
        ("0.0.0.0:4000", "127.0.0.1", 4000, "http"),
        ("41001", "127.0.0.1", 41001, "http"),  # a bare number is a port, not a host
        (" 41001 ", "127.0.0.1", 41001, "http"),
    ],
)
def test_host_forms(monkeypatch, value, host, port, scheme):
    monkeypatch.setenv("LLMLB_HOST", value)
    addr = settings.node_address()
    assert (addr.host, addr.port, addr.scheme) == (host, port, scheme)
    assert addr.url == f"{scheme}://{host}:{port}"


def test_host_default(monkeypatch):
    monkeypatch.delenv("LLMLB_HOST", raising=False)
    assert str(settings.node_address()) == "127.0.0.1:32769"


@pytest.mark.parametrize(
    "value, host, port",
    [
        ("0.0.0.0:41001", "0.0.0.0", 41001),  # listening everywhere stays so
        ("41001", "127.0.0.1", 41001),
        (":41001", "127.0.0.1", 41001),
        ("gpu-box", "gpu-box", 32769),
    ],
)
def test_a_server_listens_where_llmlb_host_says(monkeypatch, value, host, port):
    monkeypatch.setenv("LLMLB_HOST", value)
    addr = settings.listen_address("LLMLB_HOST", settings.DEFAULT_NODE_PORT)
    assert (addr.host, addr.port) == (host, port)


def test_a_server_listens_on_loopback_by_default(monkeypatch):
    monkeypatch.delenv("LLMLB_ROUTER", raising=False)
    addr = settings.listen_address("LLMLB_ROUTER", settings.DEFAULT_ROUTER_PORT)
    assert (addr.host, addr.port) == ("127.0.0.1", 32768)


@pytest.mark.parametrize(
    "value", ["99999", "ftp://x:1", "host:port", "a b:1", "host:99999", "host:0", "http://x:1/path"]
)
def test_bad_host_is_a_clear_error(monkeypatch, value):
    monkeypatch.setenv("LLMLB_HOST", value)
    with pytest.raises(settings.SettingsError) as err:
        settings.node_address()
    assert "LLMLB_HOST" in err.value.message
    assert err.value.exit_code == EXIT_ERROR


@pytest.mark.parametrize(
    "value, expected",
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        ("yes", True),
        ("0", False),
        ("false", False),
        ("", False),
        ("nope", False),
    ],
)
def test_debug_flag(monkeypatch, value, expected):
    monkeypatch.setenv("LLMLB_DEBUG", value)
    assert settings.debug() is expected


def test_llmlb_home_holds_the_catalog_and_the_repl_history(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMLB_HOME", str(tmp_path / "h"))
    assert settings.home() == tmp_path / "h"
    assert settings.catalog_path() == tmp_path / "h" / "llmlb.db"  # `llmlb db upgrade`
    assert settings.history_path() == tmp_path / "h" / "history"  # the REPL's input history
    monkeypatch.setenv("LLMLB_HOME", "~/elsewhere")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert settings.catalog_path() == tmp_path / "elsewhere" / "llmlb.db"


def test_home_default(monkeypatch, tmp_path):
    monkeypatch.delenv("LLMLB_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert settings.home() == tmp_path / ".llmlb"


def test_tokens_and_ollama(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", "hf_abc")
    assert settings.hf_token() == "hf_abc"
    monkeypatch.setenv("HF_TOKEN", "")
    assert settings.hf_token() is None
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "o"))
    assert settings.ollama_models_dir() == tmp_path / "o"
    monkeypatch.delenv("OLLAMA_MODELS")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert settings.ollama_models_dir() == tmp_path / ".ollama" / "models"


def test_router_address(monkeypatch):
    assert str(settings.router_address()) == "127.0.0.1:32768"
    monkeypatch.setenv("LLMLB_ROUTER", "http://lb:7000")
    assert settings.router_address().url == "http://lb:7000"


@pytest.mark.parametrize(
    "value, expected",
    [
        ("postgresql://u:p@db/llmlb", "postgresql+psycopg://u:p@db/llmlb"),
        ("postgres://u@db:5433/x", "postgresql+psycopg://u@db:5433/x"),
        ("postgresql+psycopg://u@db/x", "postgresql+psycopg://u@db/x"),
        ("sqlite:////var/lib/llmlb/router.db", "sqlite:////var/lib/llmlb/router.db"),
    ],
)
def test_database_url_forms(monkeypatch, value, expected):
    monkeypatch.setenv("LLMLB_DATABASE_URL", value)
    assert settings.database_url() == expected


@pytest.mark.parametrize("value", ["mysql://u:hunter2@db/x", "db.internal/llmlb", "postgresql://"])
def test_a_bad_database_url_is_one_line_without_the_password(monkeypatch, value):
    monkeypatch.setenv("LLMLB_DATABASE_URL", value)
    with pytest.raises(settings.SettingsError) as err:
        settings.database_url()
    assert "LLMLB_DATABASE_URL" in err.value.message and "hunter2" not in err.value.message
    assert "\n" not in err.value.message


def test_no_database_or_redis_url_means_one_router_on_sqlite(monkeypatch):
    monkeypatch.delenv("LLMLB_DATABASE_URL", raising=False)
    monkeypatch.delenv("LLMLB_REDIS_URL", raising=False)
    assert settings.database_url() is None and settings.redis_url() is None


@pytest.mark.parametrize("value", ["localhost:6379", "http://cache:6379"])
def test_a_bad_redis_url_is_an_error(monkeypatch, value):
    monkeypatch.setenv("LLMLB_REDIS_URL", value)
    with pytest.raises(settings.SettingsError, match="LLMLB_REDIS_URL"):
        settings.redis_url()


def test_prompt_cache_and_prefix_routing_settings(monkeypatch):
    for name in ("LLMLB_PROMPT_CACHE_GB", "LLMLB_PREFIX_ROUTING", "LLMLB_PREFIX_BALANCE"):
        monkeypatch.delenv(name, raising=False)
    assert settings.prompt_cache_bytes() == 4 << 30
    assert settings.prefix_routing() is True and settings.prefix_balance() == 2
    monkeypatch.setenv("LLMLB_PROMPT_CACHE_GB", "0.5")
    assert settings.prompt_cache_bytes() == 1 << 29
    monkeypatch.setenv("LLMLB_PROMPT_CACHE_GB", "0")
    assert settings.prompt_cache_bytes() == 0
    monkeypatch.setenv("LLMLB_PREFIX_ROUTING", "0")
    assert settings.prefix_routing() is False
    monkeypatch.setenv("LLMLB_PREFIX_BALANCE", "0")
    assert settings.prefix_balance() == 0


@pytest.mark.parametrize(
    "name, value",
    [
        ("LLMLB_PROMPT_CACHE_GB", "lots"),
        ("LLMLB_PROMPT_CACHE_GB", "-1"),
        ("LLMLB_PROMPT_CACHE_GB", "inf"),
        ("LLMLB_PROMPT_CACHE_GB", "nan"),
        ("LLMLB_PREFIX_BALANCE", "-1"),
    ],
)
def test_bad_prompt_cache_settings_are_clear_errors(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    read = settings.prompt_cache_bytes if "CACHE" in name else settings.prefix_balance
    with pytest.raises(settings.SettingsError) as err:
        read()
    assert name in err.value.message
