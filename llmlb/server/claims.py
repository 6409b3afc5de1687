"""Claims on loaded models live exactly as long as the request that made them.

A handler that claims a model (a Lease) hands it to `hold`; this middleware releases every
held claim when the request ends, whatever ended it: an answer, an exception between the
claim and the response, a stream that was never started, or a client that hung up.
Releasing is idempotent, so the streaming path may release earlier, at its last token.
"""

from __future__ import annotations

import logging
from typing import Protocol

from litestar import Request
from litestar.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("llmlb.server")
KEY = "llmlb.claims"


class Claim(Protocol):
    async def release(self) -> None: ...


def hold(request: Request, claim: Claim) -> None:
    claims = request.scope.get("state", {}).get(KEY)
    if claims is None:
        raise RuntimeError("ClaimGuard is not installed on this app")
    claims.append(claim)


class ClaimGuard:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        claims: list[Claim] = []
        scope.setdefault("state", {})[KEY] = claims
        try:
            await self.app(scope, receive, send)
        finally:
            for claim in claims:
                try:
                    await claim.release()
                except Exception:  # one failing release must not keep the others
                    log.exception("releasing a claim failed")
