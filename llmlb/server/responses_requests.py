"""The body of POST /v1/responses (OpenAI's Responses API), typed once: every field's type,
range and size, checked at the door like the other APIs' bodies (server/requests.py).

OpenAI's input items are a union whose `type` may be left out (a bare `{role, content}` is a
message), so an item is one struct with every item's fields and a check of which belong
together, rather than a tagged union msgspec would refuse without the tag.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from llmlb.engine import chat_plan, llama_json
from llmlb.engine.base import GenOptions
from llmlb.server.requests import (
    MAX_MESSAGES,
    MAX_TOOLS,
    CallId,
    Description,
    Image,
    KeepAlive,
    ModelName,
    Sampling,
    Schema,
    Text,
    ToolName,
    check_keep_alive,
)

# resp_ + 8 hex of the node that stores it + 24 more (responses_api.new_id)
RESPONSE_ID = r"^resp_[A-Za-z0-9]{1,64}$"
ResponseId = Annotated[str, Meta(pattern=RESPONSE_ID)]
ItemType = Literal["message", "function_call", "function_call_output", "reasoning"]
PartType = Literal[
    "input_text", "output_text", "input_image", "refusal", "summary_text", "reasoning_text"
]
LOGPROBS = "message.output_text.logprobs"
# OpenAI's limits: 16 pairs, keys of up to 64 characters, values of up to 512
Metadata = Annotated[dict[str, Annotated[str, Meta(max_length=512)]], Meta(max_length=16)]


class Part(msgspec.Struct, kw_only=True):
    """A content part: text (input_text, output_text, refusal) or an image (a data: URL)."""

    type: PartType
    text: Text | None = None
    refusal: Text | None = None
    image_url: Image | None = None
    file_id: Annotated[str, Meta(max_length=256)] | None = None

    def __post_init__(self) -> None:
        if self.type == "input_image" and not self.image_url:
            raise ValueError(
                "an input_image part needs an image_url (a data: URL); file ids are not supported"
            )


Content = Text | Annotated[list[Part], Meta(max_length=256)]


class Item(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One input item: a message (type may be left out), a function call the model made, a
    function's output, or a reasoning item sent back (dropped: thinking is not re-read)."""

    type: ItemType = "message"
    role: Literal["user", "assistant", "system", "developer"] | None = None
    content: Content | None = None
    call_id: CallId | None = None
    name: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    arguments: Text | None = None
    output: Content | None = None
    id: Annotated[str, Meta(max_length=256)] | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None

    def __post_init__(self) -> None:
        if self.type == "message" and (self.role is None or self.content is None):
            raise ValueError("a message item needs a role and content")
        if self.type == "function_call" and not (self.call_id and self.name):
            raise ValueError("a function_call item needs a call_id and a name")
        if self.type == "function_call_output" and (not self.call_id or self.output is None):
            raise ValueError("a function_call_output item needs a call_id and an output")


class FunctionTool(msgspec.Struct, kw_only=True):
    """Responses tools are flat: {type, name, parameters, ...}. Only functions run here."""

    type: Annotated[str, Meta(max_length=64)]
    name: ToolName | None = None
    description: Description = ""
    parameters: Schema | None = None
    strict: bool | None = None

    def __post_init__(self) -> None:
        if self.type != "function":
            raise ValueError(f"tools of type '{self.type}' are not supported; only 'function'")
        if self.name is None:
            raise ValueError("a function tool needs a name")


class ChosenFunction(msgspec.Struct, kw_only=True):
    type: Literal["function"]
    name: ToolName


class Format(msgspec.Struct, kw_only=True):
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    schema: Schema | None = None
    description: Description | None = None
    strict: bool | None = None


class TextConfig(msgspec.Struct, kw_only=True):
    format: Format | None = None


class Reasoning(msgspec.Struct, kw_only=True):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None


class ResponsesRequest(Sampling, kw_only=True):
    """POST /v1/responses. Sampling's llama.cpp fields (top_k, seed, stop, ...) are accepted
    as llmlb's extensions, as on /v1/chat/completions."""

    model: ModelName
    input: Text | Annotated[list[Item], Meta(max_length=MAX_MESSAGES)] = ""
    instructions: Text | None = None
    previous_response_id: ResponseId | None = None
    store: bool = True
    stream: bool = False
    tools: Annotated[list[FunctionTool], Meta(max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["auto", "none", "required"] | ChosenFunction | None = None
    parallel_tool_calls: bool = True
    text: TextConfig | None = None
    reasoning: Reasoning | None = None
    max_output_tokens: Annotated[int, Meta(ge=1, le=10_000_000)] | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    include: Annotated[list[Annotated[str, Meta(max_length=128)]], Meta(max_length=32)] | None = (
        None
    )
    metadata: Metadata | None = None
    user: Annotated[str, Meta(max_length=512)] | None = None
    keep_alive: KeepAlive | None = None

    def __post_init__(self) -> None:
        check_keep_alive(self.keep_alive)
        if any(len(k) > 64 for k in self.metadata or {}):
            raise ValueError("metadata keys may have at most 64 characters")
        fmt = self.format
        if fmt is not None and fmt.type == "json_schema":
            if fmt.schema is None:
                raise ValueError("text.format of type json_schema needs a schema")
            llama_json.check(fmt.schema, "the JSON schema in 'text.format'")
        tools = chat_plan_tools(self.tools)
        chat_plan.check_tools(tools)
        choice = self.tool_choice
        if choice is not None and choice != "none" and not tools:
            raise ValueError("tool_choice is only allowed when tools are given")
        if isinstance(choice, ChosenFunction) and choice.name not in {t.name for t in tools}:
            raise ValueError(
                f"tool_choice names the function '{choice.name}', which is not among the tools"
            )

    @property
    def format(self) -> Format | None:
        return self.text.format if self.text is not None else None

    @property
    def items(self) -> list[Item]:
        """The input as items: a string is one user message."""
        if isinstance(self.input, str):
            return [Item(role="user", content=self.input)] if self.input else []
        return list(self.input)

    @property
    def tool_list(self) -> list[chat_plan.Tool]:
        return chat_plan_tools(self.tools)

    @property
    def choice(self) -> tuple[str, str | None]:
        """("auto" | "none" | "required", the function it must call, if named)."""
        if isinstance(self.tool_choice, ChosenFunction):
            return "required", self.tool_choice.name
        return self.tool_choice or "auto", None

    @property
    def schema(self) -> Schema | None:
        fmt = self.format
        return fmt.schema if fmt is not None and fmt.type == "json_schema" else None

    @property
    def json_mode(self) -> bool:
        fmt = self.format
        return fmt is not None and fmt.type == "json_object"

    @property
    def think(self) -> bool | None:
        """`reasoning.effort`: thinking on or off where the model's template has a switch."""
        effort = self.reasoning.effort if self.reasoning else None
        return None if effort is None else effort not in ("none", "minimal")

    def gen_options(self) -> GenOptions:
        opts = self.to_options(self.max_output_tokens)
        if LOGPROBS in (self.include or []) or self.top_logprobs:
            opts.logprobs = True
            opts.top_logprobs = self.top_logprobs or 0
        return opts

    def echo(self) -> dict[str, Any]:
        """The request's settings as a response object repeats them."""
        fmt = self.format
        text_format: dict[str, Any] = {"type": fmt.type if fmt else "text"}
        if fmt is not None and fmt.type == "json_schema":
            text_format |= {"name": fmt.name or "response", "schema": fmt.schema}
            text_format["strict"] = bool(fmt.strict)
        choice: Any = self.tool_choice or "auto"
        if isinstance(choice, ChosenFunction):
            choice = {"type": "function", "name": choice.name}
        return {
            "instructions": self.instructions,
            "max_output_tokens": self.max_output_tokens,
            "metadata": self.metadata or {},
            "parallel_tool_calls": self.parallel_tool_calls,
            "previous_response_id": self.previous_response_id,
            "reasoning": {"effort": self.reasoning.effort if self.reasoning else None},
            "store": self.store,
            "temperature": self.temperature,
            "text": {"format": text_format},
            "tool_choice": choice,
            "tools": [msgspec.to_builtins(t) for t in self.tools or []],
            "top_p": self.top_p,
            "top_logprobs": self.top_logprobs or 0,
            "truncation": "disabled",
            "user": self.user,
        }


def chat_plan_tools(tools: list[FunctionTool] | None) -> list[chat_plan.Tool]:
    return [chat_plan.Tool(t.name or "", t.description, t.parameters or {}) for t in tools or []]
