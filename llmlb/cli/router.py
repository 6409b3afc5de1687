"""`llmlb router ...`: the load balancer and its cluster views."""

from __future__ import annotations

import click

from llmlb.cli.listen import listen_address, listen_options
from llmlb.settings import DEFAULT_ROUTER_PORT


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def router() -> None:
    """Manage the load balancer that fronts many nodes.

    Client commands talk to the router at $LLMLB_ROUTER (default 127.0.0.1:32768);
    start it with `llmlb router serve`, and nodes with `llmlb node serve --router URL`.
    """


@router.command()
@listen_options(DEFAULT_ROUTER_PORT, "LLMLB_ROUTER")
def serve(host: str | None, port: int | None) -> None:
    """Start the load balancer in the foreground; logs go to stdout. Ctrl+C stops it.

    It listens on $LLMLB_ROUTER (default 127.0.0.1:32768), the address the router commands
    talk to; --host and --port override it. Started in the background of a terminal, it logs
    to $LLMLB_HOME/router.log instead.

    Its state is in $LLMLB_HOME/router.db. Several routers form one cluster when they share
    LLMLB_DATABASE_URL (PostgreSQL) and, for in-flight limits across them, LLMLB_REDIS_URL.
    """
    from llmlb.server.serve import serve_router

    serve_router(*listen_address(host, port, "LLMLB_ROUTER", DEFAULT_ROUTER_PORT))


@router.command()
def nodes() -> None:
    """List registered nodes: id, host, status, GPU and model count."""
    from llmlb.cli.cluster import show_nodes

    show_nodes()


@router.command()
def models() -> None:
    """List models and how many online nodes serve each."""
    from llmlb.cli.cluster import show_models

    show_models()


@router.command()
def status() -> None:
    """Show a cluster summary: health, nodes, models, requests, VRAM; for a cluster, whether
    its shared database and Redis answer."""
    from llmlb.cli.cluster import show_status

    show_status()
