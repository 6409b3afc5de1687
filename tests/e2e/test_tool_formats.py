"""Tool-call formats of templates that have their own (hermes, Llama 3), thinking switches,
capabilities and the refusals, on tiny random-weight models through a real node server.

Random weights say nothing sensible, so whatever is a valid call here is the grammar's work:
the tools take only enums, which bounds every call. The hermes model prefers its one-token
`<tool_call>` wherever it may write it (TinySpec.favourite), as a model that wants to call.
"""

from __future__ import annotations

import json
import os

import httpx
import jsonschema
from llama_cpp import Llama

from llmlb.engine.llama_template import ChatTemplate
from tests.e2e.conftest import NodeSpec
from tests.support import templates
from tests.support.procs import run_cli
from tests.support.tiny_model import TinySpec, make_tiny_gguf

UNIT = {"type": "object", "properties": {"unit": {"enum": ["c", "f"]}}, "required": ["unit"]}
ZONE = {"type": "object", "properties": {"zone": {"enum": ["utc", "cet"]}}, "required": ["zone"]}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": UNIT}},
    {"type": "function", "function": {"name": "get_time", "parameters": ZONE}},
]
ARGS = {"get_weather": UNIT, "get_time": ZONE}
ASK = [{"role": "user", "content": "What is the weather?"}]


def _tiny(name: str, spec: TinySpec):
    return lambda d: make_tiny_gguf(d / f"{name}.gguf", spec)


NODE = NodeSpec(
    {
        "test/hermes": _tiny(
            "hermes", TinySpec(chat_template=templates.HERMES, favourite="<tool_call>")
        ),
        "test/llama3": _tiny("llama3", TinySpec(chat_template=templates.LLAMA3)),
        "test/plain": _tiny("plain", TinySpec(chat_template=None)),
        "test/thinker": _tiny("thinker", TinySpec(chat_template=templates.THINKER)),
        "test/opens": _tiny("opens", TinySpec(chat_template=templates.OPENS_THINKING)),
    }
)


def calls_of(r) -> list[tuple[str, dict]]:
    out = []
    for c in r.choices[0].message.tool_calls or []:
        args = json.loads(c.function.arguments)
        jsonschema.validate(args, ARGS[c.function.name])
        out.append((c.function.name, args))
    return out


def test_hermes_required_call_is_read_from_its_tags(oai):
    r = oai.chat.completions.create(model="test/hermes", messages=ASK, tools=TOOLS,
                                    tool_choice="required", parallel_tool_calls=False,
                                    max_tokens=120, seed=1)  # fmt: skip
    assert r.choices[0].finish_reason == "tool_calls"
    assert r.choices[0].message.content is None
    assert len(calls_of(r)) == 1


def test_hermes_auto_call_is_held_by_the_grammar_once_the_model_opens_it(oai):
    # left alone, this model writes <tool_call> over and over: no call in that
    free = oai.chat.completions.create(model="test/hermes", messages=ASK, max_tokens=3, seed=1)
    assert free.choices[0].message.content == "<tool_call>" * 3
    # with tools (auto), its first <tool_call> starts the grammar, which makes a call of it
    r = oai.chat.completions.create(model="test/hermes", messages=ASK, tools=TOOLS,
                                    parallel_tool_calls=False, max_tokens=120, seed=1)  # fmt: skip
    assert r.choices[0].finish_reason == "tool_calls"
    assert len(calls_of(r)) == 1


def test_llama3_required_and_named_calls(oai):
    r = oai.chat.completions.create(model="test/llama3", messages=ASK, tools=TOOLS,
                                    tool_choice="required", max_tokens=120, seed=2)  # fmt: skip
    assert len(calls_of(r)) == 1  # Llama 3 makes one call a turn
    named = {"type": "function", "function": {"name": "get_time"}}
    r = oai.chat.completions.create(model="test/llama3", messages=ASK, tools=TOOLS,
                                    tool_choice=named, max_tokens=120, seed=2)  # fmt: skip
    assert [name for name, _ in calls_of(r)] == ["get_time"]


def test_history_reaches_a_hermes_template_natively(node, oai):
    history = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"unit": "c"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "-3"},
    ]  # fmt: skip
    r = oai.chat.completions.create(model="test/hermes", messages=history, tools=TOOLS,
                                    tool_choice="required", parallel_tool_calls=False,
                                    max_tokens=120, seed=3)  # fmt: skip
    assert len(calls_of(r)) == 1
    # the prompt was the template's own rendering of the call (its arguments an object, as
    # this template wants them) and of the result (named after its call)
    native = [
        *ASK,
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": {"unit": "c"}}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "-3", "name": "get_weather"},
    ]  # fmt: skip
    text = ChatTemplate("t", templates.HERMES, "<s>", "</s>").render(native, 100_000, tools=TOOLS)
    vocab = Llama(str(node.home / "models" / "test/hermes" / "hermes.gguf"), vocab_only=True,
                  verbose=False)  # fmt: skip
    assert r.usage.prompt_tokens == len(vocab.tokenize(text.encode(), add_bos=True, special=True))


def test_a_model_without_a_template_refuses_tools_before_loading(node):
    body = {"model": "test/plain", "messages": ASK, "tools": TOOLS, "max_tokens": 4}
    r = httpx.post(node.url + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 400
    assert r.json()["error"]["message"] == (
        "model 'test/plain' has no chat template, so it cannot be given tools"
    )
    r = httpx.post(node.url + "/api/chat", json={**body, "stream": False}, timeout=60)
    assert r.status_code == 400 and "cannot be given tools" in r.json()["error"]
    loaded = [m["name"] for m in httpx.get(node.url + "/api/ps").json()["models"]]
    assert "test/plain" not in loaded


def test_think_is_taken_by_a_thinking_model_and_refused_by_others(node):
    def chat(model: str, think: bool) -> httpx.Response:
        body = {"model": model, "messages": ASK, "think": think, "stream": False,
                "options": {"num_predict": 4}}  # fmt: skip
        return httpx.post(node.url + "/api/chat", json=body, timeout=60)

    assert chat("test/thinker", True).status_code == 200
    assert chat("test/thinker", False).status_code == 200
    refused = chat("test/hermes", True)
    assert refused.status_code == 400
    assert refused.json()["error"] == "model 'test/hermes' does not support thinking"
    assert chat("test/hermes", False).status_code == 200  # off is fine, as in ollama


def test_a_prompt_that_opens_thinking_starts_the_reply_thinking(node):
    body = {"model": "test/opens", "messages": ASK, "stream": False, "options": {"num_predict": 40}}
    r = httpx.post(node.url + "/api/chat", json=body, timeout=60).json()
    assert r["message"]["thinking"] and r["message"]["content"] == ""
    # a grammar from the first token leaves no room: the thinking is closed, the reply JSON
    r = httpx.post(node.url + "/api/chat", json={**body, "format": UNIT}, timeout=60).json()
    assert "thinking" not in r["message"]
    jsonschema.validate(json.loads(r["message"]["content"]), UNIT)


def test_show_reports_capabilities_and_the_tool_format(node):
    def show(model: str) -> dict:
        return httpx.post(node.url + "/api/show", json={"model": model}, timeout=30).json()

    assert show("test/plain")["capabilities"] == ["completion"]
    assert show("test/plain")["tool_format"] is None
    assert show("test/hermes")["capabilities"] == ["completion", "tools"]
    assert show("test/hermes")["tool_format"] == "hermes"
    assert show("test/llama3")["tool_format"] == "llama3"
    assert show("test/thinker")["capabilities"] == ["completion", "tools", "thinking"]
    env = {**os.environ, "LLMLB_HOST": node.url}
    out = run_cli("node", "show", "test/thinker", env=env)
    assert out.returncode == 0, out.stderr
    assert "  Capabilities: completion, tools, thinking\n" in out.stdout
    assert "  Tool Calls: generic JSON" in out.stdout
