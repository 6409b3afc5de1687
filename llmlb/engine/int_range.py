"""Integer ranges as grammar: `minimum`/`maximum` of an integer JSON schema, as llama.cpp's own
C++ converter builds them (common/json-schema-to-grammar.cpp, build_min_max_int), ported.

llama-cpp-python's Python converter has no such rule (it would let any integer through), so a
schema with `Field(ge=0, le=150)` was refused; with this, the grammar admits exactly the
integers of the range, written as JSON writes them (no leading zeros, `-0` never).
"""

from __future__ import annotations

from llama_cpp import llama_grammar

NO_MIN = -(2**63)
NO_MAX = 2**63 - 1
MAX_DIGITS = 16  # llama.cpp's cap on the digits of an open-ended range


def _digit_range(out: list[str], lo: str, hi: str) -> None:
    out.append(f"[{lo}]" if lo == hi else f"[{lo}-{hi}]")


def _more_digits(out: list[str], low: int, high: int) -> None:
    out.append("[0-9]")
    if low == high == 1:
        return
    out.append("{" + str(low))
    if high != low:
        out.append("," + (str(high) if high != NO_MAX else ""))
    out.append("}")


def _uniform_range(out: list[str], frm: str, to: str) -> None:
    i = 0
    while i < len(frm) and i < len(to) and frm[i] == to[i]:
        i += 1
    if i > 0:
        out.append(f'"{frm[:i]}"')
    if i < len(frm) and i < len(to):
        if i > 0:
            out.append(" ")
        sub_len = len(frm) - i - 1
        if sub_len > 0:
            frm_sub, to_sub = frm[i + 1 :], to[i + 1 :]
            zeros, nines = "0" * sub_len, "9" * sub_len
            to_reached = False
            out.append("(")
            if frm_sub == zeros:
                _digit_range(out, frm[i], chr(ord(to[i]) - 1))
                out.append(" ")
                _more_digits(out, sub_len, sub_len)
            else:
                out.append(f"[{frm[i]}] (")
                _uniform_range(out, frm_sub, nines)
                out.append(")")
                if ord(frm[i]) < ord(to[i]) - 1:
                    out.append(" | ")
                    if to_sub == nines:
                        _digit_range(out, chr(ord(frm[i]) + 1), to[i])
                        to_reached = True
                    else:
                        _digit_range(out, chr(ord(frm[i]) + 1), chr(ord(to[i]) - 1))
                    out.append(" ")
                    _more_digits(out, sub_len, sub_len)
            if not to_reached:
                out.append(" | ")
                _digit_range(out, to[i], to[i])
                out.append(" ")
                _uniform_range(out, zeros, to_sub)
            out.append(")")
        else:
            out.append(f"[{frm[i]}-{to[i]}]")


def _build(out: list[str], lo: int, hi: int, decimals: int = MAX_DIGITS, top: bool = True) -> None:
    has_min, has_max = lo != NO_MIN, hi != NO_MAX
    if has_min and has_max:
        if lo < 0 and hi < 0:
            out.append('"-" (')
            _build(out, -hi, -lo, decimals, True)
            out.append(")")
            return
        if lo < 0:
            out.append('"-" (')
            _build(out, 0, -lo, decimals, True)
            out.append(") | ")
            lo = 0
        lo_s, hi_s = str(lo), str(hi)
        for digits in range(len(lo_s), len(hi_s)):
            _uniform_range(out, lo_s, "9" * digits)
            lo_s = "1" + "0" * digits
            out.append(" | ")
        _uniform_range(out, lo_s, hi_s)
        return
    less = max(decimals - 1, 1)
    if has_min:
        if lo < 0:
            out.append('"-" (')
            _build(out, NO_MIN, -lo, decimals, False)
            out.append(") | [0] | [1-9] ")
            _more_digits(out, 0, decimals - 1)
        elif lo == 0:
            if top:
                out.append("[0] | [1-9] ")
                _more_digits(out, 0, less)
            else:
                _more_digits(out, 1, decimals)
        elif lo <= 9:
            c = str(lo)
            start = "1" if top else "0"
            if c > start:
                _digit_range(out, start, chr(ord(c) - 1))
                out.append(" ")
                _more_digits(out, 1, less)
                out.append(" | ")
            _digit_range(out, c, "9")
            out.append(" ")
            _more_digits(out, 0, less)
        else:
            lo_s = str(lo)
            c = lo_s[0]
            if c > "1":
                _digit_range(out, "1" if top else "0", chr(ord(c) - 1))
                out.append(" ")
                _more_digits(out, len(lo_s), less)
                out.append(" | ")
            _digit_range(out, c, c)
            out.append(" (")
            _build(out, int(lo_s[1:]), NO_MAX, less, False)
            out.append(")")
            if c < "9":
                out.append(" | ")
                _digit_range(out, chr(ord(c) + 1), "9")
                out.append(" ")
                _more_digits(out, len(lo_s) - 1, less)
        return
    if has_max:
        if hi >= 0:
            if top:
                out.append('"-" [1-9] ')
                _more_digits(out, 0, less)
                out.append(" | ")
            _build(out, 0, hi, decimals, True)
        else:
            out.append('"-" (')
            _build(out, -hi, NO_MAX, decimals, False)
            out.append(")")
        return
    raise ValueError("an integer range needs a minimum or a maximum")


def gbnf(lo: int | None, hi: int | None) -> str:
    """The GBNF body for the integers in [lo, hi] (None: open on that side)."""
    out: list[str] = []
    _build(out, NO_MIN if lo is None else lo, NO_MAX if hi is None else hi)
    return "".join(out)


class Converter(llama_grammar.SchemaConverter):
    """llama-cpp-python's converter, with integer ranges."""

    def visit(self, schema, name):
        if isinstance(schema, dict) and schema.get("type") == "integer":
            lo, hi = schema.get("minimum"), schema.get("maximum")
            if lo is not None or hi is not None:
                rule = name + "-" if name in llama_grammar.RESERVED_NAMES else name or "root"
                return self._add_rule(rule, f"({gbnf(lo, hi)}) space")
        return super().visit(schema, name)
