"""Streaming through the node's /v1/chat/completions against the same generation in-process.

Both sides run the same ~100M-parameter generated model with the same prompt, seed,
settings and thread count, one after the other (alternating, so machine noise hits both).
Targets: throughput at least 0.95x in-process; added time to first token under 10 ms median.
Run: .venv/bin/python bench/inference.py [--rounds 5] [--tokens 64]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.catalog import register_file  # noqa: E402
from tests.support.procs import ServerProcess  # noqa: E402
from tests.support.tiny_model import TinySpec, make_tiny_gguf, param_count  # noqa: E402

PROMPT = [{"role": "user", "content": "Write a short story about a lighthouse keeper."}]
SPEC = TinySpec(
    n_embd=768,
    n_layer=12,
    n_ff=3072,
    n_head=12,
    n_head_kv=12,
    context_length=2048,
    dtype="F16",
    never_eos=True,
    seed=11,
)


def in_process(path: Path, tokens: int, seed: int) -> tuple[float, float]:
    from llama_cpp import Llama

    llm = in_process.cache.get(path)
    if llm is None:
        llm = in_process.cache[path] = Llama(
            str(path), n_ctx=2048, n_threads=os.cpu_count(), n_batch=512, verbose=False
        )
    start = time.perf_counter()
    first = None
    for chunk in llm.create_chat_completion(
        messages=PROMPT, max_tokens=tokens, temperature=0.8, top_p=0.95, seed=seed, stream=True
    ):
        if chunk["choices"][0]["delta"].get("content") and first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    return first - start, (tokens - 1) / (end - first)


in_process.cache = {}


CLIENT = httpx.Client(timeout=600)  # one client: building one costs ~30 ms (TLS context), not ours


def through_server(url: str, tokens: int, seed: int) -> tuple[float, float]:
    body = {
        "model": "bench/model",
        "messages": PROMPT,
        "max_tokens": tokens,
        "temperature": 0.8,
        "top_p": 0.95,
        "seed": seed,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    first = None
    usage = None
    with CLIENT.stream("POST", url + "/v1/chat/completions", json=body) as r:
        for line in r.iter_lines():
            if first is None and '"content": "' in line and '"content": ""' not in line:
                first = time.perf_counter()
            elif line.startswith("data: {") and '"usage"' in line:
                usage = json.loads(line[6:])["usage"]
    end = time.perf_counter()
    assert usage and usage["completion_tokens"] == tokens, usage
    return first - start, (tokens - 1) / (end - first)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=64)
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = make_tiny_gguf(Path(tmp) / "bench.gguf", SPEC)
        home = Path(tmp) / "home"
        register_file(home, "bench/model", model)
        print(
            f"model: {param_count(SPEC) / 1e6:.1f}M parameters, F16, {model.stat().st_size / 1e6:.0f} MB; "
            f"{opts.tokens} tokens per request, {opts.rounds} rounds"
        )
        with ServerProcess(home, env={"LLMLB_KEEP_ALIVE": "-1"}) as server:
            through_server(server.url, 4, 0)  # load the model once, as a running node would have it
            in_process(model, 4, 0)
            base, served = [], []
            for i in range(opts.rounds):
                base.append(in_process(model, opts.tokens, 100 + i))
                served.append(through_server(server.url, opts.tokens, 100 + i))
    b_ttft = statistics.median(t for t, _ in base)
    s_ttft = statistics.median(t for t, _ in served)
    b_tps = statistics.median(r for _, r in base)
    s_tps = statistics.median(r for _, r in served)
    print(f"{'':24} {'in-process':>12} {'via /v1':>12} {'ratio':>8}")
    print(
        f"{'tokens/s (median)':24} {b_tps:12.1f} {s_tps:12.1f} {s_tps / b_tps:7.3f}x  (target >= 0.95x)"
    )
    print(
        f"{'TTFT ms (median)':24} {b_ttft * 1000:12.1f} {s_ttft * 1000:12.1f} "
        f"{(s_ttft - b_ttft) * 1000:+7.1f} ms added (target < 10 ms)"
    )


if __name__ == "__main__":
    main()
