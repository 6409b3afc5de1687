"""Reading tool calls out of a model's reply, while it streams.

Three formats, as llama-server reads them:

- generic: the whole reply is one JSON object, `{"tool_call": {"name", "arguments"}}`,
  `{"tool_calls": [...]}` or `{"response": ...}` (a grammar holds the model to it);
- hermes: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks, text around them
  is content (Qwen 2.5 and 3, Hermes 2/3, and others whose template says `<tool_call>`);
- llama3: the reply is `{"name": ..., "parameters": {...}}` (Llama 3.1 to 3.3).

A parser is fed the reply's text as it grows and gives back content text and CallDelta
events: a call is announced as soon as its name is known (with a fresh id), its arguments'
JSON text follows as it is written, and a last event says it is whole. What turns out not
to be a call after all is given back as content.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from llmlb.engine.json_stream import CallObject, Invalid, StringReader, ValueEnd, skip_ws
from llmlb.engine.thinking import held

OPEN, CLOSE = "<tool_call>", "</tool_call>"


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


@dataclass
class ToolCall:
    index: int
    id: str
    name: str
    arguments: str = ""  # JSON text, as the model wrote it
    done: bool = False


@dataclass
class CallDelta:
    index: int
    id: str
    name: str | None  # on a call's first delta only
    arguments: str  # more of its arguments' JSON text
    done: bool = False  # the call is whole


Event = str | CallDelta


class Parser:
    """Base: the reply so far, the calls found in it, and the events of one call object."""

    def __init__(self, parallel: bool = True):
        self.parallel = parallel
        self.text = ""
        self.calls: list[ToolCall] = []
        self.sent = 0  # content given out up to here
        self.plain = False  # from `sent` on, everything is content
        self.obj: CallObject | None = None  # the call object being read
        self.current: ToolCall | None = None  # ... and the call it announced, if it did

    def feed(self, piece: str) -> list[Event]:
        self.text += piece
        out: list[Event] = []
        if self.plain:
            return self._plain_rest(out)
        try:
            self._step(out)
        except Invalid:
            self._give_up(out)
        return out

    def finish(self) -> list[Event]:
        out: list[Event] = []
        if self.plain:
            return self._plain_rest(out)
        try:
            self._end(out)
        except Invalid:
            self._give_up(out)
        return out

    # -- what each format does ----------------------------------------------------
    def _step(self, out: list[Event]) -> None:
        raise NotImplementedError

    def _end(self, out: list[Event]) -> None:
        """The reply is over: give out what is still held."""
        self._plain_rest(out)

    # -- shared -------------------------------------------------------------------
    def _plain_rest(self, out: list[Event]) -> list[Event]:
        if self.sent < len(self.text):
            out.append(self.text[self.sent :])
            self.sent = len(self.text)
        return out

    def _give_up(self, out: list[Event]) -> None:
        """Not a call after all: the text not yet given out is content, and so is the rest.
        A call already announced stays as it is, and what broke it is dropped."""
        self.plain = True
        if self.current is not None:
            self.current.done = True
            self.sent = len(self.text)
        self._plain_rest(out)

    def _start(self, at: int, args_key: str = "arguments") -> CallObject:
        self.obj, self.current = CallObject(at, args_key), None
        return self.obj

    def _wanted(self) -> bool:
        """Whether the call being read is reported (only the first without parallel calls)."""
        return self.parallel or not self.calls or self.current is not None

    def _call(self, out: list[Event]) -> None:
        """Events for what is new in the call object being read."""
        obj = self.obj
        assert obj is not None
        if obj.name is None or not self._wanted():
            return
        call = self.current
        if call is None:
            call = self.current = ToolCall(len(self.calls), new_call_id(), obj.name)
            self.calls.append(call)
            out.append(CallDelta(call.index, call.id, call.name, ""))
        args = obj.args_so_far(self.text)
        if len(args) > len(call.arguments):
            out.append(CallDelta(call.index, call.id, None, args[len(call.arguments) :]))
            call.arguments = args
        if obj.done and not call.done:
            call.done = True
            out.append(CallDelta(call.index, call.id, None, "", done=True))

    def _content(self, end: int, out: list[Event], since: int | None = None) -> None:
        start = self.sent if since is None else since
        if end > start:
            out.append(self.text[start:end])
        self.sent = max(self.sent, end)


class GenericParser(Parser):
    """`{"tool_call": ...}`, `{"tool_calls": [...]}` or `{"response": ...}`."""

    def __init__(self, parallel: bool = True):
        super().__init__(parallel)
        self.state = "open"
        self.pos = 0
        self.key: str | None = None
        self.string: StringReader | None = None
        self.value: ValueEnd | None = None

    def _step(self, out: list[Event]) -> None:
        text = self.text
        while True:
            i = skip_ws(text, self.pos)
            if self.state == "response":
                self._response(out)
                return
            if i >= len(text) or self.state == "end":
                return
            c = text[i]
            if self.state == "open":
                if c != "{":
                    raise Invalid("not a JSON object")
                self.pos, self.state = i + 1, "key"
            elif self.state == "key":
                key = ValueEnd(i)
                if c != '"' or key.feed(text) is None:
                    if c != '"':
                        raise Invalid("a key expected")
                    return
                assert key.end is not None
                self.key = text[i + 1 : key.end - 1]
                if self.key not in ("tool_call", "tool_calls", "response"):
                    raise Invalid(f"unexpected key {self.key!r}")
                self.pos, self.state = key.end, "colon"
            elif self.state == "colon":
                if c != ":":
                    raise Invalid("':' expected")
                self.pos = i + 1
                self.state = {"tool_call": "call", "tool_calls": "list", "response": "response"}[
                    self.key or ""
                ]
                self.sent = len(text)  # the JSON around the reply is not content
            elif self.state == "list":
                if c != "[":
                    raise Invalid("a list of tool calls expected")
                self.pos, self.state = i + 1, "call"
            elif self.state == "call":
                obj = self.obj or self._start(i)
                obj.feed(text)
                self._call(out)
                if not obj.done:
                    return
                assert obj.end is not None
                self.pos, self.obj = obj.end, None
                self.state = "between" if self.key == "tool_calls" else "end"
            elif self.state == "between":
                if c == ",":
                    self.pos, self.state = i + 1, "call"
                elif c == "]":
                    self.pos, self.state = i + 1, "end"
                else:
                    raise Invalid("',' or ']' expected")

    def _response(self, out: list[Event]) -> None:
        text = self.text
        if self.string is None and self.value is None:
            i = skip_ws(text, self.pos)
            if i >= len(text):
                return
            if text[i] == '"':
                self.string = StringReader(i + 1)
            else:
                self.value = ValueEnd(i)  # a reply held to a schema: its JSON is the content
                self.sent = i
        if self.string is not None:
            chunk = self.string.feed(text)
            if chunk:
                out.append(chunk)
            if self.string.done:
                self.state, self.pos = "end", self.string.end or len(text)
        elif self.value is not None:
            end = self.value.feed(text)
            stop = end if end is not None else len(text)
            if stop > self.sent:
                out.append(text[self.sent : stop])
                self.sent = stop
            if end is not None:
                self.state, self.pos = "end", end

    def _end(self, out: list[Event]) -> None:
        if self.state == "open" and not self.text.strip():
            return
        unfinished = self.state in ("open", "key", "colon", "list", "call") and not self.calls
        if unfinished:
            self._give_up(out)  # the model never got to the point: show what it wrote


class HermesParser(Parser):
    """Content, and `<tool_call>{...}</tool_call>` blocks in it."""

    def __init__(self, parallel: bool = True):
        super().__init__(parallel)
        self.state = "content"
        self.pos = 0
        self.region = 0  # where the current <tool_call> began
        self.after_call = False  # whitespace right after a call is not content

    def _step(self, out: list[Event]) -> None:
        text = self.text
        while True:
            if self.state == "content":
                if self.after_call:
                    self.pos = self.sent = skip_ws(text, self.pos)
                    if self.pos >= len(text):
                        return
                    self.after_call = False
                at = text.find(OPEN, self.pos)
                if at < 0:
                    end = len(text) - held(text[self.pos :], OPEN)
                    self._content(end, out)
                    self.pos = end
                    return
                self._content(at, out)
                self.region, self.pos, self.state = at, at + len(OPEN), "call"
                self.obj = None
            elif self.state == "call":
                i = skip_ws(text, self.pos)
                if i >= len(text):
                    return
                obj = self.obj or self._start(i)
                try:
                    obj.feed(text)
                except Invalid:
                    if self.current is not None:
                        raise
                    self._content(len(text), out, since=self.region)  # not a call: content
                    self.pos, self.state = len(text), "content"
                    return
                self._call(out)
                if not obj.done:
                    return
                assert obj.end is not None
                self.pos, self.state = obj.end, "close"
            elif self.state == "close":
                i = skip_ws(text, self.pos)
                rest = text[i : i + len(CLOSE)]
                if len(rest) < len(CLOSE) and CLOSE.startswith(rest):
                    return  # maybe the closing tag, not complete yet
                self.pos = i + len(CLOSE) if rest == CLOSE else i
                self.sent = self.pos
                self.state = "content" if self.parallel else "done"
                self.after_call = True
            else:  # done: one call was asked for; what follows is dropped
                self.sent = self.pos = len(text)
                return

    def _end(self, out: list[Event]) -> None:
        if self.state == "content":
            self._content(len(self.text), out)
        elif self.state == "call" and self.current is None and not self.calls:
            self._content(len(self.text), out, since=self.region)  # an unfinished tag
        # (after a call, an unfinished block is a call cut short: not content)


class Llama3Parser(Parser):
    """A reply that is `{"name": ..., "parameters": {...}}` is a call; anything else content."""

    def __init__(self, parallel: bool = False):
        super().__init__(False)  # Llama 3 makes one call per turn

    def _step(self, out: list[Event]) -> None:
        text = self.text
        if self.obj is None:
            i = skip_ws(text, 0)
            if i >= len(text):
                return
            if text[i] != "{":
                raise Invalid("plain text")
            self._start(i, args_key="parameters")
        assert self.obj is not None
        self.obj.feed(text)  # Invalid (not a call): all of it is content
        self._call(out)
        if self.obj.done:
            self.sent = len(text)  # text after the call is dropped, as llama-server does

    def _end(self, out: list[Event]) -> None:
        if self.current is None:
            self._give_up(out)


PARSERS: dict[str, type[Parser]] = {
    "generic": GenericParser,
    "hermes": HermesParser,
    "llama3": Llama3Parser,
}
