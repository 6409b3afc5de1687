"""Delivered by a later issue; the command and its help are final."""

from llmlb.client import Client
from llmlb.errors import LlmlbError


def show_nodes(*args, **kwargs) -> None:
    Client.router().get("/")  # the server must be reachable either way
    raise LlmlbError("not implemented yet")


def show_models(*args, **kwargs) -> None:
    Client.router().get("/")  # the server must be reachable either way
    raise LlmlbError("not implemented yet")


def show_status(*args, **kwargs) -> None:
    Client.router().get("/")  # the server must be reachable either way
    raise LlmlbError("not implemented yet")
