"""Text-prefix chains: the router (from a raw body) and the node (from its own messages) must
name a request's prefix alike, and a conversation's next turn must extend its last one."""

from __future__ import annotations

import json

import msgspec
import pytest

from llmlb import prefix
from llmlb.balancer.affinity import matched as node_matched
from llmlb.balancer.affinity import remember, request_chain
from llmlb.balancer.nodes import NodeEntry
from llmlb.balancer.wire import Heartbeat
from llmlb.server.messages import chat_messages
from llmlb.server.requests import OpenAIChat
from llmlb.store.models import Model

MODEL = Model(name="org/m", path="/x.gguf", format="GGUF", size_bytes=1)


def node_chain(body: dict) -> list[prefix.Point]:
    """What the node computes: the typed request, its messages as the engine gets them."""
    data = msgspec.json.decode(json.dumps(body).encode(), type=OpenAIChat)
    chat = prefix.messages_of(chat_messages(data.messages, MODEL))
    assert chat is not None
    return prefix.chat_chain(MODEL.name, chat)


def router_chain(path: str, body: dict) -> list[prefix.Point]:
    return request_chain(path, MODEL.name, json.dumps(body).encode())


def test_the_router_and_the_node_name_a_chat_alike():
    body = {
        "model": "m",
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
            {"role": "assistant", "content": None, "tool_calls": []},
            {"role": "user", "content": "x" * 3000},
        ],
        "temperature": 0,
    }
    chain = router_chain("/v1/chat/completions", body)
    assert chain == node_chain(body)
    assert len(chain) == 3 + 3  # three short messages, and one of three blocks


def test_the_next_turn_extends_the_chain_of_the_last_one():
    turn1 = [{"role": "user", "content": "hello " * 300}]
    turn2 = [*turn1, {"role": "assistant", "content": "hi"}, {"role": "user", "content": "more"}]
    one = router_chain("/api/chat", {"model": "m", "messages": turn1})
    two = router_chain("/api/chat", {"model": "m", "messages": turn2})
    assert two[: len(one)] == one
    other_model = request_chain("/api/chat", "org/other", json.dumps({"messages": turn1}).encode())
    assert not set(one) & set(other_model)
    assert prefix.matched({p.hash for p in one}, two) == one[-1].chars


def test_generate_is_a_chat_unless_raw_and_completions_are_raw():
    chat = router_chain("/api/generate", {"prompt": "p", "system": "s"})
    assert chat == prefix.chat_chain(MODEL.name, [("system", "s"), ("user", "p")])
    raw = router_chain("/api/generate", {"prompt": "p", "raw": True})
    assert raw == prefix.prompt_chain(MODEL.name, "p")
    assert router_chain("/v1/completions", {"prompt": ["p"]}) == raw


@pytest.mark.parametrize(
    "path,body",
    [
        ("/api/chat", {"messages": [{"role": "user", "content": "x", "images": ["aGk="]}]}),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
        ),
        ("/api/chat", {"messages": "not a list"}),
        ("/api/chat", {"messages": [{"role": 3, "content": "x"}]}),
        ("/api/generate", {"prompt": "x", "images": ["aGk="]}),
        ("/v1/embeddings", {"input": "x"}),
    ],
)
def test_requests_without_a_text_prefix_have_no_chain(path, body):
    assert router_chain(path, body) == []


def test_packed_hashes_survive_a_heartbeat():
    hashes = [p.hash for p in prefix.prompt_chain("m", "y" * 5000)]
    beat = Heartbeat(id="n1", host="127.0.0.1", port=1, prefixes=prefix.pack(hashes))
    again = msgspec.json.decode(msgspec.json.encode(beat), type=Heartbeat)
    assert prefix.unpack(again.prefixes) == hashes


def test_a_heartbeat_with_a_broken_hash_list_is_refused():
    with pytest.raises(msgspec.ValidationError, match="whole 8-byte hashes"):
        msgspec.convert({"id": "n1", "host": "127.0.0.1", "port": 1, "prefixes": "AAAA"}, Heartbeat)


def test_a_request_sent_to_a_node_counts_as_held_there_for_a_while():
    chain = prefix.prompt_chain("m", "z" * 2500)
    node = NodeEntry(id="n1", host="127.0.0.1", port=1)
    assert node_matched(node, chain) == 0
    remember(node, chain, secs=60)
    assert node_matched(node, chain) == chain[-1].chars
    remember(node, chain, secs=-1)  # expired
    assert node_matched(node, chain) == 0


def test_a_node_reports_its_sequences_first_then_its_newest_files_within_the_bound():
    from llmlb.engine.holdings import Holdings
    from llmlb.engine.wire import Holds

    held = Holdings()
    held.add_saved([("m/old", [1, 2]), ("m/new", [3, 4])])
    held.apply(100, Holds(seq=0, prefix=[5, 6]))
    held.apply(100, Holds(entry="m/newest", prefix=[7]))
    assert prefix.unpack(held.summary()) == [5, 6, 7, 3, 4, 1, 2]
    assert prefix.unpack(held.summary(limit=4)) == [5, 6, 7, 3]
    held.apply(100, Holds(entry="m/new", prefix=[]))  # evicted
    held.forget_runner(100)  # unloaded: its sequences hold nothing, its files stay
    assert prefix.unpack(held.summary()) == [7, 1, 2]
