"""A chat rendered with the model's own Jinja template, the one its GGUF ships.

Rendered as llama-cpp-python's Jinja2ChatFormatter renders it, with the sandbox and extensions
Hugging Face's transformers use; we give it the model's bos/eos token texts, and the variables
a request adds (`tools`, `enable_thinking`). A template is a program: rendering is streamed and
stops past a size limit, and runs only in a runner process, where a deadline interrupts it
(engine/runner_main.py). A GGUF without a template gets no silent stand-in
(llama-cpp-python falls back to llama-2's, which base models answer with nothing): chat
requests to it are refused with a clear 400.

What a template can do is found by rendering it, as llama.cpp's minja does: a template that
shows a made-up tool's name renders tools; one that shows a made-up call's argument renders
tool calls; and so on. `caps_of` does this once per template text.
"""

from __future__ import annotations

import functools
import json
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from llmlb.engine.base import TemplateCaps
from llmlb.errors import BadRequest

PROBE_CHARS = 1024 * 1024  # a probe's prompt is a few hundred characters; more is a runaway


class PromptTooLong(BadRequest):
    """The rendered prompt passed its limit (the chat's runner words it)."""


class NoChatTemplate(BadRequest):
    def __init__(self, name: str):
        super().__init__(f"model '{name}' has no chat template; use /api/generate (raw completion)")


def _environment() -> ImmutableSandboxedEnvironment:
    """The environment llama-cpp-python's Jinja2ChatFormatter renders with (Hugging Face's:
    the sandbox, trimmed blocks, loop controls, their `tojson`)."""
    env = ImmutableSandboxedEnvironment(
        loader=jinja2.BaseLoader(),
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[Jinja2ChatFormatter.IgnoreGenerationTags, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = Jinja2ChatFormatter.tojson
    return env


def _raise(message: str) -> None:
    raise ValueError(message)


def _strftime_now(f: str) -> str:
    return datetime.now().strftime(f)


class ChatTemplate:
    def __init__(self, name: str, source: str, bos: str, eos: str):
        self.name = name
        self.source = source
        self.bos, self.eos = bos, eos
        try:
            self._template = _environment().from_string(source)
        except jinja2.TemplateError as exc:
            raise BadRequest(f"the chat template of '{name}' does not parse: {exc}") from exc

    def render(self, messages: list[dict[str, Any]], limit: int, **extra: Any) -> str:
        """The prompt text, ending with the assistant's turn opened. Rendering stops as soon
        as the text passes `limit` characters (a template is a program: it may loop)."""
        parts: list[str] = []
        size = 0
        try:
            variables = {
                "functions": None,
                "function_call": None,
                "tools": None,
                "tool_choice": None,
                **extra,
            }
            for part in self._template.generate(
                messages=messages,
                eos_token=self.eos,
                bos_token=self.bos,
                raise_exception=_raise,
                add_generation_prompt=True,
                strftime_now=_strftime_now,
                **variables,
            ):
                size += len(part)
                if size > limit:
                    raise PromptTooLong(f"the prompt is more than {limit} characters")
                parts.append(part)
        except ValueError as exc:  # the template's raise_exception(): e.g. roles must alternate
            raise BadRequest(
                f"the chat template of '{self.name}' refused the messages: {exc}"
            ) from exc
        except (jinja2.TemplateError, TypeError) as exc:  # TypeError: e.g. None + str
            raise BadRequest(f"the chat template of '{self.name}' failed: {exc}") from exc
        except (MemoryError, RecursionError) as exc:
            raise BadRequest(
                f"the chat template of '{self.name}' ran out of room: {exc!r}"
            ) from exc
        return "".join(parts)


_USER = {"role": "user", "content": "<User Needle>"}
_TOOL = {
    "type": "function",
    "function": {
        "name": "some_tool_needle",
        "description": "Some tool.",
        "parameters": {
            "type": "object",
            "properties": {"arg": {"type": "string", "description": "Some argument."}},
            "required": ["arg"],
        },
    },
}


def _call_message(arguments: Any, name: str = "tool_needle") -> dict[str, Any]:
    call = {
        "id": "call_911_",
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }
    return {"role": "assistant", "content": "", "tool_calls": [call]}


def _try(template: ChatTemplate, messages: list[dict[str, Any]], **extra: Any) -> str:
    try:
        return template.render(messages, PROBE_CHARS, **extra)
    except Exception:  # a probe: whatever breaks the template means "not this"
        return ""


@functools.lru_cache(maxsize=64)
def caps_of(source: str) -> TemplateCaps:
    """Render the template a few times and see what shows (minja's probes, in short). Only
    in a runner process: a template may run for ever (the runner's deadline stops it)."""
    try:
        t = ChatTemplate("probe", source, bos="", eos="")
    except Exception:
        return TemplateCaps()
    system = "<System Needle>" in _try(t, [{"role": "system", "content": "<System Needle>"}, _USER])
    tools = "some_tool_needle" in _try(t, [_USER], tools=[_TOOL])
    args = {"argument_needle": "print('Hello, World!')"}
    response = {"role": "tool", "tool_call_id": "call_911_", "content": "Some response!"}

    def shows_args(text: str) -> bool:
        return '"argument_needle":' in text or "'argument_needle':" in text

    as_text = _try(t, [_USER, _call_message(json.dumps(args)), response])
    as_object = _try(t, [_USER, _call_message(args), response])
    tool_calls = shows_args(as_text) or shows_args(as_object)
    object_arguments = tool_calls and not shows_args(as_text)
    responses = "Some response!" in (as_object if object_arguments else as_text)
    on = _try(t, [_USER], enable_thinking=True)
    off = _try(t, [_USER], enable_thinking=False)
    return TemplateCaps(
        system=system,
        tools=tools,
        tool_calls=tool_calls,
        object_arguments=object_arguments,
        tool_responses=tool_calls and responses,
        thinking_toggle=bool(on) and on != off,
        thinks="<think>" in source,
    )
