"""`llmlb node run`: find the model, open its session, then one reply or the REPL.

The command's body lives here, above both chat.py (one turn) and repl.py (the interactive
loop), so neither of those imports the other's caller.
"""

from __future__ import annotations

import sys

from llmlb.cli.attachments import extract
from llmlb.cli.chat import Chat, open_session
from llmlb.cli.repl import Repl
from llmlb.client import Client
from llmlb.errors import LlmlbError, NotFound


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
    except NotFound:
        raise LlmlbError(
            f"model '{model}' not found; download it with `llmlb node pull {model}`"
        ) from None
    session = open_session(client, info["name"], session_id, resume_last)
    interactive = not prompt and sys.stdin.isatty()
    chat = Chat(
        client,
        info,
        session,
        sys.stdout,
        styled=sys.stdout.isatty(),
        show_thinking=think,
        verbose=verbose,
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
