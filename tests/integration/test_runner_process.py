"""A real runner process driven through the node's side of it (engine/runner.py), with the
tiny model: what reaches the channel, and what a request the engine cannot serve does."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from llmlb.engine import runner
from llmlb.engine.base import GenOptions, GenStats
from llmlb.store.models import Model
from tests.support.tiny_model import TinySpec, make_tiny_gguf


def model_of(path: Path, name: str = "org/tiny") -> Model:
    return Model(name=name, path=str(path), format="GGUF", size_bytes=path.stat().st_size)


async def text_of(stream) -> str:
    return "".join([piece.text async for piece in stream])


def test_a_grammar_that_admits_no_token_ends_the_reply_and_the_runner_goes_on(tiny_gguf):
    async def main() -> None:
        backend = await runner.load(model_of(tiny_gguf), 512, False, 2)
        try:
            # no token starts with a NUL byte, and the grammar is not complete: llama.cpp
            # aborts the process when told to accept a token its grammar refuses
            stats = GenStats()
            opts = GenOptions(grammar='root ::= "\\x00"', max_tokens=5)
            assert await text_of(backend.complete("hi", opts, stats)) == ""
            assert stats.finish_reason == "stop"
            stats = GenStats()
            out = await text_of(backend.complete("hi", GenOptions(max_tokens=4), stats))
            assert stats.completion_tokens == 4 and out
            assert backend.runner.alive
        finally:
            await backend.close()
        assert backend.exited.result() is None  # stopped by us: not a crash

    asyncio.run(main())


def test_a_cancelled_embedding_stops_between_decodes(tmp_path):
    spec = TinySpec(n_embd=256, n_layer=8, n_ff=512, n_head=4, n_head_kv=4, context_length=4096)
    path = make_tiny_gguf(tmp_path / "wide.gguf", spec)

    async def main() -> None:
        backend = await runner.load(model_of(path), 4096, True, 1)
        try:
            inputs = ["word " * 600] * 8  # 3,000 tokens each: a decode of its own each
            loop = asyncio.get_running_loop()
            started = loop.time()
            await backend.embed(inputs)
            whole = loop.time() - started
            started = loop.time()
            task = asyncio.create_task(backend.embed(inputs))
            heard = backend.runner.heard
            while backend.runner.heard == heard:  # its first decode is done: it is at work
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # the runner lets go of it at its next decode: the next request does not wait
            # for the other inputs (the same work on the same machine, for comparison)
            vectors, tokens = await backend.embed(["one"])
            assert len(vectors) == 1 and tokens > 0
            assert loop.time() - started < whole / 2
        finally:
            await backend.close()

    asyncio.run(main())


def test_a_load_failure_says_why_in_llama_cpps_words(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 64)

    async def main() -> None:
        with pytest.raises(Exception) as caught:
            await runner.load(model_of(broken, "org/broken"), 512, False, 1)
        assert str(caught.value).startswith("model 'org/broken' failed to load")

    asyncio.run(main())
