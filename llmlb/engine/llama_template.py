"""A chat rendered with the model's own Jinja template, the one its GGUF ships.

llama-cpp-python's Jinja2ChatFormatter renders it with the sandbox and extensions Hugging
Face's transformers use; we give it the model's bos/eos token texts, and later `tools`.
A GGUF without a template gets no silent stand-in (llama-cpp-python falls back to llama-2's,
which base models answer with nothing): chat requests to it are refused with a clear 400.
"""

from __future__ import annotations

from typing import Any

import jinja2
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from llmlb.errors import BadRequest


class NoChatTemplate(BadRequest):
    def __init__(self, name: str):
        super().__init__(f"model '{name}' has no chat template; use /api/generate (raw completion)")


class ChatTemplate:
    def __init__(self, name: str, source: str, bos: str, eos: str):
        self.name = name
        self.source = source
        self.bos = bos
        try:
            self._formatter = Jinja2ChatFormatter(template=source, eos_token=eos, bos_token=bos)
        except jinja2.TemplateError as exc:
            raise BadRequest(f"the chat template of '{name}' does not parse: {exc}") from exc

    def render(self, messages: list[dict[str, Any]], **extra: Any) -> str:
        """The prompt text, ending with the assistant's turn opened."""
        try:
            return self._formatter(messages=messages, **extra).prompt  # type: ignore[arg-type]
        except ValueError as exc:  # the template's raise_exception(): e.g. roles must alternate
            raise BadRequest(
                f"the chat template of '{self.name}' refused the messages: {exc}"
            ) from exc
        except jinja2.TemplateError as exc:
            raise BadRequest(f"the chat template of '{self.name}' failed: {exc}") from exc
