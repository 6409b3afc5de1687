"""`llmlb node run`: find the model, open its session, then one reply or the REPL.

The command's body lives here, above both chat.py (one turn) and repl.py (the interactive
loop), so neither of those imports the other's caller.
"""

from __future__ import annotations

import shutil
import sys

from llmlb.cli.attachments import extract
from llmlb.cli.chat import DIM, RESET, Chat, open_session
from llmlb.cli.repl import Repl
from llmlb.client import Client
from llmlb.errors import LlmlbError, NotFound, ValidationError
from llmlb.sources.hf_refs import parse_ref


def run_chat(
    model: str,
    prompt: str,
    *,
    think: bool,
    session_id: str | None,
    resume_last: bool,
    verbose: bool,
) -> None:
    client = Client.node()
    try:
        info = client.post("/api/show", {"model": model})
    except NotFound as exc:
        raise LlmlbError(not_found(model, exc.message)) from None
    if think and "thinking" not in (info.get("capabilities") or []):
        raise LlmlbError(f"model '{model}' does not support thinking")  # as the API says it
    session = open_session(client, info["name"], session_id, resume_last, note=_note)
    interactive = not prompt and sys.stdin.isatty()
    tty = sys.stdout.isatty()
    chat = Chat(
        client,
        info,
        session,
        sys.stdout,
        styled=tty,
        show_thinking=think,
        verbose=verbose,
        width=shutil.get_terminal_size().columns if tty else None,
    )
    if not interactive:
        text = prompt or sys.stdin.read()
        if not text.strip():
            raise LlmlbError("no prompt given: pass one as an argument or on standard input")
        found = extract(text)
        for err in found.errors:
            print(f"Error: {err}", file=sys.stderr)
        chat.turn(found.text, found.images)
        return
    Repl(chat).run()


def _note(text: str) -> None:
    """One dim line on stderr (stdout holds only the reply when it is piped)."""
    if sys.stderr.isatty():
        text = DIM + text + RESET
    print(text, file=sys.stderr)


def not_found(model: str, message: str) -> str:
    """The server's "not found" (with its closest local names), plus how to download the
    model when the name is one `pull` takes; never a pull hint that would fail."""
    try:
        parse_ref(model)
    except ValidationError:
        return message
    if "did you mean" in message:
        return f"{message} Or download it: `llmlb node pull {model}`"
    return f"{message}; download it with `llmlb node pull {model}`"
