"""What a JSON-schema `pattern` will cost as a grammar, known before it is built.

llama.cpp's converter writes a regex repetition out in full (`a{1000000000}` is a billion
characters of grammar, built in Python on the way), and llama.cpp keeps one parse stack per
way the text so far can continue: a run of optional items nested in another makes millions
of them (`((a?){1000}){1000}`), and every token then costs the square of that. Both numbers
are estimated here from the pattern alone, parsed the way the converter parses it, so that a
pattern past the limits is refused with a 400 before anything is built.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_TEXT = 2 * 1024 * 1024  # characters of grammar (llama_json.MAX_GRAMMAR_BYTES)
MAX_STACKS = 4096  # parse stacks one position may open: every token costs their square
RULE_REF = 12  # characters a reference to a sub-rule takes, with its space


@dataclass(frozen=True)
class Cost:
    text: int  # characters of grammar written
    stacks: int  # parse stacks reachable from one position without reading a character
    nullable: bool  # matches the empty string


_ONE = Cost(1, 1, False)


class _Parser:
    """The converter's reading of a pattern (llama_cpp.llama_grammar._visit_pattern)."""

    def __init__(self, pattern: str):
        self.p = pattern
        self.i = 0

    def sequence(self) -> Cost:
        branches: list[list[Cost]] = [[]]
        p = self.p
        while self.i < len(p):
            c = p[self.i]
            if c == ")":
                self.i += 1
                break
            self.i += 1
            if c == "(":
                branches[-1].append(self.sequence())
            elif c == "[":
                start = self.i - 1
                while self.i < len(p) and p[self.i] != "]":
                    self.i += 2 if p[self.i] == "\\" else 1
                self.i += 1
                branches[-1].append(Cost(self.i - start, 1, False))
            elif c == "|":
                branches.append([])
            elif c in "*+?":
                if branches[-1]:
                    branches[-1][-1] = _star(branches[-1][-1], c)
            elif c == "{":
                end = p.find("}", self.i)
                if end < 0:
                    break  # the converter refuses it
                low, high = _counts(p[self.i : end])
                self.i = end + 1
                if branches[-1] and low is not None:
                    branches[-1][-1] = _repeat(branches[-1][-1], low, high)
            elif c == "\\":
                self.i += 1
                branches[-1].append(_ONE)
            else:
                branches[-1].append(_ONE)
        return _alternatives([_sequence(b) for b in branches])


def _counts(text: str) -> tuple[int | None, int | None]:
    parts = [x.strip() for x in text.split(",")]
    try:
        if len(parts) == 1:
            return int(parts[0]), int(parts[0])
        if len(parts) == 2:
            return int(parts[0] or 0), (int(parts[1]) if parts[1] else None)
    except ValueError:
        pass
    return None, None  # the converter refuses it


def _sequence(items: list[Cost]) -> Cost:
    if not items:
        return Cost(0, 1, True)
    stacks, run = 1, 0
    for item in items:  # from any point: through every nullable item, into the next one
        run = run + item.stacks if item.nullable else item.stacks
        stacks = max(stacks, run)
    return Cost(sum(i.text for i in items), stacks, all(i.nullable for i in items))


def _alternatives(branches: list[Cost]) -> Cost:
    if len(branches) == 1:
        return branches[0]
    return Cost(
        sum(b.text for b in branches),
        sum(b.stacks for b in branches),
        any(b.nullable for b in branches),
    )


def _star(item: Cost, op: str) -> Cost:
    return Cost(item.text + 1, item.stacks + 1, op != "+" or item.nullable)


def _repeat(item: Cost, low: int, high: int | None) -> Cost:
    """`item{low,high}`: `low` copies, then up to high-low nested optional ones."""
    copies = max(low, high if high is not None else low + 1)
    text = item.text + RULE_REF * copies  # the item becomes a rule, referenced each time
    # every copy of a nullable item can be passed without reading: their stacks add up
    stacks = item.stacks * copies if item.nullable else item.stacks + 1
    return Cost(text, stacks, low == 0 or item.nullable)


def estimate(pattern: str) -> Cost:
    """The cost of `^...$` as the converter would build it."""
    return _Parser(pattern[1:-1] if pattern.startswith("^") else pattern).sequence()


def problem(pattern: str) -> str | None:
    """Why `pattern` cannot be used (too costly, or unmatchable in JSON text), or None."""
    control = next((c for c in pattern if ord(c) < 0x20), None)
    if control is not None:  # a JSON string holds them only escaped: no reply could match
        return (
            f"'pattern' holds the control character U+{ord(control):04X}, which JSON text "
            "cannot hold unescaped, so no reply could match it"
        )
    cost = estimate(pattern)
    if cost.text > MAX_TEXT:
        return (
            f"'pattern' repeats too much: its grammar would be about {cost.text} characters "
            f"(at most {MAX_TEXT})"
        )
    if cost.stacks > MAX_STACKS:
        return (
            f"'pattern' nests optional repetitions too deeply: about {cost.stacks} ways to "
            f"continue at once (at most {MAX_STACKS})"
        )
    return None
