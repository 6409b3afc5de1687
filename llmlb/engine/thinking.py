"""Split `<think>...</think>` out of streamed text, also when a tag is cut across chunks."""

from __future__ import annotations

OPEN, CLOSE = "<think>", "</think>"


def held(text: str, tag: str) -> int:
    """How many trailing characters of `text` could be the start of `tag` (to hold back until
    the next piece says whether the tag follows)."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0


class ThinkingSplitter:
    """Feed text pieces; get back (thinking, content) deltas."""

    def __init__(self, starts_thinking: bool = False):
        self.inside = starts_thinking
        self.buffer = ""
        self.seen_content = False

    def feed(self, piece: str) -> tuple[str, str]:
        text = self.buffer + piece
        self.buffer = ""
        thinking: list[str] = []
        content: list[str] = []
        while text:
            tag = CLOSE if self.inside else OPEN
            at = text.find(tag)
            if at >= 0:
                (thinking if self.inside else content).append(text[:at])
                text = text[at + len(tag) :]
                if not self.inside and not "".join(content).strip() and not self.seen_content:
                    content.clear()  # whitespace before <think> is noise
                self.inside = not self.inside
                if not self.inside:
                    text = text.lstrip("\n") if text.strip() else text
                continue
            hold = held(text, tag)
            keep, self.buffer = (text[:-hold], text[-hold:]) if hold else (text, "")
            (thinking if self.inside else content).append(keep)
            break
        c = "".join(content)
        if c.strip():
            self.seen_content = True
        return "".join(thinking), c

    def flush(self) -> tuple[str, str]:
        rest, self.buffer = self.buffer, ""
        return (rest, "") if self.inside else ("", rest)
