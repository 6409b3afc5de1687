"""Streamed text wraps at word boundaries, whatever pieces it arrives in."""

import random

import pytest

from llmlb.cli.wrap import WordWrap

TEXT = (
    "The punctuation of this rather long sentence is never split in the middle of a word, "
    "as a terminal would split it. " * 4
)


def wrapped(text: str, width: int, seed: int) -> str:
    rng = random.Random(seed)
    w, out, i = WordWrap(width), [], 0
    while i < len(text):
        n = rng.randint(1, 7)
        out.append(w.feed(text[i : i + n]))
        i += n
    out.append(w.flush())
    return "".join(out)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("width", [20, 33, 80])
def test_lines_fit_and_no_word_is_split(width, seed):
    out = wrapped(TEXT, width, seed)
    lines = out.split("\n")
    assert all(len(line) <= width for line in lines)
    assert " ".join(line.strip() for line in lines).split() == TEXT.split()
    assert "punct\nuation" not in out and len(lines) > 1


def test_indentation_after_a_real_newline_stays():
    out = wrapped("code:\n    indented line\n", 40, 0)
    assert out == "code:\n    indented line\n"


def test_a_word_wider_than_the_line_is_broken_at_the_edge():
    out = wrapped("see https://example.com/" + "x" * 30 + " ok", 20, 1)
    assert all(len(line) <= 20 for line in out.split("\n"))
    assert out.replace("\n", "") == "see https://example.com/" + "x" * 30 + " ok"


def test_wide_characters_count_double():
    out = wrapped("漢字" * 10, 10, 2)
    assert out.split("\n")[0] == "漢字漢字漢"  # 10 columns
