"""Entry point. Imports stay lazy so `llmlb --version` and client commands start fast."""

from __future__ import annotations

import importlib
import sys

import click

from llmlb import __version__


class LazyGroup(click.Group):
    """A group whose subcommands live in modules imported only when used."""

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx, name):
        if name in self.lazy:
            module, attr = self.lazy[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


@click.group(
    cls=LazyGroup,
    lazy={
        "node": "llmlb.cli.node:node",
        "router": "llmlb.cli.router:router",
        "db": "llmlb.cli.db:db",
    },
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(
    __version__, "--version", "-v", prog_name="llmlb", message="%(prog)s %(version)s"
)
def cli() -> None:
    """Run local LLMs like ollama, and balance many nodes behind one endpoint.

    \b
    llmlb node ...    run and manage one inference node
    llmlb router ...  the load balancer in front of many nodes
    """


def main() -> None:
    from llmlb.cli.errors import run_cli

    sys.exit(run_cli(cli))
