"""Request bodies at the door: decoding failures of any kind are one clear 400.

Litestar decodes the body to JSON values and then into the handler's typed struct (see
requests.py). Its own decoder lets a few hostile bodies through as 500s: bytes that are not
UTF-8, and nesting deep enough to exhaust the recursion limit. This request class decodes
with llmlb.jsonio, which turns every failure into BadRequest.
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.types import Empty

from llmlb.errors import BadRequest
from llmlb.jsonio import decode


class ApiRequest(Request):
    async def json(self) -> Any:
        if self._json is Empty:
            body = await self.body()
            if not body.strip():
                raise BadRequest("request body is empty; send a JSON object")
            self._json = self._connection_state.json = decode(body)
        return self._json
