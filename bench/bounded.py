"""Issue 23's cases 1-5, measured from outside: a server's peak memory, and the longest it left
a tiny request waiting while it dealt with one hostile request, body, peer or answer.

For each case fresh servers start; a prober sends `GET /` on one kept-alive connection every
10 ms for the whole case and keeps its worst latency (the event-loop stall a client of the
server sees); the server's peak resident memory (VmHWM) is read before and after. With
`--baseline PATH` every case runs on that checkout too (e.g. a worktree of main), in the same
run, so the two columns share the machine's state.

  1  node: POST /api/generate of 60 MiB whose bulk is an unknown field "x": [[],[],...]
  2  router with LLMLB_API_KEYS: ten unauthenticated POSTs of 62 MB each
  3a router: a node answers a non-streamed request with 1 GiB of JSON (the client reads it)
  3b router: GET /api/ps while a node answers it with 100 MB of entries
  3c router: GET /api/tags while a node answers it with JSON nested 100,000 deep
  4  node: a pull whose Hub answers the repo info with 1 MB of gzip that inflates to 1 GiB
  5a node (SmolLM2 loaded): a chat held to a 20,000-value enum (200 KB)
  5b node (SmolLM2 loaded): a chat held to the pattern ^a{1000000000}$
  (5: the outcome also gives the model runner's peak RSS; bench/neighbour.py measures a
  stream beside requests held to the largest enum a node accepts)

Run: .venv/bin/python bench/bounded.py [--baseline /tmp/main-checkout] [--cases 1,2,3a,3b,3c,4]
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.catalog import register_file  # noqa: E402
from tests.support.fake_cluster import MODEL, keep_registered, start_backends  # noqa: E402
from tests.support.hub_server import Behaviour, HubServer  # noqa: E402
from tests.support.procs import ServerProcess  # noqa: E402
from tests.support.real_models import smollm2  # noqa: E402
from tests.support.tiny_model import make_tiny_gguf  # noqa: E402

MB = 1024 * 1024


class Prober(threading.Thread):
    """GET / every 10 ms on one kept-alive connection; the worst latency seen."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port = port
        self.worst = 0.0
        self.failures = 0
        self.stop = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        tick = time.perf_counter()
        while not self.stop.is_set():
            started = time.perf_counter()
            try:
                conn.request("GET", "/")
                conn.getresponse().read()
            except (OSError, http.client.HTTPException):
                self.failures += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            self.worst = max(self.worst, time.perf_counter() - started)
            tick += 0.01
            time.sleep(max(0.0, tick - time.perf_counter()))
            tick = max(tick, time.perf_counter() - 0.01)
        conn.close()


def peak_rss(server: ServerProcess) -> int:
    assert server.proc is not None
    return _vm_hwm(server.proc.pid)


def measure(server: ServerProcess, action: Callable[[], str]) -> dict:
    time.sleep(0.5)  # settle after start-up
    before = peak_rss(server)
    prober = Prober(server.port)
    prober.start()
    time.sleep(0.3)
    idle = prober.worst
    began = time.perf_counter()
    outcome = action()
    took = time.perf_counter() - began
    time.sleep(0.3)
    prober.stop.set()
    prober.join(130)
    return {
        "rss_before": before,
        "rss_peak": peak_rss(server),
        "stall": prober.worst,
        "idle": idle,
        "took": took,
        "outcome": outcome,
        "probe_failures": prober.failures,
    }


def server(tmp: Path, kind: str, code: Path | None, env: dict | None = None) -> ServerProcess:
    extra = {"PYTHONPATH": str(code)} if code else {}
    return ServerProcess(
        tmp / f"{kind}-home", kind=kind, env={**(env or {}), **extra}, cwd=code
    ).start(timeout=120)


# -- the cases ----------------------------------------------------------------------------------


def case_1(tmp: Path, code: Path | None) -> dict:
    items = 20 * MB
    body = b'{"model": "org/none", "prompt": "hi", "x": [' + b"[]," * (items - 1) + b"[]]}"
    with ExitStack() as stack:
        node = server(tmp, "node", code)
        stack.callback(node.stop)

        def act() -> str:
            r = httpx.post(node.url + "/api/generate", content=body, timeout=300)
            return f"{r.status_code} ({len(body) / MB:.0f} MiB body)"

        return measure(node, act)


def case_2(tmp: Path, code: Path | None) -> dict:
    body = b'{"model": "x", "prompt": "' + b"a" * (62_000_000 - 30) + b'"}'
    with ExitStack() as stack:
        router = server(tmp, "router", code, {"LLMLB_API_KEYS": "secret"})
        stack.callback(router.stop)

        def act() -> str:
            statuses = []
            for _ in range(10):
                try:
                    r = httpx.post(router.url + "/api/generate", content=body, timeout=300)
                    statuses.append(r.status_code)
                except httpx.HTTPError as exc:  # refused before the body: the send may break
                    statuses.append(type(exc).__name__)
            return "statuses " + ",".join(sorted({str(s) for s in statuses}))

        return measure(router, act)


def _router_with_node(tmp: Path, code: Path | None, stack: ExitStack, *args: str):
    ports, procs = start_backends(1, *args)
    for p in procs:
        stack.callback(p.terminate)
    router = server(tmp, "router", code)
    stack.callback(router.stop)
    stop = threading.Event()
    threading.Thread(target=keep_registered, args=(router.url, ports, stop), daemon=True).start()
    stack.callback(stop.set)
    for _ in range(300):
        if httpx.get(router.url + "/admin/cluster/nodes").json()["nodes"]:
            break
        time.sleep(0.1)
    return router, ports[0]


def case_3a(tmp: Path, code: Path | None) -> dict:
    size = 1024 * MB
    with ExitStack() as stack:
        router, port = _router_with_node(tmp, code, stack, "--answer-bytes", str(size))
        httpx.get(f"http://127.0.0.1:{port}/release")  # no holding back: all at once

        def act() -> str:
            ask = {"model": MODEL, "messages": [], "stream": False}
            got = 0
            with httpx.stream(
                "POST", router.url + "/v1/chat/completions", json=ask, timeout=300
            ) as r:
                for chunk in r.iter_raw():
                    got += len(chunk)
            return f"{r.status_code}, {got / MB:.0f} MiB read"

        return measure(router, act)


def case_3b(tmp: Path, code: Path | None) -> dict:
    entry = {"name": "org/big", "model": "org/big", "size": 1, "details": {"pad": "p" * 1000}}
    listing = tmp / "ps.json"
    listing.write_bytes(json.dumps({"models": [entry] * 100_000}).encode())
    with ExitStack() as stack:
        router, _ = _router_with_node(tmp, code, stack, "--listing", str(listing))

        def act() -> str:
            r = httpx.get(router.url + "/api/ps", timeout=300)
            return f"{r.status_code}, {len(r.json().get('models', []))} entries"

        return measure(router, act)


def case_3c(tmp: Path, code: Path | None) -> dict:
    listing = tmp / "tags.json"
    listing.write_bytes(
        b'{"models": [{"name": "x", "y": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]}"
    )
    with ExitStack() as stack:
        router, _ = _router_with_node(tmp, code, stack, "--listing", str(listing))

        def act() -> str:
            r = httpx.get(router.url + "/api/tags", timeout=300)
            return f"{r.status_code}"

        return measure(router, act)


def case_4(tmp: Path, code: Path | None) -> dict:
    gguf = make_tiny_gguf(tmp / "tiny-Q8_0.gguf", dtype="Q8_0")
    with ExitStack() as stack:
        hub = HubServer(tmp / "hub", behaviour=Behaviour(info_gzip_padding=1024 * MB)).start()
        stack.callback(hub.stop)
        hub.add_repo("org/repo", {"tiny-Q8_0.gguf": gguf})
        info = f"{hub.url}/api/models/org/repo/revision/main?blobs=true"
        with httpx.stream("GET", info, timeout=300) as r:  # the hub packs its bomb once
            packed = sum(len(c) for c in r.iter_raw())
        node = server(tmp, "node", code, {"HF_ENDPOINT": hub.url})
        stack.callback(node.stop)

        def act() -> str:
            r = httpx.post(
                node.url + "/api/pull", json={"model": "org/repo", "stream": False}, timeout=300
            )
            text = r.json().get("error") or r.json().get("status")
            return f"{r.status_code} ({packed / MB:.1f} MB sent): {str(text)[:70]}"

        return measure(node, act)


def _held_to(tmp: Path, code: Path | None, schema: dict) -> dict:
    with ExitStack() as stack:
        home = tmp / "node-home"
        register_file(home, "HuggingFaceTB/SmolLM2-135M-Instruct", smollm2())
        node = server(tmp, "node", code)
        stack.callback(node.stop)
        body = {"model": "smollm2-135m-instruct", "stream": False, "options": {"num_predict": 8}}
        ask = {**body, "messages": [{"role": "user", "content": "Pick one."}]}
        assert httpx.post(node.url + "/api/chat", json=ask, timeout=300).status_code == 200

        def act() -> str:
            began = time.perf_counter()
            r = httpx.post(node.url + "/api/chat", json={**ask, "format": schema}, timeout=300)
            took = time.perf_counter() - began
            pids = httpx.get(node.url + "/api/ps", timeout=10).json()["models"][0]["pids"]
            runner = max(_vm_hwm(pid) for pid in pids)
            return f"{r.status_code} in {took:.2f} s, runner peak RSS {runner / MB:.0f} MB"

        return measure(node, act)


def _vm_hwm(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def case_5a(tmp: Path, code: Path | None) -> dict:
    words = [f"w{i:05d}x" for i in range(20_000)]
    return _held_to(tmp, code, {"type": "string", "enum": words})


def case_5b(tmp: Path, code: Path | None) -> dict:
    return _held_to(tmp, code, {"type": "string", "pattern": "^a{1000000000}$"})


CASES = {
    "1": case_1,
    "2": case_2,
    "3a": case_3a,
    "3b": case_3b,
    "3c": case_3c,
    "4": case_4,
    "5a": case_5a,
    "5b": case_5b,
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", metavar="PATH", help="also run every case on this checkout")
    ap.add_argument("--cases", default=",".join(CASES))
    opts = ap.parse_args()
    versions: dict[str, Path | None] = {"this": None}
    if opts.baseline:
        versions = {"baseline": Path(opts.baseline).resolve(), "this": None}
    rows = []
    for name in opts.cases.split(","):
        for version, code in versions.items():
            with tempfile.TemporaryDirectory(prefix="bounded-") as tmp:
                result = CASES[name](Path(tmp), code)
            rows.append((name, version, result))
            r = result
            print(
                f"case {name:3} {version:8} peak RSS {r['rss_before'] / MB:6.0f} -> "
                f"{r['rss_peak'] / MB:6.0f} MB  worst GET / {r['stall'] * 1000:7.0f} ms "
                f"(idle {r['idle'] * 1000:.0f} ms)  took {r['took']:.1f} s  {r['outcome']}",
                flush=True,
            )
    print("\n| case | version | peak RSS before -> after (MB) | worst GET / (ms) | outcome |")
    print("|---|---|---|---|---|")
    for name, version, r in rows:
        print(
            f"| {name} | {version} | {r['rss_before'] / MB:.0f} -> {r['rss_peak'] / MB:.0f} | "
            f"{r['stall'] * 1000:.0f} | {r['outcome']} |"
        )


if __name__ == "__main__":
    main()
