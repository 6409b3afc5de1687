"""The --host and --port options both servers take."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

F = TypeVar("F", bound=Callable)


def listen_options(default_port: int) -> Callable[[F], F]:
    def decorate(command: F) -> F:
        command = click.option(
            "--port",
            default=default_port,
            show_default=True,
            type=click.IntRange(1, 65535),
            help="Port to listen on.",
        )(command)
        return click.option(
            "--host",
            default="127.0.0.1",
            show_default=True,
            help="Address to listen on. 0.0.0.0 exposes the API to your network.",
        )(command)

    return decorate
