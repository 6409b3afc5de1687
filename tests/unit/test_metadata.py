import io
import json
import shutil

import pytest

from llmlb.sources import metadata as meta
from llmlb.sources.gguf_header import read_header
from tests.support.tiny_model import TinySpec, make_tiny_gguf, param_count
from tests.support.tiny_safetensors import make_tiny_safetensors


def test_gguf_metadata(tmp_path):
    spec = TinySpec(
        license="apache-2.0", license_name="Apache 2.0", context_length=8192, dtype="Q8_0"
    )
    path = make_tiny_gguf(tmp_path / "m.gguf", spec)
    info = meta.read_gguf(path)
    assert info.format == "GGUF"
    assert info.architecture == "llama"
    assert info.parameters == param_count(spec)
    assert info.quantization == "Q8_0"
    assert info.context_length == 8192
    assert "Apache 2.0" in info.license and "apache-2.0" in info.license
    assert "im_start" in info.chat_template
    assert not info.is_projector


@pytest.mark.parametrize("dtype", ["F32", "F16"])
def test_gguf_quantization_names(tmp_path, dtype):
    assert meta.read_gguf(make_tiny_gguf(tmp_path / "m.gguf", dtype=dtype)).quantization == dtype


def test_format_params():
    assert meta.format_params(3_212_749_824) == "3.21B"
    assert meta.format_params(494_032_768) == "494.03M"
    assert meta.format_params(None) == "-"


def test_wrong_magic_is_refused(tmp_path):
    bad = tmp_path / "fake.gguf"
    bad.write_bytes(b"<html>not a model</html>")
    with pytest.raises(meta.BadModelFile, match="not a GGUF file"):
        meta.read_gguf(bad)


def test_truncated_gguf_is_refused(tmp_path, tiny_gguf):
    data = tiny_gguf.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(meta.BadModelFile):
        meta.read_gguf(cut)
    header_only = tmp_path / "header.gguf"
    header_only.write_bytes(data[:40])
    with pytest.raises(meta.BadModelFile):
        meta.read_gguf(header_only)


def test_safetensors_metadata(tmp_path):
    directory, n = make_tiny_safetensors(tmp_path / "st", shards=2, context_length=32768)
    info = meta.read_safetensors(directory)
    assert info.format == "Safetensors"
    assert info.architecture == "qwen2"
    assert info.parameters == n
    assert info.quantization == "F16"
    assert info.context_length == 32768
    assert info.license == "apache-2.0"


def test_safetensors_single_file(tmp_path):
    directory, n = make_tiny_safetensors(tmp_path / "st", shards=1, license=None)
    info = meta.read_safetensors(directory)
    assert info.parameters == n and info.license is None


def test_bad_safetensors_are_refused(tmp_path):
    directory, _ = make_tiny_safetensors(tmp_path / "st", shards=1)
    f = directory / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[:-10])
    with pytest.raises(meta.BadModelFile, match="truncated"):
        meta.read_safetensors(directory)
    f.write_bytes(b"\xff" * 8 + b"{}")
    with pytest.raises(meta.BadModelFile, match="bad header length"):
        meta.read_safetensors(directory)
    f.write_bytes((5).to_bytes(8, "little") + b"nope!")
    with pytest.raises(meta.BadModelFile, match="not JSON"):
        meta.read_safetensors(directory)


def test_missing_shard_is_refused(tmp_path):
    directory, _ = make_tiny_safetensors(tmp_path / "st", shards=2)
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    (directory / sorted(set(index["weight_map"].values()))[0]).unlink()
    with pytest.raises(meta.BadModelFile, match="shard missing"):
        meta.read_safetensors(directory)


def test_metadata_reads_headers_only(tmp_path, tiny_gguf, monkeypatch):
    """A GGUF with 2 GiB of tensor data: read_gguf reads the header and stops where data starts."""
    big = tmp_path / "big.gguf"
    shutil.copyfile(tiny_gguf, big)
    with open(big, "ab") as fh:
        fh.truncate(big.stat().st_size + 2 * 1024**3)  # sparse: 2 GiB more
    furthest = 0

    class Recording(io.FileIO):
        def readinto(self, buffer):
            nonlocal furthest
            n = super().readinto(buffer)
            furthest = max(furthest, self.tell())
            return n

    def recording_open(path, mode="rb", buffering=-1):
        assert mode == "rb"
        return io.BufferedReader(Recording(path), max(buffering, io.DEFAULT_BUFFER_SIZE))

    monkeypatch.setattr(meta, "open", recording_open, raising=False)
    info = meta.read_gguf(big)
    assert info.parameters == param_count(TinySpec())
    with open(tiny_gguf, "rb") as fh:
        data_starts = read_header(fh, tiny_gguf.stat().st_size).data_offset
    assert 0 < furthest <= data_starts + (1 << 20)  # at most one read buffer past the header


def test_header_reader_skips_big_vocabularies_without_reading_tensor_data(tmp_path):
    """150k tokens and merges: skipped as arrays, while every scalar and string is kept."""
    import gguf
    import numpy as np

    path = tmp_path / "vocab.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(4096)
    w.add_token_list([f"t{i}".encode() for i in range(150_000)])
    w.add_token_merges([f"a{i} b{i}" for i in range(150_000)])
    w.add_chat_template("{{ messages }}")
    w.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open(path, "rb") as fh:
        header = read_header(fh, path.stat().st_size)
    assert header.values["llama.context_length"] == 4096
    assert header.values["tokenizer.chat_template"] == "{{ messages }}"
    assert "tokenizer.ggml.tokens" not in header.values  # skipped, not built
    assert [(t.name, t.shape) for t in header.tensors] == [("token_embd.weight", (4, 8))]
    assert header.data_offset == path.stat().st_size - 8 * 4 * 4
