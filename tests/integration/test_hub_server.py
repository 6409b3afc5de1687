"""The test Hub is what huggingface_hub expects: the real client downloads from it."""

import hashlib
import os
from pathlib import Path

import httpx
import pytest

from tests.support.hub_server import HubServer


@pytest.fixture
def hub(tmp_path):
    with HubServer(tmp_path / "hub") as server:
        yield server


def test_hf_hub_download_accepts_the_test_hub(hub, tmp_path):
    from huggingface_hub import HfApi, hf_hub_download

    data = os.urandom(3 << 20)
    repo = hub.add_repo("acme/tiny", {"model-Q4_K_M.gguf": data, "config.json": b'{"a": 1}'})
    path = hf_hub_download(
        "acme/tiny", "model-Q4_K_M.gguf", endpoint=hub.url, cache_dir=str(tmp_path / "c")
    )
    assert Path(path).read_bytes() == data
    path = hf_hub_download(
        "acme/tiny", "config.json", endpoint=hub.url, cache_dir=str(tmp_path / "c")
    )
    assert Path(path).read_bytes() == b'{"a": 1}'
    info = HfApi(endpoint=hub.url).model_info("acme/tiny", files_metadata=True)
    assert info.sha == repo.sha
    by_name = {s.rfilename: s for s in info.siblings}
    assert by_name["model-Q4_K_M.gguf"].lfs.sha256 == hashlib.sha256(data).hexdigest()
    assert by_name["model-Q4_K_M.gguf"].size == len(data)
    assert by_name["config.json"].lfs is None
    blob = hashlib.sha1(b"blob 8\0" + b'{"a": 1}').hexdigest()
    assert by_name["config.json"].blob_id == blob


def test_gated_and_missing_repos_raise_the_hub_errors(hub, tmp_path):
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    hub.add_repo("acme/gated", {"m.gguf": b"GGUF...."}, gated=True)
    with pytest.raises(GatedRepoError):
        hf_hub_download("acme/gated", "m.gguf", endpoint=hub.url, cache_dir=str(tmp_path / "c"))
    path = hf_hub_download(
        "acme/gated", "m.gguf", endpoint=hub.url, cache_dir=str(tmp_path / "c"), token=hub.token
    )
    assert Path(path).read_bytes() == b"GGUF...."
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hub.url).model_info("acme/missing")


def test_resolve_headers_redirect_and_ranges(hub):
    data = bytes(range(256)) * 100
    repo = hub.add_repo("acme/r", {"m.gguf": data})
    head = httpx.head(f"{hub.url}/acme/r/resolve/main/m.gguf")
    assert head.status_code == 302
    assert head.headers["x-repo-commit"] == repo.sha
    assert head.headers["x-linked-etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert head.headers["x-linked-size"] == str(len(data))
    cdn = head.headers["location"]
    assert not cdn.startswith(hub.url)  # another host name, as the Hub's CDN is
    part = httpx.get(cdn, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == data[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(data)}"
    assert httpx.get(cdn, headers={"Range": f"bytes={len(data)}-"}).status_code == 416


def test_fault_switches(hub):
    data = os.urandom(100_000)
    hub.add_repo("acme/r", {"m.gguf": data})
    url = httpx.head(f"{hub.url}/acme/r/resolve/main/m.gguf").headers["location"]
    hub.fault("m.gguf", ignore_range=True)
    r = httpx.get(url, headers={"Range": "bytes=10-19"})
    assert r.status_code == 200 and r.content == data
    hub.fault("m.gguf", flip_byte=5)
    got = httpx.get(url).content
    assert got[5] == data[5] ^ 0xFF and got[:5] == data[:5] and got[6:] == data[6:]
    hub.fault("m.gguf", drop_after=1000, times=1)
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(url)
    assert httpx.get(url).content == data  # the fault was used up
    hub.fault("m.gguf", status=503, times=1)
    assert httpx.get(url).status_code == 503
    hub.fault("m.gguf", stall_after=10, stall_secs=2)
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(url, timeout=httpx.Timeout(5, read=0.5))
