"""The prompt cache as a cluster resource (issue 26): its three targets, each side by side with
today's behaviour in the same run, on SmolLM2-135M-Instruct.

- restart: a 1,500-token conversation sent again after the node restarted (as `llmlb node run
  --continue` does): time to first token with the prompt cache (restored from disk) against
  without it (LLMLB_PROMPT_CACHE_GB=0: evaluated again); with the model loaded before the
  request, and with its load counted in. Target: <= 0.2x.
- reuse: a node with 4 sequences; a conversation, then 4 unrelated requests that take every
  sequence, then the conversation's next turn. Target: <= 0.2x.
- cluster: a router and three nodes; 24 conversations of 5 turns with about 1,000 tokens of
  history each, 8 at a time, 2 s between a reply and the next turn: the median time to first
  token of turns 2-5 with prefix routing and the disk tier against today's policy
  (LLMLB_PREFIX_ROUTING=0, no disk tier). Target: <= 0.35x. The same without think time
  (12 conversations, each turn sent as the last one ends): today's policy then sends most
  turns back to the node that just freed a place, which is theirs. Then a uniform load of
  unrelated prompts (about 300 tokens each, 12 at a time): aggregate tokens/s, target >=
  0.95x today's. `--redis`: the same with two routers sharing
  PostgreSQL and Redis, each turn of a conversation through the other router.

Every figure is measured --rounds times, the two sides alternating; the table shows the
median of the rounds, and the load average of the machine during each part.

Run: .venv/bin/python bench/prefix.py [--rounds 3] [--parts restart,reuse,cluster] [--redis]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.engine import FILLER, chat  # noqa: E402
from tests.support.catalog import register_file  # noqa: E402
from tests.support.procs import ServerProcess, wait_for  # noqa: E402
from tests.support.real_models import smollm2  # noqa: E402

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
SIDES = ("cache", "today")
OFF = {"LLMLB_PROMPT_CACHE_GB": "0", "LLMLB_PREFIX_ROUTING": "0"}


def side_env(side: str, **extra: str) -> dict[str, str]:
    return {**(OFF if side == "today" else {}), **extra}


def history(salt: str, tokens: int) -> list[dict]:
    """A conversation of about `tokens` tokens (~35 tokens per FILLER)."""
    msgs = [{"role": "system", "content": f"Session {salt}. You are a helpful assistant."}]
    for t in range(max(1, tokens // 300)):
        msgs.append({"role": "user", "content": f"Part {t}: " + FILLER * 4 + "What next?"})
        msgs.append({"role": "assistant", "content": "Next, " + FILLER * 4})
    msgs.append({"role": "user", "content": "Summarise the story in one sentence."})
    return msgs


def unrelated(i: int, salt: str) -> list[dict]:
    return [{"role": "user", "content": f"[{salt}/{i}] " + FILLER * 8 + f"Tell me about {i}."}]


def preload(url: str) -> None:
    httpx.post(url + "/api/generate", json={"model": MODEL}, timeout=300).raise_for_status()


class Load:
    """The machine's load average over a part of the run."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        while not self._stop.wait(5):
            self.samples.append(os.getloadavg()[0])

    def done(self) -> str:
        self._stop.set()
        s = self.samples or [os.getloadavg()[0]]
        return f"{min(s):.1f}-{max(s):.1f}"


def node(home: Path, side: str, **env: str) -> ServerProcess:
    return ServerProcess(home, env={"LLMLB_THREADS": "2", **side_env(side, **env)}).start()


# -- 1. restart ----------------------------------------------------------------------------------
def restart(tmp: Path, rounds: int) -> dict[str, dict[str, list[float]]]:
    conv = history("restart", 1500)
    out: dict[str, dict[str, list[float]]] = {s: {"loaded": [], "with load": []} for s in SIDES}
    homes = {}
    for side in SIDES:
        homes[side] = tmp / f"restart-{side}"
        register_file(homes[side], MODEL, smollm2())
        server = node(homes[side], side)  # the conversation's first run, then a stop
        chat(server.url, MODEL, conv, 8)
        server.stop()
    for r in range(rounds):
        for side in SIDES if r % 2 == 0 else reversed(SIDES):
            server = node(homes[side], side)
            out[side]["with load"].append(chat(server.url, MODEL, conv, 8)[0].ttft)
            server.stop()
            server = node(homes[side], side)
            preload(server.url)
            out[side]["loaded"].append(chat(server.url, MODEL, conv, 8)[0].ttft)
            server.stop()
    return out


# -- 2. reuse ------------------------------------------------------------------------------------
def reuse(tmp: Path, rounds: int) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {s: {"returning turn": []} for s in SIDES}
    servers = {}
    for side in SIDES:
        home = tmp / f"reuse-{side}"
        register_file(home, MODEL, smollm2())
        servers[side] = node(home, side, LLMLB_NUM_PARALLEL="4")
        preload(servers[side].url)
    try:
        for r in range(rounds):
            for side in SIDES if r % 2 == 0 else reversed(SIDES):
                url = servers[side].url
                conv = history(f"reuse-{r}", 1500)
                _, reply = chat(url, MODEL, conv, 8)
                for i in range(4):  # other traffic takes every sequence, the conversation's too
                    chat(url, MODEL, unrelated(i, f"{side}-{r}"), 8)
                conv += [
                    {"role": "assistant", "content": reply},
                    {"role": "user", "content": "And then?"},
                ]
                out[side]["returning turn"].append(chat(url, MODEL, conv, 8)[0].ttft)
    finally:
        for s in servers.values():
            s.stop()
    return out


# -- 3. the cluster ------------------------------------------------------------------------------
class Cluster:
    def __init__(self, tmp: Path, side: str, redis: bool):
        self.tmp, self.side, self.redis = tmp / side, side, redis
        self.routers: list[ServerProcess] = []
        self.nodes: list[ServerProcess] = []
        self.services: list = []

    def start(self) -> Cluster:
        beat = {"LLMLB_HEARTBEAT_MS": "500"}
        router_env = {**beat, **side_env(self.side)}
        if self.redis:
            from tests.support.postgres import Postgres
            from tests.support.redis_server import RedisServer

            pg, rd = Postgres().start(), RedisServer().start()
            self.services = [pg, rd]
            router_env["LLMLB_DATABASE_URL"] = pg.create_database(f"b_{self.side}")
            router_env["LLMLB_REDIS_URL"] = rd.url
        for i in range(2 if self.redis else 1):
            self.routers.append(
                ServerProcess(self.tmp / f"router{i}", kind="router", env=router_env).start()
            )
        urls = ",".join(r.url for r in self.routers)
        for i in range(3):
            home = self.tmp / f"node{i}"
            register_file(home, MODEL, smollm2())
            env = {**beat, "LLMLB_THREADS": "1", **side_env(self.side)}
            self.nodes.append(ServerProcess(home, env=env, extra_args=("--router", urls)).start())
        for n in self.nodes:  # loaded everywhere, as in a cluster that has run a while
            preload(n.url)
        for router in self.routers:
            assert wait_for(lambda r=router: self._ready(r) == 3, 60), router.log()
        return self

    @staticmethod
    def _ready(router: ServerProcess) -> int:
        nodes = httpx.get(router.url + "/admin/cluster/nodes").json()["nodes"]
        return sum(n["status"] == "online" and bool(n["loaded_models"]) for n in nodes)

    def url(self, i: int) -> str:
        return self.routers[i % len(self.routers)].url

    def stop(self) -> None:
        for s in [*self.nodes, *self.routers]:
            s.stop()
        for service in self.services:
            service.close()


def conversations(
    cluster: Cluster, salt: str, think: float, n: int = 24, turns: int = 5, at_once: int = 8
) -> list[float]:
    """TTFT of turns 2.. of `n` conversations, `at_once` at a time; `think` seconds between a
    reply and the next turn (a person reading and typing)."""
    ttfts: list[float] = []
    lock = threading.Lock()

    def one(c: int) -> None:
        conv = history(f"{salt}-{c}", 1000)
        for t in range(turns):
            if t:
                time.sleep(think)
            result, reply = chat(cluster.url(t + c), MODEL, conv, 8)
            if t:
                with lock:
                    ttfts.append(result.ttft)
            conv += [
                {"role": "assistant", "content": reply},
                {"role": "user", "content": f"And {t}?"},
            ]

    with ThreadPoolExecutor(at_once) as pool:
        list(pool.map(one, range(n)))
    return ttfts


def uniform(cluster: Cluster, salt: str, n: int = 36, at_once: int = 12) -> float:
    """Aggregate completion tokens/s of `n` unrelated prompts, `at_once` at a time."""
    started = time.perf_counter()
    with ThreadPoolExecutor(at_once) as pool:
        results = list(
            pool.map(lambda i: chat(cluster.url(i), MODEL, unrelated(i, salt), 32)[0], range(n))
        )
    return sum(r.tokens for r in results) / (time.perf_counter() - started)


def cluster_part(tmp: Path, rounds: int, redis: bool) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {
        s: {"turns 2-5 TTFT, 2 s think time": [], "turns 2-5 TTFT, no think time": [],
            "uniform tokens/s": []}
        for s in SIDES
    }  # fmt: skip
    for r in range(rounds):
        for side in SIDES if r % 2 == 0 else reversed(SIDES):
            c = Cluster(tmp / f"{'redis' if redis else 'cluster'}-{r}-{side}", side, redis).start()
            try:
                figures = out[side]
                figures["turns 2-5 TTFT, 2 s think time"].append(
                    statistics.median(conversations(c, f"t{r}", think=2.0))
                )
                figures["turns 2-5 TTFT, no think time"].append(
                    statistics.median(conversations(c, f"c{r}", think=0.0, n=12))
                )
                figures["uniform tokens/s"].append(uniform(c, f"u{r}"))
            finally:
                c.stop()
    return out


# -- the table -----------------------------------------------------------------------------------
def table(part: str, figures: dict[str, dict[str, list[float]]], load: str) -> None:
    for metric in figures["cache"]:
        a, b = figures["cache"][metric], figures["today"][metric]
        ms = "TTFT" in metric or "turn" in metric or metric in ("loaded", "with load")
        scale, unit = (1000, " (ms)") if ms else (1, "")
        med_a, med_b = statistics.median(a) * scale, statistics.median(b) * scale
        print(
            f"| {part} | {metric}{unit} | {med_a:.0f} | {med_b:.0f} | {med_a / med_b:.2f}x "
            f"| {' / '.join(f'{x * scale:.0f}' for x in a)} | {' / '.join(f'{x * scale:.0f}' for x in b)} "
            f"| {load} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parts", default="restart,reuse,cluster")
    parser.add_argument(
        "--redis", action="store_true", help="also two routers on PostgreSQL + Redis"
    )
    opts = parser.parse_args()
    parts: dict[str, Callable[[Path, int], dict]] = {
        "restart": restart,
        "reuse": reuse,
        "cluster": lambda tmp, n: cluster_part(tmp, n, redis=False),
    }
    if opts.redis:
        parts["2 routers + Redis"] = lambda tmp, n: cluster_part(tmp, n, redis=True)
    wanted = set(opts.parts.split(",")) | ({"2 routers + Redis"} if opts.redis else set())
    print(f"{os.cpu_count()} CPUs; {opts.rounds} rounds, sides alternating\n")
    print("| part | metric | prompt cache | today | ratio | cache rounds | today rounds | load |")
    print("|---|---|---|---|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory(prefix="llmlb-prefix-") as tmp:
        for name, run in parts.items():
            if name not in wanted:
                continue
            load = Load()
            figures = run(Path(tmp), opts.rounds)
            table(name, figures, load.done())


if __name__ == "__main__":
    main()
