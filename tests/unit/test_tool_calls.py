"""Tool calls read out of streamed replies (engine/tool_calls.py), and what a request with
tools makes of a template (engine/chat_plan.py)."""

import json
import random

import pytest

from llmlb.engine import chat_plan
from llmlb.engine.llama_template import caps_of
from llmlb.engine.tool_calls import CallDelta, GenericParser, HermesParser, Llama3Parser
from tests.support import templates
from tests.support.tiny_model import CHATML

WEATHER = chat_plan.Tool(
    "get_weather",
    "The weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIME = chat_plan.Tool("get_time", "", {"type": "object", "properties": {}})


def plan_of(source, messages, **kwargs):
    """chat_plan.plan with what the template renders (a runner finds it; here, in-process)."""
    return chat_plan.plan(source, caps_of(source), messages, **kwargs)


def read(parser_class, text: str, seed: int = 0, parallel: bool = True):
    """Feed `text` in random small pieces, as tokens come; (content, calls, events)."""
    rnd = random.Random(seed)
    parser = parser_class(parallel)
    events = []
    i = 0
    while i < len(text):
        n = rnd.randint(1, 5)
        events += parser.feed(text[i : i + n])
        i += n
    events += parser.finish()
    content = "".join(e for e in events if isinstance(e, str))
    calls: dict[int, dict] = {}
    for e in events:
        if isinstance(e, CallDelta):
            call = calls.setdefault(e.index, {"id": e.id, "name": None, "arguments": ""})
            assert call["id"] == e.id  # every delta of a call carries its id
            if e.name is not None:
                assert call["name"] is None  # the name comes once, first
                call["name"] = e.name
            call["arguments"] += e.arguments
    return content, list(calls.values()), events


@pytest.mark.parametrize("seed", range(5))
def test_generic_calls_stream_whatever_the_pieces(seed):
    text = (
        '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris", "x": "}]"}}, '
        '{"name": "get_time", "arguments": {}}]}'
    )
    content, calls, events = read(GenericParser, text, seed)
    assert content == ""
    assert [c["name"] for c in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris", "x": "}]"}
    assert json.loads(calls[1]["arguments"]) == {}
    assert calls[0]["id"] != calls[1]["id"] and calls[0]["id"].startswith("call_")
    # the arguments came as they were written, in more than one delta
    assert sum(1 for e in events if isinstance(e, CallDelta) and e.arguments) > 2


def test_generic_reply_is_content_decoded_as_it_streams():
    content, calls, _ = read(GenericParser, '{"response": "Hi \\"you\\" \\u00e9\\ud83d\\ude00\\n"}')
    assert (content, calls) == ('Hi "you" é😀\n', [])


def test_generic_reply_held_to_a_schema_is_its_json():
    content, _, _ = read(GenericParser, '{"response": {"a": [1, 2], "b": "}"}}')
    assert json.loads(content) == {"a": [1, 2], "b": "}"}


def test_generic_without_parallel_calls_keeps_the_first():
    text = '{"tool_calls": [{"name": "get_weather", "arguments": {}}, {"name": "get_time", "arguments": {}}]}'
    _, calls, _ = read(GenericParser, text, parallel=False)
    assert [c["name"] for c in calls] == ["get_weather"]


def test_text_that_is_not_the_generic_json_is_content():
    assert read(GenericParser, "Sorry, I cannot.")[:2] == ("Sorry, I cannot.", [])
    assert read(GenericParser, '{"answer": 4}')[:2] == ('{"answer": 4}', [])


@pytest.mark.parametrize("seed", range(5))
def test_hermes_blocks_are_calls_and_the_rest_content(seed):
    text = (
        "Let me look.\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>\n'
        '<tool_call>\n{"arguments": {}, "name": "get_time"}\n</tool_call>'
    )
    content, calls, _ = read(HermesParser, text, seed)
    assert content == "Let me look.\n"
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [
        ("get_weather", {"city": "Oslo"}),
        ("get_time", {}),
    ]


def test_hermes_text_that_only_looks_like_a_tag_is_content():
    text = "a <b> and <tool_ca are text; <tool_call>not json</tool_call> too"
    assert read(HermesParser, text)[:2] == (text, [])
    assert read(HermesParser, "cut <tool_cal")[:2] == ("cut <tool_cal", [])


def test_llama3_reply_is_a_call_or_content():
    _, calls, _ = read(Llama3Parser, '{"name": "get_weather", "parameters": {"city": "Rome"}}')
    assert [(c["name"], c["arguments"]) for c in calls] == [("get_weather", '{"city": "Rome"}')]
    assert read(Llama3Parser, '{"answer": "Rome"}')[:2] == ('{"answer": "Rome"}', [])
    assert read(Llama3Parser, "Rome is sunny.")[:2] == ("Rome is sunny.", [])


def test_a_call_cut_short_keeps_what_was_written():
    _, calls, _ = read(GenericParser, '{"tool_call": {"name": "get_weather", "arguments": {"ci')
    assert calls == [{"id": calls[0]["id"], "name": "get_weather", "arguments": '{"ci'}]


# -- plans -------------------------------------------------------------------------------

ASK = [{"role": "user", "content": "Weather in Oslo?"}]


def test_a_template_without_tools_gets_the_generic_format_in_its_system_prompt():
    plan = plan_of(CHATML, ASK, tools=[WEATHER], choice="auto")
    assert plan.format == "generic" and plan.grammar and plan.trigger is None
    system = plan.messages[0]
    assert system["role"] == "system" and '"get_weather"' in system["content"]
    assert '{"response": "..."}' in system["content"]
    assert "tools" in plan.variables  # harmless: this template does not use it
    required = plan_of(CHATML, ASK, tools=[WEATHER], choice="required")
    assert '"response"' not in required.messages[0]["content"]
    assert "response" not in required.grammar


def test_a_hermes_template_gets_the_tools_and_a_grammar_from_its_tag_on():
    auto = plan_of(templates.HERMES, ASK, tools=[WEATHER], choice="auto")
    assert auto.format == "hermes" and auto.messages == ASK
    assert auto.variables["tools"][0]["function"]["name"] == "get_weather"
    assert auto.trigger == "<tool_call>" and 'root ::= "<tool_call>"' in auto.grammar
    required = plan_of(templates.HERMES, ASK, tools=[WEATHER], choice="required")
    assert required.trigger is None and required.grammar


def test_a_named_function_leaves_only_it_in_the_grammar():
    plan = plan_of(CHATML, ASK, tools=[WEATHER, TIME], choice="required", forced="get_time")
    assert "get_time" in plan.grammar and "get_weather" not in plan.grammar


def test_llama3_auto_is_free_and_required_is_held():
    auto = plan_of(templates.LLAMA3, ASK, tools=[WEATHER], choice="auto")
    assert (auto.format, auto.grammar, auto.parallel) == ("llama3", None, False)
    required = plan_of(templates.LLAMA3, ASK, tools=[WEATHER], choice="required")
    assert '"\\"parameters\\""' in required.grammar


def test_none_renders_no_tools_and_reads_no_calls():
    plan = plan_of(templates.HERMES, ASK, tools=[WEATHER], choice="none")
    assert (plan.format, plan.grammar, plan.variables) == (None, None, {})


def test_a_format_with_tools_is_the_generic_reply_schema():
    schema = {"type": "object", "properties": {"temp": {"type": "number"}}, "required": ["temp"]}
    plan = plan_of(templates.HERMES, ASK, tools=[WEATHER], schema=schema)
    assert plan.format == "generic" and '"\\"temp\\""' in plan.grammar


HISTORY = [
    {"role": "user", "content": "Weather in Oslo?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"id": "call_1", "name": "get_weather", "arguments": '{"city": "Oslo"}'}],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "-3 and snow"},
]


def test_history_is_native_where_the_template_renders_it():
    plan = plan_of(templates.HERMES, HISTORY, tools=[WEATHER])
    call = plan.messages[1]["tool_calls"][0]
    assert call["function"] == {"name": "get_weather", "arguments": {"city": "Oslo"}}  # an object
    assert plan.messages[2] == {**HISTORY[2], "name": "get_weather"}  # named from its call


def test_history_is_words_where_the_template_cannot_render_it():
    plan = plan_of(CHATML, HISTORY, tools=[WEATHER])
    # [0] is the system prompt
    assert plan.messages[2] == {
        "role": "assistant",
        "content": 'Calling get_weather with {"city": "Oslo"}.',
    }
    assert plan.messages[3] == {"role": "user", "content": "Result of get_weather: -3 and snow"}


def test_thinking_is_switched_where_the_template_can():
    assert plan_of(templates.THINKER, ASK, think=False).variables == {"enable_thinking": False}
    assert plan_of(templates.THINKER, ASK, think=True).variables == {"enable_thinking": True}
    # a grammar holds the reply from its first token: no room to think
    held = plan_of(templates.THINKER, ASK, think=True, json_mode=True)
    assert held.variables == {"enable_thinking": False}
    assert plan_of(CHATML, ASK, think=False).variables == {}


def test_duplicate_tool_names_are_refused():
    with pytest.raises(chat_plan.BadRequest, match="two tools are named 'get_weather'"):
        chat_plan.check_tools([WEATHER, WEATHER])


def test_a_second_call_cut_short_is_not_content():
    parser = HermesParser()
    text = '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>\n<tool_call>{"na'
    events = parser.feed(text) + parser.finish()
    assert [e for e in events if isinstance(e, str)] == []
    assert [c.name for c in parser.calls] == ["get_weather"]
