"""Pure parts of the runner design: the wire format, deadlines, crash bookkeeping, and the
estimated cost of a pattern."""

from __future__ import annotations

import threading
import time

import pytest

from llmlb.engine import pattern_cost, wire
from llmlb.engine.base import GenOptions, GenStats, TemplateCaps, TokenLogprob
from llmlb.engine.crashes import CRASH_LIMIT, CRASH_WINDOW, Crashes
from llmlb.engine.deadline import Deadlines, Overtime


def roundtrip_events(items: list[wire.Event]) -> list[wire.Event]:
    data = wire.frame(wire.Events(items))
    assert wire.frame_size(data[: wire.HEADER.size]) == len(data) - wire.HEADER.size
    return wire.reply_decoder.decode(data[wire.HEADER.size :]).items


def test_every_event_survives_the_wire():
    lp = TokenLogprob("é", -0.5, [("é", -0.5, b"\xc3\xa9"), ("e", -1.5, b"e")], b"\xc3\xa9")
    items = [
        wire.Started(1, 12, True),
        wire.Piece(1, "héllo", [lp]),
        wire.Done(1, GenStats(prompt_tokens=12, completion_tokens=3, finish_reason="length")),
        wire.Done(2, None, wire.ErrorInfo(400, "bad")),
        wire.Vectors(3, [[0.5, 0.25]], 4),
        wire.Caps(4, TemplateCaps(system=True, thinks=True)),
        wire.Progress(),
        wire.Log(20, "llmlb.engine", "loaded"),
        wire.Ready(n_ctx=2048, parallel=4, processor="100% CPU", size_bytes=10, base_rss=5),
        wire.LoadFailed("no"),
    ]
    assert roundtrip_events(items) == items


def test_commands_survive_the_wire():
    opts = GenOptions(temperature=0.0, stop=["x"], grammar="root ::= [a-z]", seed=3)
    cmd = wire.Generate(7, opts, [{"role": "user", "content": "hi"}], {"tools": []})
    data = wire.frame(cmd)
    assert wire.command_decoder.decode(data[wire.HEADER.size :]) == cmd


def test_a_frame_larger_than_the_limit_is_refused():
    with pytest.raises(ValueError):
        wire.frame_size(wire.HEADER.pack(wire.MAX_FRAME + 1))


def test_a_deadline_interrupts_a_python_loop_and_nothing_leaks_after_it():
    deadlines = Deadlines()
    with pytest.raises(Overtime), deadlines.limit(0.2):
        while True:  # only the deadline ends it
            pass
    with deadlines.limit(5):  # a limit that is kept raises nothing, during or after
        total = sum(range(100_000))
    time.sleep(0.3)
    assert total == 4999950000


def test_deadlines_are_per_thread():
    deadlines = Deadlines()
    outcome: dict[str, str] = {}

    def slow() -> None:
        try:
            with deadlines.limit(0.2):
                while True:
                    pass
        except Overtime:
            outcome["slow"] = "stopped"

    def quick() -> None:
        with deadlines.limit(10):
            time.sleep(0.5)
        outcome["quick"] = "finished"

    threads = [threading.Thread(target=slow), threading.Thread(target=quick)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert outcome == {"slow": "stopped", "quick": "finished"}


def test_work_within_its_deadline_counts_as_alive():
    beats: list[float] = []
    deadlines = Deadlines(alive=lambda: beats.append(time.monotonic()))
    with deadlines.limit(10):
        time.sleep(2.5)
    count = len(beats)
    time.sleep(1.5)
    assert count >= 2 and len(beats) == count  # nothing vouches once the work is done


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_model_is_held_back_after_its_third_crash_in_the_window():
    clock = Clock()
    crashes = Crashes(clock)
    for i in range(CRASH_LIMIT - 1):
        assert crashes.record("m", "f1", f"boom {i}") is None
        clock.now += 60
    hold = crashes.record("m", "f1", "boom last")
    assert hold is not None and "3 times in 10 minutes" in hold.reason
    assert "boom last" in hold.reason and hold.reason.startswith("model 'm' is held back: ")
    assert crashes.held("m", "f1") == hold
    assert [h.name for h in crashes.all_held()] == ["m"]
    clock.now = hold.until + 1  # the window has passed: it may run again
    assert crashes.held("m", "f1") is None


def test_crashes_spread_wider_than_the_window_do_not_hold():
    clock = Clock()
    crashes = Crashes(clock)
    for _ in range(CRASH_LIMIT + 2):
        assert crashes.record("m", "f1", "boom") is None
        clock.now += CRASH_WINDOW / (CRASH_LIMIT - 1) + 1


def test_a_new_file_or_a_stop_lets_a_held_model_run():
    crashes = Crashes(Clock())
    for _ in range(CRASH_LIMIT):
        crashes.record("m", "f1", "boom")
    assert crashes.held("m", "f1") is not None
    assert crashes.held("m", "f2") is None  # a new pull: another file
    assert crashes.record("m", "f2", "boom") is None  # and its count starts afresh
    for _ in range(CRASH_LIMIT):
        crashes.record("m", "f2", "boom")
    assert crashes.forget("m") and crashes.held("m", "f2") is None


@pytest.mark.parametrize(
    "pattern",
    [
        "^\\d{3}-\\d{4}$",
        "^[a-z]{0,1000}$",
        "^(a?){1000}$",
        "^(foo|bar)+$",
        "^[A-Z][a-z]*( [A-Z][a-z]*){0,5}$",
        "^[^\\n]{1,200}$",
    ],
)
def test_ordinary_patterns_are_affordable(pattern):
    assert pattern_cost.problem(pattern) is None


@pytest.mark.parametrize(
    "pattern, words",
    [
        ("^((a?){1000}){1000}$", "nests optional repetitions too deeply"),
        ("^(a*){5000}$", "nests optional repetitions too deeply"),
        ("^a{1000000000}$", "repeats too much"),
        ("^(ab){300000}$", "repeats too much"),
        ("^\x00$", "control character U+0000"),
    ],
)
def test_costly_or_unmatchable_patterns_are_refused_by_estimate(pattern, words):
    problem = pattern_cost.problem(pattern)  # (no grammar is built: nothing here converts)
    assert problem is not None and words in problem
