"""Pulling from Hub mirrors that are not huggingface.co: olah-like listings without sizes or
hashes, files of unknown size, HF_ENDPOINT forwarded by the CLI, and hostile listings."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from tests.support.hub_server import HubServer
from tests.support.procs import ServerProcess, free_port, run_cli
from tests.support.tiny_model import make_tiny_gguf

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def gguf(tmp_path_factory) -> Path:
    return make_tiny_gguf(tmp_path_factory.mktemp("src") / "tiny-Q8_0.gguf", dtype="Q8_0")


def cli(server, *args, env: dict | None = None):
    return run_cli(*args, env={**server.client_env(), **(env or {})}, timeout=120)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def paths(hub) -> list[str]:
    return [p for _, p, _ in hub.stats.requests]


def file_gets(hub, name: str) -> list[tuple[str, str, str | None]]:
    return [r for r in hub.stats.requests if r[0] == "GET" and r[1].endswith("/" + name)]


@pytest.fixture
def olah(tmp_path, gguf):
    with HubServer.olah_like(tmp_path / "hub") as hub:
        hub.add_repo("org/repo", {"tiny-Q8_0.gguf": gguf, "README.md": b"# tiny\n"})
        yield hub


def test_olah_like_mirror_is_what_huggingface_hub_accepts(olah, tmp_path):
    """The stand-in behaves like the mirror: huggingface_hub's own download works against it."""
    from huggingface_hub import HfApi, hf_hub_download

    api = HfApi(endpoint=olah.url, token=False)
    with pytest.raises(Exception, match="401"):
        api.model_info("org/repo")  # no revision: olah answers 401
    info = api.model_info("org/repo", revision="main", files_metadata=True)
    assert {s.rfilename: (s.size, s.lfs) for s in info.siblings} == {
        "README.md": (None, None),
        "tiny-Q8_0.gguf": (None, None),
    }
    got = hf_hub_download("org/repo", "tiny-Q8_0.gguf", endpoint=olah.url, cache_dir=tmp_path / "c")
    assert sha256(Path(got)) == olah.repos["org/repo"].files["tiny-Q8_0.gguf"].sha256


@pytest.mark.parametrize(
    "ref", ["org/repo", "org/repo/tree/main", "org/repo/resolve/main/tiny-Q8_0.gguf"]
)
def test_pull_from_an_olah_like_mirror(olah, llmlb_env, ref):
    with ServerProcess(llmlb_env, env={"HF_ENDPOINT": olah.url}) as node:
        r = cli(node, "node", "pull", f"{olah.url}/{ref}")
        assert r.returncode == 0, r.stderr + node.log()
        assert "verifying sha256 digest" in r.stdout  # the tree API gave the LFS sha256
        name = "org/repo/tiny-Q8_0" if "resolve" in ref else "org/repo"
        path = llmlb_env / "models" / name / "tiny-Q8_0.gguf"
        assert sha256(path) == olah.repos["org/repo"].files["tiny-Q8_0.gguf"].sha256
    asked = paths(olah)
    assert "/api/models/org/repo/revision/main" in asked  # the revision, asked explicitly
    assert "/api/models/org/repo" not in asked
    assert len(file_gets(olah, "tiny-Q8_0.gguf")) >= 1  # a GET for the file was sent


def test_plain_git_mirror_is_verified_by_git_blob_id(tmp_path, llmlb_env, gguf):
    """olah serving a plain git repo (the .gguf not in LFS): the tree API gives blob ids."""
    with HubServer.olah_like(tmp_path / "hub") as hub:
        hub.add_repo("org/repo", {"tiny-Q8_0.gguf": gguf}, lfs=False)
        with ServerProcess(llmlb_env, env={"HF_ENDPOINT": hub.url}) as node:
            r = cli(node, "node", "pull", "org/repo")
        assert r.returncode == 0, r.stderr
        assert "verifying git blob digest" in r.stdout.splitlines()


def test_mirror_without_tree_api_gets_sizes_and_hashes_from_head(tmp_path, llmlb_env, gguf):
    with HubServer.olah_like(tmp_path / "hub", tree_api=False) as hub:
        hub.add_repo("org/repo", {"tiny-Q8_0.gguf": gguf})
        with ServerProcess(llmlb_env, env={"HF_ENDPOINT": hub.url}) as node:
            r = cli(node, "node", "pull", "org/repo")
        assert r.returncode == 0, r.stderr
        assert "pulling tiny-Q8_0.gguf... 100%" in r.stdout
        assert "verifying sha256 digest" in r.stdout  # the HEAD's ETag is the LFS sha256
        assert (
            "HEAD",
            "/org/repo/resolve/" + hub.repos["org/repo"].sha + "/tiny-Q8_0.gguf",
            None,
        ) in hub.stats.requests


def test_file_of_unknown_size_is_streamed_and_size_checked(tmp_path, llmlb_env, gguf):
    with HubServer.unknown_sizes(tmp_path / "hub") as hub:
        hub.add_repo("org/repo", {"tiny-Q8_0.gguf": gguf})
        with ServerProcess(llmlb_env, env={"HF_ENDPOINT": hub.url}) as node:
            r = cli(node, "node", "pull", "org/repo")
            assert r.returncode == 0, r.stderr + node.log()
            lines = r.stdout.splitlines()
            assert "no checksum published; size checked" in lines  # no sha256 claimed
            assert not any("sha256" in line for line in lines)
            gets = file_gets(hub, "tiny-Q8_0.gguf")
            assert gets and all(rng is None for _, _, rng in gets)  # streamed, no ranged parts
            path = llmlb_env / "models" / "org" / "repo" / "tiny-Q8_0.gguf"
            assert path.read_bytes() == gguf.read_bytes()
            assert "Quantization: Q8_0" in cli(node, "node", "show", "org/repo").stdout


def test_failed_pull_leaves_no_empty_directories(tmp_path, llmlb_env):
    with HubServer.olah_like(tmp_path / "hub") as hub:
        hub.add_repo("org/repo", {"fake-Q8_0.gguf": b"<html>this is not a model</html>"})
        with ServerProcess(llmlb_env, env={"HF_ENDPOINT": hub.url}) as node:
            r = cli(node, "node", "pull", f"{hub.url}/org/repo/resolve/main/fake-Q8_0.gguf")
    assert r.returncode == 1
    assert r.stderr.strip() == "Error: fake-Q8_0.gguf is not a GGUF file (wrong magic bytes)"
    left = [p for p in (llmlb_env / "models").rglob("*")] + [
        p for p in (llmlb_env / "partial").rglob("*") if p.is_dir()
    ]
    assert left == []


def test_errors_name_the_endpoint_they_asked(olah, llmlb_env):
    with ServerProcess(llmlb_env, env={"HF_ENDPOINT": olah.url}) as node:
        r = cli(node, "node", "pull", "org/nope")
        assert r.stderr.strip() == f"Error: model 'org/nope' not found at {olah.url}"
        r = cli(node, "node", "pull", "org/repo:Q2_K")
        assert r.stderr.strip() == f"Error: no Q2_K file in org/repo at {olah.url}; available: Q8_0"


def test_hf_endpoint_of_the_pull_command_is_forwarded(olah, llmlb_env):
    dead = f"http://127.0.0.1:{free_port()}"  # the server's own setting points nowhere
    server_env = {
        "HF_ENDPOINT": dead,
        "HF_TOKEN": "hf_server_secret",
        "LLMLB_HF_ENDPOINTS": olah.url,  # the mirror a client may name
    }
    with ServerProcess(llmlb_env, env=server_env) as node:
        r = cli(node, "node", "pull", "org/repo", env={"HF_ENDPOINT": olah.url, "HF_TOKEN": ""})
        assert r.returncode == 0, r.stderr + node.log()
        assert "org/repo" in cli(node, "node", "list").stdout
        # the server's own token never goes to an endpoint a client named
        assert all(auth is None for _, auth in olah.stats.auth)
        # a client's token does, to its own endpoint only
        olah.stats.auth.clear()
        r = cli(
            node,
            "node",
            "pull",
            "org/repo:q8_0",
            env={"HF_ENDPOINT": olah.url, "HF_TOKEN": "hf_mine"},
        )
        assert r.returncode == 0, r.stderr
        assert {auth for _, auth in olah.stats.auth} == {"Bearer hf_mine"}
        for bad in ("ftp://x", "http://user:pw@host", "not a url", "http://h/x?y=1"):
            resp = httpx.post(
                node.url + "/api/pull", json={"model": "org/repo"}, headers={"X-HF-Endpoint": bad}
            )
            assert resp.status_code == 400 and "HF_ENDPOINT" in resp.json()["error"], bad


def test_a_client_cannot_make_the_node_fetch_from_an_endpoint_it_does_not_allow(olah, llmlb_env):
    other = HubServer.olah_like(olah.data_dir.parent / "other-hub").start()
    try:
        other.add_repo("org/repo", {"README.md": b"# other\n"})
        with ServerProcess(llmlb_env, env={"HF_ENDPOINT": olah.url}) as node:
            r = cli(node, "node", "pull", "org/repo", env={"HF_ENDPOINT": other.url})
            assert r.returncode == 1
            assert r.stderr.strip() == (
                f"Error: this server does not pull from {other.url}; to allow it, start the "
                f"server with LLMLB_HF_ENDPOINTS={other.url} (comma-separated for several)"
            )
            resp = httpx.post(
                node.url + "/api/pull",
                json={"model": "org/repo"},
                headers={"X-HF-Endpoint": "http://169.254.169.254"},
            )
            assert resp.status_code == 403 and "LLMLB_HF_ENDPOINTS" in resp.json()["error"]
        assert other.stats.requests == []  # never asked
    finally:
        other.stop()


def test_a_hub_answer_that_inflates_past_the_cap_fails_the_pull(tmp_path, llmlb_env, gguf):
    from tests.support.hub_server import Behaviour

    # 256 MiB of blanks inside the repo info, about 250 KB as sent (gzip)
    with HubServer(tmp_path / "hub", behaviour=Behaviour(info_gzip_padding=256 << 20)) as hub:
        hub.add_repo("org/repo", {"tiny-Q8_0.gguf": gguf})
        with ServerProcess(llmlb_env, env={"HF_ENDPOINT": hub.url}) as node:
            r = cli(node, "node", "pull", "org/repo")
            assert r.returncode == 1, r.stdout
            assert f"answered more than {32 << 20} bytes once inflated" in r.stderr
            assert "org/repo" not in cli(node, "node", "list").stdout


def test_no_request_to_hub_paths_that_do_not_exist(tmp_path, llmlb_env, gguf, monkeypatch):
    """huggingface_hub's agent lookup (GET /api/agent-harnesses) runs unless telemetry is off;
    a user's environment has it on (the test suite's own turns it off)."""
    monkeypatch.delenv("HF_HUB_DISABLE_TELEMETRY", raising=False)
    with HubServer(tmp_path / "hub") as hub:
        hub.add_repo("org/repo", {"tiny-Q8_0.gguf": gguf})
        env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf-home")}  # nothing cached
        with ServerProcess(llmlb_env, env=env) as node:
            r = cli(node, "node", "pull", "org/repo")
            assert r.returncode == 0, r.stderr
        asked = paths(hub)
    assert [p for p in asked if p.startswith("/api/")] == ["/api/models/org/repo/revision/main"]


HOSTILE = [
    "../../../../tmp/x/pwned.gguf",
    "{tmp}/outside/abs.gguf",  # an absolute path (inside this test's directory)
    "sub/../../../../x2.gguf",
    "..\\..\\..\\x3-Q8_0.gguf",
    "evil\x07bell-Q8_0.gguf",
    "dir//twice-Q8_0.gguf",
    "./dot-Q8_0.gguf",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_listing_fails_the_pull_and_writes_nothing(tmp_path, llmlb_env, gguf, name):
    name = name.replace("{tmp}", str(tmp_path))
    with HubServer(tmp_path / "hub") as hub:
        hub.add_repo("evil/repo", {name: gguf})
        with ServerProcess(llmlb_env, env={"HF_ENDPOINT": hub.url}) as node:
            r = cli(node, "node", "pull", "evil/repo")
            assert r.returncode == 1
            assert r.stderr.startswith(f"Error: evil/repo at {hub.url}: unsafe file name")
            assert r.stderr.strip().endswith("nothing was downloaded")
            assert len(r.stderr.strip().splitlines()) == 1
            assert "evil/repo" not in cli(node, "node", "list").stdout
        assert not file_gets(hub, Path(name.replace("\\", "/")).name)  # no byte was asked for
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "hub" not in p.parts]
    assert not [p for p in written if p.suffix == ".gguf"]
    partial = llmlb_env / "partial"
    assert not partial.exists() or not any(partial.iterdir())
