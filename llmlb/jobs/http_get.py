"""One GET with redirects, the way a download needs it: proxies honoured like curl (HTTPS_PROXY,
HTTP_PROXY, NO_PROXY), the Authorization header never sent to another host than the one asked
(the Hub redirects to a CDN), and every socket handed to the caller so it can be shut down.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import urllib.request
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit

MAX_REDIRECTS = 5


class TooManyRedirects(Exception):
    pass


def open_get(
    url: str,
    headers: dict[str, str],
    timeout: float,
    track: Callable[[socket.socket], None],
    untrack: Callable[[socket.socket | None], None],
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """GET `url`, following redirects; `track` hears each socket (and may raise to stop)."""
    origin = urlsplit(url).netloc
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        send = (
            headers
            if parts.netloc == origin
            else {k: v for k, v in headers.items() if k != "Authorization"}
        )
        conn = connect(parts, timeout)
        try:
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            if isinstance(conn, _ProxiedConnection):
                target = url
            conn.request("GET", target or "/", headers=send)
            if conn.sock is not None:
                track(conn.sock)
            resp = conn.getresponse()
        except BaseException:
            conn.close()
            raise
        if resp.status in (301, 302, 303, 307, 308) and resp.getheader("location"):
            url = urljoin(url, resp.getheader("location"))
            untrack(conn.sock)
            conn.close()
            continue
        return conn, resp
    raise TooManyRedirects(url)


_SSL: ssl.SSLContext | None = None


class _ProxiedConnection(http.client.HTTPConnection):
    """Plain HTTP through a proxy: requests carry the absolute URI."""


def connect(parts, timeout: float) -> http.client.HTTPConnection:
    """A connection for one request; honours HTTPS_PROXY / HTTP_PROXY / NO_PROXY like curl."""
    global _SSL
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and urllib.request.proxy_bypass(parts.hostname or ""):
        proxy = None
    if https and _SSL is None:
        _SSL = ssl.create_default_context()
    host = parts.hostname or ""
    if proxy:
        p = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if https:
            tunnel = http.client.HTTPSConnection(
                p.hostname or "", p.port or 80, timeout=timeout, context=_SSL
            )
            tunnel.set_tunnel(host, port)
            return tunnel
        return _ProxiedConnection(p.hostname or "", p.port or 80, timeout=timeout)
    if https:
        return http.client.HTTPSConnection(host, port, timeout=timeout, context=_SSL)
    return http.client.HTTPConnection(host, port, timeout=timeout)


def describe(exc: BaseException) -> str:
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "no data received (stalled)"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]
