"""Request bodies of /api/create and /api/copy, typed as requests.py types the others: every
field's type and size is checked before anything is read, staged or written."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from llmlb.jobs.create_plan import CreateRequest
from llmlb.server.requests import ModelName, _Named

MAX_FILES = 1024  # a checkpoint's shards and side files
MAX_MESSAGES = 1000
FileName = Annotated[str, Meta(min_length=1, max_length=255)]
Digest = Annotated[str, Meta(pattern=r"^sha256[:-][0-9a-f]{64}$")]
Files = Annotated[dict[FileName, Digest], Meta(max_length=MAX_FILES)]
LongText = Annotated[str, Meta(max_length=1024 * 1024)]
ParamValue = (
    bool
    | int
    | float
    | Annotated[str, Meta(max_length=512)]
    | Annotated[list[Annotated[str, Meta(max_length=512)]], Meta(max_length=16)]
)


class CreateMessage(msgspec.Struct, kw_only=True):
    role: Literal["system", "user", "assistant"]
    content: LongText = ""


class CreateBody(_Named, kw_only=True):
    """ollama's current /api/create: a model built from `from` (a model llmlb has) or
    `files` (blobs uploaded to /api/blobs), with what a Modelfile adds."""

    from_: ModelName | None = msgspec.field(default=None, name="from")
    files: Files | None = None
    adapters: Files | None = None
    template: LongText | None = None
    system: LongText | None = None
    license: LongText | Annotated[list[LongText], Meta(max_length=16)] | None = None
    parameters: (
        Annotated[dict[Annotated[str, Meta(max_length=64)], ParamValue], Meta(max_length=64)] | None
    ) = None
    messages: Annotated[list[CreateMessage], Meta(max_length=MAX_MESSAGES)] | None = None
    quantize: Annotated[str, Meta(max_length=16)] | None = None
    stream: bool = True

    def request(self) -> CreateRequest:
        lic = "\n".join(self.license) if isinstance(self.license, list) else self.license
        params: dict[str, Any] | None = (
            dict(self.parameters) if self.parameters is not None else None
        )
        return CreateRequest(
            name=self.target,
            source=self.from_,
            files={n: d[7:] for n, d in (self.files or {}).items()},
            adapters={n: d[7:] for n, d in (self.adapters or {}).items()},
            template=self.template,
            system=self.system,
            parameters=params,
            messages=[{"role": m.role, "content": m.content} for m in self.messages]
            if self.messages is not None
            else None,
            license=lic,
            quantize=self.quantize,
        )


class CopyBody(msgspec.Struct, kw_only=True):
    source: ModelName
    destination: ModelName
