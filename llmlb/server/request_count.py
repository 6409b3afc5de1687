"""Counts every API request by route and the status it really answered (errors included)."""

from __future__ import annotations

from typing import Protocol

from litestar.types import ASGIApp, Message, Receive, Scope, Send

COUNTED = ("/api/", "/v1/")  # the APIs clients use; /metrics and the docs are not counted


class Counts(Protocol):
    def request(self, endpoint: str, status: int) -> None: ...


class RequestCounter:
    def __init__(self, app: ASGIApp, counts: Counts):
        self.app = app
        self.counts = counts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(COUNTED):
            await self.app(scope, receive, send)
            return
        status = 500  # what the client sees if the app fails before answering

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            # the route's template, so ids in paths do not make a label each
            self.counts.request(scope.get("path_template") or scope["path"], status)
