"""JSON schemas to llama.cpp grammars (GBNF), with llama.cpp's own converter.

llama-cpp-python ships llama.cpp's json-schema-to-grammar converter (llama_cpp.llama_grammar);
we use it as it is. What it does not honour it drops without a word (`minimum`, `format:
email`, `uniqueItems`, ...), so every schema is walked first, the way the converter will walk
it, and any keyword that would be ignored is refused with a 400 that names it and where it
is. Annotations (title, description, default, examples, ...) are dropped before converting:
they constrain nothing, and the converter does not know a schema that holds only them.

Limits keep a hostile schema from costing much: its encoded size, its depth, and the counts
in minLength/maxLength/minItems/maxItems (the converter writes a repetition out in full, and
llama.cpp's grammar parser gives up on deep nesting).
"""

from __future__ import annotations

import functools
import json
import math
import re
from typing import Any

from llama_cpp import llama_grammar

from llmlb.engine import int_range, pattern_cost
from llmlb.errors import BadRequest

MAX_SCHEMA_BYTES = 256 * 1024
MAX_DEPTH = 48
MAX_COUNT = 1000
MAX_GRAMMAR_BYTES = 2 * 1024 * 1024
INT_LIMIT = 10**15  # integer bounds (what a double holds exactly, and llama.cpp's 16 digits)

TYPES = {"string", "number", "integer", "boolean", "null", "object", "array"}
ANNOTATIONS = {
    "title",
    "description",
    "default",
    "examples",
    "$schema",
    "$id",
    "$comment",
    "$anchor",
    "deprecated",
    "readOnly",
    "writeOnly",
    "contentEncoding",
    "contentMediaType",
}
DEFINITIONS = ("$defs", "definitions")
# JSON Schema assertions the converter never honours anywhere
NEVER = {
    "not",
    "if",
    "then",
    "else",
    "allOf",
    "dependentRequired",
    "dependentSchemas",
    "dependencies",
    "patternProperties",
    "propertyNames",
    "minProperties",
    "maxProperties",
    "unevaluatedProperties",
    "unevaluatedItems",
    "additionalItems",
    "uniqueItems",
    "contains",
    "minContains",
    "maxContains",
    "minimum",  # (on integers they are honoured: RANGE below)
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "contentSchema",
    "$dynamicRef",
    "$recursiveRef",
    "nullable",
}
# every keyword the converter reads somewhere; anything else is not JSON Schema vocabulary
# and is ignored the way validators ignore unknown keywords
KNOWN = {
    "type",
    "$ref",
    "oneOf",
    "anyOf",
    "const",
    "enum",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "prefixItems",
    "minItems",
    "maxItems",
    "pattern",
    "format",
    "minLength",
    "maxLength",
}
RANGE = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}  # integers only
FORMATS = {"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"}
# the converter's string characters allow raw control characters, which JSON forbids inside
# strings (json.loads refuses them); llama.cpp's C++ converter excludes them, and so do we
_LOOSE_CHAR = 'char ::= [^"\\\\] |'
_STRICT_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'

JSON_OBJECT = llama_grammar.JSON_GBNF  # llama.cpp's json.gbnf: any one JSON object


class SchemaError(BadRequest):
    pass


def _where(path: str) -> str:
    return path or "the top level"


class _Checker:
    """Walks a schema as the converter will and collects what it would silently ignore."""

    def __init__(self, where: str):
        self.where = where
        self.problems: list[str] = []

    def fail(self, path: str, text: str) -> None:
        if len(self.problems) < 8:
            self.problems.append(f"{text} at {_where(path)}")

    def visit(self, schema: Any, path: str, depth: int) -> Any:
        """The schema without annotations, ready for the converter."""
        if depth > MAX_DEPTH:
            raise SchemaError(f"{self.where} is nested more than {MAX_DEPTH} levels deep")
        if schema is True:
            return {}
        if not isinstance(schema, dict):
            self.fail(path, "a schema must be an object")
            return {}
        clean: dict[str, Any] = {}
        integer = schema.get("type") == "integer"
        for key, value in schema.items():
            if key in ANNOTATIONS:
                continue
            if key in RANGE and integer:
                clean[key] = value
            elif key in RANGE:
                self.fail(
                    path,
                    f"'{key}' on a type other than integer (ranges are honoured on integers only)",
                )
            elif key in NEVER:
                self.fail(path, f"unsupported keyword '{key}'")
            elif key in KNOWN or key in DEFINITIONS:
                clean[key] = value
        self._branch(clean, path, depth)
        return clean

    def _sub(self, clean: dict, key: str, path: str, depth: int) -> None:
        clean[key] = self.visit(clean[key], f"{path}/{key}", depth + 1)

    def _branch(self, s: dict, path: str, depth: int) -> None:
        """Mirror SchemaConverter.visit: which branch takes this schema, and what it reads."""
        for key in DEFINITIONS:
            if key in s:
                defs = s[key]
                if not isinstance(defs, dict):
                    self.fail(path, f"'{key}' must be an object")
                    s[key] = {}
                    continue
                s[key] = {k: self.visit(v, f"{path}/{key}/{k}", depth + 1) for k, v in defs.items()}
        if s.get("items") in ({}, True):
            del s["items"]  # any items: the converter's plain array (it fails on `{}` here)
        kind = s.get("type")
        used: set[str] = {"type", *DEFINITIONS}
        if "$ref" in s:
            ref = s["$ref"]
            if not isinstance(ref, str) or not ref.startswith("#"):
                self.fail(
                    path, f"only local '$ref's (starting with '#') are supported, not {ref!r}"
                )
            used = {"$ref", *DEFINITIONS}
        elif "oneOf" in s or "anyOf" in s:
            key = "oneOf" if "oneOf" in s else "anyOf"
            alts = s[key]
            if not isinstance(alts, list) or not alts:
                self.fail(path, f"'{key}' must be a non-empty list of schemas")
            else:
                s[key] = [self.visit(a, f"{path}/{key}/{i}", depth + 1) for i, a in enumerate(alts)]
            used = {key, "type", *DEFINITIONS}
            if "oneOf" in s and "anyOf" in s:
                self.fail(path, "'oneOf' and 'anyOf' together")
        elif isinstance(kind, list):
            bad = [t for t in kind if t not in TYPES]
            if bad or not kind:
                self.fail(path, f"unknown type {bad[0] if bad else '[]'!r}")
        elif "const" in s:
            used = {"const", "type", *DEFINITIONS}
        elif "enum" in s:
            if not isinstance(s["enum"], list) or not s["enum"]:
                self.fail(path, "'enum' must be a non-empty list")
            elif len(s["enum"]) > pattern_cost.MAX_STACKS:
                # every value is a way to continue: each token would cost the square
                self.fail(
                    path,
                    f"an 'enum' of {len(s['enum'])} values "
                    f"(at most {pattern_cost.MAX_STACKS} are supported)",
                )
            used = {"enum", "type", *DEFINITIONS}
        elif kind in (None, "object") and (
            "properties" in s
            or ("additionalProperties" in s and s["additionalProperties"] is not True)
        ):
            self._object(s, path, depth)
            used |= {"properties", "required", "additionalProperties"}
        elif kind in (None, "array") and ("items" in s or "prefixItems" in s):
            key = "items" if s.get("items") else "prefixItems"
            items = s[key]
            if isinstance(items, list):
                s[key] = [
                    self.visit(a, f"{path}/{key}/{i}", depth + 1) for i, a in enumerate(items)
                ]
                used.add(key)
            else:
                self._sub(s, key, path, depth)
                used |= {key, "minItems", "maxItems"}
                self._counts(s, path, "minItems", "maxItems")
        elif kind in (None, "string") and "pattern" in s:
            pattern = s["pattern"]
            if not isinstance(pattern, str) or not (
                pattern.startswith("^") and pattern.endswith("$")
            ):
                self.fail(path, "a 'pattern' must start with '^' and end with '$'")
            else:
                costly = pattern_cost.problem(pattern)
                if costly:
                    self.fail(path, costly)
            used.add("pattern")
        elif kind in (None, "string") and s.get("format") in FORMATS:
            used.add("format")
        elif kind == "integer" and RANGE & s.keys():
            self._int_range(s, path)
            used |= {"minimum", "maximum"}
        elif kind == "string" and ("minLength" in s or "maxLength" in s):
            used |= {"minLength", "maxLength"}
            self._counts(s, path, "minLength", "maxLength")
        elif kind is not None and kind not in TYPES:
            self.fail(path, f"unknown type {kind!r}")
        if "format" in s and "format" not in used:
            self.fail(path, f"unsupported format {s['format']!r}")
        for key in s:
            if key not in used and key != "format":
                self.fail(path, f"unsupported keyword '{key}' here")

    def _object(self, s: dict, path: str, depth: int) -> None:
        props = s.get("properties", {})
        if not isinstance(props, dict):
            self.fail(path, "'properties' must be an object")
            s["properties"] = {}
        else:
            s["properties"] = {
                k: self.visit(v, f"{path}/properties/{k}", depth + 1) for k, v in props.items()
            }
        required = s.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            self.fail(path, "'required' must be a list of property names")
            s["required"] = []
        extra = s.get("additionalProperties")
        if isinstance(extra, dict):
            self._sub(s, "additionalProperties", path, depth)
        elif extra is not None and not isinstance(extra, bool):
            self.fail(path, "'additionalProperties' must be a boolean or a schema")

    def _int_range(self, s: dict, path: str) -> None:
        """minimum/maximum (or exclusive ones) of an integer, as whole inclusive bounds."""
        bounds: dict[str, int] = {}
        for key, exclusive, to_int in (
            ("minimum", "exclusiveMinimum", math.ceil),
            ("maximum", "exclusiveMaximum", math.floor),
        ):
            for name in (key, exclusive):
                value = s.pop(name, None)
                if value is None:
                    continue
                if isinstance(value, bool) or not isinstance(value, int | float):
                    self.fail(path, f"'{name}' must be a number")
                    continue
                if not math.isfinite(value) or abs(value) > INT_LIMIT:
                    self.fail(path, f"'{name}' of {value} (at most {INT_LIMIT} either way)")
                    continue
                whole = int(to_int(value))
                if name == exclusive and whole == value:
                    whole += 1 if key == "minimum" else -1
                old = bounds.get(key)
                tighter = max if key == "minimum" else min
                bounds[key] = whole if old is None else tighter(old, whole)
        if "minimum" in bounds and "maximum" in bounds and bounds["minimum"] > bounds["maximum"]:
            self.fail(path, "the integer range is empty (its minimum is above its maximum)")
        s.update(bounds)

    def _counts(self, s: dict, path: str, low: str, high: str) -> None:
        for key in (low, high):
            value = s.get(key)
            if value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                self.fail(path, f"'{key}' must be a whole number of at least 0")
            elif value > MAX_COUNT:
                self.fail(path, f"'{key}' of {value} (at most {MAX_COUNT} is supported)")
        lo, hi = s.get(low), s.get(high)
        if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
            self.fail(path, f"'{low}' is more than '{high}'")


def check(schema: Any, where: str = "the JSON schema") -> dict[str, Any]:
    """The schema, annotations dropped, if the converter honours every keyword in it; else
    a SchemaError naming what it would ignore (`where` names the schema in the message)."""
    try:
        size = len(json.dumps(schema))
    except (TypeError, ValueError, RecursionError) as exc:
        raise SchemaError(f"{where} is not valid JSON: {exc}") from exc
    if size > MAX_SCHEMA_BYTES:
        raise SchemaError(f"{where} is {size} bytes; at most {MAX_SCHEMA_BYTES} are supported")
    if not isinstance(schema, dict):
        raise SchemaError(f"{where} must be a JSON object")
    checker = _Checker(where)
    clean = checker.visit(schema, "", 0)
    if checker.problems:
        ignored = any("unsupported" in p or "honoured" in p for p in checker.problems)
        raise SchemaError(
            f"{where}: "
            + "; ".join(checker.problems)
            + (" (llama.cpp's schema-to-grammar converter cannot enforce it)" if ignored else "")
        )
    return clean


@functools.lru_cache(maxsize=256)
def _convert(canonical: str, where: str) -> str:
    try:
        converter = int_range.Converter(
            prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False
        )
        converter.visit(converter.resolve_refs(json.loads(canonical), "stdin"), "")
        grammar = converter.format_grammar()
    except Exception as exc:  # the converter's asserts, KeyErrors, IndexErrors on odd input
        reason = f"{type(exc).__name__} {exc}" if isinstance(exc, (KeyError, IndexError)) else exc
        raise SchemaError(f"{where} cannot be turned into a grammar: {reason}") from exc
    if len(grammar) > MAX_GRAMMAR_BYTES:
        raise SchemaError(f"{where} makes a grammar too large to use ({len(grammar)} bytes)")
    return grammar.replace(_LOOSE_CHAR, _STRICT_CHAR)


def to_gbnf(schema: Any, where: str = "the JSON schema") -> str:
    """A GBNF grammar (root rule `root`) for values valid against `schema`."""
    return _convert(json.dumps(check(schema, where), sort_keys=False), where)


_RULE = re.compile(r"^([a-zA-Z0-9-]+) ::=", re.MULTILINE)


def embed(grammar: str, name: str) -> tuple[str, str]:
    """`grammar` with its root rule renamed, so that another root can use it: (rules, name).
    The name gets a suffix if the grammar already has a rule of that name."""
    names = set(_RULE.findall(grammar))
    taken = name
    n = 0
    while taken in names:
        n += 1
        taken = f"{name}{n}"
    # (no rule refers to `root`: the converter refuses a `$ref` to the whole schema)
    return re.sub(r"^root ::=", f"{taken} ::=", grammar, count=1, flags=re.MULTILINE), taken
