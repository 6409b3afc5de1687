"""Run a server in the foreground with uvicorn: logs to stdout, graceful on SIGINT/SIGTERM."""

from __future__ import annotations

import errno
import logging
import socket
import sys

from llmlb import settings
from llmlb.errors import LlmlbError

GRACE_SECS = 5  # in-flight streams get this long to finish at shutdown, then are cancelled


def setup_logging() -> None:
    level = logging.DEBUG if settings.debug() else logging.INFO
    logging.basicConfig(
        level=level,
        stream=sys.stdout,
        format="%(asctime)s %(levelname)-5s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("httpx", "httpcore", "huey", "alembic", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if settings.debug() else logging.WARNING)


def check_port(host: str, port: int) -> None:
    """Fail early and clearly when the address is taken, before loading anything."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise LlmlbError(f"port {port} on {host} is already in use") from exc
            raise LlmlbError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc


def run_uvicorn(app, host: str, port: int, on_drain=None) -> None:
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            super().handle_exit(sig, frame)
            # Ctrl+C / SIGTERM ask for a clean stop: exit 0 afterwards, don't re-raise.
            self._captured_signals.clear()

        async def shutdown(self, sockets=None) -> None:
            if on_drain is not None:
                on_drain()  # end running generations now, so their streams close normally
            await super().shutdown(sockets)

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=settings.debug(),
        timeout_graceful_shutdown=GRACE_SECS,
        lifespan="on",
        ws="none",
    )
    server = Server(config)
    server.run()
    if not server.started:
        raise LlmlbError(f"the server on {host}:{port} failed to start; see the log above")


def serve_node(host: str, port: int, router_url: str | None) -> None:
    setup_logging()
    check_port(host, port)
    from llmlb.server.node_app import create_node_app
    from llmlb.server.node_services import NodeConfig, build_services

    config = NodeConfig(host=host, port=port, home=settings.home(), router_url=router_url)
    services = build_services(config)
    logging.getLogger("llmlb.node").info(
        "llmlb node listening on http://%s:%s (data in %s)", host, port, config.home
    )
    app = create_node_app(config, services)
    run_uvicorn(app, host, port, on_drain=services.scheduler.drain)


def serve_router(host: str, port: int) -> None:
    setup_logging()
    check_port(host, port)
    from llmlb.server.router_app import RouterConfig, create_router_app

    app = create_router_app(RouterConfig(host=host, port=port, home=settings.home()))
    run_uvicorn(app, host, port)
