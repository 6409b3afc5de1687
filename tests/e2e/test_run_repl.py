"""`llmlb node run` as a user drives it: the REPL over prompt_toolkit's pipe input against a
real node server, and the non-interactive forms as child processes."""

import base64
import io
import json
import re

import httpx
import pytest
from prompt_toolkit import PromptSession
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from llmlb import settings
from llmlb.cli.chat import Chat, open_session
from llmlb.cli.repl import Repl
from llmlb.client import Client
from tests.e2e.conftest import start_node
from tests.support.catalog import register_file
from tests.support.procs import run_cli
from tests.support.recording_proxy import RecordingProxy

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


# One-shot runs take no token limit, and a random-weight model talks until its context is full:
# a small context bounds every reply, so that no test waits on the speed of random text.
SMALL_CONTEXT = {"LLMLB_CONTEXT_LENGTH": "256"}


@pytest.fixture
def node(tmp_path, tiny_gguf, endless_gguf):
    server = start_node(
        tmp_path / "home", {"org/tiny": tiny_gguf, "org/endless": endless_gguf}, env=SMALL_CONTEXT
    )
    yield server
    server.stop()


def drive(node, model: str, keys: str, session_id: str | None = None, think: bool = False):
    """Type `keys` into a REPL for `model`; return (screen text, chat)."""
    client = Client(settings.parse_address(node.address, 0))
    info = client.post("/api/show", {"model": model})
    out = io.StringIO()
    chat = Chat(
        client,
        info,
        open_session(client, info["name"], session_id, False),
        out,
        styled=False,
        show_thinking=think,
    )
    with create_pipe_input() as inp:
        inp.send_text(keys)
        session = PromptSession(input=inp, output=DummyOutput())
        Repl(chat, session).run()
    return out.getvalue(), chat


def stored(node, session_id):
    return httpx.get(f"{node.url}/api/sessions/{session_id}").json()


def test_chat_turn_set_clear_and_bye(node):
    screen, chat = drive(
        node,
        "endless",
        "/set max_tokens 6\nhello\n/set temperature 1.5\n/set temperature 3\n"
        "/set top_p -1\n/set top_p 0.5\n/set system Be brief.\nhow are you\n"
        "/clear\n/bye\nnever sent\n",
    )
    assert "Set parameter 'max_tokens' to '6'" in screen
    assert "Set parameter 'temperature' to '1.5'" in screen
    assert "Error: temperature must be a number from 0.0 to 2.0 (got 3.0)" in screen
    assert "Error: top_p must be a number from 0.0 to 1.0 (got -1.0)" in screen
    assert "Set parameter 'top_p' to '0.5'" in screen and "Set system message." in screen
    assert "Cleared session context" in screen
    data = stored(node, chat.session["id"])
    assert data["messages"] == []  # cleared
    assert data["settings"]["temperature"] == 1.5 and data["settings"]["top_p"] == 0.5
    assert data["settings"]["system"] == "Be brief." and data["settings"]["max_tokens"] == 6
    assert data["token_count"] > 0
    assert "never sent" not in screen


def test_turns_are_stored_with_history_resent(node):
    """The second request the node received carried the first exchange, as it was stored."""
    with RecordingProxy(node.url) as proxy:
        client = Client(settings.parse_address(proxy.address, 0))
        info = client.post("/api/show", {"model": "endless"})
        chat = Chat(
            client, info, open_session(client, info["name"], None, False), io.StringIO(), False
        )
        with create_pipe_input() as inp:
            inp.send_text("/set max_tokens 5\nfirst question\nsecond question\n/bye\n")
            Repl(chat, PromptSession(input=inp, output=DummyOutput())).run()
        sent = [json.loads(b)["messages"] for b in proxy.bodies("POST", "/api/chat")]
    data = stored(node, chat.session["id"])
    assert [(m["role"], m["content"][:15]) for m in data["messages"][::2]] == [
        ("user", "first question"),
        ("user", "second question"),
    ]
    assert all(m["role"] == "assistant" and m["content"] for m in data["messages"][1::2])
    assert all(m["timestamp"] for m in data["messages"])
    assert len(sent) == 2
    assert sent[0] == [{"role": "user", "content": "first question"}]
    assert sent[1] == [
        {"role": m["role"], "content": m["content"]} for m in data["messages"][:2]
    ] + [{"role": "user", "content": "second question"}]


def test_help_unknown_and_ctrl_keys(node):
    screen, _ = drive(node, "tiny", "/?\n/nope\n\x03/show info\n\x04")
    assert "/set" in screen and "/bye" in screen and '"""' in screen
    assert "Unknown command '/nope'. Type /? for help" in screen
    assert "Use Ctrl + d or /bye to exit." in screen
    assert "Model: org/tiny" in screen and "Architecture: llama" in screen


def test_multiline_input(node):
    _screen, chat = drive(
        node, "endless", '/set max_tokens 3\n"""first line\nsecond line\n"""\n/bye\n'
    )
    assert chat.session["messages"][0]["content"] == "first line\nsecond line"


def test_images_on_a_model_without_vision(node, tmp_path):
    img = tmp_path / "cat pic.png"
    img.write_bytes(PNG)
    escaped = str(img).replace(" ", "\\ ")
    screen, chat = drive(
        node, "endless", f"/set max_tokens 3\n{escaped} what is this\nplain question\n/bye\n"
    )
    assert f"Added image '{img}'" in screen
    assert "Error: model 'org/endless' does not support images" in screen
    # the session went on: the next question was answered and stored, the failed one was not
    assert [m["content"] for m in chat.session["messages"][::2]] == ["plain question"]


def test_sessions_and_load(node):
    _, first = drive(node, "endless", "/set max_tokens 3\nremember me\n/bye\n")
    short = first.session["id"][:8]
    screen, second = drive(node, "endless", f"/sessions\n/load {short}\n/load zzzz\n/bye\n")
    assert short in screen and "remember me" in screen
    assert f"Loaded session {short} (2 messages)" in screen
    assert "Error: session id 'zzzz' must be at least 4 hex characters" in screen
    assert second.session["id"] == first.session["id"]


def _prompt_tokens(stdout: str) -> int:
    return int(re.search(r"prompt tokens:\s+(\d+)", stdout).group(1))


def test_one_shot_and_resume_after_server_restart(node, tmp_path):
    env = node.client_env()
    r = run_cli("node", "run", "tiny", "Tell me a story", env=env)
    assert r.returncode == 0, r.stderr
    assert "\x1b[" not in r.stdout  # not a terminal: no escape codes
    piped = run_cli("node", "run", "tiny", env=env, input="from a pipe\n")
    assert piped.returncode == 0, piped.stderr
    sessions = httpx.get(node.url + "/api/sessions", params={"model": "tiny"}).json()["sessions"]
    assert [s["preview"] for s in sessions][:2] == ["from a pipe\n", "Tell me a story"]
    # a session with short replies, so that its history fits the tiny context
    sid = httpx.post(
        node.url + "/api/sessions", json={"model": "tiny", "settings": {"max_tokens": 5}}
    ).json()["id"]
    first = run_cli(
        "node", "run", "tiny", "Tell me a story", "--session", sid[:8], "--verbose", env=env
    )
    assert first.returncode == 0, first.stderr
    node.stop()
    node.start()
    resumed = run_cli("node", "run", "tiny", "Tell me a story", "--continue", "--verbose", env=env)
    assert resumed.returncode == 0, resumed.stderr
    # the model received the stored history again: more prompt tokens than the first turn
    assert _prompt_tokens(resumed.stdout) > _prompt_tokens(first.stdout) + 10
    messages = stored(node, sid)["messages"]
    assert [m["content"] for m in messages[::2]] == ["Tell me a story", "Tell me a story"]


def test_errors(node):
    env = node.client_env()
    r = run_cli("node", "run", "ghost", "hi", env=env)
    assert r.returncode == 1 and r.stderr.startswith("Error: model 'ghost' not found")
    r = run_cli("node", "run", "tiny", "hi", "--session", "abcdef12", env=env)
    assert r.returncode == 1 and r.stderr == "Error: session 'abcdef12' not found\n"
    r = run_cli("node", "run", "tiny", "--think", "--hidethinking", "hi", env=env)
    assert r.returncode == 1 and "cannot be used together" in r.stderr


def _png(w: int, h: int) -> bytes:
    import struct
    import zlib

    rows = b"".join(
        b"\x00" + bytes((x * 9 + y * 7) % 256 for x in range(w) for _ in range(3)) for y in range(h)
    )

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def test_vision_end_to_end_with_a_real_projector(tmp_path, tiny_gguf):
    """A tiny CLIP projector beside the model: the image really goes through llama.cpp."""
    from tests.support.procs import ServerProcess
    from tests.support.tiny_vision import make_tiny_mmproj

    home = tmp_path / "home"
    make_tiny_mmproj(home / "models" / "org" / "vision" / "mmproj-tiny.gguf")
    register_file(home, "org/vision", tiny_gguf)
    img = tmp_path / "photo.png"
    img.write_bytes(_png(32, 32))
    with ServerProcess(home) as node:
        show = httpx.post(node.url + "/api/show", json={"model": "vision"}).json()
        assert "vision" in show["capabilities"]
        b64 = base64.b64encode(img.read_bytes()).decode()
        other = base64.b64encode(_png(16, 40)).decode()

        def reply(images):
            r = httpx.post(
                node.url + "/api/chat",
                timeout=60,
                json={
                    "model": "vision",
                    "stream": False,
                    "options": {"num_predict": 8, "seed": 1, "temperature": 1.0},
                    "messages": [{"role": "user", "content": "what is this?", "images": images}],
                },
            )
            assert r.status_code == 200, r.text
            return r.json()["message"]["content"]

        # same text and seed: only the pixels differ, so the image reached the model
        assert reply([b64]) != reply([other])
        assert reply([b64]) == reply([b64])
        screen, chat = drive(node, "vision", f"/set max_tokens 3\n{img} describe this\n/bye\n")
        assert f"Added image '{img}'" in screen and "Error" not in screen
        stored_msgs = stored(node, chat.session["id"])["messages"]
        assert stored_msgs[0]["content"] == "describe this" and stored_msgs[0]["images"] == [b64]
        assert stored_msgs[1]["role"] == "assistant"


def _in_force(screen: str, key: str) -> list[str]:
    """What each `/? set` on the screen said `key` is now."""
    return re.findall(rf"/set {key} <[^>]+>\s+.*\(now ([^)]*)\)", screen)


def test_set_help_shows_the_sampling_the_next_reply_uses(tmp_path, endless_gguf):
    """The numbers in `/? set` are read from where the request takes them: the session's
    settings, or the model's own PARAMETERs, never a number written into the help."""
    home = tmp_path / "home"
    register_file(home, "org/cold", endless_gguf, options={"temperature": 0.2, "num_predict": 7})
    server = start_node(home, {"org/endless": endless_gguf}, env=SMALL_CONTEXT)
    try:
        with RecordingProxy(server.url) as proxy:
            screen, _ = drive(proxy, "endless", "/? set\n/set max_tokens 3\nhi\n/bye\n")
            sent = json.loads(proxy.bodies("POST", "/api/chat")[0])["options"]
            changed, _ = drive(proxy, "endless", "/set temperature 1.1\n/? set\n/bye\n")
            cold, _ = drive(proxy, "org/cold", "/? set\n/bye\n")
    finally:
        server.stop()
    assert _in_force(screen, "temperature") == [str(sent["temperature"])]
    assert _in_force(screen, "top_p") == [str(sent["top_p"])]
    assert _in_force(screen, "max_tokens") == ["no limit"]
    assert _in_force(changed, "temperature") == ["1.1"]
    assert _in_force(cold, "temperature") == ["0.2, the model's own"]
    assert _in_force(cold, "max_tokens") == ["7, the model's own"]


def test_think_on_a_model_that_cannot_think_says_so(node):
    screen, chat = drive(node, "tiny", "/set think\n/bye\n")
    assert "Error: model 'org/tiny' does not support thinking" in screen
    assert "Set 'think' mode." not in screen
    assert stored(node, chat.session["id"])["settings"]["show_thinking"] is False
    r = run_cli("node", "run", "tiny", "--think", "hi", env=node.client_env())
    assert (r.returncode, r.stderr) == (1, "Error: model 'tiny' does not support thinking\n")


def test_sessions_shows_each_first_message_on_one_line(node):
    first = "a first line\nand a second line\x1b[31m, red, that goes on and on and on"
    sid = httpx.post(node.url + "/api/sessions", json={"model": "org/endless"}).json()["id"]
    httpx.post(
        f"{node.url}/api/sessions/{sid}/messages",
        json={"messages": [{"role": "user", "content": first}], "tokens": 1},
    ).raise_for_status()
    screen, _ = drive(node, "endless", "/sessions\n/bye\n")
    table = screen.splitlines()
    header = next(i for i, line in enumerate(table) if line.startswith("ID "))
    row = next(line for line in table if line.startswith(sid[:8]))
    assert row.endswith("a first line and a second line [31m, re…")  # 40 characters
    assert table.index(row) <= header + 2 and "\x1b" not in row
    assert not any(line.startswith("and a second line") for line in table)
