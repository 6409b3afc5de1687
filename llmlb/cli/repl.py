"""The interactive side of `llmlb node run`: prompt_toolkit input and the slash commands."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlencode

from llmlb import settings as env
from llmlb.cli import render
from llmlb.cli.attachments import extract
from llmlb.cli.chat import Chat
from llmlb.cli.models import model_block
from llmlb.errors import LlmlbError

HISTORY_LIMIT = 1000
HELP = """Available Commands:
  /set            Set session variables
  /show info      Show details for this model
  /clear          Clear session context
  /sessions       List recent sessions of this model
  /load <id>      Load a session (a unique id prefix works)
  /bye            Exit
  /?, /help       Help for a command

Use \"\"\" to begin a multi-line message.
Add an image by typing its path, e.g. ./photo.png describe this
"""
PREVIEW_WIDTH = 40


def set_help(chat: Chat) -> str:
    """`/? set`, with the values the next reply uses (read, never repeated here)."""
    cannot = "" if chat.can_think else " (this model cannot think)"
    return "\n".join(
        [
            "Available Commands:",
            f"  /set temperature <0.0-2.0>   Randomness of replies (now {chat.in_force('temperature')})",
            f"  /set top_p <0.0-1.0>         Nucleus sampling (now {chat.in_force('top_p')})",
            f"  /set max_tokens <n>          Longest reply in tokens (now {chat.in_force('max_tokens')})",
            "  /set system <text>           Set the system prompt",
            f"  /set think                   Show the model's thinking{cannot}",
            "  /set nothink                 Hide the model's thinking",
            "",
        ]
    )


def one_line(text: str, width: int = PREVIEW_WIDTH) -> str:
    """A message as one table cell: its lines joined, control characters dropped, shortened."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def make_prompt_session(**kwargs):
    from prompt_toolkit import PromptSession
    from prompt_toolkit.formatted_text import HTML
    from prompt_toolkit.history import FileHistory

    path = env.history_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    trim_history(path)
    return PromptSession(
        history=FileHistory(str(path)),
        placeholder=HTML("<style color='ansibrightblack'>Send a message (/? for help)</style>"),
        **kwargs,
    )


def trim_history(path, limit: int = HISTORY_LIMIT) -> None:
    """Keep the newest `limit` entries of prompt_toolkit's history file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return
    entries = text.split("\n\n# ")
    if len(entries) > limit:
        path.write_text("\n\n# ".join(["", *entries[-limit:]]).lstrip("\n"))


def is_command(text: str) -> bool:
    """`/set ...` is a command; `/home/me/cat.png what is this` is a message with a path."""
    word = text.strip().split(" ", 1)[0]
    return word.startswith("/") and "/" not in word[1:]


class Repl:
    def __init__(self, chat: Chat, prompt_session=None, say: Callable[[str], None] | None = None):
        self.chat = chat
        self.session = prompt_session or make_prompt_session()
        self.say = say or (lambda text: chat.write(text + "\n"))

    def read(self) -> str:
        line = self.session.prompt(">>> ")
        if not line.lstrip().startswith('"""'):
            return line
        lines = [line.lstrip()[3:]]
        while not lines[-1].rstrip().endswith('"""') or (
            len(lines) == 1 and lines[0].strip() == ""
        ):
            lines.append(self.session.prompt("... ", placeholder=None))
        lines[-1] = lines[-1].rstrip()[:-3]
        return "\n".join(lines).strip("\n")

    def run(self) -> None:
        while True:
            try:
                text = self.read()
            except KeyboardInterrupt:
                self.say("Use Ctrl + d or /bye to exit.")
                continue
            except EOFError:
                return
            if not text.strip():
                continue
            try:
                if is_command(text):
                    if self.command(text.strip()) == "bye":
                        return
                    continue
                found = extract(text)
                for path in found.added:
                    self.say(f"Added image '{path}'")
                for err in found.errors:
                    self.say(f"Error: {err}")
                self.chat.turn(found.text, found.images)
            except LlmlbError as exc:
                self.say(f"Error: {exc.message}")

    # -- slash commands -----------------------------------------------------
    def command(self, text: str) -> str | None:
        word, _, rest = text.partition(" ")
        rest = rest.strip()
        if word == "/bye":
            return "bye"
        if word in ("/?", "/help"):
            self.say(set_help(self.chat) if rest.startswith("set") else HELP)
        elif word == "/clear":
            self.chat.client.delete(f"/api/sessions/{self.chat.session['id']}/messages")
            self.chat.session["messages"] = []
            self.say("Cleared session context")
        elif word == "/set":
            self.set(rest)
        elif word == "/show":
            self.show(rest)
        elif word == "/sessions":
            self.sessions()
        elif word == "/load":
            self.load(rest)
        else:
            self.say(f"Unknown command '{word}'. Type /? for help")
        return None

    def _update(self, **changes) -> None:
        row = self.chat.client.request(
            "PATCH", f"/api/sessions/{self.chat.session['id']}", {"settings": changes}
        )
        self.chat.session["settings"] = row["settings"]

    def set(self, rest: str) -> None:
        key, _, value = rest.partition(" ")
        value = value.strip()
        if key == "think":
            if not self.chat.can_think:  # as the API's 400 says it (and ollama's run)
                raise LlmlbError(f"model '{self.chat.name}' does not support thinking")
            self.chat.show_thinking = True
            self._update(show_thinking=True)
            self.say("Set 'think' mode.")
        elif key == "nothink":
            self.chat.show_thinking = False
            self._update(show_thinking=False)
            self.say("Set 'nothink' mode.")
        elif key == "system":
            if not value:
                raise LlmlbError("usage: /set system <text>")
            self._update(system=value)
            self.say("Set system message.")
        elif key in ("temperature", "top_p", "max_tokens"):
            try:
                number = int(value) if key == "max_tokens" else float(value)
            except ValueError:
                raise LlmlbError(f"{key} must be a number (got '{value}')") from None
            self._update(**{key: number})
            self.chat.chosen.add(key)
            self.say(f"Set parameter '{key}' to '{value}'")
        elif key:
            self.say(f"Error: unknown parameter '{key}'")
            self.say(set_help(self.chat))
        else:
            self.say(set_help(self.chat))

    def show(self, rest: str) -> None:
        if rest != "info":
            self.say("Available Commands:\n  /show info   Show details for this model")
            return
        self.say(model_block(self.chat.client.post("/api/show", {"model": self.chat.name})))

    def sessions(self) -> None:
        rows = self.chat.client.get(
            "/api/sessions?" + urlencode({"model": self.chat.name, "limit": 10})
        )["sessions"]
        table = [
            [
                r["id"][:8],
                str(r["message_count"]),
                render.ago(r["updated_at"]),
                one_line(r["preview"]),
            ]
            for r in rows
        ]
        self.say(render.table(["ID", "MESSAGES", "UPDATED", "FIRST MESSAGE"], table))

    def load(self, ident: str) -> None:
        if not ident:
            raise LlmlbError("usage: /load <session-id>")
        session = self.chat.client.get(f"/api/sessions/{ident}")
        if session["model"] != self.chat.name:
            raise LlmlbError(f"session '{ident}' belongs to model '{session['model']}'")
        self.chat.session = session
        self.say(f"Loaded session {session['id'][:8]} ({len(session['messages'])} messages)")
