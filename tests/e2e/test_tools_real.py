"""Structured output and tool calling on a real model (SmolLM2-135M-Instruct) through a real
node server, driven by the official `openai` and `ollama` clients.

SmolLM2's template knows nothing of tools, so its tool calls go through the generic JSON
format: the grammar makes even this small model's reply a valid call. Assertions are on the
parsed results: JSON that loads, replies that validate against their schema, calls of the
tools given with arguments valid for them. Every generation is bounded; temperature 0 keeps
the replies the same from run to run.
"""

from __future__ import annotations

import json
import threading

import httpx
import jsonschema
from pydantic import BaseModel

from tests.e2e.conftest import NodeSpec

MODEL = "smollm2-135m-instruct"
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer"},
        "role": {"enum": ["admin", "editor", "viewer"]},
        "address": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 40},
                "country": {"type": "string", "maxLength": 40},
            },
            "required": ["city", "country"],
        },
    },
    "required": ["name", "age", "role", "address"],
    "additionalProperties": False,
}
WEATHER_ARGS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 40},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
}
TIME_ARGS = {
    "type": "object",
    "properties": {"timezone": {"type": "string", "maxLength": 40}},
    "required": ["timezone"],
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city",
            "parameters": WEATHER_ARGS,
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "The current time in a timezone",
            "parameters": TIME_ARGS,
        },
    },
]
ARGS = {"get_weather": WEATHER_ARGS, "get_time": TIME_ARGS}
LONDON = "Tell me the weather in London, please."


NODE = NodeSpec({"HuggingFaceTB/SmolLM2-135M-Instruct": "smollm2"}, env={"LLMLB_NUM_PARALLEL": "4"})


def ask(oai, content: str, **kw):
    kw.setdefault("max_tokens", 120)
    kw.setdefault("temperature", 0)
    return oai.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": content}], **kw
    )


def valid_call(name: str, arguments: dict) -> None:
    assert name in ARGS
    jsonschema.validate(arguments, ARGS[name])


# -- structured output ---------------------------------------------------------------------


def test_json_object_mode_gives_one_json_object(oai):
    r = ask(oai, "Describe a cat.", response_format={"type": "json_object"})
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_json_schema_reply_validates_against_it(oai):
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    r = ask(oai, "Describe a person.", response_format=fmt)
    assert r.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(r.choices[0].message.content), PERSON)


def test_streamed_json_schema_reply_validates_too(oai):
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    text, chunks = "", 0
    for chunk in ask(oai, "Describe a person.", response_format=fmt, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
            chunks += 1
    assert chunks > 3  # it streamed
    jsonschema.validate(json.loads(text), PERSON)


class Address(BaseModel):
    city: str
    country: str


class Person(BaseModel):
    name: str
    age: int
    address: Address


def test_the_openai_clients_parse_helper_gets_its_pydantic_model(oai):
    # what LangChain's with_structured_output(method="json_schema") does: a strict schema
    # made from a pydantic model, with $defs and $ref
    r = oai.chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": "Describe a person."}],
        response_format=Person,
        max_tokens=120,
        temperature=0,
    )
    person = r.choices[0].message.parsed
    assert isinstance(person, Person) and isinstance(person.address, Address)


def test_ollama_format_json_gives_one_json_object(oll):
    r = oll.chat(model=MODEL, messages=[{"role": "user", "content": "Describe a cat."}],
                 format="json", options={"temperature": 0, "num_predict": 120})  # fmt: skip
    assert r.done_reason == "stop"
    assert isinstance(json.loads(r.message.content), dict)


def test_ollama_format_schema_validates_also_on_generate(oll):
    r = oll.chat(model=MODEL, messages=[{"role": "user", "content": "Describe a person."}],
                 format=PERSON, options={"temperature": 0, "num_predict": 120})  # fmt: skip
    jsonschema.validate(json.loads(r.message.content), PERSON)
    g = oll.generate(model=MODEL, prompt="Describe a person.", format=PERSON,
                     options={"temperature": 0, "num_predict": 120})  # fmt: skip
    jsonschema.validate(json.loads(g.response), PERSON)


def test_four_concurrent_requests_two_held_to_a_schema_two_free(oai):
    # the constrained ones are valid, and the free ones say exactly what they say alone:
    # a grammar in the batch changes nothing for the requests beside it
    free_questions = ["Name three colours.", "What do bees make?"]
    alone = [ask(oai, q, max_tokens=40).choices[0].message.content for q in free_questions]
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    results: dict[str, object] = {}
    start = threading.Barrier(4)

    def held(key: str, stream: bool) -> None:
        start.wait(60)
        if stream:
            chunks = ask(oai, f"Describe {key}.", response_format=fmt, stream=True)
            results[key] = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        else:
            results[key] = (
                ask(oai, f"Describe {key}.", response_format=fmt).choices[0].message.content
            )

    def free(i: int) -> None:
        start.wait(60)
        results[f"free{i}"] = ask(oai, free_questions[i], max_tokens=40).choices[0].message.content

    threads = [
        threading.Thread(target=held, args=("a teacher", False)),
        threading.Thread(target=held, args=("a sailor", True)),
        threading.Thread(target=free, args=(0,)),
        threading.Thread(target=free, args=(1,)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    for key in ("a teacher", "a sailor"):
        jsonschema.validate(json.loads(str(results[key])), PERSON)
    assert [results["free0"], results["free1"]] == alone


# -- tools: OpenAI -----------------------------------------------------------------------------


def calls_of(r) -> list[tuple[str, dict]]:
    calls = r.choices[0].message.tool_calls or []
    assert len({c.id for c in calls}) == len(calls) and all(c.id.startswith("call_") for c in calls)
    return [(c.function.name, json.loads(c.function.arguments)) for c in calls]


def test_tool_choice_required_gives_a_valid_call(oai):
    r = ask(oai, "What time is it in Tokyo?", tools=TOOLS, tool_choice="required")
    assert r.choices[0].finish_reason == "tool_calls"
    assert r.choices[0].message.content is None
    calls = calls_of(r)
    assert calls
    for name, args in calls:
        valid_call(name, args)


def test_a_named_function_is_the_one_called(oai):
    choice = {"type": "function", "function": {"name": "get_time"}}
    r = ask(oai, LONDON, tools=TOOLS, tool_choice=choice)  # a weather question, on purpose
    calls = calls_of(r)
    assert calls and {name for name, _ in calls} == {"get_time"}
    for name, args in calls:
        valid_call(name, args)


def test_parallel_tool_calls_false_gives_one_call(oai):
    r = ask(oai, LONDON, tools=TOOLS, tool_choice="required", parallel_tool_calls=False)
    (call,) = calls_of(r)
    valid_call(*call)


def test_auto_lets_the_model_choose_a_call_or_an_answer(oai):
    outcomes = set()
    for question in (LONDON, "Hi! How are you?"):
        r = ask(oai, question, tools=TOOLS)
        message = r.choices[0].message
        if message.tool_calls:
            assert r.choices[0].finish_reason == "tool_calls"
            for name, args in calls_of(r):
                valid_call(name, args)
            outcomes.add("call")
        else:
            assert r.choices[0].finish_reason == "stop"
            assert message.content and not message.content.lstrip().startswith("{")
            outcomes.add("answer")
    assert outcomes == {"call", "answer"}


def test_round_trip_call_result_answer(oai):
    messages: list = [{"role": "user", "content": LONDON}]
    first = oai.chat.completions.create(
        model=MODEL, messages=messages, tools=TOOLS, tool_choice="required",
        parallel_tool_calls=False, max_tokens=80, temperature=0,
    )  # fmt: skip
    call = first.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "12 degrees and raining"})
    final = oai.chat.completions.create(
        model=MODEL, messages=messages, tools=TOOLS, max_tokens=60, temperature=0
    )
    answer = final.choices[0].message
    assert final.choices[0].finish_reason == "stop" and not answer.tool_calls
    assert "12" in answer.content or "rain" in answer.content.lower()  # it read the result


def test_streamed_tool_call_deltas_assemble_in_the_clients_helper(oai):
    deltas = 0
    with oai.chat.completions.stream(
        model=MODEL,
        messages=[{"role": "user", "content": LONDON}],
        tools=TOOLS,
        tool_choice="required",
        max_tokens=120,
        temperature=0,
    ) as stream:
        for event in stream:
            if event.type == "tool_calls.function.arguments.delta":
                deltas += 1
        final = stream.get_final_completion()
    assert deltas > 2  # the arguments came in pieces, as they were written
    assert final.choices[0].finish_reason == "tool_calls"
    for name, args in calls_of(final):
        valid_call(name, args)


# -- tools: ollama -----------------------------------------------------------------------------


def test_ollama_tools_give_calls_with_object_arguments(oll):
    r = oll.chat(model=MODEL, messages=[{"role": "user", "content": LONDON}], tools=TOOLS,
                 options={"temperature": 0, "num_predict": 120})  # fmt: skip
    calls = r.message.tool_calls
    assert calls
    for call in calls:
        assert isinstance(call.function.arguments, dict)
        valid_call(call.function.name, dict(call.function.arguments))


def test_ollama_round_trip_and_streamed_calls(oll):
    messages: list = [{"role": "user", "content": LONDON}]
    streamed = list(oll.chat(model=MODEL, messages=messages, tools=TOOLS, stream=True,
                             options={"temperature": 0, "num_predict": 120}))  # fmt: skip
    calls = [c for part in streamed for c in (part.message.tool_calls or [])]
    assert calls and streamed[-1].done
    for call in calls:
        valid_call(call.function.name, dict(call.function.arguments))
    messages.append({"role": "assistant", "content": "", "tool_calls": calls[:1]})
    messages.append({"role": "tool", "tool_name": calls[0].function.name,
                     "content": "12 degrees and raining"})  # fmt: skip
    final = oll.chat(model=MODEL, messages=messages, tools=TOOLS,
                     options={"temperature": 0, "num_predict": 60})  # fmt: skip
    assert not final.message.tool_calls
    assert "12" in final.message.content or "rain" in final.message.content.lower()


# -- refused, before the model is claimed ---------------------------------------------------


def error_of(node, path: str, body: dict) -> str:
    r = httpx.post(node.url + path, json=body, timeout=60)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    return error["message"] if isinstance(error, dict) else error


def test_bad_requests_are_400s_that_say_why(node):
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    bad_schema = {"type": "object", "properties": {"age": {"type": "number", "multipleOf": 2}}}
    message = error_of(node, "/v1/chat/completions", {
        **chat, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": bad_schema}},
    })  # fmt: skip
    assert "'multipleOf' at /properties/age" in message
    message = error_of(node, "/v1/chat/completions", {
        **chat, "tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}},
    })  # fmt: skip
    assert "'nope'" in message and "get_weather" in message
    bad_tool = {"type": "function", "function": {"name": "f", "parameters": bad_schema}}
    message = error_of(node, "/api/chat", {**chat, "tools": [bad_tool], "stream": False})
    assert "the parameters of tool 'f'" in message and "'multipleOf'" in message
    message = error_of(node, "/api/chat", {**chat, "format": {"type": "string", "format": "email"}})
    assert "format 'email'" in message
    message = error_of(node, "/v1/chat/completions", {**chat, "tool_choice": "required"})
    assert "tool_choice" in message
    message = error_of(node, "/api/chat", {**chat, "think": True, "stream": False})
    assert message == f"model '{MODEL}' does not support thinking"


def test_show_reports_the_capabilities(oll):
    info = oll.show(MODEL)
    assert list(info.capabilities) == ["completion", "tools"]
