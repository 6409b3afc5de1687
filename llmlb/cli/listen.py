"""The --host and --port options both servers take; what they leave out comes from the
variable the server's clients read (LLMLB_HOST for a node, LLMLB_ROUTER for a router)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

from llmlb import settings

F = TypeVar("F", bound=Callable)


def listen_options(default_port: int, env_name: str) -> Callable[[F], F]:
    def decorate(command: F) -> F:
        command = click.option(
            "--port",
            default=None,
            type=click.IntRange(1, 65535),
            help=f"Port to listen on  [default: {env_name}'s port, else {default_port}]",
        )(command)
        return click.option(
            "--host",
            default=None,
            help="Address to listen on; 0.0.0.0 exposes the API to your network  "
            f"[default: {env_name}'s host, else 127.0.0.1]",
        )(command)

    return decorate


def listen_address(
    host: str | None, port: int | None, env_name: str, default_port: int
) -> tuple[str, int]:
    """--host and --port where given, the rest from `env_name` (`:41001`, `41001`,
    `0.0.0.0:41001`, ...), else loopback and the default port."""
    found = settings.listen_address(env_name, default_port)
    return (host or found.host).strip("[]"), port or found.port
