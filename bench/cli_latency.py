"""Median wall time of `llmlb node list` / `show` with 1,000 models, against `llmlb --version`.

`--version` is the baseline: the cost of starting Python and importing the CLI.
Targets: list and show under 0.3 s median, --version under 0.15 s.
Run: .venv/bin/python bench/cli_latency.py [--models 1000] [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmlb.store import db  # noqa: E402
from llmlb.store.models import Model  # noqa: E402
from tests.support.catalog import register_file  # noqa: E402
from tests.support.procs import ServerProcess  # noqa: E402
from tests.support.tiny_model import make_tiny_gguf  # noqa: E402

LLMLB = str(Path(sys.executable).parent / "llmlb")


def fill(home: Path, n: int) -> str:
    tiny = make_tiny_gguf(home.parent / "tiny.gguf")
    first = register_file(home, "bench/model-0000", tiny)
    engine = db.open_node_catalog(home / "llmlb.db")
    with db.session(engine) as s:
        for i in range(1, n):
            s.add(
                Model(
                    **{
                        **first.model_dump(exclude={"id"}),
                        "name": f"bench/model-{i:04d}",
                        "alias": f"model-{i:04d}",
                    }
                )
            )
        s.commit()
    engine.dispose()
    return "bench/model-0500"


def median_time(args: list[str], env: dict, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        r = subprocess.run([LLMLB, *args], env=env, capture_output=True)
        times.append(time.perf_counter() - t)
        if r.returncode != 0:
            raise SystemExit(f"llmlb {' '.join(args)} failed: {r.stderr.decode()}")
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=15)
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        show_name = fill(home, opts.models)
        with ServerProcess(home) as server:
            env = {**os.environ, **server.client_env()}
            base = median_time(["--version"], env, opts.runs)
            rows = [("llmlb --version (baseline)", base, 0.15)]
            rows.append(("llmlb node list", median_time(["node", "list"], env, opts.runs), 0.3))
            rows.append(
                ("llmlb node show", median_time(["node", "show", show_name], env, opts.runs), 0.3)
            )
    print(f"{opts.models} models in the catalog, median of {opts.runs} runs")
    print(f"{'command':30} {'median':>9} {'x baseline':>11} {'target':>8}")
    for name, t, target in rows:
        flag = "ok" if t < target else "MISSED"
        print(f"{name:30} {t * 1000:7.0f}ms {t / base:10.2f}x {target * 1000:6.0f}ms {flag}")


if __name__ == "__main__":
    main()
