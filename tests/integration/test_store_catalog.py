"""The catalog with real files and real SQLite: registration, resolution, safe deletion."""

import json
import logging
import shutil
from pathlib import Path

import pytest

from llmlb.errors import ModelNotFound, ValidationError
from llmlb.sources import metadata as meta
from llmlb.store import catalog, db
from tests.support.fake_ollama import add_model, snapshot
from tests.support.tiny_model import TinySpec, param_count
from tests.support.tiny_safetensors import make_tiny_safetensors


@pytest.fixture
def engine(llmlb_env):
    return db.open_node_catalog(llmlb_env / "llmlb.db")


def _place(home: Path, name: str, src: Path) -> Path:
    d = home / "models" / name
    d.mkdir(parents=True)
    return Path(shutil.copy(src, d / src.name))


def test_register_reads_metadata_and_aliases(engine, llmlb_env, tiny_gguf):
    path = _place(llmlb_env, "meta-llama/Llama-3.2-3B-Instruct", tiny_gguf)
    row = catalog.register_model(
        engine,
        name="meta-llama/Llama-3.2-3B-Instruct",
        path=path,
        format="GGUF",
        source="HuggingFace",
    )
    assert row.alias == "llama-3.2-3b-instruct"
    assert row.architecture == "llama" and row.parameters == param_count(TinySpec())
    assert row.quantization == "F32" and row.context_length == 2048 and row.license == "MIT"
    assert catalog.resolve(engine, "llama-3.2-3b-instruct").name == row.name
    assert catalog.resolve(engine, row.name).alias == row.alias


def test_safetensors_registration(engine, llmlb_env):
    directory, n = make_tiny_safetensors(llmlb_env / "models" / "Qwen" / "Tiny", shards=2)
    row = catalog.register_model(
        engine, name="Qwen/Tiny", path=directory, format="Safetensors", source="HuggingFace"
    )
    assert (
        row.architecture,
        row.parameters,
        row.quantization,
        row.context_length,
        row.license,
    ) == ("qwen2", n, "F16", 4096, "apache-2.0")


def test_alias_collision(engine, llmlb_env, tiny_gguf):
    a = catalog.register_model(
        engine,
        name="a/Model",
        path=_place(llmlb_env, "a/Model", tiny_gguf),
        format="GGUF",
        source="Local",
    )
    b = catalog.register_model(
        engine,
        name="b/model",
        path=_place(llmlb_env, "b/model", tiny_gguf),
        format="GGUF",
        source="Local",
    )
    assert (a.alias, b.alias) == ("model", "model-2")


@pytest.mark.parametrize("name", ["", "bad name", "../x", "/abs", "a//b", "x;rm"])
def test_bad_names_write_nothing(engine, tiny_gguf, name):
    with pytest.raises(ValidationError):
        catalog.register_model(engine, name=name, path=tiny_gguf, format="GGUF", source="Local")
    assert catalog.all_models(engine) == []


def test_bad_file_writes_nothing(engine, tmp_path):
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"GGUF" + b"\x00" * 10)
    with pytest.raises(meta.BadModelFile):
        catalog.register_model(engine, name="x/fake", path=fake, format="GGUF", source="Local")
    with pytest.raises(ValidationError, match="does not exist"):
        catalog.register_model(
            engine, name="x/missing", path=tmp_path / "nope.gguf", format="GGUF", source="Local"
        )
    assert catalog.all_models(engine) == []


def test_delete_removes_row_and_files(engine, llmlb_env, tiny_gguf):
    path = _place(llmlb_env, "org/m", tiny_gguf)
    catalog.register_model(engine, name="org/m", path=path, format="GGUF", source="Local")
    catalog.delete_model(engine, "m", llmlb_env / "models")
    assert not path.exists() and not (llmlb_env / "models" / "org").exists()
    assert catalog.find(engine, "org/m") is None
    with pytest.raises(ModelNotFound):
        catalog.delete_model(engine, "org/m", llmlb_env / "models")


def test_delete_never_leaves_models_dir(engine, llmlb_env, tmp_path, tiny_gguf):
    outside = tmp_path / "precious"
    outside.mkdir()
    keep = Path(shutil.copy(tiny_gguf, outside / "keep.gguf"))
    # a row whose file lives outside LLMLB_HOME/models: the row goes, the file stays
    catalog.register_model(engine, name="ext/model", path=keep, format="GGUF", source="Local")
    catalog.delete_model(engine, "ext/model", llmlb_env / "models")
    assert keep.exists()
    # a model directory that is a symlink to somewhere else: never followed
    (llmlb_env / "models" / "evil").mkdir(parents=True)
    (llmlb_env / "models" / "evil" / "link").symlink_to(outside, target_is_directory=True)
    catalog.register_model(engine, name="evil/link", path=keep, format="GGUF", source="Local")
    catalog.delete_model(engine, "evil/link", llmlb_env / "models")
    assert keep.exists()
    for name in ("../precious", "/tmp", "a/../../b"):
        with pytest.raises(ValidationError):
            catalog.delete_model(engine, name, llmlb_env / "models")
    assert keep.exists()


def test_ollama_models_are_read_only(engine, llmlb_env, tiny_gguf, monkeypatch):
    root = llmlb_env.parent / "ollama"
    monkeypatch.setenv("OLLAMA_MODELS", str(root))
    add_model(
        root, "llama3.2", tiny_gguf.read_bytes(), system="be brief", params={"temperature": 0.5}
    )
    add_model(root, "phi", tiny_gguf.read_bytes(), tag="mini", namespace="someone")
    before = snapshot(root)
    names = sorted(e.display for e in catalog.ollama_models())
    assert names == ["ollama:llama3.2", "ollama:someone/phi:mini"]
    m = catalog.resolve(engine, "ollama:llama3.2")
    assert m.source == "Ollama" and m.architecture == "llama" and m.system_prompt == "be brief"
    assert catalog.resolve(engine, "ollama:someone/phi:mini").format == "GGUF"
    with pytest.raises(
        ValidationError, match=r"'ollama:llama3.2' is read-only \(owned by ollama\)"
    ):
        catalog.delete_model(engine, "ollama:llama3.2", llmlb_env / "models")
    with pytest.raises(ModelNotFound):
        catalog.resolve(engine, "ollama:nothing")
    with pytest.raises(ValidationError):
        catalog.resolve(engine, "ollama:../../etc:x")
    assert snapshot(root) == before


def test_an_ollama_manifest_whose_digest_is_a_path_is_skipped(
    engine, llmlb_env, tiny_gguf, monkeypatch, caplog
):
    root = llmlb_env.parent / "ollama"
    monkeypatch.setenv("OLLAMA_MODELS", str(root))
    secret = llmlb_env.parent / "secret.txt"
    secret.write_text("not for ollama")
    add_model(root, "good", tiny_gguf.read_bytes())
    bad = add_model(root, "bad", tiny_gguf.read_bytes())
    manifest = json.loads(bad.read_text())
    manifest["layers"].append(
        {"mediaType": "application/vnd.ollama.image.license", "digest": "../../secret.txt"}
    )
    bad.write_text(json.dumps(manifest))
    with caplog.at_level(logging.DEBUG, logger="llmlb.ollama"):
        assert [e.display for e in catalog.ollama_models()] == ["ollama:good"]
    assert "is not sha256:<64 hex digits>" in caplog.text
    with pytest.raises(ModelNotFound):
        catalog.resolve(engine, "ollama:bad")


def test_missing_ollama_dir_is_fine(engine, monkeypatch, tmp_path):
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "does-not-exist"))
    assert catalog.ollama_models() == []


def test_delete_keeps_a_nested_model(engine, llmlb_env, tiny_gguf):
    outer = _place(llmlb_env, "org/repo", tiny_gguf)
    inner_dir = llmlb_env / "models" / "org" / "repo" / "Q8_0"
    inner_dir.mkdir()
    inner = Path(shutil.copy(tiny_gguf, inner_dir / "q8.gguf"))
    catalog.register_model(engine, name="org/repo", path=outer, format="GGUF", source="Local")
    catalog.register_model(engine, name="org/repo/Q8_0", path=inner, format="GGUF", source="Local")
    catalog.delete_model(engine, "org/repo", llmlb_env / "models")
    assert not outer.exists() and inner.exists()
    assert catalog.find(engine, "org/repo/Q8_0") is not None
