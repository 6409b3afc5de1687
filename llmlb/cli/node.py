"""`llmlb node ...`: the node server and the client commands that talk to it.

Only signatures and help live here; each body calls its implementation module, imported
when the command runs, so a command pays only for what it uses.
"""

from __future__ import annotations

import click

from llmlb.cli.listen import listen_address, listen_options
from llmlb.settings import DEFAULT_NODE_PORT


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def node() -> None:
    """Run and manage one inference node.

    Client commands talk to the node server at $LLMLB_HOST (default 127.0.0.1:32769);
    start it with `llmlb node serve`.
    """


@node.command()
@listen_options(DEFAULT_NODE_PORT, "LLMLB_HOST")
@click.option(
    "--router",
    "router_url",
    envvar="LLMLB_ROUTER_URL",
    default=None,
    metavar="URL",
    help="Register with this load balancer and send heartbeats; several routers of one "
    "cluster separated by commas, the next used when one is down (env: LLMLB_ROUTER_URL).",
)
def serve(host: str | None, port: int | None, router_url: str | None) -> None:
    """Start the node server in the foreground; logs go to stdout. Ctrl+C stops it.

    It listens on $LLMLB_HOST (`:41001`, `41001`, `0.0.0.0:41001`; default 127.0.0.1:32769),
    the address the client commands talk to; --host and --port override it. Started in the
    background of a terminal (`llmlb node serve &`), it logs to $LLMLB_HOME/node.log instead,
    so that its lines never land in your chat.
    """
    from llmlb.server.serve import serve_node

    serve_node(*listen_address(host, port, "LLMLB_HOST", DEFAULT_NODE_PORT), router_url)


@node.command()
@click.argument("model")
@click.argument("prompt", nargs=-1)
@click.option(
    "--think",
    is_flag=True,
    help="Show the model's thinking before the answer (a model that cannot think is an error).",
)
@click.option(
    "--hidethinking", is_flag=True, help="Show only the answer, not the thinking (default)."
)
@click.option(
    "--session",
    "session_id",
    metavar="ID",
    help="Resume a saved chat session (a unique id prefix works).",
)
@click.option(
    "--continue", "resume_last", is_flag=True, help="Resume the most recent session of this model."
)
@click.option(
    "--verbose",
    is_flag=True,
    help="After each reply print token counts, time to first token and tokens/s.",
)
def run(
    model: str,
    prompt: tuple[str, ...],
    think: bool,
    hidethinking: bool,
    session_id: str | None,
    resume_last: bool,
    verbose: bool,
) -> None:
    """Chat with MODEL (name or alias; NAME:latest, or NAME:TAG for a pulled tag) in a REPL.

    With a PROMPT, or with text on standard input, print one reply and exit.
    In the REPL, type /? for help and /bye to leave.
    """
    from llmlb.cli.run import run_chat

    if think and hidethinking:
        raise click.UsageError("--think and --hidethinking cannot be used together")
    run_chat(
        model,
        " ".join(prompt),
        think=think,
        session_id=session_id,
        resume_last=resume_last,
        verbose=verbose,
    )


@node.command()
@click.argument("model")
def pull(model: str) -> None:
    """Download MODEL from Hugging Face.

    \b
    MODEL is one of:
      owner/repo                 the repo's best GGUF (Q4_K_M first) or its safetensors
      owner/repo:latest          the same
      owner/repo:Q8_0            a GGUF quantization tag (any case)
      owner/repo/path/file.gguf  one file of the repo
      hf.co/owner/repo:TAG       as ollama writes it
      https://huggingface.co/owner/repo[/resolve|blob/REV/FILE]
    The download runs in the server: Ctrl+C detaches, and `pull` again shows its progress.
    Set HF_TOKEN for gated models, HF_ENDPOINT for a mirror; both go to the server with this
    pull (it never sends its own token to a mirror named here).
    """
    from llmlb.cli.pulling import pull_model

    pull_model(model)


@node.command()
@click.argument("model")
@click.option(
    "-f",
    "--file",
    "modelfile",
    metavar="PATH",
    help="The Modelfile (default: ./Modelfile).",
)
@click.option(
    "-q",
    "--quantize",
    metavar="TYPE",
    help="Quantize the weights: Q4_K_M, Q5_K_M, Q8_0, Q4_0, Q6_K, ... (from F16, BF16 or F32).",
)
def create(model: str, modelfile: str | None, quantize: str | None) -> None:
    '''Create MODEL from a Modelfile: a GGUF, a Safetensors directory (converted to GGUF) or
    a model you have, with a TEMPLATE, SYSTEM, PARAMETERs, MESSAGEs, a LoRA ADAPTER.

    \b
    FROM ./model.gguf | ./safetensors-dir | NAME
    ADAPTER ./lora.gguf
    TEMPLATE """{{ .System }} ..."""     (Go template as ollama writes it, or Jinja)
    SYSTEM """You are ..."""
    PARAMETER temperature 0.2
    MESSAGE user Hello
    LICENSE """..."""
    Files the node does not have yet are uploaded to it first.
    '''
    from llmlb.cli.create import create_model

    create_model(model, modelfile, quantize)


@node.command()
@click.argument("source")
@click.argument("destination")
def cp(source: str, destination: str) -> None:
    """Copy SOURCE to a new model DESTINATION: the same files under a second name (no bytes
    are copied); removing either leaves the other whole."""
    from llmlb.cli.create import copy_model

    copy_model(source, destination)


@node.command(name="list")
def list_() -> None:
    """List local models, newest first (ollama's models appear read-only)."""
    from llmlb.cli.models import list_models

    list_models()


SHOW_ITEMS = ("license", "parameters", "modelfile", "template", "system")


@node.command()
@click.argument("model")
@click.option("--license", is_flag=True, help="Show only the license.")
@click.option("--parameters", is_flag=True, help="Show only the default parameters.")
@click.option("--modelfile", is_flag=True, help="Show only the Modelfile.")
@click.option("--template", is_flag=True, help="Show only the chat template.")
@click.option("--system", is_flag=True, help="Show only the system prompt.")
def show(model: str, **flags: bool) -> None:
    """Show details of MODEL (name or alias); at most one --flag picks a single item."""
    from llmlb.cli.models import show_model

    chosen = [name for name in SHOW_ITEMS if flags[name]]
    if len(chosen) > 1:
        raise click.UsageError("choose at most one of --" + ", --".join(SHOW_ITEMS))
    show_model(model, chosen[0] if chosen else None)


@node.command()
@click.argument("model")
def rm(model: str) -> None:
    """Delete MODEL and its files at once, with no confirmation."""
    from llmlb.cli.models import remove_model

    remove_model(model)


@node.command()
@click.argument("model")
def stop(model: str) -> None:
    """Unload a running MODEL now and free its memory."""
    from llmlb.cli.running import stop_model

    stop_model(model)


@node.command()
def ps() -> None:
    """List loaded models with memory, processor, time left, VRAM and GPU temperature."""
    from llmlb.cli.running import list_running

    list_running()
