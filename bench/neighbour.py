"""What a request held to the largest grammar a node accepts costs the stream beside it.

One node (SmolLM2-135M-Instruct, LLMLB_NUM_PARALLEL=2). A free-text stream of --tokens tokens
runs alone, then beside a loop of requests held to an enum of MAX_ENUM distinct values (the
largest a node accepts; a bigger one is refused before any work, also shown): each held
request builds its grammar (on the runner's prepare thread) and decodes under it while the
stream goes on. Rounds alternate alone / beside; the figures are medians, and the ratio is
the stream's time beside over its time alone (the target: at most 2x).

Run: .venv/bin/python bench/neighbour.py [--threads 2] [--tokens 60] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import string
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmlb.engine.pattern_cost import MAX_STACKS as MAX_ENUM  # noqa: E402
from tests.support.catalog import register_file  # noqa: E402
from tests.support.procs import ServerProcess  # noqa: E402
from tests.support.real_models import smollm2  # noqa: E402

MODEL = "smollm2-135m-instruct"


def enum_schema(n: int) -> dict:
    rng = random.Random(n)
    values = {"".join(rng.choices(string.ascii_lowercase, k=10)) for _ in range(n * 2)}
    return {"type": "string", "enum": sorted(values)[:n]}


def stream(url: str, tokens: int) -> tuple[float, int]:
    """(seconds from the request to its last token, tokens), streamed at temperature 0."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Write a story about a lighthouse."}],
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    began, used = time.perf_counter(), 0
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                usage = json.loads(line[6:]).get("usage")
                used = usage["completion_tokens"] if usage else used
    return time.perf_counter() - began, used


def held(url: str, schema: dict) -> httpx.Response:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Pick a word."}],
        "max_tokens": 16,
        "temperature": 1.0,
        "response_format": {"type": "json_schema", "json_schema": {"schema": schema}},
    }
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=600)


def beside(url: str, schema: dict, tokens: int) -> tuple[float, int, int]:
    """The stream's (seconds, tokens) while held requests run one after another; how many."""
    stop, done = threading.Event(), [0]

    def hold() -> None:
        while not stop.is_set():
            r = held(url, schema)
            assert r.status_code == 200, r.text
            json.loads(r.json()["choices"][0]["message"]["content"])
            done[0] += 1

    t = threading.Thread(target=hold)
    t.start()
    time.sleep(0.3)  # the first held request is building its grammar or decoding
    try:
        secs, used = stream(url, tokens)
    finally:
        stop.set()
        t.join()
    return secs, used, done[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    schema = enum_schema(MAX_ENUM)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        register_file(home, "HuggingFaceTB/SmolLM2-135M-Instruct", smollm2())
        env = {"LLMLB_NUM_PARALLEL": "2", "LLMLB_THREADS": str(args.threads)}
        node = ServerProcess(home, env=env).start()
        try:
            stream(node.url, 4)  # load and warm up
            began = time.perf_counter()
            first = held(node.url, schema)
            first_secs = time.perf_counter() - began
            began = time.perf_counter()
            refused = held(node.url, enum_schema(MAX_ENUM * 5))
            refused_secs = time.perf_counter() - began
            alone, side, counts = [], [], []
            for _ in range(args.rounds):
                alone.append(stream(node.url, args.tokens)[0])
                secs, _, n = beside(node.url, schema, args.tokens)
                side.append(secs)
                counts.append(n)
        finally:
            node.stop()
    load = os.getloadavg()
    print(f"held request, {MAX_ENUM}-value enum: {first.status_code} in {first_secs:.2f}s")
    print(f"{MAX_ENUM * 5}-value enum: {refused.status_code} in {refused_secs * 1000:.0f} ms")
    print(f"| stream of {args.tokens} tokens | median s | rounds |")
    print("|---|---|---|")
    print(f"| alone | {statistics.median(alone):.2f} | {', '.join(f'{s:.2f}' for s in alone)} |")
    print(
        f"| beside held requests | {statistics.median(side):.2f} | {', '.join(f'{s:.2f}' for s in side)} |"
    )
    print(
        f"ratio (median beside / median alone): {statistics.median(side) / statistics.median(alone):.2f}x"
    )
    print(f"held requests finished during the streams: {counts}; load average {load[0]:.2f}")


if __name__ == "__main__":
    main()
