"""GET /dashboard: one self-contained page that polls the router's JSON cluster endpoints.

No build step and no assets beyond the page; the page is read-only. When the router requires
API keys the page asks for one and keeps it in the tab's sessionStorage, sending it as
X-API-Key: it never appears in a URL or in the page source.
"""

from __future__ import annotations

from pathlib import Path

from litestar import MediaType, get

PAGE = Path(__file__).parent / "static" / "dashboard.html"


@get(
    "/dashboard",
    media_type=MediaType.HTML,
    include_in_schema=False,
    sync_to_thread=False,
    opt={"access": "public"},  # the shell only: the page asks for the key for its data
)
def page() -> str:
    return PAGE.read_text()
