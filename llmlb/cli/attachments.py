"""Image paths typed into a prompt become attachments, as in `ollama run`.

A path is recognised when it ends in an image extension and starts like a path (`/`, `./`,
`../`, `~/`); it may be quoted or have backslash-escaped spaces. The file's bytes decide
whether it is an image; a path to nothing stays plain text.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from pathlib import Path

MAX_IMAGE_BYTES = 20 * 1024 * 1024
EXTENSIONS = ("png", "jpg", "jpeg", "webp", "gif")
_EXT = "|".join(EXTENSIONS)
_PATH = re.compile(
    rf"""(?P<q>['"])(?P<quoted>(?:~|\.{{1,2}})?/[^'"]+?\.(?:{_EXT}))(?P=q)"""
    rf"""|(?P<bare>(?:~|\.{{1,2}})?/(?:\\ |[^\s'"])+?\.(?:{_EXT}))(?=$|[\s,;:!?)])""",
    re.IGNORECASE,
)


class NotAnImage(ValueError):
    pass


def image_kind(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return None


@dataclass
class Extracted:
    text: str
    images: list[str] = field(default_factory=list)  # base64
    added: list[str] = field(default_factory=list)  # paths as typed, unescaped
    errors: list[str] = field(default_factory=list)


def load_image(path: Path) -> bytes:
    size = path.stat().st_size
    if size > MAX_IMAGE_BYTES:
        raise NotAnImage(f"'{path}' is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MB")
    data = path.read_bytes()
    if image_kind(data) is None:
        raise NotAnImage(f"'{path}' is not a PNG, JPEG, WebP or GIF image")
    return data


def extract(prompt: str) -> Extracted:
    out = Extracted(text=prompt)
    pieces: list[str] = []
    last = 0
    for m in _PATH.finditer(prompt):
        typed = m.group("quoted") or m.group("bare").replace("\\ ", " ")
        path = Path(typed).expanduser()
        if not path.is_file():
            continue  # not a file: leave it as text
        try:
            data = load_image(path)
        except (NotAnImage, OSError) as exc:
            out.errors.append(str(exc))
            continue
        out.images.append(base64.b64encode(data).decode())
        out.added.append(typed)
        pieces.append(prompt[last : m.start()])
        last = m.end()
    if out.added:
        pieces.append(prompt[last:])
        out.text = re.sub(r"[ \t]{2,}", " ", "".join(pieces)).strip()
    return out
