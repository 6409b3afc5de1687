"""ollama's Go templates, translated to the Jinja every chat template in llmlb is.

A Modelfile's TEMPLATE is written in Go's text/template, as ollama renders it: `.System`,
`.Prompt`, `.Response`, `{{ range .Messages }}` with `.Role` and `.Content`, `if`/`else`/
`end`, `eq`/`ne`/`and`/`or`/`not`/`len`/`slice`/`index`, variables (`$last := ...`) and
`{{-`/`-}}` trims. That common subset becomes Jinja over `messages`; anything else (tools,
`with`, `template`, `printf`, ...) is refused with an error that names it, since a template
that renders differently from what its author wrote is worse than none.

Go's trims are applied here, to the text, and every Jinja tag is written `{%+ ... +%}`, so
the renderer's trim_blocks/lstrip_blocks change no whitespace: the output is Go's, byte for
byte. A template without `.Messages` is ollama's older kind, rendered once per user turn
(`.Prompt`, and `.Response` when the assistant answered it); the translation loops so.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from llmlb.errors import BadRequest

ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
TOKEN = re.compile(
    r'\s*(?:("(?:[^"\\]|\\.)*")|(`[^`]*`)|(-?\d+(?:\.\d+)?)|(\$[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*'
    r"|\$(?:\.[A-Za-z_]\w*)+|\$)|((?:\.[A-Za-z_]\w*)+|\.)|([A-Za-z_]\w*)|(:=|=|\(|\)|,|\|))"
)
ROOT = {"System": "system", "Prompt": "prompt", "Response": "response", "Messages": "messages"}
MESSAGE = {"Role": "role", "Content": "content"}
COMPARE = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


class TemplateError(BadRequest):
    pass


def is_go_template(text: str) -> bool:
    """Go actions name fields with a dot (`{{ .Prompt }}`); Jinja never does, and has `{%`."""
    if "{%" in text:
        return False
    return bool(re.search(r"\{\{-?\s*(\.|\$|if\b|range\b|end\b|/\*)", text))


@dataclass
class _Scope:
    dot: str  # what `.` is: "root" or the Jinja name of a message
    closes: str  # endif / endfor
    vars: dict[str, str] = field(default_factory=dict)  # $name -> "message:<jinja>" | "value"


class _Translator:
    def __init__(self, per_turn: bool) -> None:
        self.scopes = [_Scope("root", "")]
        self.count = 0
        self.per_turn = per_turn
        self.cut = False  # past `.Response` in a per-turn template: ollama cuts the last turn here

    def fail(self, what: str) -> TemplateError:
        return TemplateError(f"the TEMPLATE uses {what}, which llmlb cannot translate to Jinja")

    # -- expressions ---------------------------------------------------------------------
    def tokens(self, text: str) -> list[str]:
        out, pos = [], 0
        text = text.strip()
        while pos < len(text):
            m = TOKEN.match(text, pos)
            if not m or m.end() == pos:
                raise self.fail(f"'{text[pos : pos + 20]}'")
            out.append(m.group(0).strip())
            pos = m.end()
        return out

    def var_kind(self, name: str) -> str | None:
        for scope in reversed(self.scopes):
            if name in scope.vars:
                return scope.vars[name]
        return None

    def field(self, base: str, names: list[str], token: str) -> str:
        for name in names:
            if base == "root":
                if name not in ROOT:
                    raise self.fail(f"'{token}'" + (" (tools)" if name == "Tools" else ""))
                base = ROOT[name]
            elif base.startswith("message:"):
                if name not in MESSAGE:
                    raise self.fail(f"'{token}'")
                base = f"{base[8:]}['{MESSAGE[name]}']"
            else:
                raise self.fail(f"'{token}'")
        return base[8:] if base.startswith("message:") else base

    def operand(self, tok: str) -> str:
        if tok.startswith('"'):
            return tok
        if tok.startswith("`"):
            return repr(tok[1:-1])
        if re.fullmatch(r"-?\d+(\.\d+)?", tok):
            return tok
        if tok in ("true", "false"):
            return tok
        if tok == ".":
            dot = self.scopes[-1].dot
            if dot == "root":
                raise self.fail("'.' outside a range")
            return dot[8:]
        if tok.startswith("$."):
            return self.field("root", tok[2:].split("."), tok)
        if tok.startswith("$"):
            name, *rest = tok[1:].split(".")
            kind = self.var_kind(name)
            if kind is None:
                raise self.fail(f"the undefined variable '${name}'")
            if kind == "value":
                if rest:
                    raise self.fail(f"'{tok}'")
                return f"v_{name}"
            return self.field(kind, rest, tok) if rest else kind[8:]
        if tok.startswith("."):
            return self.field(self.scopes[-1].dot, tok[1:].split("."), tok)
        raise self.fail(f"'{tok}'")

    def expr(self, toks: list[str]) -> str:
        """A pipeline without `|`: a function call or one operand."""
        if not toks:
            raise self.fail("an empty action")
        if "|" in toks:
            raise self.fail("a pipe '|'")
        args = self.args(toks[1:]) if toks[0] in FUNCS else None
        if args is None:
            operands = self.args(toks)
            if len(operands) != 1:
                raise self.fail(f"'{' '.join(toks)}'")
            return operands[0]
        return FUNCS[toks[0]](self, toks[0], args)

    def args(self, toks: list[str]) -> list[str]:
        out, i = [], 0
        while i < len(toks):
            if toks[i] == "(":
                depth, j = 1, i + 1
                while j < len(toks) and depth:
                    depth += {"(": 1, ")": -1}.get(toks[j], 0)
                    j += 1
                if depth:
                    raise self.fail("an unclosed '('")
                out.append(self.expr(toks[i + 1 : j - 1]))
                i = j
            elif toks[i] in FUNCS:
                raise self.fail(f"'{toks[i]}' without parentheses inside an argument list")
            else:
                out.append(self.operand(toks[i]))
                i += 1
        return out

    # -- actions -------------------------------------------------------------------------
    def action(self, body: str) -> str:
        if body.startswith("/*"):
            return ""
        toks = self.tokens(body)
        head = toks[0]
        if head == "if":
            self.scopes.append(_Scope(self.scopes[-1].dot, "endif"))
            return f"{{%+ if {self.expr(toks[1:])} +%}}"
        if head == "else":
            if len(self.scopes) == 1 or self.scopes[-1].closes != "endif":
                raise self.fail("'else' outside an 'if'")
            if len(toks) > 1 and toks[1] == "if":
                return f"{{%+ elif {self.expr(toks[2:])} +%}}"
            if len(toks) > 1:
                raise self.fail(f"'else {toks[1]}'")
            return "{%+ else +%}"
        if head == "end":
            if len(self.scopes) == 1:
                raise self.fail("an 'end' without its 'if' or 'range'")
            return f"{{%+ {self.scopes.pop().closes} +%}}"
        if head == "range":
            return self.range(toks[1:])
        if head in ("with", "template", "define", "block", "break", "continue"):
            raise self.fail(f"'{head}'")
        if len(toks) > 2 and toks[0].startswith("$") and toks[1] in (":=", "="):
            name = toks[0][1:]
            self.scopes[-1].vars[name] = "value"
            return f"{{%+ set v_{name} = {self.expr(toks[2:])} +%}}"
        out = f"{{{{ {self.expr(toks)} }}}}"
        if self.per_turn and out == "{{ response }}" and not self.cut:
            self.cut = True
            return out
        return self.guard(out)

    def guard(self, out: str) -> str:
        """Output that comes after `.Response`: not written in the turn being generated."""
        return f"{{%+ if not cut +%}}{out}{{%+ endif +%}}" if self.cut and out else out

    def range(self, toks: list[str]) -> str:
        index = item = None
        if ":=" in toks:
            names = [t for t in toks[: toks.index(":=")] if t != ","]
            if not 1 <= len(names) <= 2 or not all(n.startswith("$") for n in names):
                raise self.fail(f"'range {' '.join(toks)}'")
            index, item = (names[0][1:], names[1][1:]) if len(names) == 2 else (None, names[0][1:])
            toks = toks[toks.index(":=") + 1 :]
        source = self.expr(toks)
        if source != "messages" and not source.startswith("messages["):
            raise self.fail(f"'range' over something other than .Messages ({' '.join(toks)})")
        self.count += 1
        loop_var = f"m{self.count}"
        scope = _Scope(f"message:{loop_var}", "endfor")
        prefix = ""
        if item is not None:
            scope.vars[item] = f"message:{loop_var}"
        if index is not None:
            scope.vars[index] = "value"
            prefix = f"{{%+ set v_{index} = loop.index0 +%}}"
        self.scopes.append(scope)
        return f"{{%+ for {loop_var} in {source} +%}}{prefix}"


def _call(op: str):
    def make(t: _Translator, name: str, args: list[str]) -> str:
        if len(args) < 2:
            raise t.fail(f"'{name}' with {len(args)} argument(s)")
        if name == "eq" and len(args) > 2:  # eq a b c: a equals any of the others
            return "(" + " or ".join(f"{args[0]} == {b}" for b in args[1:]) + ")"
        return f"({args[0]} {op} {args[1]})"

    return make


def _join(op: str):
    def make(t: _Translator, name: str, args: list[str]) -> str:
        if not args:
            raise t.fail(f"'{name}' without arguments")
        return "(" + f" {op} ".join(args) + ")"

    return make


def _one(fmt: str):
    def make(t: _Translator, name: str, args: list[str]) -> str:
        if len(args) != 1:
            raise t.fail(f"'{name}' with {len(args)} arguments")
        return fmt.format(args[0])

    return make


def _slice(t: _Translator, name: str, args: list[str]) -> str:
    if not 2 <= len(args) <= 3:
        raise t.fail(f"'slice' with {len(args)} arguments")
    return f"{args[0]}[{args[1]}:{args[2] if len(args) == 3 else ''}]"


def _index(t: _Translator, name: str, args: list[str]) -> str:
    if len(args) != 2:
        raise t.fail(f"'index' with {len(args)} arguments")
    return f"{args[0]}[{args[1]}]"


FUNCS = {
    **{k: _call(v) for k, v in COMPARE.items()},
    "and": _join("and"),
    "or": _join("or"),
    "not": _one("(not {})"),
    "len": _one("({} | length)"),
    "json": _one("({} | tojson)"),
    "slice": _slice,
    "index": _index,
}

_SYSTEM = (
    "{%+ set all_system = (messages | selectattr('role', 'equalto', 'system') "
    "| map(attribute='content') | list | last) if (messages | selectattr('role', 'equalto', "
    "'system') | list) else '' +%}"
)
_PER_TURN_OPEN = (
    "{%+ set turn = namespace(first=true) +%}{%+ for m0 in messages +%}"
    "{%+ if m0['role'] == 'user' +%}{%+ set prompt = m0['content'] +%}"
    "{%+ set nxt = messages[loop.index0 + 1] if loop.index0 + 1 < (messages | length) else none +%}"
    "{%+ set response = nxt['content'] if nxt and nxt['role'] == 'assistant' else '' +%}"
    "{%+ set cut = nxt is none or (nxt['role'] == 'assistant' and loop.index0 + 2 == "
    "(messages | length)) +%}"
    "{%+ set system = all_system if turn.first else '' +%}{%+ set turn.first = false +%}"
)
_PER_TURN_CLOSE = "{%+ endif +%}{%+ endfor +%}"


def translate(source: str) -> str:
    """The Jinja equivalent of a Go template, or TemplateError naming what it cannot be."""
    t = _Translator(per_turn=".Messages" not in source)
    parts: list[str] = []
    pos, trim_next = 0, False
    for m in ACTION.finditer(source):
        text = source[pos : m.start()]
        if trim_next:
            text = text.lstrip(" \t\r\n")
        if m.group(1):
            text = text.rstrip(" \t\r\n")
        parts.append(t.guard(_text(text)))
        parts.append(t.action(m.group(2).strip()))
        trim_next, pos = bool(m.group(3)), m.end()
    tail = source[pos:]
    parts.append(t.guard(_text(tail.lstrip(" \t\r\n") if trim_next else tail)))
    if len(t.scopes) > 1:
        raise TemplateError("the TEMPLATE has an 'if' or 'range' without its 'end'")
    body = "".join(parts)
    if ".Messages" in source:
        return (
            _SYSTEM
            + "{%+ set system = all_system +%}{%+ set prompt = '' +%}"
            + ("{%+ set response = '' +%}" + body)
        )
    return _SYSTEM + _PER_TURN_OPEN + body + _PER_TURN_CLOSE


def _text(text: str) -> str:
    """Literal text; as a Jinja string when it holds what Jinja would read as a tag."""
    if "{%" in text or "{#" in text:
        return "{{ " + json.dumps(text) + " }}"
    return text
