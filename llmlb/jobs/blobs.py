"""Files a client uploads before /api/create names them by digest ($LLMLB_HOME/blobs/).

An upload streams into a temporary file while it is hashed; only when its sha256 is the one
its URL named is it renamed into place, so a blob that exists is whole and verified. A blob
is also "there" when a model of the catalog already holds a file of that digest: creating a
model from a file the node has (`show --modelfile` read back) uploads nothing. A model made
from blobs takes hard links to them, and the blobs are then removed (`rm` of the model frees
the space at once). A blob no create used is removed at the first start a day later.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from anyio import to_thread
from sqlalchemy.engine import Engine

from llmlb import settings
from llmlb.errors import BadRequest, LlmlbError, TooLarge
from llmlb.store import catalog
from llmlb.units import size

DIGEST = re.compile(r"^sha256[:-]([0-9a-f]{64})$")
UPLOAD_PREFIX = ".upload-"
KEEP_UNUSED_SECS = 24 * 3600  # a blob waits this long for the create that uses it
FLUSH = 4 << 20  # bytes gathered before a write (and its hashing) goes to a worker thread


class NoSpace(LlmlbError):
    status = 507


def hex_of(digest: str) -> str:
    """The 64 hex digits of `sha256:<hex>` (or ollama's file form `sha256-<hex>`)."""
    m = DIGEST.match(digest or "")
    if not m:
        raise BadRequest(f"'{digest[:80]}' is not a digest of the form sha256:<64 hex digits>")
    return m.group(1)


class Blobs:
    def __init__(self, engine: Engine, home: Path):
        self.engine = engine
        self.dir = Path(home) / "blobs"

    def path(self, hexdigest: str) -> Path:
        return self.dir / f"sha256-{hexdigest}"

    def find(self, hexdigest: str) -> Path | None:
        """A file with this sha256: an uploaded blob, or a model's (or adapter's) own file."""
        blob = self.path(hexdigest)
        if blob.is_file():
            return blob
        found = catalog.file_with_digest(self.engine, hexdigest)
        return Path(found) if found and Path(found).is_file() else None

    def sweep(self) -> None:
        """At start-up: uploads a crash interrupted, and blobs no create used for a day."""
        for p in self.dir.glob(f"{UPLOAD_PREFIX}*"):
            p.unlink(missing_ok=True)
        stale = time.time() - KEEP_UNUSED_SECS
        for p in self.dir.glob("sha256-*"):
            with contextlib.suppress(OSError):
                if p.stat().st_mtime < stale:
                    p.unlink()

    def discard(self, hexdigests: list[str]) -> None:
        for h in hexdigests:
            self.path(h).unlink(missing_ok=True)

    async def receive(
        self, hexdigest: str, chunks: AsyncIterator[bytes], length: int | None
    ) -> bool:
        """Store an upload; False when the blob was already there (the body is not read)."""
        if self.find(hexdigest) is not None:
            return False
        limit = settings.max_blob_gb() * 10**9
        if length is not None and length > limit:
            raise TooLarge(
                f"the upload is {size(length)}; at most {size(limit)} (LLMLB_MAX_BLOB_GB)"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.dir).free
        if length is not None and length > free:
            raise NoSpace(
                f"not enough disk space for the upload: {size(length)} but {size(free)} free"
            )
        temp = self.dir / f"{UPLOAD_PREFIX}{uuid.uuid4().hex}"
        sha = hashlib.sha256()
        received = 0
        try:
            with open(temp, "wb") as fh:
                pending: list[bytes] = []
                held = 0
                async for chunk in chunks:
                    received += len(chunk)
                    if received > limit:
                        raise TooLarge(
                            f"the upload is larger than {size(limit)} (LLMLB_MAX_BLOB_GB)"
                        )
                    pending.append(chunk)
                    held += len(chunk)
                    if held >= FLUSH:
                        await to_thread.run_sync(_write, fh, sha, pending)
                        pending, held = [], 0
                await to_thread.run_sync(_write, fh, sha, pending)
                fh.flush()
                os.fsync(fh.fileno())
            if length is not None and received != length:
                raise BadRequest(f"the upload ended after {received} of {length} bytes")
            if sha.hexdigest() != hexdigest:
                raise BadRequest(
                    f"the uploaded data's digest is sha256:{sha.hexdigest()}, "
                    f"not sha256:{hexdigest}; nothing was stored"
                )
            os.replace(temp, self.path(hexdigest))
        finally:
            temp.unlink(missing_ok=True)
        return True


def _write(fh, sha, chunks: list[bytes]) -> None:
    for c in chunks:
        sha.update(c)
        fh.write(c)
