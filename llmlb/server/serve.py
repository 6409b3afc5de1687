"""Run a server in the foreground with uvicorn: logs to stdout, graceful on SIGINT/SIGTERM.

A node takes a lock on its LLMLB_HOME first: two nodes on one home would resume the same
pulls into the same partial files. Connections are bounded by server/guard.py. A server
started in the background of a terminal (`llmlb node serve &`) logs to a file instead: its
lines would otherwise land in the middle of whatever runs in the foreground, a chat included.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import sys
from pathlib import Path
from typing import IO

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


def in_background_of_terminal() -> bool:
    """stdout is a terminal whose foreground is another process group: the shell put us in
    the background (`&`, or `bg` after Ctrl+Z at start)."""
    try:
        fd = sys.stdout.fileno()
        return os.isatty(fd) and os.tcgetpgrp(fd) != os.getpgrp()
    except (OSError, ValueError):  # no stdout, or no terminal to ask
        return False


def log_to_file_if_in_background(home: Path, kind: str, host: str, port: int) -> None:
    """In the background of a terminal, say once where the log goes, then send stdout and
    stderr (this process's and its children's, native output included) to that file."""
    if not in_background_of_terminal():
        return
    home.mkdir(parents=True, exist_ok=True)
    path = home / f"{kind}.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    print(
        f"llmlb {kind} starting in the background on http://{host}:{port}; its log is {path}",
        flush=True,
    )
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


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


LOCK_FILE = "node.lock"


def lock_home(home: Path) -> IO[str]:
    """Hold $LLMLB_HOME/node.lock for the life of this process (the kernel lets go of it when
    the process ends, however it ends); an error naming the holder when another node has it."""
    home.mkdir(parents=True, exist_ok=True)
    handle = open(home / LOCK_FILE, "a+")  # noqa: SIM115 (held open until the process exits)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.seek(0)
        holder = handle.read().strip()[:20] or "unknown"
        handle.close()
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            raise LlmlbError(f"cannot lock {home / LOCK_FILE}: {exc.strerror}") from exc
        raise LlmlbError(f"another llmlb node is using {home} (pid {holder})") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def run_uvicorn(app, host: str, port: int, on_drain=None) -> None:
    import uvicorn

    from llmlb.server.guard import guarded

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
        http=guarded(settings.read_timeout_secs(), settings.max_connections()),
        timeout_keep_alive=5,  # the router drops its idle connections to nodes after 3 s
    )
    server = Server(config)
    server.run()
    if not server.started:
        raise LlmlbError(f"the server on {host}:{port} failed to start; see the log above")


_held: list[IO[str]] = []  # the node's home lock, held until the process exits


def serve_node(host: str, port: int, router_url: str | None) -> None:
    setup_logging()
    _held.append(lock_home(settings.home()))
    check_port(host, port)
    log_to_file_if_in_background(settings.home(), "node", host, port)
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
    log_to_file_if_in_background(settings.home(), "router", host, port)
    from llmlb.server.router_app import RouterConfig, create_router_app

    app = create_router_app(RouterConfig(host=host, port=port, home=settings.home()))
    run_uvicorn(app, host, port)
