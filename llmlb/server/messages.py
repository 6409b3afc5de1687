"""What requests and answers hold, in the engine's terms: chat messages (with their images
checked by their bytes), and log probabilities in the shape ollama and OpenAI share."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from llmlb.engine.base import TokenLogprob
from llmlb.errors import BadRequest
from llmlb.server.requests import ChatMessage, ImagePart, ImageURL
from llmlb.store.models import Model

IMAGE_MAGIC = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF8": "image/gif"}


def image_data_url(b64: str, field_name: str = "images") -> str:
    """Check an image by its bytes and turn it into a data URL for llama.cpp."""
    if b64.startswith("data:"):
        b64 = b64.split(",", 1)[-1]
    try:
        raw = base64.b64decode(b64, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise BadRequest(f"field '{field_name}' holds invalid base64") from exc
    mime = next((m for magic, m in IMAGE_MAGIC.items() if raw.startswith(magic)), None)
    if mime is None and raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        mime = "image/webp"
    if mime is None:
        raise BadRequest(
            f"field '{field_name}' holds data that is not a PNG, JPEG, WebP or GIF image"
        )
    return f"data:{mime};base64,{b64}"


def chat_messages(messages: list[ChatMessage], model: Model) -> list[dict]:
    """Typed chat messages in llama-cpp-python's format; images checked by their bytes."""
    out: list[dict] = []
    for i, m in enumerate(messages):
        role = "system" if m.role == "developer" else m.role
        images: list[str] = []
        content = m.content or ""
        if isinstance(content, list):  # OpenAI content parts
            texts = []
            for part in content:
                if isinstance(part, ImagePart):
                    url = (
                        part.image_url.url
                        if isinstance(part.image_url, ImageURL)
                        else part.image_url
                    )
                    if not url.startswith("data:"):
                        raise BadRequest(
                            "only data: URLs are accepted for images (no remote fetches)"
                        )
                    images.append(image_data_url(url, f"messages[{i}].content"))
                else:
                    texts.append(part.text)
            content = "\n".join(texts)
        for img in m.images or []:
            images.append(image_data_url(img, f"messages[{i}].images"))
        if images and not model.projector_path:
            raise BadRequest(f"model '{model.name}' does not support images")
        if images:
            parts: list[dict] = [{"type": "image_url", "image_url": {"url": u}} for u in images]
            out.append({"role": role, "content": [*parts, {"type": "text", "text": content}]})
        else:
            out.append({"role": role, "content": content})
        if m.tool_calls:
            out[-1]["tool_calls"] = [
                {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
                for c in m.tool_calls
            ]
        if role == "tool":
            if m.tool_call_id:
                out[-1]["tool_call_id"] = m.tool_call_id
            if m.tool_name or m.name:
                out[-1]["name"] = m.tool_name or m.name
    return out


def _token_logprob(token: str, logprob: float, raw: bytes) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(raw or token.encode())}


def token_logprobs(lps: list[TokenLogprob]) -> list[dict[str, Any]]:
    """Each token with its bytes and its top alternatives: the shape ollama and OpenAI chat
    share."""
    return [
        {
            **_token_logprob(lp.token, lp.logprob, lp.raw),
            "top_logprobs": [_token_logprob(t, v, raw) for t, v, raw in lp.top],
        }
        for lp in lps
    ]
