import pytest

from llmlb.engine.thinking import ThinkingSplitter


def run(pieces, starts=False):
    s = ThinkingSplitter(starts)
    thinking, content = "", ""
    for p in pieces:
        t, c = s.feed(p)
        thinking += t
        content += c
    t, c = s.flush()
    return thinking + t, content + c


def test_whole_tags():
    assert run(["<think>hmm</think>Answer"]) == ("hmm", "Answer")


@pytest.mark.parametrize("cut", range(1, 30))
def test_tags_split_at_every_position(cut):
    text = "<think>step one\nstep two</think>\n\nThe answer is 4."
    assert run([text[:cut], text[cut:]]) == ("step one\nstep two", "The answer is 4.")


def test_one_char_at_a_time():
    text = "<think>a<b</think>c</thin d"
    assert run(list(text)) == ("a<b", "c</thin d")


def test_no_thinking():
    assert run(["plain ", "text <thi", "s is not a tag"]) == ("", "plain text <this is not a tag")


def test_starts_inside_thinking():
    # templates that open <think> themselves: the model only writes the close tag
    assert run(["reasoning</think>", "done"], starts=True) == ("reasoning", "done")


def test_unclosed_thinking_stays_thinking():
    assert run(["<think>still going"]) == ("still going", "")
