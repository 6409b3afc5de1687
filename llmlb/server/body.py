"""Request bodies at the door: decoded straight into the handler's typed struct, every failure
one clear 400.

Litestar would decode a body into Python values first and then convert them into the
handler's struct (see requests.py): a 60 MiB field the struct does not have became a
million Python objects before it was dropped. Here the bytes are decoded once, by msgspec,
into the struct the handler's `data` names, which skips unknown fields without building them.
Litestar's own decoder also let a few hostile bodies through as 500s (bytes that are not
UTF-8, nesting deep enough to exhaust the recursion limit); llmlb.jsonio turns those into
BadRequest. A field of the wrong type becomes the ValidationException Litestar raises for
one, so server/errors.py words it the same way (`field 'think' must be a boolean ...`).
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.exceptions import ValidationException
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Empty

from llmlb.errors import BadRequest
from llmlb.jsonio import InvalidField, decode_as


def body_type(handler: BaseRouteHandler) -> Any:
    """The type a handler's `data` is decoded into (Any for a handler that takes none)."""
    field = handler.parsed_data_field
    return field.annotation if field is not None else Any


class ApiRequest(Request):
    async def json(self) -> Any:
        if self._json is Empty:
            body = await self.body()
            if not body.strip():
                raise BadRequest("request body is empty; send a JSON object")
            try:
                value = decode_as(body, body_type(self.route_handler))
            except InvalidField as exc:
                where = exc.where or "data"
                raise ValidationException(
                    extra=[{"key": where, "message": exc.problem, "source": "body"}]
                ) from exc
            self._json = self._connection_state.json = value
        return self._json
