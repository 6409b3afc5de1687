"""The CLI shell as a user meets it: help, exit codes, and a real node server."""

import os
import signal
import socket

import httpx
import pytest

from tests.support.procs import LLMLB, ServerProcess, free_port, run_cli, wait_for
from tests.support.terminal import Terminal

NODE_COMMANDS = ["serve", "run", "pull", "list", "show", "rm", "stop", "ps"]
ROUTER_COMMANDS = ["nodes", "models", "status", "serve"]


def test_version():
    r = run_cli("--version")
    assert r.returncode == 0
    assert r.stdout.startswith("llmlb 0.")


@pytest.mark.parametrize("args", [[], ["node"], ["router"]])
def test_group_help(args):
    r = run_cli(*args, "--help")
    assert r.returncode == 0, r.stderr
    assert "Usage:" in r.stdout


def test_node_help_lists_every_command():
    out = run_cli("node", "--help").stdout
    for cmd in NODE_COMMANDS:
        assert f"  {cmd} " in out


@pytest.mark.parametrize(
    "cmd, words",
    [
        ("serve", ["--host", "--port", "32769", "--router"]),
        ("run", ["MODEL", "--think", "--hidethinking", "--session", "--continue", "--verbose"]),
        ("pull", ["MODEL", "owner/repo", "HF_TOKEN", "Q4_K_M"]),
        ("list", ["newest first"]),
        ("show", ["--license", "--parameters", "--modelfile", "--template", "--system"]),
        ("rm", ["MODEL", "no confirmation"]),
        ("stop", ["MODEL", "Unload"]),
        ("ps", ["VRAM", "temperature"]),
    ],
)
def test_node_command_help(cmd, words):
    r = run_cli("node", cmd, "--help")
    assert r.returncode == 0, r.stderr
    for w in words:
        assert w in r.stdout


@pytest.mark.parametrize("cmd", ROUTER_COMMANDS)
def test_router_command_help(cmd):
    r = run_cli("router", cmd, "--help")
    assert r.returncode == 0, r.stderr
    assert "Usage:" in r.stdout


def test_unknown_option_is_exit_1_one_line():
    r = run_cli("node", "list", "--bogus")
    assert r.returncode == 1
    assert r.stderr.startswith("Error: ")
    assert r.stderr.count("\n") == 1


def test_bad_llmlb_host_is_exit_1():
    r = run_cli("node", "list", env={**os.environ, "LLMLB_HOST": "ftp://nope:1"})
    assert r.returncode == 1
    assert r.stderr.startswith("Error: LLMLB_HOST")


@pytest.mark.parametrize(
    "args",
    [
        ["node", "list"],
        ["node", "ps"],
        ["node", "show", "m"],
        ["node", "rm", "m"],
        ["node", "stop", "m"],
        ["node", "pull", "a/b"],
    ],
)
def test_no_server_is_exit_2_with_address(args):
    port = free_port()
    env = {**os.environ, "LLMLB_HOST": f"127.0.0.1:{port}"}
    r = run_cli(*args, env=env)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.startswith("Error: ")
    assert f"127.0.0.1:{port}" in r.stderr


def test_router_commands_without_router_exit_2():
    port = free_port()
    env = {**os.environ, "LLMLB_ROUTER": f"127.0.0.1:{port}"}
    for cmd in ("nodes", "models", "status"):
        r = run_cli("router", cmd, env=env)
        assert r.returncode == 2, (cmd, r.stderr)
        assert f"127.0.0.1:{port}" in r.stderr


def test_serve_answers_and_stops_cleanly_on_ctrl_c(tmp_path):
    server = ServerProcess(tmp_path / "home").start()
    try:
        r = httpx.get(server.url + "/")
        assert r.status_code == 200 and r.text == "llmlb is running"
        assert httpx.get(server.url + "/api/version").json()["version"]
        missing = httpx.get(server.url + "/api/nothing-here")
        assert missing.status_code == 404 and "error" in missing.json()
    finally:
        server.signal(signal.SIGINT)
        assert server.wait() == 0, server.log()
    assert (tmp_path / "home" / "llmlb.db").exists()


def test_serve_sigterm_is_graceful(tmp_path):
    server = ServerProcess(tmp_path / "home").start()
    server.signal(signal.SIGTERM)
    assert server.wait() == 0, server.log()


def test_serve_port_in_use_is_exit_1(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run_cli(
            "node",
            "serve",
            "--port",
            str(port),
            env={**os.environ, "LLMLB_HOME": str(tmp_path / "h")},
        )
    assert r.returncode == 1
    assert f"port {port}" in r.stderr and "already in use" in r.stderr


def test_serve_in_the_background_of_a_terminal_writes_nothing_more_into_it(tmp_path):
    """`llmlb node serve &`, as the Quickstart has it: one line says where the log goes, and
    nothing else lands in the terminal where the chat will run."""
    home, port = tmp_path / "home", free_port()
    env = {**os.environ, "LLMLB_HOME": str(home), "LLMLB_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(url + "/", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    with Terminal() as term:
        shell = term.in_background([*LLMLB, "node", "serve", "--port", str(port)], env)
        try:
            assert wait_for(up, 60), term.text()
            assert httpx.get(url + "/api/nothing-here").status_code == 404
            assert run_cli("node", "ps", env={**env, "LLMLB_HOST": str(port)}).returncode == 0
        finally:
            os.kill(int((home / "node.lock").read_text()), signal.SIGINT)
            assert shell.wait(30) == 0
        screen = term.text()
    log = home / "node.log"
    assert screen.strip() == f"llmlb node starting in the background on {url}; its log is {log}"
    assert "llmlb node listening on" in log.read_text()
