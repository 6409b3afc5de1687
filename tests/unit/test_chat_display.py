"""How a reply with thinking is shown: a scripted stream, as the node sends it after it split
`<think>` ... `</think>` out of the model's text (that split is tested in test_thinking.py)."""

import io
from contextlib import contextmanager

from llmlb.cli.chat import DIM, RESET, Chat
from llmlb.engine.thinking import ThinkingSplitter

RAW = ["<th", "ink>Let me", " add 2 and 2.</thi", "nk>\n\nThe answer", " is 4."]


def node_chunks():
    """What the node streams for RAW: thinking and content pieces, then the final chunk."""
    splitter = ThinkingSplitter()
    for piece in RAW:
        thinking, content = splitter.feed(piece)
        if thinking:
            yield {
                "message": {"role": "assistant", "content": "", "thinking": thinking},
                "done": False,
            }
        if content:
            yield {"message": {"role": "assistant", "content": content}, "done": False}
    yield {
        "done": True,
        "prompt_eval_count": 10,
        "eval_count": 12,
        "eval_duration": 10**8,
        "message": {},
    }


class ScriptedNode:
    def __init__(self):
        self.posted = []
        self.asked: list[dict] = []

    @contextmanager
    def stream(self, method, path, body):
        self.asked.append(body)
        yield node_chunks()

    def post(self, path, body):
        self.posted.append((path, body))


THINKER = {"name": "m", "capabilities": ["completion", "tools", "thinking"]}


def run(show_thinking, styled=False, model=THINKER):
    node, out = ScriptedNode(), io.StringIO()
    session = {"id": "abcd1234", "settings": {"temperature": 0.7, "top_p": 0.9}, "messages": []}
    chat = Chat(node, model, session, out, styled=styled, show_thinking=show_thinking)
    chat.turn("what is 2+2?")
    assert node.asked[0].get("think") is ("thinking" in model["capabilities"] or None)
    return out.getvalue(), node.posted


def test_think_is_asked_of_a_thinking_model_only():
    # asked for either way, so the thinking is stored; a model that cannot think would
    # answer `think` with a 400, as ollama does
    run(show_thinking=False)
    run(show_thinking=False, model={"name": "m", "capabilities": ["completion", "tools"]})


def test_hidden_thinking_shows_only_the_answer_but_stores_it():
    screen, posted = run(show_thinking=False)
    assert screen == "The answer is 4.\n"
    ((path, body),) = posted
    assert path == "/api/sessions/abcd1234/messages"
    assert body["messages"][1] == {
        "role": "assistant",
        "content": "The answer is 4.",
        "thinking": "Let me add 2 and 2.",
    }
    assert body["tokens"] == 22


def test_shown_thinking_comes_first_and_apart():
    screen, _ = run(show_thinking=True)
    assert screen == "Thinking...\nLet me add 2 and 2.\n...done thinking.\n\nThe answer is 4.\n"


def test_thinking_is_dim_on_a_terminal():
    screen, _ = run(show_thinking=True, styled=True)
    assert screen.startswith(DIM + "Thinking...\n" + RESET)
    assert DIM + "Let me" in screen and "The answer is 4." in screen


def test_an_empty_reply_gets_counts_but_no_rates():
    chat = Chat(
        ScriptedNode(),
        {"name": "m"},
        {"id": "x", "settings": {}, "messages": []},
        io.StringIO(),
        styled=False,
        verbose=True,
    )
    chat.stats({"prompt_eval_count": 7, "eval_count": 0, "eval_duration": 3400}, 0.0, None)
    assert chat.out.getvalue() == "prompt tokens:       7\ncompletion tokens:   0\n"
    chat.out = io.StringIO()
    chat.stats({"prompt_eval_count": 7, "eval_count": 10, "eval_duration": 10**9}, 0.0, 0.25)
    assert chat.out.getvalue().splitlines()[2:] == [
        "time to first token: 250 ms",
        "eval rate:           10.00 tokens/s",
    ]


def test_on_a_terminal_the_reply_wraps_at_word_boundaries():
    class Long(ScriptedNode):
        @contextmanager
        def stream(self, method, path, body):
            words = "a reply with some punctuation that goes on and on and on"
            pieces = [words[i : i + 3] for i in range(0, len(words), 3)]
            yield iter(
                [{"message": {"content": p}, "done": False} for p in pieces]
                + [{"done": True, "eval_count": 1, "message": {}}]
            )

    out = io.StringIO()
    session = {"id": "x", "settings": {"temperature": 0.7, "top_p": 0.9}, "messages": []}
    chat = Chat(Long(), {"name": "m"}, session, out, styled=False, width=16)
    chat.turn("go")
    assert out.getvalue() == "a reply with \nsome punctuation\nthat goes on and\non and on\n"
