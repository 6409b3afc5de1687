"""Pull throughput: `llmlb node pull` against `curl` and `huggingface_hub.hf_hub_download`.

All three fetch the same 1 GiB file from the same local Hub-compatible server
(tests/support/hub_server.py, run as its own process, sending with sendfile). llmlb's time is
the whole pull as the API reports it done: planning, parallel download, sha256 verification,
move into place and registration. curl only writes the bytes. Target: llmlb >= 0.9x curl.
Run: .venv/bin/python bench/pull.py [--size-mib 1024] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.procs import ServerProcess, free_port  # noqa: E402
from tests.support.tiny_model import make_tiny_gguf  # noqa: E402

REPO = "bench/big-GGUF"
FILE = "big-Q4_K_M.gguf"


def make_file(path: Path, size: int) -> Path:
    """A valid GGUF (so llmlb registers it) padded with random bytes to `size`."""
    if path.exists() and path.stat().st_size == size:
        return path
    make_tiny_gguf(path)
    with open(path, "ab") as fh:
        left = size - path.stat().st_size
        while left > 0:
            n = min(left, 64 << 20)
            fh.write(os.urandom(n))
            left -= n
    return path


def start_hub(path: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.hub_server",
            "--port",
            str(port),
            f"{REPO}/{FILE}={path}",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    proc.stdout.readline()  # "serving ... at URL": hashing done, listening
    return proc, f"http://127.0.0.1:{port}"


def time_curl(url: str, out: Path) -> float:
    t = time.perf_counter()
    subprocess.run(
        ["curl", "-sSfL", "-o", str(out), f"{url}/{REPO}/resolve/main/{FILE}"], check=True
    )
    dt = time.perf_counter() - t
    out.unlink()
    return dt


def time_hf(url: str, cache: Path) -> float:
    code = (
        "import sys, time; from huggingface_hub import hf_hub_download as d; t = time.perf_counter(); "
        f"d({REPO!r}, {FILE!r}, endpoint={url!r}, cache_dir={str(cache)!r}); "
        "print(time.perf_counter() - t)"
    )
    env = {
        **os.environ,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_XET_HIGH_PERFORMANCE": "1",
    }
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    shutil.rmtree(cache, ignore_errors=True)
    return float(r.stdout.strip().splitlines()[-1])


def time_llmlb(node: ServerProcess) -> float:
    t = time.perf_counter()
    r = httpx.post(node.url + "/api/pull", json={"model": REPO, "stream": False}, timeout=600)
    dt = time.perf_counter() - t
    if r.status_code != 200 or r.json().get("status") != "success":
        raise SystemExit(f"llmlb pull failed: {r.text}")
    httpx.request(
        "DELETE", node.url + "/api/delete", json={"model": REPO}, timeout=60
    ).raise_for_status()
    return dt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "llmlb-bench-pull"
    )
    args = parser.parse_args()
    size = args.size_mib << 20
    args.workdir.mkdir(parents=True, exist_ok=True)
    source = make_file(args.workdir / f"source-{args.size_mib}.gguf", size)
    hub, url = start_hub(source)
    home = args.workdir / "home"
    shutil.rmtree(home, ignore_errors=True)
    node = ServerProcess(home, env={"HF_ENDPOINT": url}).start()
    results: dict[str, list[float]] = {"curl": [], "hf_hub_download": [], "llmlb pull": []}
    try:
        time_curl(url, args.workdir / "warm")  # the source into the page cache
        for _ in range(args.runs):  # interleaved, so drifting machine load hits all three alike
            results["curl"].append(time_curl(url, args.workdir / "curl.out"))
            results["hf_hub_download"].append(time_hf(url, args.workdir / "hf-cache"))
            results["llmlb pull"].append(time_llmlb(node))
    finally:
        node.stop()
        hub.terminate()
        hub.wait()
    print(f"{args.size_mib} MiB from {url}, {args.runs} runs each, median (best):")
    base = statistics.median(results["curl"])
    for name, times in results.items():
        med = statistics.median(times)
        print(
            f"  {name:16s} {size / med / 1e6:8.0f} MB/s  ({size / min(times) / 1e6:.0f})  "
            f"{med:6.2f} s  {base / med:5.2f}x curl"
        )
    ratio = base / statistics.median(results["llmlb pull"])
    print(f"llmlb pull / curl = {ratio:.2f}x (target >= 0.90x, sha256 verification included)")


if __name__ == "__main__":
    main()
