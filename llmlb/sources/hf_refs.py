"""What the user typed -> a Hugging Face repo, revision, tag or file; and which files to fetch.

Pure: no network. `parse_ref` reads every form `pull` accepts, `choose_files` picks the files
of a repo listing, and `Plan` is what a download job carries (stored as JSON in its row).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from llmlb import settings, validation
from llmlb.errors import BadRequest, NotFound, ValidationError
from llmlb.validation import Format

# GGUF quantizations, best default first (ollama's default is Q4_K_M: a good size/quality balance).
QUANT_PREFERENCE = (
    "Q4_K_M",
    "Q4_K_S",
    "Q4_0",
    "Q5_K_M",
    "Q5_K_S",
    "Q5_0",
    "Q6_K",
    "Q8_0",
    "IQ4_XS",
    "IQ4_NL",
    "Q4_K_L",
    "Q5_K_L",
    "Q3_K_L",
    "Q3_K_M",
    "Q3_K_S",
    "Q3_K_XL",
    "Q4_1",
    "Q5_1",
    "IQ3_M",
    "IQ3_XS",
    "IQ3_XXS",
    "Q2_K",
    "Q2_K_L",
    "IQ2_M",
    "IQ2_XS",
    "IQ2_XXS",
    "IQ1_M",
    "IQ1_S",
    "BF16",
    "F16",
    "F32",
)
_QUANT = re.compile(
    r"(?<![A-Za-z0-9])(?:UD-)?((?:I?Q\d(?:_[A-Z0-9]+)*)|BF16|F16|F32|FP16|FP32)(?![A-Za-z0-9])",
    re.IGNORECASE,
)
_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
_PART = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_REPO = re.compile(rf"^{_PART}/{_PART}$")
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
SAFETENSORS_EXTRAS = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.json",
    "chat_template.jinja",
    "preprocessor_config.json",
    "README.md",
    "LICENSE",
)


@dataclass(frozen=True)
class HfRef:
    repo: str
    revision: str | None = None
    tag: str | None = None  # a GGUF quantization, as in owner/repo:Q4_K_M
    file: str | None = None  # a path inside the repo

    @property
    def model_name(self) -> str:
        """The catalog name: owner/repo, owner/repo/<QUANT> or owner/repo/<file stem>."""
        if self.file:
            stem = _SPLIT.sub("", PurePosixPath(self.file).name)
            stem = re.sub(r"\.(gguf|safetensors)$", "", stem, flags=re.IGNORECASE)
            stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "file"
            return f"{self.repo}/{stem}"
        if self.tag:
            return f"{self.repo}/{self.tag.upper()}"
        return self.repo


@dataclass
class PlanFile:
    path: str  # path inside the repo
    size: int | None  # None: neither the listing, the tree nor a HEAD request said
    sha256: str | None = None  # LFS files: their content hash
    blob_id: str | None = None  # other files: their git blob id (sha1 of "blob <size>\0" + data)
    role: str = "model"  # model | part | projector | extra

    @property
    def digest(self) -> str:
        return self.sha256 or self.blob_id or ""


@dataclass
class Plan:
    repo: str
    revision: str  # the commit: a resumed download never mixes two revisions
    name: str
    format: str  # GGUF | Safetensors
    files: list[PlanFile] = field(default_factory=list)
    gated: bool = False
    endpoint: str | None = None  # a mirror the client named for this pull; None: the server's

    @property
    def main(self) -> PlanFile | None:
        return next((f for f in self.files if f.role == "model"), None)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Plan:
        """A plan read back from a row; its file names are checked again before any use."""
        files = [PlanFile(**f) for f in data.get("files", [])]
        for f in files:
            validation.check_hub_path(f.path)
        return cls(
            **{**{k: v for k, v in data.items() if k in cls.__dataclass_fields__}, "files": files}
        )


def _bad(text: str, why: str) -> ValidationError:
    return ValidationError(f"invalid model name '{text}': {why}")


def _strip_host(text: str, endpoint: str | None) -> str:
    """Drop `https://huggingface.co/`, `hf.co/`, or the endpoint's (HF_ENDPOINT) prefix."""
    endpoints = {
        (endpoint or settings.hf_endpoint()).rstrip("/"),
        "https://huggingface.co",
        "http://huggingface.co",
        "https://hf.co",
        "http://hf.co",
    }
    for prefix in sorted(endpoints, key=len, reverse=True):
        if text.lower().startswith(prefix.lower() + "/"):
            return text[len(prefix) + 1 :]
    if re.match(r"^https?://", text, re.IGNORECASE):
        raise _bad(text, "only Hugging Face URLs can be pulled")
    for prefix in ("huggingface.co/", "hf.co/"):
        if text.lower().startswith(prefix):
            return text[len(prefix) :]
    return text


def parse_ref(text: str, endpoint: str | None = None) -> HfRef:
    """`owner/repo`, `owner/repo:TAG`, `owner/repo/path/file.gguf`, `hf.co/...`, and Hub URLs
    (`/resolve/<rev>/<file>`, `/blob/<rev>/<file>`, `/tree/<rev>`) of the Hub or of `endpoint`.
    `:latest` means the repo's default file, as it does for ollama."""
    original = text
    text = (text or "").strip()
    if not text:
        raise _bad(original, "it must not be empty")
    text = _strip_host(text, endpoint)
    text = urlsplit(text).path if "?" in text or "#" in text else text
    text = text.strip("/")
    tag = None
    if ":" in text:
        text, _, tag = text.rpartition(":")
        if not _TAG.match(tag):
            raise _bad(original, f"'{tag}' is not a quantization tag like Q4_K_M")
        if tag.lower() == "latest":
            tag = None
    parts = text.split("/")
    if len(parts) < 2 or any(p in ("", ".", "..") for p in parts):
        raise _bad(original, "expected owner/repo, owner/repo:TAG or a Hugging Face URL")
    repo = "/".join(parts[:2])
    if not _REPO.match(repo):
        raise _bad(original, "owner and repo may hold only letters, digits and - _ .")
    rest = parts[2:]
    revision = file = None
    if len(rest) >= 2 and rest[0] in ("resolve", "blob", "tree"):
        revision = rest[1]
        file = "/".join(rest[2:]) or None
        if rest[0] != "tree" and not file:
            raise _bad(original, "the URL names no file")
    elif rest:
        file = "/".join(rest)
    if file and tag:
        raise _bad(original, "give either a file or a :TAG, not both")
    if file and not all(re.match(r"^[A-Za-z0-9._+ -]+$", p) for p in file.split("/")):
        raise _bad(original, "the file path holds characters that are not allowed")
    ref = HfRef(repo=repo, revision=revision, tag=tag, file=file)
    validation.check_name(ref.model_name)
    return ref


def quant_of(filename: str) -> str | None:
    """The quantization named in a GGUF file name, upper-cased (`model-q4_k_m.gguf` -> Q4_K_M)."""
    name = _SPLIT.sub(".gguf", PurePosixPath(filename).name)
    found = _QUANT.findall(name.rsplit(".", 1)[0])
    return found[-1].upper() if found else None


def _group_key(path: str) -> str:
    """Split parts of one GGUF share a key: the path without `-0000N-of-0000M`."""
    return _SPLIT.sub(".gguf", path)


def _is_projector(path: str) -> bool:
    return "mmproj" in PurePosixPath(path).name.lower()


@dataclass
class Sibling:
    path: str
    size: int | None
    sha256: str | None
    blob_id: str | None


def _plan_file(s: Sibling, role: str) -> PlanFile:
    return PlanFile(
        path=s.path,
        size=s.size,
        sha256=s.sha256,
        blob_id=None if s.sha256 else s.blob_id,
        role=role,
    )


def _gguf_group(files: dict[str, Sibling], key: str) -> list[PlanFile]:
    members = sorted(p for p in files if _group_key(p) == key)
    return [_plan_file(files[p], "model" if i == 0 else "part") for i, p in enumerate(members)]


def _projector(files: dict[str, Sibling]) -> list[PlanFile]:
    found = sorted(p for p in files if p.lower().endswith(".gguf") and _is_projector(p))
    if not found:
        return []
    rank = {q: i for i, q in enumerate(("F16", "BF16", "Q8_0", "F32"))}
    best = min(found, key=lambda p: (rank.get(quant_of(p) or "", 99), p))
    return [_plan_file(files[best], "projector")]


def choose_files(
    ref: HfRef, siblings: list[Sibling], where: str = "on Hugging Face"
) -> tuple[str, list[PlanFile]]:
    """(format, files) for a repo's siblings; pure, so unit-tested without a Hub.
    `where` names the endpoint in errors ("on Hugging Face", "at http://mirror:8090")."""
    files = {s.path: s for s in siblings}
    label = f"{ref.repo} {where}"
    if ref.file:
        if ref.file not in files:
            raise NotFound(f"file '{ref.file}' not found in {label}")
        if ref.file.lower().endswith(".gguf"):
            if _is_projector(ref.file):
                raise BadRequest(f"{ref.file} is a vision projector, not a model")
            return Format.GGUF, _gguf_group(files, _group_key(ref.file)) + _projector(files)
        if ref.file.lower().endswith(".safetensors"):
            extras = [_plan_file(files[p], "extra") for p in SAFETENSORS_EXTRAS if p in files]
            return Format.SAFETENSORS, [_plan_file(files[ref.file], "model"), *extras]
        raise BadRequest(f"{ref.file} is not a GGUF or safetensors file")
    groups: dict[str, str | None] = {}
    for p in files:
        if p.lower().endswith(".gguf") and not _is_projector(p):
            groups[_group_key(p)] = quant_of(p)
    if groups:
        if ref.tag:
            want = ref.tag.upper()
            matches = sorted(k for k, q in groups.items() if q == want)
            if not matches:
                have = sorted({q for q in groups.values() if q})
                raise NotFound(
                    f"no {want} file in {label}; available: {', '.join(have) or 'none tagged'}"
                )
        elif len(groups) == 1:
            matches = list(groups)
        else:
            matches = []
            for q in QUANT_PREFERENCE:
                matches = sorted(k for k, g in groups.items() if g == q)
                if matches:
                    break
            if not matches:
                matches = sorted(groups)
        if len(matches) > 1:
            raise BadRequest(
                f"{label} has several candidate files; pull one of them by path: "
                + ", ".join(f"{ref.repo}/{m}" for m in matches)
            )
        return Format.GGUF, _gguf_group(files, matches[0]) + _projector(files)
    if ref.tag:
        raise NotFound(f"no GGUF files in {label}, so there is no {ref.tag} to choose")
    index = "model.safetensors.index.json"
    shards = sorted(p for p in files if p.lower().endswith(".safetensors") and "/" not in p)
    if not shards:
        raise NotFound(f"{label} has no GGUF or safetensors files to pull")
    if index in files:
        chosen = [_plan_file(files[index], "extra")] + [
            _plan_file(files[p], "model") for p in shards
        ]
    elif "model.safetensors" in files:
        chosen = [_plan_file(files["model.safetensors"], "model")]
    else:
        chosen = [_plan_file(files[p], "model") for p in shards]
    extras = [_plan_file(files[p], "extra") for p in SAFETENSORS_EXTRAS if p in files]
    return Format.SAFETENSORS, chosen + extras
