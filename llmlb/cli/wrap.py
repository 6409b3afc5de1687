"""Word wrapping for text that arrives a few characters at a time (a streamed reply).

A terminal breaks long lines wherever the width runs out (`punct` / `uation`). This keeps the
word being typed back until a space or a newline ends it, then starts a new line first when the
word would not fit. A word wider than the whole line (a URL, text without spaces) is broken
where the line ends. Widths are display columns (wcwidth), so wide characters count double.
"""

from __future__ import annotations

from wcwidth import wcwidth


def _width(ch: str) -> int:
    return max(0, wcwidth(ch))


class WordWrap:
    def __init__(self, width: int):
        self.width = max(10, width)
        self.col = 0
        self.word = ""
        self.word_width = 0
        self.broken = False  # the word being typed was already wider than a line
        self.wrapped = False  # the cursor is at the start of a line we broke ourselves

    @property
    def pending(self) -> bool:
        return bool(self.word)

    def feed(self, text: str) -> str:
        """What can be printed now; the unfinished last word is kept for later."""
        out: list[str] = []
        for ch in text:
            if ch == "\n":
                out.append(self._emit())
                out.append("\n")
                self.col, self.wrapped = 0, False
            elif ch in " \t":
                out.append(self._emit())
                if self.col >= self.width:  # a space at the end of a line becomes the break
                    out.append("\n")
                    self.col, self.wrapped = 0, True
                elif not self.wrapped:  # (indentation after a real newline stays)
                    out.append(ch)
                    self.col += 1
            else:
                self.word += ch
                self.word_width += _width(ch)
                if self.word_width >= self.width:
                    out.append(self._emit())
                    self.broken = True
        return "".join(out)

    def flush(self) -> str:
        """Everything still held back (the end of a reply)."""
        return self._emit()

    def _emit(self) -> str:
        word, width = self.word, self.word_width
        self.word, self.word_width = "", 0
        broken, self.broken = self.broken, False
        if not word:
            return ""
        out: list[str] = []
        if not broken and self.col > 0 and self.col + width > self.width:
            out.append("\n")
            self.col = 0
        for ch in word:
            w = _width(ch)
            if self.col + w > self.width:
                out.append("\n")
                self.col = 0
            out.append(ch)
            self.col += w
        self.wrapped = False
        return "".join(out)
