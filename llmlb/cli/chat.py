"""`llmlb node run`: one chat turn at a time against the node, recorded in a session."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from typing import Any, TextIO
from urllib.parse import urlencode

from llmlb.cli.wrap import WordWrap
from llmlb.client import Client
from llmlb.errors import LlmlbError

DIM, RESET = "\x1b[2m", "\x1b[0m"
SAMPLING = ("temperature", "top_p")  # the session's options the REPL sends with each turn


class Chat:
    """A session's conversation: builds requests from its history and records each turn."""

    def __init__(
        self,
        client: Client,
        model: dict,
        session: dict,
        out: TextIO,
        styled: bool,
        show_thinking: bool = False,
        verbose: bool = False,
        width: int | None = None,
    ):
        self.client, self.model, self.out, self.styled = client, model, out, styled
        self.session = session
        self.chosen: set[str] = set()  # options set with /set in this REPL
        self.show_thinking = show_thinking
        self.verbose = verbose
        # On a terminal, replies wrap at word boundaries (width: its columns); None: as they come.
        self.wrap = WordWrap(width) if width else None
        self._pending_dim = False

    @property
    def name(self) -> str:
        return self.model["name"]

    @property
    def settings(self) -> dict[str, Any]:
        return self.session["settings"]

    def write(self, text: str, dim: bool = False) -> None:
        if self.wrap is not None:
            if self.wrap.pending and dim != self._pending_dim:  # a word keeps its own style
                self._emit(self.wrap.flush(), self._pending_dim)
            text = self.wrap.feed(text)
            self._pending_dim = dim
        self._emit(text, dim)

    def _emit(self, text: str, dim: bool) -> None:
        if not text:
            return
        if dim and self.styled:
            text = DIM + text + RESET
        self.out.write(text)
        self.out.flush()

    def request_messages(self, text: str, images: list[str]) -> list[dict[str, Any]]:
        """What the model sees: system prompt, the whole stored history, then this message."""
        messages: list[dict[str, Any]] = []
        if self.settings.get("system"):
            messages.append({"role": "system", "content": self.settings["system"]})
        for m in self.session["messages"]:
            item = {"role": m["role"], "content": m["content"]}
            if m.get("images"):
                item["images"] = m["images"]
            messages.append(item)
        user: dict[str, Any] = {"role": "user", "content": text}
        if images:
            user["images"] = images
        messages.append(user)
        return messages

    @property
    def can_think(self) -> bool:
        return "thinking" in (self.model.get("capabilities") or [])

    def own_parameters(self) -> dict[str, str]:
        """The model's own PARAMETERs (its Modelfile), as /api/show lists them."""
        own: dict[str, str] = {}
        for line in (self.model.get("parameters") or "").splitlines():
            key, _, value = line.partition(" ")
            own.setdefault(key, value.strip())
        return own

    def options(self) -> dict[str, Any]:
        """The session's sampling; where the model's Modelfile sets an option and /set did not,
        the model's value stands (as in ollama)."""
        own = self.own_parameters()
        opts = {k: self.settings[k] for k in SAMPLING if k in self.chosen or k not in own}
        if self.settings.get("max_tokens"):
            opts["num_predict"] = self.settings["max_tokens"]
        return opts

    def in_force(self, key: str) -> str:
        """What the next reply uses for `key` (temperature, top_p, max_tokens), read from the
        same places options() reads: this session's setting, or the model's own."""
        own = self.own_parameters()
        if key == "max_tokens":
            if self.settings.get("max_tokens"):
                return str(self.settings["max_tokens"])
            if "num_predict" in own:
                return f"{own['num_predict']}, the model's own"
            return "no limit"
        if key in self.options():
            return str(self.settings[key])
        return f"{own[key]}, the model's own"

    def turn(self, text: str, images: list[str] | None = None) -> str | None:
        """Stream one reply; record it. Ctrl+C stops the reply and keeps what arrived."""
        images = images or []
        if self.wrap is not None and self.out.isatty():  # the window may have been resized
            self.wrap.width = max(10, shutil.get_terminal_size().columns)
        body = {
            "model": self.name,
            "messages": self.request_messages(text, images),
            "stream": True,
            "options": self.options(),
        }
        if self.can_think:
            body["think"] = True  # (refused for a model that cannot think, as ollama does)
        content: list[str] = []
        thinking: list[str] = []
        final = None
        started, first = time.perf_counter(), None
        in_thinking = False
        interrupted = False
        try:
            with self.client.stream("POST", "/api/chat", body) as chunks:
                for chunk in chunks:
                    if chunk.get("done"):
                        final = chunk
                        break
                    msg = chunk.get("message") or {}
                    if msg.get("thinking"):
                        first = first or time.perf_counter()
                        thinking.append(msg["thinking"])
                        if self.show_thinking:
                            if not in_thinking:
                                self.write("Thinking...\n", dim=True)
                                in_thinking = True
                            self.write(msg["thinking"], dim=True)
                    if msg.get("content"):
                        first = first or time.perf_counter()
                        if in_thinking:
                            self.write("\n...done thinking.\n\n", dim=True)
                            in_thinking = False
                        if not content:
                            msg["content"] = (
                                msg["content"].lstrip("\n") if thinking else msg["content"]
                            )
                        content.append(msg["content"])
                        self.write(msg["content"])
        except KeyboardInterrupt:
            interrupted = True
        if in_thinking:
            self.write("\n...done thinking.\n\n", dim=True)
        self.write("\n")
        if interrupted:
            self.write("(reply stopped)\n", dim=True)
        reply = "".join(content)
        tokens = (final or {}).get("prompt_eval_count", 0) + (final or {}).get("eval_count", 0)
        user_msg: dict[str, Any] = {"role": "user", "content": text, "images": images or None}
        bot_msg = {"role": "assistant", "content": reply, "thinking": "".join(thinking) or None}
        self.client.post(
            f"/api/sessions/{self.session['id']}/messages",
            {"messages": [user_msg, bot_msg], "tokens": tokens},
        )
        self.session["messages"] += [user_msg, bot_msg]
        if self.verbose and final:
            self.stats(final, started, first)
        return reply

    def stats(self, final: dict, started: float, first: float | None) -> None:
        """Counts always; a time to first token only when one came, and rates only when there
        are tokens to rate (an empty reply has none: its "rate" would be noise)."""
        evals, ns = final.get("eval_count", 0), final.get("eval_duration", 0)
        lines = [
            f"prompt tokens:       {final.get('prompt_eval_count', 0)}",
            f"completion tokens:   {evals}",
        ]
        if first is not None:
            lines.append(f"time to first token: {(first - started) * 1000:.0f} ms")
        if evals > 0 and ns > 0:
            lines.append(f"eval rate:           {evals / (ns / 1e9):.2f} tokens/s")
        self.write("\n".join(lines) + "\n", dim=True)


def open_session(
    client: Client,
    model: str,
    session_id: str | None,
    resume_last: bool,
    note: Callable[[str], None] | None = None,
) -> dict:
    """The session to chat in; `note` hears one line when a session was asked to be resumed."""
    say = note or (lambda _text: None)
    if session_id:
        session = client.get(f"/api/sessions/{session_id}")
        if session["model"] != model:
            raise LlmlbError(
                f"session '{session_id}' belongs to model '{session['model']}', not '{model}'"
            )
        say(resumed(session))
        return session
    if resume_last:
        recent = client.get("/api/sessions?" + urlencode({"model": model, "limit": 1}))["sessions"]
        if recent:
            session = client.get(f"/api/sessions/{recent[0]['id']}")
            say(resumed(session))
            return session
        say(f"No earlier session of {model}; starting a new one")
    return client.post("/api/sessions", {"model": model})


def resumed(session: dict) -> str:
    count = len(session.get("messages") or [])
    return f"Resumed session {session['id'][:8]} ({count} message{'' if count == 1 else 's'})"
