"""Delivered by a later issue; the command and its help are final."""

from llmlb.client import Client
from llmlb.errors import LlmlbError


def stop_model(*args, **kwargs) -> None:
    Client.node().get("/")  # the server must be reachable either way
    raise LlmlbError("not implemented yet")


def list_running(*args, **kwargs) -> None:
    Client.node().get("/")  # the server must be reachable either way
    raise LlmlbError("not implemented yet")
