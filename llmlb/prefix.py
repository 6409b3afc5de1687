"""Text-prefix hashes: how a router and a node name the beginning of a request alike.

The router cannot tokenize (it has no model), so prefixes are named by the request's text:
its messages in order (role and text), each cut into blocks of BLOCK_CHARS characters, or a
raw prompt cut into blocks. Each block's hash covers every block before it (a chain), so one
hash names a whole prefix. A node reports the hashes of what its sequences and its disk cache
hold (engine/holdings.py); the router hashes each request the same way and sends it to the
node that holds the deepest point of its chain (balancer/policy.py).

Both sides normalise the same way: a `developer` role is `system`, a missing content is "",
OpenAI content parts are their texts joined by newlines. A request with images has no chain.
Tools and options are not part of it: a conversation keeps its tools, and a rare mismatch
costs only a cold prompt on the node chosen.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Container, Iterable, Sequence
from typing import Any, NamedTuple

BLOCK_CHARS = 1024  # about 250 tokens of English: the finest prefix the router tells apart
MAX_POINTS = 4096  # a chain is cut here (a 4 MiB prompt); deeper points are not named
MAX_HELD = 4096  # hashes a node reports in one heartbeat (32 KiB)
HASH_BYTES = 8
_MASK = (1 << 63) - 1  # fits a signed 64-bit integer everywhere (msgpack, JSON, SQL)
_PACK = struct.Struct(">Q")


class Point(NamedTuple):
    """One point of a chain: the hash of everything up to it, and how many characters that is."""

    hash: int
    chars: int


def _h(parent: bytes, data: bytes) -> bytes:
    return hashlib.blake2b(parent + data, digest_size=HASH_BYTES).digest()


def _point(digest: bytes, chars: int) -> Point:
    return Point(int.from_bytes(digest, "big") & _MASK, chars)


def _seed(model: str, kind: bytes) -> bytes:
    return _h(b"llmlb-prefix-1\x00" + kind, model.encode("utf-8", "surrogatepass"))


def _blocks(text: str) -> Iterable[str]:
    if not text:
        yield ""
        return
    for i in range(0, len(text), BLOCK_CHARS):
        yield text[i : i + BLOCK_CHARS]


def chat_chain(model: str, messages: Sequence[tuple[str, str]]) -> list[Point]:
    """The chain of a chat: every message starts a new block; long ones span several."""
    digest, chars, out = _seed(model, b"chat"), 0, []
    for role, text in messages:
        first = True
        for block in _blocks(text):
            head = b"\x00" + role.encode("utf-8", "surrogatepass") + b"\x00" if first else b"\x01"
            digest = _h(digest, head + block.encode("utf-8", "surrogatepass"))
            chars += len(block) + (len(role) + 1 if first else 0)
            out.append(_point(digest, chars))
            first = False
            if len(out) >= MAX_POINTS:
                return out
    return out


def prompt_chain(model: str, prompt: str) -> list[Point]:
    """The chain of a raw prompt (a completion): its blocks."""
    digest, chars, out = _seed(model, b"raw"), 0, []
    for block in _blocks(prompt):
        digest = _h(digest, block.encode("utf-8", "surrogatepass"))
        chars += len(block)
        out.append(_point(digest, chars))
        if len(out) >= MAX_POINTS:
            break
    return out


def text_of(content: Any) -> str | None:
    """A message's content as the chain sees it; None when it holds anything but text."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type", "text") != "text":
                return None
            text = part.get("text", "")
            if not isinstance(text, str):
                return None
            texts.append(text)
        return "\n".join(texts)
    return None


def messages_of(messages: Any) -> list[tuple[str, str]] | None:
    """(role, text) pairs of chat messages as a client sent them (decoded JSON, or the node's
    own dicts); None when one holds images or is not a message."""
    if not isinstance(messages, list):
        return None
    out = []
    for m in messages:
        if not isinstance(m, dict) or m.get("images"):
            return None
        role, text = m.get("role"), text_of(m.get("content"))
        if not isinstance(role, str) or text is None:
            return None
        out.append(("system" if role == "developer" else role, text))
    return out


def matched(held: Container[int], chain: Sequence[Point]) -> int:
    """Characters of the longest prefix of `chain` in `held` (0: none). A chain's points are
    held together with every point before them, so the deepest one found is the answer."""
    for point in reversed(chain):
        if point.hash in held:
            return point.chars
    return 0


def pack(hashes: Iterable[int]) -> bytes:
    return b"".join(_PACK.pack(h & _MASK) for h in hashes)


def unpack(data: bytes) -> list[int]:
    """Hashes from pack(); a trailing partial value is ignored (the sender checks lengths)."""
    n = len(data) // HASH_BYTES
    return [v for (v,) in _PACK.iter_unpack(data[: n * HASH_BYTES])]
