"""JSON schemas to grammars: what llama.cpp's converter honours is let through, what it would
silently ignore is refused by name (engine/llama_json.py)."""

import re

import pytest

from llmlb.engine import int_range, llama_json
from llmlb.engine.llama_json import SchemaError

PERSON = {
    "title": "Person",
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "Full name", "maxLength": 40},
        "role": {"enum": ["admin", "user"]},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        "address": {"$ref": "#/$defs/Address"},
        "nickname": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
        "born": {"type": "string", "format": "date"},
        "code": {"type": "string", "pattern": "^[A-Z]{3}$"},
    },
    "required": ["name", "role", "address"],
    "additionalProperties": False,
    "$defs": {
        "Address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": "integer"}},
            "required": ["city"],
        }
    },
}


def test_a_schema_of_supported_keywords_becomes_a_grammar():
    grammar = llama_json.to_gbnf(PERSON)
    assert grammar.startswith(("root ::=", "Address")) or "\nroot ::=" in grammar
    assert '"\\"admin\\""' in grammar  # the enum became literals
    # JSON strings hold no raw control characters (llama.cpp's C++ converter excludes them)
    assert '[^"\\\\\\x7F\\x00-\\x1F]' in grammar


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        ({"type": "number", "minimum": 0}, "'minimum' on a type other than integer"),
        ({"type": "integer", "minimum": 5, "maximum": 1}, "the integer range is empty"),
        ({"type": "integer", "maximum": 1e300}, "'maximum' of 1e+300"),
        ({"type": "number", "multipleOf": 2}, "'multipleOf'"),
        ({"type": "string", "format": "email"}, "format 'email'"),
        ({"type": "array", "items": {}, "uniqueItems": True}, "'uniqueItems'"),
        ({"type": "array", "minItems": 2}, "'minItems'"),  # without items it means nothing here
        ({"type": ["string", "null"], "maxLength": 3}, "'maxLength'"),
        ({"allOf": [{"type": "object"}]}, "'allOf'"),
        ({"not": {"type": "string"}}, "'not'"),
        ({"type": "object", "patternProperties": {"^a": {}}}, "'patternProperties'"),
        ({"$ref": "https://example.com/s.json"}, "only local '$ref'"),
        ({"type": "string", "pattern": "abc"}, "'^'"),
        ({"type": "string", "maxLength": 5000}, "'maxLength' of 5000"),
        ({"type": "date"}, "unknown type 'date'"),
    ],
)
def test_what_the_converter_would_ignore_is_refused_by_name(schema, named):
    with pytest.raises(SchemaError) as caught:
        llama_json.to_gbnf(schema, "the schema")
    assert caught.value.message.startswith("the schema: ")
    assert named in caught.value.message


def test_the_refusal_says_where_in_the_schema():
    schema = {"type": "object", "properties": {"age": {"type": "number", "exclusiveMaximum": 9}}}
    with pytest.raises(SchemaError, match="'exclusiveMaximum' on a type other than integer"):
        llama_json.check(schema)


def test_annotations_are_dropped_not_refused():
    clean = llama_json.check({"type": "string", "title": "T", "examples": ["x"], "x-ui": 1})
    assert clean == {"type": "string"}
    # a schema of annotations only is "anything" (an object, as the converter reads {})
    assert "root ::= object" in llama_json.to_gbnf({"description": "anything"})


def test_hostile_sizes_are_refused_before_converting():
    deep: dict = {"type": "string"}
    for _ in range(100):
        deep = {"type": "object", "properties": {"a": deep}}
    with pytest.raises(SchemaError, match="nested more than"):
        llama_json.check(deep)
    huge = {"enum": ["x" * 1000] * 400}
    with pytest.raises(SchemaError, match="bytes"):
        llama_json.check(huge)


def test_a_schema_that_is_not_an_object_is_refused():
    with pytest.raises(SchemaError, match="must be a JSON object"):
        llama_json.check(["type", "string"])


def test_embedding_a_grammar_renames_its_root_only():
    rules, name = llama_json.embed(llama_json.to_gbnf({"enum": ["root"]}), "tool-call-json")
    assert name == "tool-call-json"
    assert "tool-call-json ::= " in rules
    assert "root ::=" not in rules
    assert '"\\"root\\""' in rules  # a literal that says root is untouched


def _regex(body: str) -> re.Pattern:
    """A GBNF rule body of the kinds int_range writes ("lit", [a-b], {m,n}, |, ()) as a regex."""
    out = []
    for literal, other in re.findall(r'"([^"]*)"|(\[[^\]]*\]|\{[^}]*\}|[()|])', body):
        out.append(re.escape(literal) if literal else other)
    return re.compile("".join(out))


@pytest.mark.parametrize(
    "lo, hi",
    [(0, 150), (-5, 7), (-120, -3), (1, 9), (10, 1000), (7, None), (None, 42), (-33, None),
     (None, -8), (0, 0), (99, 101), (150, 1999)],
)  # fmt: skip
def test_an_integer_range_admits_exactly_its_integers(lo, hi):
    pattern = _regex(int_range.gbnf(lo, hi))
    for n in range(-2100, 2100):
        inside = (lo is None or n >= lo) and (hi is None or n <= hi)
        assert bool(pattern.fullmatch(str(n))) == inside, (lo, hi, n)
    assert not pattern.fullmatch("007") and not pattern.fullmatch("+1")


def test_exclusive_and_fractional_bounds_become_whole_inclusive_ones():
    clean = llama_json.check(
        {"type": "integer", "exclusiveMinimum": 2, "maximum": 9.5, "exclusiveMaximum": 9}
    )
    assert (clean["minimum"], clean["maximum"]) == (3, 8)
    assert "exclusiveMinimum" not in clean
    grammar = llama_json.to_gbnf({"type": "integer", "minimum": 0, "maximum": 150})
    assert grammar.startswith("root ::= (") and "space" in grammar
