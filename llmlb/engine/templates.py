"""What a chat template can do, found without running it in the node.

A template is a program that may loop for ever or eat memory; its capabilities are found by
rendering it with made-up messages (llama_template.caps_of). That happens in a runner without a
model, started on first use and replaced when it dies or a probe outruns its deadline. Answers
are kept per template text, failures too, so a broken template costs its deadline once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import OrderedDict

from llmlb.engine.base import TemplateCaps
from llmlb.engine.runner import Runner
from llmlb.errors import BadRequest, LlmlbError

log = logging.getLogger("llmlb.templates")
KEEP = 256


class Templates:
    def __init__(self) -> None:
        self._runner: Runner | None = None
        self._starting = asyncio.Lock()
        self._known: OrderedDict[str, TemplateCaps | LlmlbError] = OrderedDict()

    async def caps(self, source: str, name: str) -> TemplateCaps:
        """What `source` renders (model `name`, for messages); BadRequest when it cannot be
        rendered within its limits."""
        key = hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()
        known = self._known.get(key)
        if known is None:
            known = await self._probe(source, name)
            self._known[key] = known
            while len(self._known) > KEEP:
                self._known.popitem(last=False)
        self._known.move_to_end(key)
        if isinstance(known, LlmlbError):
            raise BadRequest(known.message.replace("'{name}'", f"'{name}'"))
        return known

    async def caps_or_none(self, source: str, name: str) -> TemplateCaps | None:
        """As caps(), but None for a template that cannot be rendered (show answers anyway)."""
        try:
            return await self.caps(source, name)
        except BadRequest as exc:
            log.warning("%s", exc.message)
            return None

    async def _probe(self, source: str, name: str) -> TemplateCaps | LlmlbError:
        runner = await self._runner_up()
        try:  # the runner's deadline ends a long probe; its stall watch, one stuck in C
            return await runner.probe("{name}", source)
        except BadRequest as exc:
            return exc
        except LlmlbError as exc:  # the runner died of it, or was ended for stalling
            log.error("rendering the chat template of %s: %s", name, exc.message)
            return BadRequest(
                "the chat template of '{name}' could not be rendered (it "
                "crashed or stalled its renderer)"
            )

    async def _runner_up(self) -> Runner:
        async with self._starting:
            if self._runner is None or not self._runner.alive:
                self._runner = await Runner.start("(templates)")
            return self._runner

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            with contextlib.suppress(Exception):
                await runner.stop()
