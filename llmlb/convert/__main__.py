"""`python -m llmlb.convert DIR OUT [F16|F32|BF16]`: the conversion, in a process of its own.

Progress goes to stdout as JSON lines ({"done": 3, "total": 272}, then {"peak_rss": bytes});
a failure is one line on stderr and exit status 1. The node starts this and reads both.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

from llmlb.convert import ConvertError, exit_with_parent
from llmlb.convert.writer import convert


def _say(item: dict) -> None:
    sys.stdout.write(json.dumps(item) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        sys.stderr.write("usage: python -m llmlb.convert DIR OUT [F16|F32|BF16]\n")
        return 2
    outtype = argv[2] if len(argv) == 3 else "F16"
    exit_with_parent()
    try:
        convert(Path(argv[0]), Path(argv[1]), outtype, lambda i, n: _say({"done": i, "total": n}))
    except ConvertError as exc:
        sys.stderr.write(exc.message + "\n")
        return 1
    except OSError as exc:
        sys.stderr.write(f"could not write the GGUF: {exc.strerror or exc}\n")
        return 1
    _say({"peak_rss": peak_rss()})
    return 0


def peak_rss() -> int:
    """This process's peak resident size in bytes. /proc's VmHWM is this program's own;
    getrusage's maxrss also counts what the parent held when it forked us."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
