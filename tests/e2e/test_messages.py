"""Messages that tell the user what happened: show's no-template note, the --continue line,
an unknown /set parameter; against a real node server."""

from __future__ import annotations

import io

import pytest
from prompt_toolkit import PromptSession
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from llmlb import settings
from llmlb.cli.chat import Chat, open_session
from llmlb.cli.repl import Repl
from llmlb.client import Client
from tests.e2e.conftest import NodeSpec
from tests.support.procs import run_cli
from tests.support.tiny_model import make_tiny_gguf

pytestmark = pytest.mark.e2e


NODE = NodeSpec(  # a 128-token context bounds every reply
    {
        "org/chat": lambda d: make_tiny_gguf(d / "chat.gguf", context_length=128),
        "org/base": lambda d: make_tiny_gguf(
            d / "base.gguf", context_length=128, chat_template=None
        ),
    }
)


def cli(node, *args):
    return run_cli(*args, env=node.client_env())


def test_show_notes_a_gguf_without_a_chat_template(node):
    base = cli(node, "node", "show", "org/base").stdout
    assert "  Note: no chat template: raw completion only" in base.splitlines()
    assert "no chat template" not in cli(node, "node", "show", "org/chat").stdout


def test_continue_says_what_it_resumed_or_that_it_starts_anew(node):
    first = cli(node, "node", "run", "org/chat", "--continue", "hello")
    assert first.returncode == 0, first.stderr
    assert first.stderr == "No earlier session of org/chat; starting a new one\n"
    second = cli(node, "node", "run", "chat", "--continue", "again")
    assert second.returncode == 0, second.stderr
    line = second.stderr.strip()
    assert line.startswith("Resumed session ") and line.endswith(" (2 messages)")
    session = line.split()[2]
    third = cli(node, "node", "run", "org/chat", "--session", session, "once more")
    assert third.stderr.strip() == f"Resumed session {session} (4 messages)"
    assert "Resumed" not in second.stdout  # stdout holds only the reply


def test_set_of_an_unknown_parameter_names_it(node):
    client = Client(settings.parse_address(node.address, 0))
    info = client.post("/api/show", {"model": "org/chat"})
    out = io.StringIO()
    chat = Chat(client, info, open_session(client, info["name"], None, False), out, styled=False)
    with create_pipe_input() as inp:
        inp.send_text("/set foo 1\n/set\n/bye\n")
        Repl(chat, PromptSession(input=inp, output=DummyOutput())).run()
    screen = out.getvalue()
    assert "Error: unknown parameter 'foo'\n" in screen
    assert screen.count("/set temperature") == 2  # the list follows, as it does for a bare /set
