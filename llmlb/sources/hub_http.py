"""huggingface_hub's HTTP client with every answer's size capped, decoded size included.

huggingface_hub reads a Hub's answers (repo info, tree listings) whole and lets its HTTP
client inflate gzip without a limit: a 1 MB answer that expands to 1 GiB took a node from
0.93 to 3.8 GB. Here a response hook reads each answer itself, at most MAX_ANSWER bytes as
sent and MAX_ANSWER once inflated, and hands huggingface_hub the bytes. Files are not read
through this client (llmlb's own downloader fetches them, to disk, size-checked).
"""

from __future__ import annotations

import sys
import threading
import zlib
from typing import Any

from llmlb.errors import LlmlbError

MAX_ANSWER = 32 * 1024 * 1024  # a repo listing of tens of thousands of files fits
_installed = False
_lock = threading.Lock()


class HubAnswerError(LlmlbError):
    """A Hub answered something we will not read."""

    status = 502
    kind = "server_error"


def _inflate(data: bytes, url: str) -> bytes:
    for wbits in (47, -15):  # gzip or zlib (auto-detected), else a raw deflate stream
        try:
            out = zlib.decompressobj(wbits).decompress(data, MAX_ANSWER + 1)
        except zlib.error:
            continue
        if len(out) > MAX_ANSWER:
            raise HubAnswerError(f"{url} answered more than {MAX_ANSWER} bytes once inflated")
        return out
    raise HubAnswerError(f"{url} answered a compressed body that cannot be read")


def capped(response: Any) -> None:
    """A response hook: read the body (capped), inflate it (capped), hand on plain bytes."""
    if response.request.method == "HEAD":  # no body; its Content-Length is the file's size
        return
    url = str(response.url).split("?")[0]
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity", "gzip", "x-gzip", "deflate"):
        response.close()
        raise HubAnswerError(
            f"{url} answered in the {encoding!r} encoding, which llmlb does not read"
        )
    raw = bytearray()
    try:
        for chunk in response.stream:
            raw += chunk
            if len(raw) > MAX_ANSWER:
                raise HubAnswerError(f"{url} answered more than {MAX_ANSWER} bytes")
    finally:
        response.stream.close()
    body = bytes(raw)
    if encoding not in ("", "identity"):
        body = _inflate(body, url)
        response.headers.pop("content-encoding", None)
        response.headers["content-length"] = str(len(body))
    # the HTTP library huggingface_hub uses (httpx, or its fork httpx2) has the stream type
    library = sys.modules[type(response).__module__.partition(".")[0]]
    response.stream = library.ByteStream(body)


def _client_factory() -> Any:
    from huggingface_hub.utils import _http  # the default factory has no public name

    client = _http.default_client_factory()
    client.headers["Accept-Encoding"] = "gzip, deflate"  # what capped() can read
    hooks = client.event_hooks
    hooks["response"] = [*hooks.get("response", []), capped]
    client.event_hooks = hooks
    return client


def install() -> None:
    """Make huggingface_hub's client the capped one (once per process)."""
    global _installed
    with _lock:
        if not _installed:
            from huggingface_hub import set_client_factory

            set_client_factory(_client_factory)
            _installed = True
