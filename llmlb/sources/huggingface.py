"""Asking a Hugging Face Hub (or a mirror) what to download: the only `huggingface_hub` user.

`plan_pull` asks for the repo at an explicit revision (as `snapshot_download` does: mirrors
such as olah answer nothing without one), checks every file name of the listing, chooses the
files (hf_refs.py), and fills in sizes and hashes the listing left out, from the tree API or,
failing that, a HEAD request on each file's `resolve` URL. Mirrors often list bare names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from llmlb import settings, validation
from llmlb.errors import Forbidden, LlmlbError, NotFound, Unauthorized, ValidationError
from llmlb.sources import hub_http
from llmlb.sources.hf_refs import HfRef, Plan, PlanFile, Sibling, choose_files, parse_ref

__all__ = [
    "UNAUTHORIZED",
    "Hub",
    "HubError",
    "Plan",
    "PlanFile",
    "allowed_endpoint",
    "auth_headers",
    "check_endpoint",
    "download_token",
    "file_url",
    "hub_for",
    "hub_where",
    "parse_ref",
    "plan_pull",
    "resolve_token",
    "unauthorized",
]

UNAUTHORIZED = "Unauthorized. Set HF_TOKEN environment variable."
DEFAULT_REVISION = "main"  # what huggingface_hub asks for when no revision is given
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_BLOB_ID = re.compile(r"^[0-9a-f]{40}$")


class HubError(LlmlbError):
    """The Hub answered something we cannot use (5xx, a network failure, a hostile listing)."""

    status = 502
    kind = "server_error"


@dataclass(frozen=True)
class Hub:
    """Where one pull asks, and the token it may send there."""

    endpoint: str
    token: str | None
    client_named: bool = False  # the endpoint came with the request, not from our settings

    @property
    def where(self) -> str:
        return hub_where(self.endpoint)


def hub_where(endpoint: str | None) -> str:
    """How errors name an endpoint: `on Hugging Face` or `at http://mirror:8090`."""
    endpoint = (endpoint or settings.hf_endpoint()).rstrip("/")
    return "on Hugging Face" if endpoint == "https://huggingface.co" else f"at {endpoint}"


def check_endpoint(value: str) -> str:
    """An endpoint a client sent (X-HF-Endpoint): an http(s) URL with a host, nothing more."""
    text = (value or "").strip()
    bad = ValidationError(
        f"HF_ENDPOINT must be an http(s) URL like https://hf-mirror.example (got {text[:200]!r})"
    )
    if not text or len(text) > 2000 or any(c.isspace() or ord(c) < 32 for c in text):
        raise bad
    try:
        parts = urlsplit(text)
        port = parts.port  # raises on a port that is not a number
    except ValueError:
        raise bad from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise bad
    if parts.username or parts.password:
        raise ValidationError("HF_ENDPOINT must not carry a user name or password; use HF_TOKEN")
    del port
    return text.rstrip("/")


def _same(url: str) -> str:
    """An endpoint as compared: scheme and host in lower case, no trailing slash."""
    parts = urlsplit(url.strip())
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


def allowed_endpoint(value: str) -> str:
    """An endpoint a client sent (X-HF-Endpoint), when the server allows it: its own
    HF_ENDPOINT or one listed in LLMLB_HF_ENDPOINTS. Otherwise a 403 that says how to allow
    it: a node fetches from no URL a client chooses (it could reach what only the node can)."""
    endpoint = check_endpoint(value)
    allowed = {_same(e) for e in [settings.hf_endpoint(), *settings.hf_endpoints()]}
    if _same(endpoint) not in allowed:
        raise Forbidden(
            f"this server does not pull from {endpoint}; to allow it, start the server with "
            f"LLMLB_HF_ENDPOINTS={endpoint} (comma-separated for several)"
        )
    return endpoint


def resolve_token(token: str | None = None) -> str | None:
    """The token sent with a pull, else HF_TOKEN, else the one `hf auth login` stored."""
    if token or settings.hf_token():
        return token or settings.hf_token()
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # no stored login: anonymous
        return None


def hub_for(token: str | None = None, endpoint: str | None = None) -> Hub:
    """The server's own Hub (its HF_ENDPOINT and HF_TOKEN), or the mirror a client named.

    A client-named endpoint gets only the token that came with the same request: the
    server's own HF_TOKEN or stored login never goes to a URL someone else chose.
    """
    named = allowed_endpoint(endpoint) if endpoint else None
    if named and _same(named) != _same(settings.hf_endpoint()):
        return Hub(named, token or None, client_named=True)
    return Hub(settings.hf_endpoint(), resolve_token(token))


def _api(hub: Hub):
    from huggingface_hub import HfApi, constants

    # huggingface_hub builds its User-Agent with an "agent harness" lookup that GETs
    # {HF_ENDPOINT}/api/agent-harnesses (a 404 on mirrors, on every pull) unless telemetry
    # is off; it is read at call time, so this turns the lookup off for our requests.
    constants.HF_HUB_DISABLE_TELEMETRY = True
    hub_http.install()
    return HfApi(endpoint=hub.endpoint, token=hub.token or False, library_name="llmlb")


def _status(exc: Exception) -> int | None:
    return getattr(getattr(exc, "response", None), "status_code", None)


def _hub_error(exc: Exception, ref: HfRef, hub: Hub) -> LlmlbError:
    from huggingface_hub import errors as hf

    if isinstance(exc, LlmlbError):  # an answer we would not read (hub_http)
        return exc
    if isinstance(exc, hf.GatedRepoError):
        if hub.token:
            return Unauthorized(
                f"access to {ref.repo} {hub.where} is gated and your HF_TOKEN is not allowed; "
                f"request access on its Hugging Face page"
            )
        return Unauthorized(UNAUTHORIZED)
    if isinstance(exc, hf.RepositoryNotFoundError):
        return NotFound(f"model '{ref.repo}' not found {hub.where}")
    if isinstance(exc, hf.RevisionNotFoundError):
        return NotFound(
            f"revision '{ref.revision or DEFAULT_REVISION}' of {ref.repo} not found {hub.where}"
        )
    status = _status(exc)
    if status in (401, 403):
        if not hub.token:
            return Unauthorized(UNAUTHORIZED)
        return Unauthorized(f"{hub.endpoint} refused access to {ref.repo} ({status})")
    if status == 404:
        return NotFound(f"model '{ref.repo}' not found {hub.where}")
    return _unreachable(hub, exc)


MIRROR_HINT = "offline or blocked? Pull through a mirror: set HF_ENDPOINT (README: Mirrors)"


def _unreachable(hub: Hub, exc: BaseException) -> HubError:
    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return HubError(f"could not reach Hugging Face at {hub.endpoint}: {detail}; {MIRROR_HINT}")


def _siblings(info, ref: HfRef, hub: Hub) -> list[Sibling]:
    """The listing's files, every name checked before anything is chosen or written."""
    out = []
    for s in info.siblings or []:
        try:
            validation.check_hub_path(s.rfilename)
        except ValidationError as exc:
            raise HubError(
                f"{ref.repo} {hub.where}: {exc.message}; nothing was downloaded"
            ) from None
        size = s.lfs.size if s.lfs else s.size
        out.append(
            Sibling(
                s.rfilename,
                int(size) if size is not None else None,
                s.lfs.sha256 if s.lfs else None,
                s.blob_id,
            )
        )
    return out


def plan_pull(ref: HfRef, token: str | None = None, endpoint: str | None = None) -> Plan:
    """Ask the Hub for the repo's files (with sizes and hashes) and choose what to download."""
    hub = hub_for(token, endpoint)
    api = _api(hub)
    try:
        info = api.model_info(
            ref.repo,
            revision=ref.revision or DEFAULT_REVISION,
            files_metadata=True,
            token=hub.token or False,
        )
    except Exception as exc:  # huggingface_hub raises many kinds: map each to one line
        raise _hub_error(exc, ref, hub) from exc
    if info.gated and not hub.token:
        raise Unauthorized(UNAUTHORIZED)
    fmt, files = choose_files(ref, _siblings(info, ref, hub), hub.where)
    plan = Plan(
        repo=ref.repo,
        revision=info.sha or ref.revision or DEFAULT_REVISION,
        name=ref.model_name,
        format=fmt,
        files=files,
        gated=bool(info.gated),
        endpoint=hub.endpoint if hub.client_named else None,
    )
    _fill_from_tree(api, hub, plan)
    for f in _missing(plan):
        _fill_from_head(hub, plan, f)
    return plan


def _missing(plan: Plan) -> list[PlanFile]:
    return [f for f in plan.files if f.size is None or not f.digest]


def _fill_from_tree(api, hub: Hub, plan: Plan) -> None:
    """Sizes and hashes from the tree API, one listing per directory that needs it."""
    folders = sorted({f.path.rpartition("/")[0] for f in _missing(plan)})
    for folder in folders:
        try:
            entries = {
                e.path: e
                for e in api.list_repo_tree(
                    plan.repo, folder or None, revision=plan.revision, token=hub.token or False
                )
            }
        except Exception:  # a mirror without the tree API: the HEAD requests still can tell
            return
        for f in _missing(plan):
            e = entries.get(f.path)
            if e is None or not hasattr(e, "blob_id"):
                continue
            if e.lfs is not None:
                f.size = f.size if f.size is not None else e.lfs.size
                f.sha256 = f.sha256 or e.lfs.sha256
            else:
                f.size = f.size if f.size is not None else e.size
                f.blob_id = f.blob_id or e.blob_id


def _fill_from_head(hub: Hub, plan: Plan, f: PlanFile) -> None:
    """X-Linked-Size / Content-Length and X-Linked-Etag / ETag of the file's resolve URL.

    An ETag counts as a checksum only in the Hub's forms: 64 hex digits (an LFS file's sha256)
    or 40 (a git blob id); anything else (a server's own ETag scheme) is no checksum.
    """
    from huggingface_hub import get_hf_file_metadata

    hub_http.install()
    try:
        meta = get_hf_file_metadata(
            file_url(plan, f.path),
            token=hub.token or False,
            endpoint=hub.endpoint,
            library_name="llmlb",
        )
    except Exception as exc:
        if isinstance(exc, LlmlbError):
            raise
        status = _status(exc)
        if status == 404:
            raise NotFound(f"file '{f.path}' not found in {plan.repo} {hub.where}") from exc
        if status in (401, 403):
            raise unauthorized(hub.token) from exc
        raise _unreachable(hub, exc) from exc
    if f.size is None and meta.size is not None:
        f.size = int(meta.size)
    etag = (meta.etag or "").strip().lower()
    if not f.digest:
        if _SHA256.match(etag):
            f.sha256 = etag
        elif _BLOB_ID.match(etag):
            f.blob_id = etag


def file_url(plan: Plan, path: str) -> str:
    """The download URL of a file at the plan's commit, on the plan's endpoint (checked
    again: a download resumed after a restart goes only where the server allows now)."""
    endpoint = allowed_endpoint(plan.endpoint) if plan.endpoint else settings.hf_endpoint()
    endpoint = endpoint.rstrip("/")
    return f"{endpoint}/{plan.repo}/resolve/{quote(plan.revision, safe='')}/{quote(path)}"


def download_token(plan: Plan, sent: str | None) -> str | None:
    """The token a download of `plan` may send: a client-named endpoint gets only the client's."""
    return sent if plan.endpoint else resolve_token(sent)


def auth_headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def unauthorized(token: str | None) -> Unauthorized:
    return Unauthorized(
        UNAUTHORIZED if not token else "Hugging Face refused your HF_TOKEN for this file"
    )
