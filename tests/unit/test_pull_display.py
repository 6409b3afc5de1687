"""`llmlb node pull`'s display: file names, speed and time left, spinners on slow steps."""

import io
import random
import statistics

from llmlb.cli import pulling
from llmlb.cli.pulling import SPINNER, Display, _File


def test_a_file_line_names_the_file_and_shows_speed_and_time_left():
    f = _File("qwen2.5-0.5b-instruct-q4_k_m.gguf")
    f.update(0, 400_000_000, now=10.0)
    assert f.line() == (
        "pulling qwen2.5-0.5b-instruct-q4_k_m.gguf...   0% ░░░░░░░░░░░░░░░░░░░░ 0 B/400 MB"
    )
    f.update(100_000_000, 400_000_000, now=12.0)  # 50 MB/s over two seconds
    assert f.line() == (
        "pulling qwen2.5-0.5b-instruct-q4_k_m.gguf...  25% ▓▓▓▓▓░░░░░░░░░░░░░░░ "
        "100 MB/400 MB  50 MB/s  6s"
    )
    f.update(400_000_000, 400_000_000, now=18.0)
    assert f.line() == (
        "pulling qwen2.5-0.5b-instruct-q4_k_m.gguf... 100% ▓▓▓▓▓▓▓▓▓▓▓▓▓▓▓▓▓▓▓▓ 400 MB"
    )


def test_a_file_of_unknown_size_shows_what_arrived():
    f = _File("model.gguf")
    f.update(0, 0, now=0.0)
    f.update(3_000_000, 0, now=1.0)
    assert f.line("⠋") == "pulling model.gguf... ⠋ 3 MB  3 MB/s"


def test_a_step_gets_a_spinner_only_after_half_a_second():
    out = io.StringIO()
    d = Display(tty=True, out=out)
    d.event({"status": "writing manifest"})
    started = d.open_since
    d.spin(started + 0.3)
    assert d.lines["writing manifest"] == "writing manifest"
    d.spin(started + 0.6)
    frame = d.lines["writing manifest"].removeprefix("writing manifest ")
    assert frame in SPINNER
    d.event({"status": "success"})
    assert d.lines["writing manifest"] == "writing manifest ✓"


def test_the_first_step_shows_before_the_server_answers(monkeypatch):
    monkeypatch.setattr(pulling, "REDRAW_SECS", 3600)  # no ticker redraw during the test
    out = io.StringIO()
    d = Display(tty=True, out=out)
    d.start("pulling manifest")
    try:
        assert "pulling manifest" in out.getvalue()
        d.event({"status": "pulling manifest"})  # the server's own first line: not twice
        assert list(d.lines) == ["pulling manifest"]
    finally:
        d.finish()
    assert d.lines["pulling manifest"] == "pulling manifest ✓"


def test_plain_output_names_files_and_steps():
    out = io.StringIO()
    d = Display(tty=False, out=out)
    for event in (
        {"status": "pulling manifest"},
        {
            "status": "pulling a.gguf",
            "digest": "sha256:ab",
            "total": 10,
            "completed": 10,
            "file": "a.gguf",
        },
        {"status": "no checksum published; size checked"},
        {"status": "success"},
    ):
        d.event(event)
    d.finish()
    assert out.getvalue().splitlines() == [
        "pulling manifest",
        "pulling a.gguf... 100% ▓▓▓▓▓▓▓▓▓▓▓▓▓▓▓▓▓▓▓▓ 10 B",
        "no checksum published; size checked",
        "success",
    ]


def test_the_speed_of_bursty_arrivals_is_their_bytes_over_time():
    """A MiB at random moments, two seconds apart on average: an average of per-report rates
    would show 1.7 times the real speed (many short gaps outweigh the few long ones)."""
    rng = random.Random(1)
    f = _File("m.gguf")
    f.update(0, 10**12, now=0.0)
    now, done, shown = 0.0, 0, []
    while now < 600:
        now += rng.expovariate(0.5)
        done += 1 << 20
        f.update(done, 10**12, now)
        if now > 30:
            shown.append(f.speed)
    assert 0.85 < statistics.mean(shown) / (done / now) < 1.15


def test_a_stall_brings_the_speed_down_to_nothing():
    f = _File("m.gguf")
    for second in range(21):
        f.update(second * 1_000_000, 100_000_000, now=float(second))
    assert f.line().endswith("20 MB/100 MB  1 MB/s  1m20s")
    f.tick(25.0)  # five seconds without a byte
    assert f.line().endswith("20 MB/100 MB  500 KB/s  2m40s")
    f.tick(31.0)
    assert f.line().endswith("20 MB/100 MB")  # no speed, no time left: nothing is coming
