"""A Hugging Face Hub-compatible HTTP server for tests and benchmarks, with fault switches.

It answers what `huggingface_hub` and `llmlb node pull` ask the real Hub:
  GET  /api/models/<repo>[/revision/<rev>][?blobs=true]   repo info: sha, siblings (size, blobId, lfs)
  GET  /api/models/<repo>/tree/<rev>[/<dir>]               the tree API: type, oid, size, path, lfs
  HEAD/GET /<repo>/resolve/<rev>/<file>                     the file, with the Hub's headers
LFS files answer /resolve with a 302 to /_cdn/<sha256> (as the Hub redirects to its CDN), which
serves the bytes with Range/206 support. Data goes out with sendfile unless a fault needs the
bytes in Python, so the server is never the bottleneck of a throughput benchmark.

Fault switches (per file name, see `fault()`): drop the connection after N bytes, ignore Range,
flip a byte, stall, answer a status (5xx, 401, 403, 404), throttle, declare a false size.

Mirror behaviours (per server, see `Behaviour`): `HubServer.olah_like()` acts as olah 0.5.4, a
self-hosted mirror, does in offline mode (checked against the real one): revision-less repo
info answers 401, listings carry bare names (no sizes, no LFS data), the tree API and HEAD do
give sizes and an unquoted ETag, files are served in place (no CDN redirect) as chunked bodies
without Content-Length, and Range is ignored. Switch off the tree API and HEAD metadata as well
and no size is known before the download (`unknown_sizes()`). Hostile names (`../../x.gguf`)
can be listed: their content is stored under a hashed name.

Standalone: `python -m tests.support.hub_server --port 8080 owner/repo=/path/to/file.gguf ...`
"""

from __future__ import annotations

import argparse
import fnmatch
import functools
import hashlib
import json
import os
import shutil
import socket
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".gguf", ".safetensors", ".bin", ".pt", ".onnx")
CHUNK = 1 << 20


def git_blob_id(path: Path) -> str:
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class HubFile:
    path: Path
    size: int
    lfs: bool
    sha256: str
    blob_id: str


@dataclass
class Repo:
    id: str
    sha: str
    files: dict[str, HubFile]
    gated: bool = False
    status: int | None = None  # answer every request for this repo with this status


@dataclass
class Fault:
    drop_after: int | None = None  # close the connection after this many body bytes
    ignore_range: bool = False  # answer Range requests with 200 and the whole file
    flip_byte: int | None = None  # flip this byte (file offset) in what is served
    stall_after: int | None = None  # stop sending after this many body bytes ...
    stall_secs: float = 3600.0  # ... for this long, then close
    status: int | None = None  # answer the data request with this status
    rate: int | None = None  # bytes per second per connection
    declare_size: int | None = None  # claim this size in the repo info (disk-space checks)
    times: int | None = None  # drop/stall/status only this many times (None: always)


@dataclass
class Behaviour:
    """How the server differs from huggingface.co (all True/False: the real Hub's behaviour)."""

    revisionless_info: bool = True  # False: /api/models/<repo> without /revision/ answers 401
    listing_metadata: bool = True  # False: siblings carry only rfilename, even with blobs=true
    tree_api: bool = True  # False: /api/models/<repo>/tree/... answers 404
    head_metadata: bool = True  # False: HEAD answers no size and no ETag
    cdn_redirect: bool = True  # False: LFS files are served in place, as a mirror does
    honour_range: bool = True  # False: every Range request gets 200 and the whole file
    content_length: bool = True  # False: file bodies are chunked, with no Content-Length
    quoted_etag: bool = True  # False: ETag: <hex> (olah) instead of ETag: "<hex>"
    # > 0: repo info gzip-encoded, padded with this many blanks (a gzip bomb: 1 MB per GB)
    info_gzip_padding: int = 0


@dataclass
class Stats:
    bytes_sent: dict[str, int] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, Range
    auth: list[tuple[str, str | None]] = field(default_factory=list)  # path, Authorization


class HubServer:
    def __init__(
        self,
        data_dir: Path | str | None = None,
        token: str = "hf_test_token",
        host: str = "127.0.0.1",
        port: int = 0,
        behaviour: Behaviour | None = None,
    ):
        self.behaviour = behaviour or Behaviour()
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="hub-"))
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.faults: dict[str, Fault] = {}
        self.stats = Stats()
        self.lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"hub": self})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.thread: threading.Thread | None = None

    @classmethod
    def olah_like(cls, data_dir: Path | str | None = None, **changes) -> HubServer:
        """A stand-in for olah's offline mirror (see the module docstring)."""
        behaviour = Behaviour(
            revisionless_info=False,
            listing_metadata=False,
            cdn_redirect=False,
            honour_range=False,
            content_length=False,  # olah streams file bodies chunked (HEAD still has the size)
            quoted_etag=False,
        )
        for key, value in changes.items():
            setattr(behaviour, key, value)
        return cls(data_dir, behaviour=behaviour)

    @classmethod
    def unknown_sizes(cls, data_dir: Path | str | None = None) -> HubServer:
        """Nothing tells a file's size or hash before it is downloaded."""
        return cls.olah_like(data_dir, tree_api=False, head_metadata=False)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    # --- content -------------------------------------------------------------------------
    def add_repo(
        self,
        repo_id: str,
        files: dict[str, Path | str | bytes],
        gated: bool = False,
        copy: bool = True,
        lfs: bool | None = None,
    ) -> Repo:
        """Files are paths (copied, or served in place with copy=False) or bytes. They are LFS
        files by their suffix or size unless `lfs` says (False: a plain git repo, as a mirror
        may serve one)."""
        stored: dict[str, HubFile] = {}
        for name, content in files.items():
            key = name if _safe_name(name) else hashlib.sha1(name.encode()).hexdigest()
            target = self.data_dir / repo_id / key
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            elif copy:
                shutil.copyfile(content, target)
            else:
                target = Path(content)
            size = target.stat().st_size
            stored[name] = HubFile(
                target,
                size,
                (name.endswith(LFS_SUFFIXES) or size > 10 << 20) if lfs is None else lfs,
                sha256_of(target),
                git_blob_id(target),
            )
        sha = hashlib.sha1(
            json.dumps(sorted((n, f.blob_id) for n, f in stored.items())).encode()
        ).hexdigest()
        repo = Repo(repo_id, sha, stored, gated)
        self.repos[repo_id] = repo
        return repo

    def fault(self, pattern: str = "*", **options) -> Fault:
        """Set a fault for files whose name matches `pattern` (fnmatch); replaces an earlier one."""
        f = Fault(**options)
        with self.lock:
            self.faults[pattern] = f
        return f

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def reset_stats(self) -> None:
        with self.lock:
            self.stats = Stats()

    def sent(self, name: str) -> int:
        with self.lock:
            return self.stats.bytes_sent.get(name, 0)

    def _fault_for(self, name: str) -> Fault | None:
        with self.lock:
            for pattern, f in self.faults.items():
                if fnmatch.fnmatch(name, pattern):
                    return f
        return None

    def _use(self, f: Fault) -> bool:
        """Count one use of a limited fault; False once it is spent."""
        with self.lock:
            if f.times is None:
                return True
            if f.times <= 0:
                return False
            f.times -= 1
            return True

    # --- life ----------------------------------------------------------------------------
    def start(self) -> HubServer:
        self.thread = threading.Thread(
            target=self.httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            daemon=True,
            name="hub-server",
        )
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _Disconnect(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: HubServer

    def log_message(self, fmt, *args) -> None:  # quiet: tests read stats, not logs
        pass

    # --- helpers -------------------------------------------------------------------------
    def _send(
        self,
        status: int,
        body: bytes = b"",
        headers: dict | None = None,
        content_type: str = "application/json",
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _error(self, status: int, code: str | None = None, message: str = "") -> None:
        headers = {"X-Error-Message": message or code or str(status)}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, json.dumps({"error": message or code or str(status)}).encode(), headers)

    def _authorized(self) -> str | None:
        auth = self.headers.get("Authorization") or ""
        return auth.removeprefix("Bearer ").strip() or None

    def _gate(self, repo: Repo) -> bool:
        """True when the request may read the repo's files; otherwise the error is sent."""
        if repo.status:
            self._error(repo.status, "RepoNotFound" if repo.status in (401, 404) else None)
            return False
        if not repo.gated:
            return True
        token = self._authorized()
        if token is None:
            self._error(
                401,
                "GatedRepo",
                f"Access to model {repo.id} is restricted. You must be authenticated.",
            )
            return False
        if token != self.hub.token:
            self._error(
                403,
                "GatedRepo",
                f"Access to model {repo.id} is restricted and you are not in the authorized list.",
            )
            return False
        return True

    def _find_repo(self, parts: list[str]) -> tuple[Repo | None, list[str]]:
        if len(parts) >= 2 and "/".join(parts[:2]) in self.hub.repos:
            return self.hub.repos["/".join(parts[:2])], parts[2:]
        return None, parts

    # --- routes --------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self._route()

    def do_GET(self) -> None:
        self._route()

    def _route(self) -> None:
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.strip("/").split("/") if p]
        with self.hub.lock:
            self.hub.stats.requests.append((self.command, url.path, self.headers.get("Range")))
            self.hub.stats.auth.append((url.path, self.headers.get("Authorization")))
        try:
            if parts[:1] == ["_cdn"] and len(parts) == 3:
                return self._cdn(parts[1], parts[2])
            if parts[:2] == ["api", "models"]:
                return self._api(parts[2:], parse_qs(url.query))
            repo, rest = self._find_repo(parts)
            if repo is None:
                return self._error(
                    401 if not self._authorized() else 404, "RepoNotFound", "Repository not found"
                )
            if len(rest) >= 3 and rest[0] == "resolve":
                return self._resolve(repo, rest[1], "/".join(rest[2:]))
            self._error(404, None, "not found")
        except (BrokenPipeError, ConnectionResetError, _Disconnect):
            self.close_connection = True

    def _api(self, parts: list[str], query: dict) -> None:
        repo, rest = self._find_repo(parts)
        if repo is None:
            return self._error(
                401 if not self._authorized() else 404, "RepoNotFound", "Repository not found"
            )
        if repo.status:
            return self._gate(repo) and None
        b = self.hub.behaviour
        if rest[:1] == ["tree"] and len(rest) >= 2:
            return self._tree(repo, rest[1], "/".join(rest[2:]), query)
        if not rest and not b.revisionless_info:  # olah offline: "Repository not found"
            return self._error(401, "RepoNotFound", "Repository not found")
        if rest and not (
            len(rest) == 2 and rest[0] == "revision" and rest[1] in ("main", repo.sha)
        ):
            return self._error(404, "RevisionNotFound", "Invalid rev id")
        blobs = query.get("blobs", ["false"])[0].lower() == "true" and b.listing_metadata
        siblings = []
        for name, f in sorted(repo.files.items()):
            item: dict = {"rfilename": name}
            if blobs:
                size = self._declared(name, f)
                item.update(size=size, blobId=f.blob_id)
                if f.lfs:
                    item["lfs"] = {"sha256": f.sha256, "size": size, "pointerSize": 134}
            siblings.append(item)
        body = {
            "_id": repo.sha[:24],
            "id": repo.id,
            "modelId": repo.id,
            "author": repo.id.split("/")[0],
            "sha": repo.sha,
            "private": False,
            "gated": "auto" if repo.gated else False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "lastModified": "2025-01-01T00:00:00.000Z",
            "createdAt": "2025-01-01T00:00:00.000Z",
        }
        if b.info_gzip_padding:
            packed = _gzip_padded(json.dumps(body).encode(), b.info_gzip_padding)
            return self._send(200, packed, {"Content-Encoding": "gzip"})
        self._send(200, json.dumps(body).encode())

    def _declared(self, name: str, f: HubFile) -> int:
        fault = self.hub._fault_for(name)
        return fault.declare_size if fault and fault.declare_size else f.size

    def _tree(self, repo: Repo, rev: str, folder: str, query: dict) -> None:
        """The tree API as the Hub (and olah) answer it: files with oid, size and LFS data."""
        if not self.hub.behaviour.tree_api:
            return self._error(404, None, "not found")
        if rev not in ("main", repo.sha):
            return self._error(404, "RevisionNotFound", "Invalid rev id")
        recursive = query.get("recursive", ["false"])[0].lower() in ("true", "1")
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        entries: list[dict] = []
        folders: set[str] = set()
        for name, f in sorted(repo.files.items()):
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix) :]
            if "/" in rest and not recursive:
                folders.add(prefix + rest.split("/", 1)[0])
                continue
            item: dict = {"type": "file", "oid": f.blob_id, "size": self._declared(name, f)}
            item["path"] = name
            if f.lfs:
                item["lfs"] = {"oid": f.sha256, "size": item["size"], "pointerSize": 134}
            entries.append(item)
        entries += [{"type": "directory", "oid": "0" * 40, "size": 0, "path": d} for d in folders]
        self._send(200, json.dumps(entries).encode())

    def _resolve(self, repo: Repo, rev: str, name: str) -> None:
        if rev not in ("main", repo.sha):
            return self._error(404, "RevisionNotFound", "Invalid rev id")
        f = repo.files.get(name)
        if f is None:
            return self._error(404, "EntryNotFound", f"{name} does not exist")
        if not self._gate(repo):
            return
        b = self.hub.behaviour
        headers = {"X-Repo-Commit": repo.sha}
        if b.honour_range:
            headers["Accept-Ranges"] = "bytes"
        if f.lfs and b.cdn_redirect:
            # A different host name for the same server, as the Hub's CDN is another host:
            # clients must not follow it for metadata, nor send their token there.
            port = self.server.server_address[1]
            host = (
                f"localhost:{port}"
                if (self.headers.get("Host") or "").startswith("127.")
                else f"127.0.0.1:{port}"
            )
            headers.update(
                {
                    "X-Linked-Etag": f'"{f.sha256}"',
                    "X-Linked-Size": str(f.size),
                    "ETag": f'"{f.blob_id}"',
                    "Location": f"http://{host}/_cdn/{repo.id.replace('/', '--')}/{f.sha256}",
                }
            )
            return self._send(302, b"", headers)
        if b.head_metadata or self.command != "HEAD":
            etag = f.sha256 if f.lfs else f.blob_id  # olah: an LFS file's ETag is its sha256
            headers["ETag"] = f'"{etag}"' if b.quoted_etag else etag
        self._data(f, name, headers)

    def _cdn(self, repo_key: str, sha256: str) -> None:
        repo = self.hub.repos.get(repo_key.replace("--", "/"))
        found = [(n, f) for n, f in (repo.files.items() if repo else []) if f.sha256 == sha256]
        if not found:
            return self._error(404, None, "no such object")
        name, f = found[0]
        self._data(f, name, {"ETag": f'"{f.sha256}"', "Accept-Ranges": "bytes"})

    def _data(self, f: HubFile, name: str, headers: dict) -> None:
        fault = self.hub._fault_for(name)
        if fault and fault.status and self.command == "GET" and self.hub._use(fault):
            code = {401: "GatedRepo", 403: "GatedRepo", 404: "EntryNotFound"}.get(fault.status)
            return self._error(fault.status, code, f"fault {fault.status}")
        start, end = 0, f.size  # end exclusive
        status = 200
        b = self.hub.behaviour
        rng = self.headers.get("Range")
        if rng and b.honour_range and not (fault and fault.ignore_range):
            parsed = _parse_range(rng, f.size)
            if parsed is None:
                return self._send(416, b"", {"Content-Range": f"bytes */{f.size}"})
            start, end = parsed
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{f.size}"
        if self.command == "HEAD":
            chunked = not b.head_metadata  # HEAD: no Content-Length, no ETag
            if chunked:
                headers.pop("ETag", None)
        else:
            chunked = not b.content_length and status == 200
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(end - start))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            if chunked:
                self.close_connection = True
            return
        if chunked:
            return self._chunked(f, name, fault)
        self._body(f, name, start, end, fault)

    def _chunked(self, f: HubFile, name: str, fault: Fault | None) -> None:
        """A body of unannounced length (a mirror streaming from a generator)."""
        drop = (
            fault.drop_after
            if fault and fault.drop_after is not None and self.hub._use(fault)
            else None
        )
        sent = 0
        with open(f.path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                if drop is not None and sent + len(chunk) > drop:
                    chunk = chunk[: drop - sent]
                    if chunk:  # (an empty chunk would be the last-chunk marker)
                        self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                        self._count(name, len(chunk))
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    raise _Disconnect
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                sent += len(chunk)
                self._count(name, len(chunk))
        self.wfile.write(b"0\r\n\r\n")

    def _count(self, name: str, n: int) -> None:
        with self.hub.lock:
            self.hub.stats.bytes_sent[name] = self.hub.stats.bytes_sent.get(name, 0) + n

    def _body(self, f: HubFile, name: str, start: int, end: int, fault: Fault | None) -> None:
        sock = self.connection
        with open(f.path, "rb") as fh:
            if fault is None or not any(
                (
                    fault.drop_after is not None,
                    fault.flip_byte is not None,
                    fault.stall_after is not None,
                    fault.rate,
                )
            ):
                offset = start
                while offset < end:  # the fast path: the kernel copies file -> socket
                    n = os.sendfile(sock.fileno(), fh.fileno(), offset, min(end - offset, 64 << 20))
                    if n == 0:
                        break
                    offset += n
                    self._count(name, n)
                return
            drop = (
                fault.drop_after if fault.drop_after is not None and self.hub._use(fault) else None
            )
            stall = (
                fault.stall_after
                if fault.stall_after is not None and self.hub._use(fault)
                else None
            )
            chunk = min(CHUNK, max(1024, (fault.rate or CHUNK) // 20))
            offset, sent = start, 0
            began = time.monotonic()
            fh.seek(start)
            while offset < end:
                if drop is not None and sent >= drop:
                    self.close_connection = True
                    sock.shutdown(socket.SHUT_RDWR)
                    raise _Disconnect
                if stall is not None and sent >= stall:
                    time.sleep(fault.stall_secs)
                    self.close_connection = True
                    sock.shutdown(socket.SHUT_RDWR)
                    raise _Disconnect
                n = min(chunk, end - offset)
                if drop is not None:
                    n = min(n, drop - sent)
                if stall is not None:
                    n = min(n, stall - sent)
                data = bytearray(fh.read(n))
                if fault.flip_byte is not None and offset <= fault.flip_byte < offset + n:
                    data[fault.flip_byte - offset] ^= 0xFF
                sock.sendall(data)
                offset += n
                sent += n
                self._count(name, n)
                if fault.rate:
                    ahead = sent / fault.rate - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)


@functools.lru_cache(maxsize=2)
def _gzip_padded(doc: bytes, padding: int) -> bytes:
    """`doc` (a JSON object) with `padding` blanks before its closing brace, gzip-compressed
    piece by piece (the blanks are never held whole); kept, as a repeated answer is the same."""
    pack = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [pack.compress(doc[:-1])]
    blanks = b" " * CHUNK
    for at in range(0, padding, CHUNK):
        out.append(pack.compress(blanks[: min(CHUNK, padding - at)]))
    out.append(pack.compress(doc[-1:]) + pack.flush())
    return b"".join(out)


def _safe_name(name: str) -> bool:
    parts = name.split("/")
    return (
        not name.startswith("/")
        and "\\" not in name
        and all(p not in ("", ".", "..") and p.isprintable() for p in parts)
    )


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    """`bytes=a-b`, `bytes=a-`, `bytes=-n` -> (start, end exclusive); None when unsatisfiable."""
    if not value.startswith("bytes=") or "," in value:
        return None
    first, _, last = value[6:].partition("-")
    try:
        if first == "":
            n = int(last)
            return (max(0, size - n), size) if n > 0 else None
        start = int(first)
        end = int(last) + 1 if last else size
    except ValueError:
        return None
    if start >= size or end <= start:
        return None
    return start, min(end, size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "files",
        nargs="+",
        metavar="owner/repo[/NAME]=FILE",
        help="serve FILE in repo owner/repo as NAME (default: its base name); repeat for more",
    )
    args = parser.parse_args()
    hub = HubServer(host=args.host, port=args.port)
    grouped: dict[str, dict[str, Path]] = {}
    for spec in args.files:
        where, _, path = spec.partition("=")
        owner, repo, *name = where.split("/")
        grouped.setdefault(f"{owner}/{repo}", {})["/".join(name) or Path(path).name] = Path(path)
    for repo, files in grouped.items():
        hub.add_repo(repo, files, copy=False)
    print(f"serving {', '.join(grouped)} at {hub.url} (HF_ENDPOINT={hub.url})", flush=True)
    try:
        hub.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        hub.httpd.server_close()


if __name__ == "__main__":
    main()
