"""Responses API items, both ways: input items into the chat messages the generation path
takes, and a generation's events into output items and the stream events that build them.

The chat messages are the same typed `ChatMessage`s /v1/chat/completions decodes, so images
are checked and tool calls rendered by the one path both APIs share (inference.chat_messages,
plan_chat). An output is built by one `Output`, streamed or not: the streamed events are what
it did, and its items are what the response object (and the store) hold.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from llmlb.engine.base import TokenLogprob
from llmlb.engine.tool_calls import CallDelta, ToolCall
from llmlb.errors import BadRequest
from llmlb.server import inference as inf
from llmlb.server.requests import (
    CalledFunction,
    ChatMessage,
    ImagePart,
    ImageURL,
    TextPart,
    ToolCallIn,
)
from llmlb.server.responses_requests import Content, Item

Event = tuple[str, dict[str, Any]]  # (type, the event's fields but type and sequence_number)


def short_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


# -- input ----------------------------------------------------------------------------------


def _text(content: Content | None, where: str) -> str:
    """A content's text (tool outputs, assistant messages): images are refused there."""
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content:
        if part.type == "input_image":
            raise BadRequest(f"{where} may hold only text, not images")
        parts.append(part.text or part.refusal or "")
    return "".join(parts)


def _parts(content: Content) -> str | list[TextPart | ImagePart]:
    if isinstance(content, str):
        return content
    out: list[TextPart | ImagePart] = []
    for part in content:
        if part.type == "input_image":
            assert part.image_url is not None  # Part checks it
            out.append(ImagePart(image_url=ImageURL(url=part.image_url)))
        else:
            out.append(TextPart(text=part.text or part.refusal or ""))
    return out


def chat_messages(instructions: str | None, items: list[Item]) -> list[ChatMessage]:
    """The conversation as chat messages: instructions first (as a system message), a
    function_call joins the assistant turn before it, and its output becomes a `tool`
    message named after the call (templates name results by their function)."""
    out: list[ChatMessage] = []
    if instructions:
        out.append(ChatMessage(role="system", content=instructions))
    names: dict[str, str] = {}
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if item.type == "reasoning":
            continue  # thinking is never rendered back
        if item.type == "message":
            assert item.role is not None and item.content is not None  # Item checks it
            if item.role == "assistant":
                out.append(ChatMessage(role="assistant", content=_text(item.content, where)))
            else:
                out.append(ChatMessage(role=item.role, content=_parts(item.content)))
        elif item.type == "function_call":
            assert item.call_id is not None and item.name is not None
            names[item.call_id] = item.name
            call = ToolCallIn(
                id=item.call_id,
                function=CalledFunction(name=item.name, arguments=item.arguments or "{}"),
            )
            last = out[-1] if out else None
            if last is not None and last.role == "assistant":
                last.tool_calls = [*(last.tool_calls or []), call]
                last.content = last.content or None
            else:
                out.append(ChatMessage(role="assistant", content=None, tool_calls=[call]))
        else:  # function_call_output
            assert item.call_id is not None
            if item.call_id not in names:
                raise BadRequest(
                    f"{where} is the output of call '{item.call_id}', but no function_call "
                    "with that call_id comes before it"
                )
            out.append(
                ChatMessage(
                    role="tool",
                    content=_text(item.output, where),
                    tool_call_id=item.call_id,
                    name=names[item.call_id],
                )
            )
    return out


def stored_items(items: list[Item]) -> list[dict[str, Any]]:
    """Items as they are kept (and read back with msgspec.convert into Item)."""
    return [msgspec.to_builtins(item) for item in items]


def read_items(raw: list[dict[str, Any]]) -> list[Item]:
    """Stored items (input and output of an earlier response) back into Items."""
    return msgspec.convert(raw, list[Item])


# -- output ---------------------------------------------------------------------------------


class Output:
    """A response's output items, built from the generation's events. `feed` and `finish`
    return the stream events that built them."""

    def __init__(self, logprobs: bool):
        self.items: list[dict[str, Any]] = []
        self.logprobs = logprobs
        self.open: dict[str, Any] | None = None  # the message or reasoning item being written
        self.calls: dict[int, dict[str, Any]] = {}  # a call's index -> its item

    def _add(self, item: dict[str, Any]) -> list[Event]:
        self.items.append(item)
        opening = {**item, "status": "in_progress"}
        if "content" in item:  # a message or reasoning: its parts come in their own events
            opening["content"] = []
        return [("response.output_item.added", {"output_index": self.index(item), "item": opening})]

    def index(self, item: dict[str, Any]) -> int:
        return next(i for i, x in enumerate(self.items) if x is item)

    def _where(self, item: dict[str, Any]) -> dict[str, Any]:
        return {"item_id": item["id"], "output_index": self.index(item), "content_index": 0}

    def _close(self, status: str) -> list[Event]:
        item, self.open = self.open, None
        if item is None:
            return []
        item["status"] = status
        index = self.index(item)
        where = {"item_id": item["id"], "output_index": index, "content_index": 0}
        part = item["content"][0]
        done = ("response.output_item.done", {"output_index": index, "item": item})
        if item["type"] == "reasoning":
            return [("response.reasoning_text.done", {**where, "text": part["text"]}), done]
        text = {**where, "text": part["text"], "logprobs": part["logprobs"]}
        return [
            ("response.output_text.done", text),
            ("response.content_part.done", {**where, "part": part}),
            done,
        ]

    def _open(self, kind: str) -> list[Event]:
        """A new message (with its one output_text part) or reasoning item."""
        item: dict[str, Any]
        if kind == "message":
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            item = {"id": short_id("msg"), "type": "message", "role": "assistant"}
        else:
            part = {"type": "reasoning_text", "text": ""}
            item = {"id": short_id("rs"), "type": "reasoning", "summary": []}
        self.open = {**item, "status": "in_progress", "content": [part]}
        events = self._add(self.open)
        if kind == "message":
            added = {**self._where(self.open), "part": dict(part)}
            events.append(("response.content_part.added", added))
        return events

    def _text(self, kind: str, text: str, lps: list[TokenLogprob]) -> list[Event]:
        events: list[Event] = []
        wanted = "message" if kind == "content" else "reasoning"
        if self.open is not None and self.open["type"] != wanted:
            events += self._close("completed")
        if self.open is None:
            events += self._open(wanted)
        current = self.open
        assert current is not None  # just opened
        part = current["content"][0]
        part["text"] += text
        where = self._where(current)
        if wanted == "reasoning":
            return [*events, ("response.reasoning_text.delta", {**where, "delta": text})]
        shown = inf.token_logprobs(lps) if self.logprobs else []
        part["logprobs"] += shown
        return [
            *events,
            ("response.output_text.delta", {**where, "delta": text, "logprobs": shown}),
        ]

    def _call(self, delta: CallDelta) -> list[Event]:
        events: list[Event] = []
        item = self.calls.get(delta.index)
        if item is None:
            events += self._close("completed")
            item = {
                "id": short_id("fc"),
                "type": "function_call",
                "status": "in_progress",
                "call_id": delta.id,
                "name": delta.name or "",
                "arguments": "",
            }
            self.calls[delta.index] = item
            events += self._add(item)
        if delta.arguments:
            item["arguments"] += delta.arguments
            where = {"item_id": item["id"], "output_index": self.index(item)}
            events.append(
                ("response.function_call_arguments.delta", {**where, "delta": delta.arguments})
            )
        if delta.done:
            events += self._end_call(item, item["arguments"])
        return events

    def _end_call(
        self, item: dict[str, Any], arguments: str, status: str = "completed"
    ) -> list[Event]:
        if item["status"] != "in_progress":
            return []
        item["arguments"], item["status"] = arguments, status
        where = {"item_id": item["id"], "output_index": self.index(item)}
        return [
            (
                "response.function_call_arguments.done",
                {**where, "arguments": arguments, "name": item["name"]},
            ),
            ("response.output_item.done", {"output_index": where["output_index"], "item": item}),
        ]

    def feed(self, kind: str, value: str | CallDelta, lps: list[TokenLogprob]) -> list[Event]:
        if isinstance(value, CallDelta):
            return self._call(value)
        return self._text(kind, value, lps) if value else []

    def finish(self, status: str, calls: list[ToolCall], lps: list[TokenLogprob]) -> list[Event]:
        """Close what is open: the text (`status`: completed, or incomplete at the token
        limit) and any call, with the arguments the parser settled on."""
        events: list[Event] = []
        if lps and self.open is not None and self.open["type"] == "message" and self.logprobs:
            self.open["content"][0]["logprobs"] += inf.token_logprobs(lps)
        events += self._close(status)
        for call in calls:
            item = self.calls.get(call.index)
            if item is None:  # read only at the end
                events += self._call(CallDelta(call.index, call.id, call.name, ""))
                item = self.calls[call.index]
            events += self._end_call(item, call.arguments, "completed" if call.done else status)
        for item in self.calls.values():  # cut short by the token limit
            events += self._end_call(item, item["arguments"], status)
        return events
