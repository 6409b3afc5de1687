"""A slow pull as a person watches it: `llmlb node pull` on a terminal against a throttled (or
stalled) Hub, and the progress feed under it. The throttle is far below what any machine does,
and the checks are relations with wide margins (the speed shown against the throttled rate),
never how long something took."""

from __future__ import annotations

import itertools
import json
import re
import signal
import statistics
import subprocess
import time

import httpx
import pytest

from tests.support.hub_server import HubServer
from tests.support.procs import LLMLB, ServerProcess, run_cli, wait_for
from tests.support.terminal import Terminal
from tests.support.tiny_model import TinySpec, make_tiny_gguf

pytestmark = pytest.mark.e2e

MODEL, FILE = "acme/big-GGUF", "big-F32.gguf"
RATE = 128 << 10  # bytes per second per connection
PARTS = 3  # the ~30 MB file is fetched in 3 parts of 8 MiB or more, one connection each
TOTAL_RATE = RATE * PARTS
WATCH_SECS = 10  # how long a throttled pull is watched (it would take about 75 s)
UNITS = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9}
FRAME = re.compile(
    rf"pulling {re.escape(FILE)}\.\.\.\s+\d+% \S+ (?P<done>[\d.]+ \w+)/(?P<total>[\d.]+ \w+)"
    r"(?:  (?P<speed>[\d.]+ \w+)/s  (?P<eta>\S+))?$"
)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    big = make_tiny_gguf(
        tmp_path_factory.mktemp("src") / FILE, TinySpec(n_embd=256, n_layer=4, n_ff=2048, seed=3)
    )
    server = HubServer(tmp_path_factory.mktemp("hub")).start()
    server.add_repo(MODEL, {FILE: big})
    assert big.stat().st_size // (8 << 20) == PARTS
    yield server
    server.stop()


@pytest.fixture
def node(hub, llmlb_env):
    hub.clear_faults()
    # no reconnects during a watched stall: the stall must stay one
    env = {"HF_ENDPOINT": hub.url, "LLMLB_PULL_STALL_SECS": "120"}
    with ServerProcess(llmlb_env, env=env) as server:
        yield server


def size(text: str) -> float:
    number, unit = text.split()
    return float(number) * UNITS[unit]


def seconds(text: str) -> float:
    """`45s`, `3m12s`, `1h05m` (units.clock) in seconds."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text)
    assert parts and text, text
    h, m, s = (int(p or 0) for p in parts.groups())
    return h * 3600 + m * 60 + s


def frames(term: Terminal) -> list[re.Match]:
    return [m for line in term.lines() if (m := FRAME.search(line))]


def pull_on_terminal(term: Terminal, node):
    return term.run([*LLMLB, "node", "pull", MODEL], env=node.client_env())


def detach(puller) -> None:
    puller.send_signal(signal.SIGINT)
    puller.wait(30)


def test_a_throttled_pull_reports_bytes_as_they_arrive(node, hub):
    """The feed under the bar: many small steps, never a MiB per connection at a time."""
    hub.fault(FILE, rate=RATE)
    completed: list[int] = []
    deadline = time.monotonic() + WATCH_SECS
    with httpx.stream("POST", node.url + "/api/pull", json={"model": MODEL}, timeout=60) as r:
        for line in r.iter_lines():
            event = json.loads(line)
            if event.get("file") == FILE:
                completed.append(event["completed"])
            if time.monotonic() > deadline:
                break
    steps = [b - a for a, b in itertools.pairwise(completed) if b > a]
    assert len(steps) >= 5, f"the bar moved {len(steps)} times while {completed[-1]} B arrived"
    # a step is a fraction of what a second brings (the node reports four times a second)
    assert statistics.median(steps) <= TOTAL_RATE, steps


def test_a_throttled_pull_shows_its_real_speed_and_time_left(node, hub):
    hub.fault(FILE, rate=RATE)
    with Terminal() as term:
        puller = pull_on_terminal(term, node)
        try:
            # once a megabyte arrived (the speed has some history), for a while
            assert term.wait_for(lambda t: any(size(f["done"]) >= 1e6 for f in frames(t)), 60)
            time.sleep(WATCH_SECS)
        finally:
            detach(puller)
        shown = [f for f in frames(term) if size(f["done"]) >= 1e6]
    rated = [f for f in shown if f["speed"]]
    assert len(rated) >= 5 and len(rated) == len(shown), [f.group(0) for f in shown]
    for f in rated:
        speed = size(f["speed"])
        assert TOTAL_RATE / 2 <= speed <= TOTAL_RATE * 2, f.group(0)
        left = size(f["total"]) - size(f["done"])
        # the time left is what is left at the speed shown (a size is rounded to 1 MB)
        assert (left - 1e6) / speed - 1 <= seconds(f["eta"]) <= (left + 1e6) / speed + 1, f.group(0)


def test_a_stalled_pull_stops_showing_a_speed(node, hub):
    """Each connection sends 1 MiB, then nothing: the speed shown falls away and the time left
    goes, rather than staying at what they were when the bytes stopped."""
    hub.fault(FILE, rate=2 * RATE, stall_after=1 << 20, stall_secs=600)
    stalled = round((PARTS << 20) / 1e6) * 1e6  # as the line shows it: "3 MB"

    def speed_then_none(term: Terminal) -> bool:
        seen = frames(term)
        first = next((i for i, f in enumerate(seen) if f["speed"]), None)
        return first is not None and any(
            size(f["done"]) == stalled and not f["speed"] for f in seen[first:]
        )

    with Terminal() as term:
        puller = pull_on_terminal(term, node)
        try:
            assert term.wait_for(speed_then_none, 60), term.lines()[-3:]
            last = frames(term)[-1]
        finally:
            detach(puller)
    assert size(last["done"]) == stalled and last["eta"] is None


def test_list_shows_the_alias_a_downloading_model_will_get(node, hub):
    hub.fault(FILE, rate=RATE)
    puller = subprocess.Popen(
        [*LLMLB, "node", "pull", MODEL],
        env=node.client_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:

        def listed() -> str | None:
            out = run_cli("node", "list", env=node.client_env()).stdout.splitlines()
            return next((line for line in out if line.startswith(MODEL + " ")), None)

        assert wait_for(lambda: (row := listed()) and "downloading" in row, 60)
        row = listed()
        assert row is not None and row.split()[-1] == "big", row
        # the alias shown is one the commands take
        r = run_cli("node", "show", "big", env=node.client_env())
        assert r.stderr.startswith("Error: model 'big' is still downloading"), r.stderr
    finally:
        detach(puller)
