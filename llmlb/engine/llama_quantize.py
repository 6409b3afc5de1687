"""llama.cpp's quantizer and a load check, each run in a child process by the node:

    python -m llmlb.engine.llama_quantize quantize IN.gguf OUT.gguf Q4_K_M
    python -m llmlb.engine.llama_quantize check MODEL.gguf [ADAPTER.gguf ...]

Native code that aborts or runs out of memory takes only this process down. A failure is
one line on stderr (llama.cpp's own reason where it logged one) and exit status 1.
`check` loads the weights (memory-mapped) and each LoRA adapter against them, so that a
missing tensor or an adapter made for another model is refused when the model is created,
not when it is first run.
"""

from __future__ import annotations

import ctypes
import sys

from llmlb.convert import exit_with_parent
from llmlb.convert.quant import QUANT_TYPES

_lines: list[str] = []


def _capture() -> None:
    """Keep llama.cpp's log lines (to report the one that says why) instead of printing."""
    import llama_cpp as lc

    partial: list[str] = []

    def keep(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
        partial.append(text.decode("utf-8", "replace"))
        if partial[-1].endswith("\n"):
            _lines.append("".join(partial).strip())
            partial.clear()

    callback = lc.llama_log_callback(keep)
    _capture.callback = callback  # type: ignore[attr-defined]  # referenced for the process' life
    lc.llama_log_set(callback, ctypes.c_void_p(0))


def _reason(default: str) -> str:
    """The first line of the failure (the root cause comes before the lines that pass it on),
    without llama.cpp's function-name prefix."""
    for line in _lines[-20:]:
        low = line.lower()
        if any(w in low for w in ("error", "failed", "incorrect", "missing", "invalid")):
            text = line.split(": ", 1)[-1]
            return text.removeprefix("error loading model: ")
    return default


def quantize(src: str, dst: str, kind: str) -> None:
    import llama_cpp as lc

    params = lc.llama_model_quantize_default_params()
    params.ftype = QUANT_TYPES[kind]
    params.nthread = 0  # all cores
    if lc.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params)) != 0:
        raise RuntimeError(_reason("llama.cpp could not quantize the model"))


def check(model_path: str, adapters: list[str]) -> None:
    import llama_cpp as lc

    lc.llama_backend_init()
    params = lc.llama_model_default_params()
    params.n_gpu_layers = 0
    model = lc.llama_model_load_from_file(model_path.encode(), params)
    if not model:
        raise RuntimeError(_reason("llama.cpp could not load the model"))
    try:
        for path in adapters:
            if not lc.llama_adapter_lora_init(model, path.encode()):
                raise RuntimeError(
                    "the adapter does not fit this model: " + _reason("llama.cpp refused it")
                )
    finally:
        lc.llama_model_free(model)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("quantize", "check"):
        sys.stderr.write(__doc__ or "")
        return 2
    exit_with_parent()
    _capture()
    try:
        if argv[0] == "quantize":
            if len(argv) != 4 or argv[3] not in QUANT_TYPES:
                sys.stderr.write("usage: quantize IN OUT TYPE\n")
                return 2
            quantize(argv[1], argv[2], argv[3])
        else:
            check(argv[1], argv[2:])
    except RuntimeError as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
