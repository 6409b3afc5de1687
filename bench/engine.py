"""The batched engine against llama.cpp's own llama-server, on the same real model.

Both serve SmolLM2-135M-Instruct (tests/support/real_models.py) with the same threads, the
same context per sequence and 8 parallel sequences (LLMLB_NUM_PARALLEL=8, llama-server
-np 8), built from the same llama.cpp (../shared/tools/llama-server.sh builds the server
from the sources of the installed llama-cpp-python). Requests go to /v1/chat/completions,
streamed, with the same sampling fields. The two servers take turns, level by level.

Two workloads:
- distinct: every request has a prompt of its own (salted): a first token costs a prefill;
- shared: every request is the same short instruction with its own ending (`... about a
  lighthouse keeper and a storm. (#17)`), so both servers reuse the cached prefix and a first
  token costs a few new tokens: what a server spends per request of its own shows here.

Measured: aggregate tokens/s, per-stream tokens/s and time to first token at 1, 4, 8 and 16
concurrent streams, for each workload; a cold 1,200-token prompt's time to first token; the
second turn of a 1,500-token conversation against the same prompt cold; and the resident
memory of each server (llmlb: the node and its runner processes) after the run.
Every figure is measured --rounds times, alternating the servers; the table shows the median
of the rounds and the ratio of the medians (the best round flatters a noisy machine).

Run: .venv/bin/python bench/engine.py [--threads 2] [--tokens 128] [--rounds 3]
     [--llama-server PATH]   (default: the cached build, made if missing)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.catalog import register_file  # noqa: E402
from tests.support.procs import ServerProcess, free_port  # noqa: E402
from tests.support.real_models import smollm2  # noqa: E402

TOPICS = [
    "lighthouses", "volcanoes", "bees", "glaciers", "trains", "owls", "deserts", "comets",
    "bridges", "tides", "maple trees", "octopuses", "violins", "salt", "kites", "caves",
]  # fmt: skip
FILLER = (
    "The harbour town woke slowly; fishermen mended nets, gulls argued over scraps, and the "
    "baker's ovens breathed warm air into the narrow streets while the tide turned. "
)


@dataclass
class Result:
    ttft: float  # seconds to the first content
    tokens: int  # completion tokens (usage)
    start: float
    first: float
    end: float

    @property
    def rate(self) -> float:
        return (self.tokens - 1) / (self.end - self.first) if self.tokens > 1 else 0.0


def llama_server_binary(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    script = ROOT.parent / "shared" / "tools" / "llama-server.sh"
    if not script.exists():
        script = Path("/work/shared/tools/llama-server.sh")
    out = subprocess.run(
        [str(script), str(Path(sys.executable).parents[1])],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip().splitlines()[-1])


class LlamaServer:
    def __init__(self, binary: Path, model: Path, threads: int, ctx: int, parallel: int):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        fd, self.log = tempfile.mkstemp(prefix="llama-server-", suffix=".log")
        args = ["-m", str(model), "--port", str(self.port), "--host", "127.0.0.1"]
        args += ["-np", str(parallel), "-c", str(ctx * parallel)]
        args += ["-t", str(threads), "-tb", str(threads), "--no-webui"]
        with os.fdopen(fd, "wb") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen([str(binary), *args], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise SystemExit(f"llama-server exited; see {self.log}")
            time.sleep(0.2)
        raise SystemExit(f"llama-server did not start; see {self.log}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def chat(url: str, model: str, messages: list[dict], tokens: int) -> tuple[Result, str]:
    body = {
        "model": model,
        "messages": messages,
        "max_tokens": tokens,
        "temperature": 0.0,
        "top_k": 40,
        "top_p": 0.9,
        "min_p": 0.0,
        "repeat_penalty": 1.1,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    first = None
    usage = None
    text = []
    with (
        httpx.Client(timeout=900) as client,
        client.stream("POST", url + "/v1/chat/completions", json=body) as r,
    ):
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            data = json.loads(line[6:])
            if data.get("usage"):
                usage = data["usage"]
            for choice in data.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    text.append(piece)
                    if first is None:
                        first = time.perf_counter()
    end = time.perf_counter()
    assert usage is not None, "no usage in the stream"
    first = first or end
    return Result(first - start, int(usage["completion_tokens"]), start, first, end), "".join(text)


def story(i: int, salt: str) -> list[dict]:
    topic = TOPICS[i % len(TOPICS)]
    return [
        {"role": "user", "content": f"[{salt}-{i}] Write a long, detailed story about {topic}."}
    ]


def shared(i: int, salt: str) -> list[dict]:
    """The same instruction, a distinct ending: the cached prefix serves every request."""
    ending = f"({salt}#{i})"
    return [
        {
            "role": "user",
            "content": "Write a short story about a lighthouse keeper and a storm. " + ending,
        }
    ]


WORKLOADS = {"distinct": story, "shared": shared}


def level(url: str, model: str, n: int, tokens: int, salt: str, prompt=story) -> list[Result]:
    out: list[Result | None] = [None] * n

    def one(i: int) -> None:
        out[i] = chat(url, model, prompt(i, salt), tokens)[0]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r is not None for r in out)
    return [r for r in out if r is not None]


def conversation(salt: str, target_tokens: int) -> list[dict]:
    """A chat of about `target_tokens` tokens (SmolLM2 has ~35 tokens per FILLER)."""
    msgs: list[dict] = [
        {"role": "system", "content": f"Session {salt}. You are a helpful assistant."}
    ]
    turns = max(1, target_tokens // 300)
    for t in range(turns):
        msgs.append({"role": "user", "content": f"Part {t}: " + FILLER * 4 + "What happens next?"})
        msgs.append({"role": "assistant", "content": "Next, " + FILLER * 4})
    msgs.append({"role": "user", "content": "Summarise the story in one sentence."})
    return msgs


def summary(results: list[Result]) -> dict[str, float]:
    start = min(r.start for r in results)
    end = max(r.end for r in results)
    return {
        "agg": sum(r.tokens for r in results) / (end - start),
        "per": statistics.median(r.rate for r in results),
        "ttft": statistics.median(r.ttft for r in results),
    }


def rss_mb(pid: int) -> float:
    """Resident memory of `pid` and its children (a node's runners), in MB."""
    total = 0
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                children = (task / "children").read_text().split()
                pids += [int(c) for c in children]
        except (OSError, ValueError):
            continue
    return total / 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--levels", default="1,4,8,16")
    ap.add_argument("--workloads", default="shared,distinct")
    ap.add_argument("--no-chats", action="store_true", help="skip the long-prompt figures")
    ap.add_argument("--llama-server")
    opts = ap.parse_args()
    levels = [int(x) for x in opts.levels.split(",")]
    workloads = opts.workloads.split(",")
    model = smollm2()
    binary = llama_server_binary(opts.llama_server)
    print(f"model {model.name}; threads {opts.threads}; context {opts.ctx} per sequence; "
          f"{opts.parallel} parallel; {opts.tokens} tokens per request; load {os.getloadavg()}")  # fmt: skip
    rss: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        register_file(home, "bench/smollm2", model)
        env = {
            "LLMLB_KEEP_ALIVE": "-1",
            "LLMLB_THREADS": str(opts.threads),
            "LLMLB_CONTEXT_LENGTH": str(opts.ctx),
            "LLMLB_NUM_PARALLEL": str(opts.parallel),
            "LLMLB_MAX_QUEUE": "256",
        }
        node = ServerProcess(home, env=env).start()
        peer = LlamaServer(binary, model, opts.threads, opts.ctx, opts.parallel)
        sides = {"llmlb": (node.url, "bench/smollm2"), "llama-server": (peer.url, "smollm2")}
        try:
            for url, name in sides.values():  # load and warm up
                chat(url, name, story(0, "warm"), 8)
            table: dict[tuple[str, int], dict[str, list[dict[str, float]]]] = {
                (w, n): {s: [] for s in sides} for w in workloads for n in levels
            }
            for rnd in range(opts.rounds):
                for w in workloads:
                    for n in levels:
                        for side, (url, name) in sides.items():
                            salt = f"r{rnd}n{n}{side}"
                            results = level(url, name, n, opts.tokens, salt, WORKLOADS[w])
                            table[w, n][side].append(summary(results))
            cold: dict[str, list[float]] = {s: [] for s in sides}
            second: dict[str, list[float]] = {s: [] for s in sides}
            second_cold: dict[str, list[float]] = {s: [] for s in sides}
            for rnd in range(0 if opts.no_chats else opts.rounds):
                for side, (url, name) in sides.items():
                    r, _ = chat(url, name, conversation(f"cold{rnd}{side}", 1200), 8)
                    cold[side].append(r.ttft)
                    conv = conversation(f"turn{rnd}{side}", 1500)
                    _, reply = chat(url, name, conv, 32)
                    turn2 = [*conv, {"role": "assistant", "content": reply},
                             {"role": "user", "content": "And what did the baker do?"}]  # fmt: skip
                    second[side].append(chat(url, name, turn2, 8)[0].ttft)
                    fresh = [
                        {"role": "system", "content": f"Session fresh{rnd}{side}."},
                        *turn2[1:],
                    ]
                    second_cold[side].append(chat(url, name, fresh, 8)[0].ttft)
            assert node.proc is not None
            rss = {"llmlb": rss_mb(node.proc.pid), "llama-server": rss_mb(peer.proc.pid)}
        finally:
            node.stop()
            peer.stop()
    print(f"load after: {os.getloadavg()}")
    print(f"\n{opts.rounds} rounds, alternating; values: the median round")
    print(f"\n| workload | streams | metric | llmlb | llama-server -np {opts.parallel} | ratio |")
    print("|---|---|---|---|---|---|")

    def row(w: str, n: int | str, label: str, a: list[float], b: list[float], ms: bool):
        scale, fmt = (1000, "{:.0f}") if ms else (1, "{:.1f}")
        x, y = statistics.median(a), statistics.median(b)
        print(f"| {w} | {n} | {label} | {fmt.format(x * scale)} | {fmt.format(y * scale)} | "
              f"{x / y:.2f}x |")  # fmt: skip

    for w in workloads:
        for n in levels:
            for key, label in (
                ("agg", "aggregate tokens/s"),
                ("per", "per-stream tokens/s (median stream)"),
                ("ttft", "time to first token, median stream (ms)"),
            ):
                a = [x[key] for x in table[w, n]["llmlb"]]
                b = [x[key] for x in table[w, n]["llama-server"]]
                row(w, n, label, a, b, key == "ttft")
    if not opts.no_chats:
        row("chat", 1, "cold 1,200-token prompt: TTFT (ms)", cold["llmlb"],
            cold["llama-server"], True)  # fmt: skip
        row("chat", 1, "2nd turn of a 1,500-token chat: TTFT (ms)", second["llmlb"],
            second["llama-server"], True)  # fmt: skip
        row("chat", 1, "the same prompt cold: TTFT (ms)", second_cold["llmlb"],
            second_cold["llama-server"], True)  # fmt: skip
        ratios = {
            side: statistics.median(second[side]) / statistics.median(second_cold[side])
            for side in sides
        }
        print(f"| chat | 1 | 2nd turn / cold | {ratios['llmlb']:.2f}x | "
              f"{ratios['llama-server']:.2f}x | |")  # fmt: skip
    print(f"\nresident memory after the run: llmlb (node and runners) {rss['llmlb']:.0f} MB, "
          f"llama-server {rss['llama-server']:.0f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
