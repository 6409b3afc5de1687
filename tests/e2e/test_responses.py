"""OpenAI's Responses API (issue 24), driven by the official `openai` client's
`responses.create` and `responses.stream`, on a node and through a router with two nodes, on
the real SmolLM2 model. Assertions are on shapes and relations (token counts, which node
answered, JSON that validates), never on the model's words; every generation is bounded.
"""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest

from tests.e2e.conftest import start_node
from tests.support.procs import ServerProcess, wait_for

MODEL = "smollm2-135m-instruct"
BEAT = {"LLMLB_HEARTBEAT_MS": "300"}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 40}},
        "required": ["city"],
    },
}
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
LONG_INSTRUCTIONS = " ".join(["You answer in short sentences and never use lists."] * 12)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, smollm2):
    tmp = tmp_path_factory.mktemp("responses")
    router = ServerProcess(tmp / "router", kind="router", env=BEAT).start()
    nodes = [
        start_node(
            tmp / f"node{i}",
            {"HuggingFaceTB/SmolLM2-135M-Instruct": smollm2},
            env=BEAT,
            extra_args=("--router", router.url),
        )
        for i in range(2)
    ]

    def online() -> bool:
        listed = httpx.get(router.url + "/admin/cluster/nodes").json()["nodes"]
        return len(listed) == 2 and all(n["status"] == "online" and n["models"] for n in listed)

    assert wait_for(online)
    yield router, nodes
    for node in nodes:
        assert node.stop() == 0, node.log()
    router.stop()


@pytest.fixture(params=["node", "router"])
def where(request, cluster) -> str:
    """The base URL of one node, or of the router in front of both."""
    router, nodes = cluster
    return nodes[0].url if request.param == "node" else router.url


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def create(url: str, **kw):
    kw.setdefault("max_output_tokens", 24)
    kw.setdefault("temperature", 0)
    return client(url).responses.create(model=MODEL, **kw)


def node_id(cluster, i: int) -> str:
    router, nodes = cluster
    listed = httpx.get(router.url + "/admin/cluster/nodes").json()["nodes"]
    return next(n["id"] for n in listed if n["port"] == nodes[i].port)


# -- text -----------------------------------------------------------------------------------


def test_a_plain_response_has_text_usage_and_is_stored(where):
    r = create(where, input="Say hello.")
    assert r.object == "response" and r.id.startswith("resp_") and r.model == MODEL
    assert r.status in ("completed", "incomplete") and r.output_text
    message = r.output[0]
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "output_text"
    u = r.usage
    assert u.input_tokens > 0 and 0 < u.output_tokens <= 24
    assert u.total_tokens == u.input_tokens + u.output_tokens
    assert u.input_tokens_details.cached_tokens >= 0
    if r.status == "incomplete":
        assert r.incomplete_details.reason == "max_output_tokens"
    assert client(where).responses.retrieve(r.id).output_text == r.output_text


def test_a_response_is_what_chat_completions_gives_for_the_same_request(where):
    """One generation path: at temperature 0 the same prompt gives the same text and counts."""
    r = create(where, input="Name a color.", instructions="Be brief.", max_output_tokens=12)
    chat = client(where).chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Name a color."},
        ],
        max_tokens=12,
        temperature=0,
    )
    assert r.output_text == chat.choices[0].message.content
    assert r.usage.input_tokens == chat.usage.prompt_tokens
    assert r.usage.output_tokens == chat.usage.completion_tokens


def test_logprobs_come_with_the_text_when_included(where):
    plain = create(where, input="Say hello.", max_output_tokens=4)
    assert plain.output[0].content[0].logprobs == []
    r = create(
        where,
        input="Say hello.",
        max_output_tokens=4,
        include=["message.output_text.logprobs"],
        top_logprobs=2,
    )
    lps = r.output[0].content[0].logprobs
    assert lps and "".join(lp.token for lp in lps) == r.output_text
    assert all(lp.logprob <= 0 and len(lp.top_logprobs) == 2 for lp in lps)


def test_instructions_go_before_the_input(where):
    bare = create(where, input="Say hello.", max_output_tokens=4)
    told = create(where, input="Say hello.", max_output_tokens=4, instructions=LONG_INSTRUCTIONS)
    assert told.instructions == LONG_INSTRUCTIONS and bare.instructions is None
    assert told.usage.input_tokens > bare.usage.input_tokens + 100


def test_input_items_with_text_parts_are_one_conversation(where):
    items = [
        {"role": "user", "content": [{"type": "input_text", "text": "My name is Ada."}]},
        {"role": "assistant", "content": "Hello Ada."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Name?"}]},
    ]
    one = create(where, input="Name?", max_output_tokens=4)
    three = create(where, input=items, max_output_tokens=4)
    assert three.usage.input_tokens > one.usage.input_tokens + 8


def test_previous_response_id_chains_twice(where):
    first = create(where, input="My name is Ada. Reply with one word.")
    second = create(where, input="What is my name?", previous_response_id=first.id)
    third = create(where, input="Spell it.", previous_response_id=second.id)
    assert second.previous_response_id == first.id and third.previous_response_id == second.id
    # each turn's prompt holds the whole conversation before it
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    assert third.usage.input_tokens > second.usage.input_tokens + second.usage.output_tokens
    with pytest.raises(openai.NotFoundError):
        create(where, input="x", previous_response_id="resp_00000000ffffffffffffffffffffffff")


def test_store_false_keeps_nothing(where):
    r = create(where, input="Say hello.", max_output_tokens=4, store=False)
    with pytest.raises(openai.NotFoundError):
        client(where).responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        create(where, input="again", previous_response_id=r.id)


def test_delete_forgets_a_response(where):
    r = create(where, input="Say hello.", max_output_tokens=4)
    assert client(where).responses.retrieve(r.id).id == r.id
    gone = httpx.delete(f"{where}/v1/responses/{r.id}")
    assert gone.status_code == 200
    assert gone.json() == {"id": r.id, "object": "response", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        client(where).responses.retrieve(r.id)
    assert httpx.delete(f"{where}/v1/responses/{r.id}").status_code == 404


# -- tools and formats ------------------------------------------------------------------------


def test_a_function_tool_round_trip(where):
    asked = create(
        where,
        input="What is the weather in Paris?",
        tools=[WEATHER],
        tool_choice="required",
        max_output_tokens=64,
    )
    calls = [o for o in asked.output if o.type == "function_call"]
    assert asked.status == "completed" and len(calls) >= 1
    call = calls[0]
    assert call.name == "get_weather" and call.call_id and call.status == "completed"
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])
    result = {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"}
    answered = create(
        where, previous_response_id=asked.id, input=[result], tools=[WEATHER], max_output_tokens=32
    )
    assert answered.output_text and not [o for o in answered.output if o.type == "function_call"]
    assert answered.usage.input_tokens > asked.usage.input_tokens
    # the same turn without the store: the call and its output sent back as items
    again = create(
        where,
        input=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name,
             "arguments": call.arguments},
            result,
        ],
        tools=[WEATHER],
        max_output_tokens=32,
        store=False,
    )  # fmt: skip
    assert again.output_text


def test_text_format_json_schema_validates(where):
    fmt = {"type": "json_schema", "name": "person", "schema": PERSON, "strict": True}
    r = create(where, input="Invent a person.", text={"format": fmt}, max_output_tokens=64)
    assert r.status == "completed"
    jsonschema.validate(json.loads(r.output_text), PERSON)
    assert r.text.format.type == "json_schema"
    obj = create(
        where,
        input="Describe a cat.",
        text={"format": {"type": "json_object"}},
        max_output_tokens=64,
    )
    if obj.status == "completed":
        assert isinstance(json.loads(obj.output_text), dict)


# -- streamed events --------------------------------------------------------------------------


def test_streamed_text_events_build_the_response(where):
    with client(where).responses.stream(
        model=MODEL, input="Count to five.", max_output_tokens=24, temperature=0
    ) as stream:
        events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:-1] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    done = next(e for e in events if e.type == "response.output_text.done")
    final = events[-1].response
    assert deltas and deltas == done.text == final.output_text
    assert final.usage.output_tokens > 0 and final.id == events[0].response.id
    assert client(where).responses.retrieve(final.id).output_text == deltas


def test_streamed_function_call_events_and_final_response(where):
    with client(where).responses.stream(
        model=MODEL,
        input="What is the weather in Oslo?",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        max_output_tokens=64,
        temperature=0,
    ) as stream:
        kinds = []
        args = ""
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.function_call_arguments.delta":
                args += event.delta
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    assert kinds.index("response.output_item.added") < kinds.index(
        "response.function_call_arguments.done"
    )
    assert kinds[-1] == "response.completed"
    call = next(o for o in final.output if o.type == "function_call")
    assert call.arguments == args and call.name == "get_weather"
    jsonschema.validate(json.loads(args), WEATHER["parameters"])


# -- errors -----------------------------------------------------------------------------------


def test_mistakes_are_openai_errors(where):
    oai = client(where)
    with pytest.raises(openai.BadRequestError) as bad_tool:
        oai.responses.create(model=MODEL, input="x", tools=[{"type": "web_search"}])
    assert "only 'function'" in bad_tool.value.message
    with pytest.raises(openai.BadRequestError) as orphan:
        oai.responses.create(
            model=MODEL, input=[{"type": "function_call_output", "call_id": "c1", "output": "x"}]
        )
    assert "no function_call with that call_id" in orphan.value.message
    with pytest.raises(openai.BadRequestError):
        oai.responses.create(model=MODEL, input="x", temperature=3)
    with pytest.raises(openai.NotFoundError):
        oai.responses.create(model="no-such-model", input="x")
    with pytest.raises(openai.BadRequestError) as no_thinking:
        oai.responses.create(model=MODEL, input="x", reasoning={"effort": "high"})
    assert "does not support thinking" in no_thinking.value.message
    r = httpx.post(where + "/v1/responses", json={"model": MODEL, "input": []})
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("field 'input'")
    image = {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}
    with pytest.raises(openai.BadRequestError) as no_vision:
        oai.responses.create(model=MODEL, input=[{"role": "user", "content": [image]}])
    assert "does not support images" in no_vision.value.message


# -- through the router: the node that stored it ----------------------------------------------


@pytest.mark.parametrize("first", [0, 1])
def test_a_chain_through_the_router_stays_on_the_node_that_stored_it(cluster, first):
    router, nodes = cluster
    stored_on = node_id(cluster, first)
    start = create(nodes[first].url, input="My name is Ada. Reply with one word.")
    assert start.id.startswith("resp_" + stored_on[:8])
    second = create(router.url, input="What is my name?", previous_response_id=start.id)
    third = create(router.url, input="Spell it.", previous_response_id=second.id)
    assert second.id.startswith("resp_" + stored_on[:8])
    assert third.id.startswith("resp_" + stored_on[:8])
    other = nodes[1 - first]
    with pytest.raises(openai.NotFoundError):  # the other node never had it
        client(other.url).responses.retrieve(third.id)
    assert client(router.url).responses.retrieve(third.id).id == third.id
    raw = httpx.get(f"{router.url}/v1/responses/{third.id}")
    assert raw.headers["x-llmlb-node"] == stored_on[:8]


def test_the_routers_history_counts_a_responses_tokens(cluster):
    router, _ = cluster

    def recorded() -> list[dict]:
        rows = httpx.get(router.url + "/admin/cluster/requests?limit=500").json()["requests"]
        return [x for x in rows if x["endpoint"] == "/v1/responses"]  # newest first

    before = len(recorded())
    r = create(router.url, input="Say hello.", max_output_tokens=4)
    assert wait_for(lambda: len(recorded()) > before)
    row = recorded()[0]
    assert row["tokens_in"] == r.usage.input_tokens and row["tokens_out"] == r.usage.output_tokens


def test_an_unknown_node_in_a_response_id_is_not_found_through_the_router(cluster):
    router, _ = cluster
    ghost = "resp_ffffffff" + "0" * 24
    with pytest.raises(openai.NotFoundError):
        create(router.url, input="x", previous_response_id=ghost)
    assert httpx.get(f"{router.url}/v1/responses/{ghost}").status_code == 404
