"""How one chat request meets one model's template: the messages and variables the template
gets, the grammar that holds the output, and the format its tool calls are read in.

As llama-server does it:
- a template that knows a tool-call format llmlb reads (`<tool_call>` blocks: hermes; Llama
  3's JSON: llama3) gets `tools` itself; "required" or a named function is enforced with a
  grammar from the first token; "auto" leaves the model free, and for hermes a grammar takes
  over once the model writes `<tool_call>` (when that is one token of its vocabulary);
- any other template gets the generic format: the tools (unless the template shows them
  itself) and the JSON the reply must be go into the system prompt, and a grammar holds
  every reply to it: `{"tool_call": ...}` or `{"response": "..."}`;
- past tool calls and tool results are rendered natively where the template can, otherwise
  as JSON text (minja's polyfills);
- "none" renders no tools and reads no calls.
A JSON mode or schema is a grammar on the whole reply; with tools it becomes the schema of
the generic format's `response`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from llmlb.engine import llama_json
from llmlb.engine.base import TemplateCaps, text_of
from llmlb.engine.tool_calls import CLOSE, OPEN, PARSERS, Parser
from llmlb.errors import BadRequest

LLAMA3_MARK = "<|start_header_id|>ipython<|end_header_id|>"


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]  # the JSON schema of its arguments

    def as_openai(self) -> dict[str, Any]:
        """As the client sent it (a description only if it had one)."""
        fn: dict[str, Any] = {"name": self.name}
        if self.description:
            fn["description"] = self.description
        fn["parameters"] = self.parameters or {"type": "object", "properties": {}}
        return {"type": "function", "function": fn}


@dataclass
class ChatPlan:
    messages: list[dict[str, Any]]
    variables: dict[str, Any] = field(default_factory=dict)
    grammar: str | None = None
    trigger: str | None = None  # the grammar applies once the model writes this
    format: str | None = None  # how to read tool calls: generic, hermes, llama3; None: plain
    parallel: bool = True

    def parser(self) -> Parser | None:
        return PARSERS[self.format](self.parallel) if self.format else None


def tool_format(source: str) -> str:
    if OPEN in source:
        return "hermes"
    if LLAMA3_MARK in source:
        return "llama3"
    return "generic"


def _call_schema(tool: Tool, args_key: str = "arguments") -> dict[str, Any]:
    params = tool.parameters or {"type": "object", "properties": {}}
    return {
        "type": "object",
        "properties": {"name": {"const": tool.name}, args_key: params},
        "required": ["name", args_key],
    }


def _one_of(schemas: list[dict[str, Any]]) -> dict[str, Any]:
    return schemas[0] if len(schemas) == 1 else {"anyOf": schemas}


def _generic_schema(tools: list[Tool], required: bool, parallel: bool, response: Any) -> dict:
    call = _one_of([_call_schema(t) for t in tools])
    if parallel:
        calls = {"type": "array", "items": call, "minItems": 1}
        wrapped = {
            "type": "object",
            "properties": {"tool_calls": calls},
            "required": ["tool_calls"],
        }
    else:
        wrapped = {"type": "object", "properties": {"tool_call": call}, "required": ["tool_call"]}
    if required:
        return wrapped
    reply = {"type": "object", "properties": {"response": response}, "required": ["response"]}
    return {"anyOf": [wrapped, reply]}


def _hermes_grammar(tools: list[Tool], parallel: bool) -> str:
    rules, name = llama_json.embed(
        llama_json.to_gbnf(_one_of([_call_schema(t) for t in tools]), "the tools' parameters"),
        "tool-call-json",
    )
    block = f'"{OPEN}" "\\n"? {name} "\\n"? "{CLOSE}"'
    root = f"root ::= {block}" + (f' ("\\n"? {block})*' if parallel else "")
    return rules + "\n" + root + "\n"


def _llama3_grammar(tools: list[Tool]) -> str:
    schema = _one_of([_call_schema(t, "parameters") for t in tools])
    return llama_json.to_gbnf(schema, "the tools' parameters")


def _describe(tools: list[Tool], caps: TemplateCaps, required: bool, parallel: bool) -> str:
    """The generic format's instructions for the system prompt (small models follow an
    example better than a description)."""
    call = f'{{"name": "{tools[0].name}", "arguments": {{...}}}}'
    calls = f'{{"tool_calls": [{call}]}}' if parallel else f'{{"tool_call": {call}}}'
    lines = []
    if not caps.tools:
        listed = json.dumps([t.as_openai() for t in tools], indent=2, ensure_ascii=False)
        lines.append(f"You can call the following tools:\n{listed}\n")
    lines.append(f"To call a tool, respond with JSON like {calls}")
    if not required:
        lines.append('To answer the user directly, respond with JSON like {"response": "..."}')
    return "\n".join(lines)


def _arguments(value: Any, as_object: bool) -> Any:
    """Arguments as the template wants them: an object, or JSON text (as OpenAI sends them)."""
    if isinstance(value, str):
        if not as_object:
            return value
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value if as_object else json.dumps(value, ensure_ascii=False)


def _render_history(messages: list[dict[str, Any]], caps: TemplateCaps) -> list[dict[str, Any]]:
    """Past tool calls and results: native where the template renders them, else in words
    (llama.cpp's minja writes JSON for both; SmolLM2 then answers with a copy of the JSON):
    a call as `Calling <tool> with <arguments>.`, a result as a user message
    `Result of <tool>: ...`."""
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for m in messages:
        calls = m.get("tool_calls")
        if calls:
            for c in calls:
                if c.get("id"):
                    names[c["id"]] = c["name"]
            m = {k: v for k, v in m.items() if k != "tool_calls"}
            if caps.tool_calls:
                m["tool_calls"] = [
                    {
                        "id": c.get("id") or "",
                        "type": "function",
                        "function": {
                            "name": c["name"],
                            "arguments": _arguments(c["arguments"], caps.object_arguments),
                        },
                    }
                    for c in calls
                ]
                m["content"] = m.get("content") or ""
            else:  # in words: a JSON turn in the history, small models copy as their answer
                said = [
                    f"Calling {c['name']} with "
                    f"{json.dumps(_arguments(c['arguments'], True), ensure_ascii=False)}."
                    for c in calls
                ]
                m["content"] = "\n".join([m["content"], *said] if m.get("content") else said)
        elif m["role"] == "tool":
            name = m.get("name") or names.get(m.get("tool_call_id") or "", "")
            if caps.tool_responses:
                m = {**m, "name": name} if name else dict(m)
            else:  # plain words: small models take them better than JSON
                content = text_of(m.get("content"))
                m = {"role": "user", "content": f"Result of {name or 'the tool'}: {content}"}
        out.append(m)
    return out


def _with_system(messages: list[dict[str, Any]], text: str, caps: TemplateCaps) -> list[dict]:
    """`text` added to the system prompt (to the first user message where the template has
    no system role)."""
    out = list(messages)
    if out and out[0]["role"] == "system" and isinstance(out[0].get("content"), str):
        out[0] = {**out[0], "content": out[0]["content"] + "\n\n" + text}
    elif caps.system:
        out.insert(0, {"role": "system", "content": text})
    else:
        for i, m in enumerate(out):
            if m["role"] == "user" and isinstance(m.get("content"), str):
                out[i] = {**m, "content": text + "\n\n" + m["content"]}
                break
    return out


def plan(
    source: str | None,
    caps: TemplateCaps,
    messages: list[dict[str, Any]],
    *,
    tools: list[Tool] | None = None,
    choice: str = "auto",
    forced: str | None = None,
    parallel: bool = True,
    schema: dict[str, Any] | None = None,
    json_mode: bool = False,
    think: bool | None = None,
) -> ChatPlan:
    """The plan for a chat with template `source`, which renders `caps` (found in a runner:
    engine/templates.py). `choice`: auto, none or required (a named function is "required"
    with `forced` set); `schema` / `json_mode`: the reply's format."""
    tools = [t for t in tools or [] if forced is None or t.name == forced]
    history = _render_history(messages, caps)
    use_tools = bool(tools) and choice != "none"
    out = ChatPlan(history)
    if not use_tools:
        out.grammar = format_grammar(schema, json_mode)
    else:
        required = choice == "required"
        fmt = tool_format(source or "")
        if schema is not None or json_mode:
            fmt = "generic"  # a reply held to a format, or a call: only the generic format has both
        out.format = fmt
        out.parallel = parallel and fmt != "llama3"
        if fmt == "generic" or caps.tools:
            out.variables["tools"] = [t.as_openai() for t in tools]
        if fmt == "generic":
            response: Any = schema if schema is not None else {"type": "string"}
            if json_mode and schema is None:
                response = {"type": "object"}
            out.messages = _with_system(
                history, _describe(tools, caps, required, out.parallel), caps
            )
            out.grammar = llama_json.to_gbnf(
                _generic_schema(tools, required, out.parallel, response), "the tools' parameters"
            )
        elif fmt == "hermes":
            out.grammar = _hermes_grammar(tools, out.parallel)
            if not required:
                out.trigger = OPEN
        elif required:  # llama3: "auto" stays free (no single token starts a call)
            out.grammar = _llama3_grammar(tools)
    if caps.thinking_toggle:
        if out.grammar is not None and out.trigger is None:
            out.variables["enable_thinking"] = False  # the grammar holds the first token on
        elif think is not None:
            out.variables["enable_thinking"] = think
    return out


def format_grammar(
    schema: dict[str, Any] | None, json_mode: bool, where: str = "the JSON schema"
) -> str | None:
    """The grammar a reply format asks for: a JSON schema's, any JSON object, or none."""
    if schema is not None:
        return llama_json.to_gbnf(schema, where)
    return llama_json.JSON_OBJECT if json_mode else None


def check_tools(tools: list[Tool]) -> None:
    """Every tool's parameters are a schema llama.cpp's converter honours; names are unique."""
    seen: set[str] = set()
    for t in tools:
        if t.name in seen:
            raise BadRequest(f"two tools are named '{t.name}'")
        seen.add(t.name)
        if t.parameters:
            llama_json.check(t.parameters, f"the parameters of tool '{t.name}'")
