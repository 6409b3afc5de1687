"""Reading JSON while a model is still writing it.

A streamed tool call is announced as soon as its name is known and its arguments follow as
they are written, the way OpenAI streams them; a JSON reply in the generic tool format
streams its text as it comes. These readers take the growing text and resume where they
stopped: each character is looked at once, however long the output.
"""

from __future__ import annotations

import json

WS = " \t\r\n"


class Invalid(ValueError):
    """The text cannot be the JSON expected here."""


class ValueEnd:
    """Where one JSON value ends, fed the text as it grows (structure only: json.loads
    checks the finished value)."""

    def __init__(self, start: int):
        self.pos = start  # next character to look at
        self.start = start
        self.end: int | None = None  # index after the value, once it is complete
        self._stack: list[str] = []
        self._string = False
        self._escape = False
        self._scalar = False

    def feed(self, text: str) -> int | None:
        i, n = self.pos, len(text)
        while i < n and self.end is None:
            c = text[i]
            if self._string:
                if self._escape:
                    self._escape = False
                elif c == "\\":
                    self._escape = True
                elif c == '"':
                    self._string = False
                    if not self._stack:
                        self.end = i + 1
            elif self._scalar:
                if c in WS or c in ",]}":
                    self.end = i  # the delimiter belongs to what follows
                    break
            elif c == '"':
                self._string = True
            elif c in "{[":
                self._stack.append("}" if c == "{" else "]")
            elif c in "}]":
                if not self._stack or self._stack.pop() != c:
                    raise Invalid(f"unexpected {c!r}")
                if not self._stack:
                    self.end = i + 1
            elif c in WS or c in ",:":
                if not self._stack:
                    raise Invalid(f"unexpected {c!r}")
            elif not self._stack:
                self._scalar = True
            i += 1
        self.pos = i
        return self.end

    def close(self, text: str) -> int | None:
        """At the end of the output: a number or literal ends with the text."""
        if self.end is None and self._scalar:
            self.end = len(text)
        return self.end


class StringReader:
    """The decoded characters of a JSON string as they arrive (`start` is after its opening
    quote); holds back an escape sequence until it is whole."""

    def __init__(self, start: int):
        self.pos = start
        self.done = False
        self.end: int | None = None  # index after the closing quote

    def feed(self, text: str) -> str:
        i, n = self.pos, len(text)
        out: list[str] = []
        while i < n:
            c = text[i]
            if c == '"':
                self.done, self.end = True, i + 1
                i += 1
                break
            if c != "\\":
                j = i
                while j < n and text[j] not in '"\\':
                    j += 1
                out.append(text[i:j])
                i = j
                continue
            if i + 1 >= n:
                break
            if text[i + 1] != "u":
                out.append(_decode(text[i : i + 2]))
                i += 2
                continue
            if i + 6 > n:
                break
            code = text[i : i + 6]
            if 0xD800 <= int(code[2:], 16) < 0xDC00:  # a high surrogate waits for its pair
                if i + 12 > n:
                    break
                code = text[i : i + 12]
                i += 12
            else:
                i += 6
            out.append(_decode(code))
        self.pos = i
        return "".join(out)


def _decode(escape: str) -> str:
    try:
        return json.loads(f'"{escape}"')
    except ValueError as exc:
        raise Invalid(f"bad escape {escape!r}") from exc


def skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in WS:
        i += 1
    return i


class CallObject:
    """One `{"name": ..., "arguments": {...}}` object (`args_key` names the arguments:
    "parameters" for Llama 3), read as it is written, its keys in any order. `name` is set
    once known; `args_start`/`args_end` bound the arguments' JSON text in the output."""

    KEYS = ("name", "id", "type")

    def __init__(self, start: int, args_key: str = "arguments"):
        self.pos = start
        self.args_key = args_key
        self.name: str | None = None
        self.args_start: int | None = None
        self.args_end: int | None = None
        self.end: int | None = None  # index after the closing brace
        self._state = "open"
        self._key: str | None = None
        self._value: ValueEnd | None = None

    @property
    def done(self) -> bool:
        return self.end is not None

    def feed(self, text: str) -> None:
        """Read on; Invalid if this cannot be a call object."""
        while self.end is None:
            i = skip_ws(text, self.pos)
            if i >= len(text):
                self.pos = i
                return
            c = text[i]
            state = self._state
            if state == "open":
                if c != "{":
                    raise Invalid("a tool call must be a JSON object")
                self.pos, self._state = i + 1, "first-key"
            elif state in ("key", "first-key"):
                if c == "}" and state == "first-key":
                    raise Invalid("an empty tool call")
                if c != '"':
                    raise Invalid("a key expected")
                value = ValueEnd(i)
                if value.feed(text) is None:
                    return  # the key is not complete yet
                assert value.end is not None
                self._key = json.loads(text[i : value.end])
                self.pos, self._state = value.end, "colon"
            elif state == "colon":
                if c != ":":
                    raise Invalid("':' expected")
                self.pos, self._state = i + 1, "value"
                self._value = None
            elif state == "value":
                if self._value is None:
                    self._value = ValueEnd(i)
                    if self._key == self.args_key:
                        self.args_start = i
                if self._value.feed(text) is None:
                    return
                end = self._value.end
                assert end is not None
                self._take(text, self._value.start, end)
                self.pos, self._state = end, "next"
            elif state == "next":
                if c == ",":
                    self.pos, self._state = i + 1, "key"
                elif c == "}":
                    if self.name is None or self.args_start is None:
                        raise Invalid(f"a tool call needs 'name' and '{self.args_key}'")
                    self.end = i + 1
                else:
                    raise Invalid("',' or '}' expected")

    def _take(self, text: str, start: int, end: int) -> None:
        key = self._key
        if key == self.args_key:
            self.args_end = end
            try:
                json.loads(text[start:end])
            except ValueError as exc:
                raise Invalid(f"the arguments are not JSON: {exc}") from exc
        elif key == "name":
            try:
                name = json.loads(text[start:end])
            except ValueError as exc:
                raise Invalid("the name is not a JSON string") from exc
            if not isinstance(name, str) or not name:
                raise Invalid("the name must be a string")
            self.name = name
        elif key not in self.KEYS:
            raise Invalid(f"unexpected key {key!r} in a tool call")

    def args_so_far(self, text: str) -> str:
        """The arguments' text written so far (all of it once they are complete)."""
        if self.args_start is None:
            return ""
        return text[self.args_start : self.args_end if self.args_end is not None else len(text)]
