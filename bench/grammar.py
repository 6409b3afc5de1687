"""Constrained decoding: what a grammar costs, and what it costs the requests beside it.

Before: the grammar filters the whole vocabulary at every token (llama.cpp's grammar sampler
first in the chain, as llmlb did before; reproduced here by a patch the node loads at start,
see PATCH). After (llmlb now, llama-server's way): the chain samples first, the grammar
checks only the token it drew, and the whole vocabulary is filtered only when it refuses.

SmolLM2-135M-Instruct (49,152 tokens), LLMLB_NUM_PARALLEL=4, temperature 0 (so both ways
must write the very same text: checked), JSON-schema replies of up to --tokens tokens:
  held x4: four concurrent requests held to a schema;
  2 held + 2 free: two held to it beside two free-text requests.
Both nodes run at once and take turns; each figure is the best of --rounds rounds, the last
column the ratio of the medians (after / before).

Run: .venv/bin/python bench/grammar.py [--threads 2] [--tokens 160] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.catalog import register_file  # noqa: E402
from tests.support.procs import ServerProcess  # noqa: E402
from tests.support.real_models import smollm2  # noqa: E402

MODEL = "smollm2-135m-instruct"
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "job": {"type": "string"},
        "hobbies": {"type": "array", "items": {"type": "string"}},
        "biography": {"type": "string"},
    },
    "required": ["name", "job", "hobbies", "biography"],
}
PEOPLE = ["a sailor", "a baker", "a pilot", "a painter"]
FREE = ["Write a story about a lighthouse.", "Write a story about a glacier."]
PATCH = '''
import os
import llama_cpp as lc  # before numpy: see llmlb/server/node_app.py
import numpy as np
from llmlb.engine import llama_sampling

def sample(self, ctx, index):
    """The old way: the grammar over the whole vocabulary at every token, then the chain."""
    if not self.grammar:
        return int(lc.llama_sampler_sample(self.chain, ctx, index))
    logits = np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, index), shape=(self.n_vocab,))
    token = self._draw(logits, with_grammar=True)
    lc.llama_sampler_accept(self.grammar, token)
    lc.llama_sampler_accept(self.chain, token)
    return token

llama_sampling.Sampler.sample = sample
open(os.environ["LLMLB_BENCH_PATCHED"], "w").close()  # the bench checks that it ran
'''


def ask(url: str, content: str, schema: dict | None, tokens: int) -> tuple[float, int, str]:
    """(seconds from the first token to the last, completion tokens, text), streamed."""
    body: dict = {
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if schema:
        body["response_format"] = {"type": "json_schema", "json_schema": {"schema": schema}}
    first = last = 0.0
    text, used = "", 0
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as r:
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                used = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices", []):
                piece = choice["delta"].get("content")
                if piece:
                    first = first or time.perf_counter()
                    last = time.perf_counter()
                    text += piece
    return last - first, used, text


def scenario(url: str, held: list[str], free: list[str], tokens: int) -> dict:
    results: dict[str, tuple[float, int, str]] = {}
    start = threading.Barrier(len(held) + len(free))

    def one(key: str, content: str, schema: dict | None) -> None:
        start.wait()
        results[key] = ask(url, content, schema, tokens)

    jobs = [(f"held {p}", f"Describe {p}.", SCHEMA) for p in held]
    jobs += [(f"free {i}", q, None) for i, q in enumerate(free)]
    threads = [threading.Thread(target=one, args=job) for job in jobs]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    for key, (_, _, text) in results.items():
        if key.startswith("held"):
            json.loads(text)  # a reply that does not parse would make the timing meaningless
    rate = lambda keys: statistics.median(  # noqa: E731
        (results[k][1] - 1) / results[k][0] for k in keys if results[k][0] > 0
    )
    held_keys = [k for k in results if k.startswith("held")]
    free_keys = [k for k in results if k.startswith("free")]
    out = {
        "aggregate tokens/s": sum(r[1] for r in results.values()) / wall,
        "held stream tokens/s (median)": rate(held_keys),
        "texts": {k: v[2] for k, v in results.items()},
    }
    if free_keys:
        out["free stream tokens/s (median)"] = rate(free_keys)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=160)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    model = smollm2()
    with tempfile.TemporaryDirectory() as tmp:
        patch_dir = Path(tmp) / "patch"
        patch_dir.mkdir()
        (patch_dir / "sitecustomize.py").write_text(PATCH)
        nodes = {}
        for way in ("before", "after"):
            home = Path(tmp) / way / "home"
            register_file(home, "HuggingFaceTB/SmolLM2-135M-Instruct", model)
            env = {"LLMLB_NUM_PARALLEL": "4", "LLMLB_THREADS": str(args.threads)}
            if way == "before":
                env["PYTHONPATH"] = f"{patch_dir}:{ROOT}"
                env["LLMLB_BENCH_PATCHED"] = str(patch_dir / "loaded")
            nodes[way] = ServerProcess(home, env=env).start()
        assert (patch_dir / "loaded").exists(), "the 'before' node did not load the patch"
        try:
            for node in nodes.values():  # load the model; warm up
                ask(node.url, "Hi", SCHEMA, 8)
            runs: dict[tuple[str, str], list[dict]] = {}
            plans = {"held x4": (PEOPLE, []), "2 held + 2 free": (PEOPLE[:2], FREE)}
            for _ in range(args.rounds):
                for name, (held, free) in plans.items():
                    for way, node in nodes.items():
                        runs.setdefault((name, way), []).append(
                            scenario(node.url, held, free, args.tokens)
                        )
        finally:
            for node in nodes.values():
                node.stop()
    print("| workload | metric | before | after | ratio | median ratio |")
    print("|---|---|---|---|---|---|")
    for name in plans:
        before, after = runs[(name, "before")], runs[(name, "after")]
        assert all(b["texts"] == a["texts"] for b, a in zip(before, after, strict=True)), (
            "the two ways wrote different text"
        )
        for metric in before[0]:
            if metric == "texts":
                continue
            b = [r[metric] for r in before]
            a = [r[metric] for r in after]
            print(
                f"| {name} | {metric} | {max(b):.1f} | {max(a):.1f} | "
                f"{max(a) / max(b):.2f}x | {statistics.median(a) / statistics.median(b):.2f}x |"
            )


if __name__ == "__main__":
    main()
