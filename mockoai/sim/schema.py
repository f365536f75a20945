# -*- test-case-name: tests.test_schema -*-
"""
Documents that validate against a JSON schema: a tool call's arguments, a
structured output's content.

A schema is compiled once into L{_Node}s, and a document is drawn from the
nodes.  Compiling does the work that decides whether any document exists:
``allOf`` is intersected into one node, ``anyOf``/``oneOf`` are expanded
into alternatives (each already intersected with the keywords beside it,
the branches it must not match for ``oneOf`` kept beside it), ``$ref`` is
resolved once per target (a node may point back at itself: recursive
schemas are graphs, not trees), and every contradiction raises
L{Unsatisfiable} naming the subschema's JSON pointer.  Each node then gets
the cost of its smallest document (a least fixed point when references
loop), so a schema whose every document is infinite is refused too, and
the generator knows the way out of a recursion: once the budget is spent it
takes only the cheapest branch, required properties and ``minItems``.

A tool schema of 8 properties (a nested object, an array, formats) costs
~55 us of CPU to compile and ~30 us to draw a document from, on CPython on
a busy 2-core box (~20 us to compile on PyPy): L{CompiledSchema} keeps the
compiled form, for a caller that checks at request time and draws later.
A schema whose smallest document exceeds L{MAX_COST} values is refused, and
larger optional parts are never drawn: a request's schema cannot hold the
reactor.

Not generated (L{Unsatisfiable} says so): ``if``/``then``/``else``,
``patternProperties``, ``propertyNames``, ``dependentRequired``,
``dependentSchemas``, ``contains``, ``unevaluated*``, remote ``$ref``s,
``not`` beyond ``type``/``enum``/``const``, and patterns with look-arounds,
back-references or Unicode classes.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Protocol

__all__ = ["CompiledSchema", "Draws", "Unsatisfiable", "check", "generate"]

INF = float("inf")
#: The JSON types; "number" includes "integer", which appears only without it.
_ALL = frozenset({"null", "boolean", "number", "string", "array", "object"})
_TYPES = frozenset({"null", "boolean", "integer", "number", "string", "array", "object"})
_NONE: frozenset[str] = frozenset()
#: Keywords that constrain a document and that we cannot generate for.
_UNSUPPORTED = (
    "if",
    "propertyNames",
    "dependencies",
    "dependentRequired",
    "dependentSchemas",
    "contains",
    "minContains",
    "maxContains",
    "unevaluatedItems",
    "unevaluatedProperties",
    "$dynamicRef",
    "$recursiveRef",
)
#: Which type each keyword hints at, for a schema that names none.
_HINTS = {
    "properties": "object",
    "required": "object",
    "additionalProperties": "object",
    "minProperties": "object",
    "maxProperties": "object",
    "items": "array",
    "prefixItems": "array",
    "minItems": "array",
    "maxItems": "array",
    "uniqueItems": "array",
    "minLength": "string",
    "maxLength": "string",
    "pattern": "string",
    "format": "string",
    "minimum": "number",
    "maximum": "number",
    "exclusiveMinimum": "number",
    "exclusiveMaximum": "number",
    "multipleOf": "number",
}
#: How many alternatives ``anyOf``/``oneOf`` expand to at most (their product under ``allOf``).
MAX_ALTERNATIVES = 64
#: How deep a document may nest before we give up (the budget ends a recursion long before).
MAX_DEPTH = 200
#: The largest smallest document we draw, in values (a word of a string is one): a schema
#: demanding more (``minItems: 100000000``) would hold the reactor for seconds.
MAX_COST = 50_000


class Draws(Protocol):
    """The random numbers a document is drawn from (L{mockoai.sim.sampling.Draws})."""

    def below(self, n: int) -> int: ...

    def normal(self) -> float: ...


class Unsatisfiable(ValueError):  # noqa: N818 - the name callers know
    """
    A schema no document can satisfy, or one that uses what we cannot
    generate; C{str()} says why, after the JSON pointer of the offending
    subschema (C{"#/properties/age: minimum 10 > maximum 5"}).
    """

    def __init__(self, path: str, reason: str, unsupported: bool = False) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        #: Beyond what we generate, rather than contradictory: a oneOf cannot drop such a branch.
        self.unsupported = unsupported


def _pointer(path: str, *segments: object) -> str:
    for segment in segments:
        path += "/" + str(segment).replace("~", "~0").replace("/", "~1")
    return path


class _Node:
    """
    One compiled (sub)schema.  Class attributes are the unconstrained
    defaults, so a node stores only what its schema says; ``None`` where a
    child node is expected means "any value".  A node with ``alts`` is a
    union: a document is one of the alternatives (which hold everything).
    """

    types: frozenset[str] = _ALL
    hint: frozenset[str] = _NONE
    enum: list[object] | None = None
    lo: int | float | None = None
    lo_ex = False
    hi: int | float | None = None
    hi_ex = False
    mult: int | float | None = None
    min_len = 0
    max_len: int | None = None
    pattern: _Pattern | None = None
    fmt: str | None = None
    items: _Node | None = None
    prefix: tuple[_Node | None, ...] = ()
    min_items = 0
    max_items: int | None = None
    unique = False
    props: Mapping[str, _Node | None] = MappingProxyType({})
    required: tuple[str, ...] = ()
    additional: _Node | None = None
    min_props = 0
    max_props: int | None = None
    alts: list[_Node] | None = None
    avoid: tuple[_Node, ...] = ()
    path = "#"
    cost: float = INF
    #: The type (or the index of the alternative) of the smallest document.
    cheap: str | int | None = None
    #: The one type of a node that has one (what the generator dispatches on).
    kind: str | None = None
    pending = False

    def copy(self) -> _Node:
        node = _Node()
        node.__dict__.update(self.__dict__)
        return node


_ANY = _Node()
_ANY.cost = 1.0
_ANY.cheap = "string"
_NEVER = _Node()
_NEVER.types = _NONE


# -- JSON values -----------------------------------------------------------


def _has_type(types: frozenset[str], value: object) -> bool:
    if value is None:
        return "null" in types
    if isinstance(value, bool):
        return "boolean" in types
    if isinstance(value, int):
        return "integer" in types or "number" in types
    if isinstance(value, float):
        return "number" in types or ("integer" in types and value.is_integer())
    if isinstance(value, str):
        return "string" in types
    if isinstance(value, list):
        return "array" in types
    if isinstance(value, dict):
        return "object" in types
    return False


def _equal(a: object, b: object) -> bool:
    """JSON equality: C{1 == 1.0}, but C{True != 1}."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _key(value: object) -> object:
    """A hashable stand-in with L{_equal}'s equality, for ``uniqueItems``."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, list):
        return ("a", tuple(_key(v) for v in value))
    if isinstance(value, dict):
        return ("o", frozenset((k, _key(v)) for k, v in value.items()))
    return value


def _copy(value: object) -> object:
    if isinstance(value, list):
        return [_copy(v) for v in value]
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return value


def _multiple(value: int | float, mult: int | float) -> bool:
    """``value`` is a multiple of ``mult`` as python-jsonschema computes it (floats divide)."""
    if isinstance(mult, float):
        try:
            quotient = value / mult
            return math.isfinite(quotient) and int(quotient) == quotient
        except OverflowError:
            return False
    return value % mult == 0


def _accepts(node: _Node | None, value: object) -> bool:
    """Whether ``value`` validates against ``node`` (the keywords we compile)."""
    if node is None:
        return True
    if node.alts is not None:
        return any(_accepts(alt, value) for alt in node.alts) and not any(
            _accepts(a, value) for a in node.avoid
        )
    if not _has_type(node.types, value):
        return False
    if node.enum is not None and not any(_equal(value, e) for e in node.enum):
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not _in_range(node, value):
            return False
    elif isinstance(value, str):
        if len(value) < node.min_len or (node.max_len is not None and len(value) > node.max_len):
            return False
        if node.pattern is not None and node.pattern.regex.search(value) is None:
            return False
    elif isinstance(value, list):
        if not _accepts_array(node, value):
            return False
    elif isinstance(value, dict) and not _accepts_object(node, value):
        return False
    return not any(_accepts(a, value) for a in node.avoid)


def _in_range(node: _Node, value: int | float) -> bool:
    lo, hi = node.lo, node.hi
    if lo is not None and (value < lo or (node.lo_ex and value == lo)):
        return False
    if hi is not None and (value > hi or (node.hi_ex and value == hi)):
        return False
    return node.mult is None or _multiple(value, node.mult)


def _accepts_array(node: _Node, value: list[object]) -> bool:
    if len(value) < node.min_items or (node.max_items is not None and len(value) > node.max_items):
        return False
    prefix = node.prefix
    for i, item in enumerate(value):
        if not _accepts(prefix[i] if i < len(prefix) else node.items, item):
            return False
    return not node.unique or len({_key(v) for v in value}) == len(value)


def _accepts_object(node: _Node, value: dict[str, object]) -> bool:
    if len(value) < node.min_props or (node.max_props is not None and len(value) > node.max_props):
        return False
    if any(k not in value for k in node.required):
        return False
    props, extra = node.props, node.additional
    return all(_accepts(props.get(k, extra), v) for k, v in value.items())


# -- patterns --------------------------------------------------------------

_Rx = tuple[
    Any, ...
]  # ("lit", str) | ("set", str) | ("seq", list) | ("alt", list) | ("rep", rx, lo, hi)
_PRINTABLE = "".join(chr(c) for c in range(32, 127))
_WORD = string.ascii_letters + string.digits + "_"
_CLASSES = {
    "d": string.digits,
    "w": _WORD,
    "s": " ",
    "D": string.ascii_letters,
    "W": "-.,;:!?#@ ",
    "S": string.ascii_letters + string.digits,
}
_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f", "v": "\v", "0": "\0"}


class _Pattern:
    """A ``pattern`` we can generate: its parse, length range, and whether it is anchored."""

    __slots__ = ("anchored", "longest", "regex", "shortest", "tree")

    def __init__(self, source: str) -> None:
        self.regex = re.compile(source)
        self.anchored = False
        self.tree = _RxParser(source, self).parse()
        self.shortest, self.longest = _rx_lengths(self.tree)


class _RxParser:
    def __init__(self, source: str, pattern: _Pattern) -> None:
        self.s = source
        self.i = 0
        self.pattern = pattern

    def fail(self, why: str) -> Unsatisfiable:
        return Unsatisfiable(
            "", f"pattern {self.s!r}: {why} (we generate only simple patterns)", True
        )

    def parse(self) -> _Rx:
        tree = self.alternation()
        if self.i < len(self.s):
            raise self.fail(f"unbalanced {self.s[self.i]!r}")
        return tree

    def alternation(self) -> _Rx:
        branches = [self.sequence()]
        while self.i < len(self.s) and self.s[self.i] == "|":
            self.i += 1
            branches.append(self.sequence())
        return branches[0] if len(branches) == 1 else ("alt", branches)

    def sequence(self) -> _Rx:
        parts: list[_Rx] = []
        s = self.s
        while self.i < len(s) and s[self.i] not in "|)":
            atom = self.atom()
            parts.append(self.quantified(atom))
        return parts[0] if len(parts) == 1 else ("seq", parts)

    def quantified(self, atom: _Rx) -> _Rx:
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c in "*+?":
                lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
                self.i += 1
            elif c == "{":
                m = re.match(r"\{(\d+)(,(\d*))?\}", s[self.i :])
                if m is None:
                    return atom
                lo = int(m.group(1))
                hi = lo if m.group(2) is None else (int(m.group(3)) if m.group(3) else None)
                if hi is not None and hi < lo:
                    raise self.fail("a quantifier {n,m} with m < n")
                self.i += m.end()
            else:
                return atom
            if self.i < len(s) and s[self.i] in "?+":  # lazy or possessive: same strings
                self.i += 1
            atom = ("rep", atom, lo, hi)
        return atom

    def atom(self) -> _Rx:
        s = self.s
        c = s[self.i]
        self.i += 1
        if c == "(":
            if s.startswith("?:", self.i):
                self.i += 2
            elif s.startswith("?P<", self.i) or (
                s.startswith("?<", self.i) and not s.startswith(("?<=", "?<!"), self.i)
            ):
                end = s.find(">", self.i)
                if end < 0:
                    raise self.fail("an unterminated group name")
                self.i = end + 1
            elif s.startswith("?", self.i):
                raise self.fail("look-arounds and inline flags are not supported")
            inner = self.alternation()
            if self.i >= len(s) or s[self.i] != ")":
                raise self.fail("an unclosed group")
            self.i += 1
            return inner
        if c == "[":
            return ("set", self.char_class())
        if c == "\\":
            return self.escape(in_class=False)
        if c == ".":
            return ("set", string.ascii_lowercase)
        if c in "^$":
            self.pattern.anchored = True
            return ("lit", "")
        if c in "*+?":
            raise self.fail(f"nothing to repeat before {c!r}")
        return ("lit", c)

    def escape(self, in_class: bool) -> _Rx:
        s = self.s
        if self.i >= len(s):
            raise self.fail("a trailing backslash")
        c = s[self.i]
        self.i += 1
        if c in _CLASSES:
            return ("set", _CLASSES[c])
        if c in _ESCAPES:
            return ("lit", _ESCAPES[c])
        if c in "xu":
            width = 2 if c == "x" else 4
            digits = s[self.i : self.i + width]
            if len(digits) != width or not all(d in string.hexdigits for d in digits):
                raise self.fail(f"a malformed \\{c} escape")
            self.i += width
            return ("lit", chr(int(digits, 16)))
        if c.isdigit() or c in "pPkN":
            raise self.fail(f"\\{c} (back-references, Unicode classes) is not supported")
        if not in_class and c in "bBAZz":
            if c in "AZz":
                self.pattern.anchored = True
            return ("lit", "")  # zero-width: the final check decides
        return ("lit", c)

    def char_class(self) -> str:
        s = self.s
        negated = s.startswith("^", self.i)
        if negated:
            self.i += 1
        chars: list[str] = []
        first = True
        while True:
            if self.i >= len(s):
                raise self.fail("an unclosed character class")
            c = s[self.i]
            if c == "]" and not first:
                self.i += 1
                break
            first = False
            if c == "[" and s.startswith(("[:", "[=", "[."), self.i):
                raise self.fail("POSIX classes are not supported")
            self.i += 1
            if c == "\\":
                kind, value = self.escape(in_class=True)
                if kind == "set":
                    chars.append(value)
                    continue
                c = value
            if s.startswith("-", self.i) and self.i + 1 < len(s) and s[self.i + 1] != "]":
                self.i += 1
                end = s[self.i]
                self.i += 1
                if end == "\\":
                    kind, end = self.escape(in_class=True)
                    if kind == "set":
                        raise self.fail("a range ending in a class")
                if ord(end) < ord(c):
                    raise self.fail(f"a reversed range {c}-{end}")
                if ord(end) - ord(c) > 0x10000:
                    raise self.fail("a range too wide")
                chars.append("".join(chr(o) for o in range(ord(c), ord(end) + 1)))
            else:
                chars.append(c)
        members = "".join(dict.fromkeys("".join(chars)))
        if negated:
            excluded = set(members)
            members = "".join(c for c in _PRINTABLE if c not in excluded)
        if not members:
            raise self.fail("an empty character class")
        # Prefer letters and digits: a generated value reads better.
        nice = "".join(c for c in members if c.isalnum() and c.isascii())
        return nice or members


def _rx_lengths(tree: _Rx) -> tuple[int, float]:
    kind = tree[0]
    if kind == "lit":
        return len(tree[1]), len(tree[1])
    if kind == "set":
        return 1, 1
    if kind == "seq":
        lows, highs = zip(*(_rx_lengths(t) for t in tree[1]))
        return sum(lows), sum(highs)
    if kind == "alt":
        lows, highs = zip(*(_rx_lengths(t) for t in tree[1]))
        return min(lows), max(highs)
    lo, hi = _rx_lengths(tree[1])
    return lo * tree[2], (INF if tree[3] is None else hi * tree[3]) if hi else 0


def _rx_generate(tree: _Rx, draws: Draws, extra: int, grow: bool, out: list[str]) -> None:
    """A match of ``tree``: repetitions up to ``extra`` past their minimum (all of it: ``grow``)."""
    kind = tree[0]
    if kind == "lit":
        out.append(tree[1])
    elif kind == "set":
        members = tree[1]
        out.append(members[draws.below(len(members))])
    elif kind == "seq":
        for part in tree[1]:
            _rx_generate(part, draws, extra, grow, out)
    elif kind == "alt":
        branches = tree[1]
        _rx_generate(branches[draws.below(len(branches))], draws, extra, grow, out)
    else:
        lo, hi = tree[2], tree[3]
        top = lo + extra if hi is None else min(hi, lo + extra)
        for _ in range(top if grow else lo + draws.below(top - lo + 1)):
            _rx_generate(tree[1], draws, extra, grow, out)


_PATTERNS: dict[str, _Pattern | Unsatisfiable] = {}


def _pattern(source: str, path: str) -> _Pattern:
    """The parsed ``pattern`` (cached by its text: a schema's patterns are few and come back)."""
    found = _PATTERNS.get(source)
    if found is None:
        try:
            found = _Pattern(source)
        except re.error as e:
            found = Unsatisfiable("", f"pattern {source!r} is not a regular expression: {e}", True)
        except Unsatisfiable as e:
            found = e
        except RecursionError:
            found = Unsatisfiable("", f"pattern {source!r} nests too deeply", True)
        if len(_PATTERNS) > 512:
            _PATTERNS.clear()
        _PATTERNS[source] = found
    if isinstance(found, Unsatisfiable):
        raise Unsatisfiable(path, found.reason, True)
    return found


# -- formats ---------------------------------------------------------------


def _two(draws: Draws, n: int, base: int = 0) -> str:
    return f"{base + draws.below(n):02d}"


def _date(draws: Draws) -> str:
    return f"{2000 + draws.below(31)}-{_two(draws, 12, 1)}-{_two(draws, 28, 1)}"


def _time(draws: Draws) -> str:
    return f"{_two(draws, 24)}:{_two(draws, 60)}:{_two(draws, 60)}Z"


def _uuid(draws: Draws) -> str:
    digits = "".join(f"{draws.below(1 << 40):010x}" for _ in range(3))  # 30 hex digits
    variant = "89ab"[draws.below(4)]
    return f"{digits[:8]}-{digits[8:12]}-4{digits[12:15]}-{variant}{digits[15:18]}-{digits[18:30]}"


def _word(draws: Draws, words: Sequence[str]) -> str:
    return words[draws.below(len(words))]


#: format -> (generator, shortest form, whether words can lengthen it)
_FORMATS = {
    "date-time": (lambda d, w: f"{_date(d)}T{_time(d)}", "2000-01-01T00:00:00Z", False),
    "date": (lambda d, w: _date(d), "2000-01-01", False),
    "time": (lambda d, w: _time(d), "00:00:00Z", False),
    "uuid": (lambda d, w: _uuid(d), "00000000-0000-4000-8000-000000000000", False),
    "email": (lambda d, w: f"{_word(d, w)}.{_word(d, w)}@example.com", "a@example.com", True),
    "idn-email": (lambda d, w: f"{_word(d, w)}@example.com", "a@example.com", True),
    "hostname": (lambda d, w: f"{_word(d, w)}.example.com", "example.com", True),
    "idn-hostname": (lambda d, w: f"{_word(d, w)}.example.com", "example.com", True),
    "uri": (lambda d, w: f"https://example.com/{_word(d, w)}", "https://example.com", True),
    "iri": (lambda d, w: f"https://example.com/{_word(d, w)}", "https://example.com", True),
    "uri-reference": (lambda d, w: f"/{_word(d, w)}", "/", True),
    "iri-reference": (lambda d, w: f"/{_word(d, w)}", "/", True),
    "ipv4": (
        lambda d, w: f"10.{d.below(256)}.{d.below(256)}.{1 + d.below(254)}",
        "10.0.0.1",
        False,
    ),
    "ipv6": (lambda d, w: f"2001:db8::{d.below(65536):x}", "2001:db8::1", False),
    "duration": (lambda d, w: f"P{1 + d.below(30)}D", "P1D", False),
}


_FORMAT_SHAPES = {
    "date-time": r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)",
    "date": r"\d{4}-\d\d-\d\d",
    "time": r"\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)",
    "uuid": r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
    "email": r"[^@\s]+@[^@\s]+",
    "idn-email": r"[^@\s]+@[^@\s]+",
    "hostname": r"{label}(\.{label})*".format(label=r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"),
    "idn-hostname": r"[^\s.]+(\.[^\s.]+)*",
    "uri": r"[A-Za-z][A-Za-z0-9+.-]*:[^\s]*",
    "iri": r"[A-Za-z][A-Za-z0-9+.-]*:[^\s]*",
    "uri-reference": r"[^\s]*",
    "iri-reference": r"[^\s]*",
    "ipv4": r"((25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)",
    "ipv6": r"[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*",
    "duration": r"P(\d+W|(\d+Y)?(\d+M)?(\d+D)?(T(\d+H)?(\d+M)?(\d+S)?)?)",
}
_FORMAT_CHECKS = {name: re.compile(shape).fullmatch for name, shape in _FORMAT_SHAPES.items()}


def _format_ok(fmt: str, value: object) -> bool:
    """
    Whether an ``enum`` value is of ``format`` (strictly: a value we are not
    sure of is dropped).  Elsewhere formats are annotations, as validators
    treat them by default: a ``oneOf`` branch's format never makes us think
    a document cannot match it.
    """
    if not isinstance(value, str):
        return True
    if fmt == "duration" and (value == "P" or value.endswith("T")):
        return False
    return _FORMAT_CHECKS[fmt](value) is not None


def _pad_format(
    fmt: str, value: str, lo: int, hi: int | None, draws: Draws, words: Sequence[str]
) -> str:
    """``value`` lengthened to ``lo``..``hi`` characters, still of its format."""
    front = fmt in ("email", "idn-email", "hostname", "idn-hostname")
    while len(value) < lo:
        word = _word(draws, words)
        if front:
            value = f"{word}.{value}"
        elif value == "/":
            value = f"/{word}"
        else:
            value = f"{value}/{word}"
    if hi is not None and len(value) > hi:
        # Cut padding words, where they were added; never leave a dot or slash at the cut.
        if front:
            value = value[len(value) - hi :]
            value = "a" + value[1:] if value[0] == "." else value
        else:
            value = value[:hi]
            value = value[:-1] + "a" if value[-1] == "/" else value
    return value


# -- compiling -------------------------------------------------------------


def _number(value: object, path: str, name: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Unsatisfiable(path, f"{name} must be a number, not {value!r}")
    return value


def _count(value: object, path: str, name: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Unsatisfiable(path, f"{name} must be a non-negative integer, not {value!r}")
    return value


def _fmt_number(value: float) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _int_bounds(node: _Node) -> tuple[int | None, int | None]:
    lo = hi = None
    if node.lo is not None:
        lo = math.ceil(node.lo)
        if node.lo_ex and lo == node.lo:
            lo += 1
    if node.hi is not None:
        hi = math.floor(node.hi)
        if node.hi_ex and hi == node.hi:
            hi -= 1
    return lo, hi


def _multiples(
    mult: int | float, lo: float | None, hi: float | None, lo_ex: bool, hi_ex: bool
) -> tuple[int | None, int | None]:
    """The range of k for which k * mult lies within lo..hi."""
    k_lo = k_hi = None
    if lo is not None:
        k_lo = math.ceil(lo / mult)
        if k_lo * mult < lo or (lo_ex and k_lo * mult == lo):
            k_lo += 1
    if hi is not None:
        k_hi = math.floor(hi / mult)
        if k_hi * mult > hi or (hi_ex and k_hi * mult == hi):
            k_hi -= 1
    return k_lo, k_hi


def _numeric_problem(node: _Node, integer: bool) -> str | None:
    lo, hi = node.lo, node.hi
    if lo is not None and hi is not None:
        if lo > hi:
            low = "exclusiveMinimum" if node.lo_ex else "minimum"
            high = "exclusiveMaximum" if node.hi_ex else "maximum"
            return f"{low} {_fmt_number(lo)} > {high} {_fmt_number(hi)}"
        if lo == hi and (node.lo_ex or node.hi_ex):
            return f"the range ({_fmt_number(lo)}, {_fmt_number(hi)}) is empty"
    if integer:
        ilo, ihi = _int_bounds(node)
        if ilo is not None and ihi is not None and ilo > ihi:
            return f"no integer lies between {_fmt_number(lo or 0)} and {_fmt_number(hi or 0)}"
        if node.mult is not None:
            k_lo, k_hi = _multiples(node.mult, ilo, ihi, False, False)
            if k_lo is not None and k_hi is not None and k_lo > k_hi:
                return f"no integer multiple of {_fmt_number(node.mult)} lies in the range"
    elif node.mult is not None:
        k_lo, k_hi = _multiples(node.mult, lo, hi, node.lo_ex, node.hi_ex)
        if k_lo is not None and k_hi is not None and k_lo > k_hi:
            return f"no multiple of {_fmt_number(node.mult)} lies in the range"
    return None


def _string_problem(node: _Node) -> str | None:
    lo, hi = node.min_len, node.max_len
    if hi is not None and lo > hi:
        return f"minLength {lo} > maxLength {hi}"
    if node.fmt in _FORMATS:
        _, shortest, stretches = _FORMATS[node.fmt]
        if hi is not None and len(shortest) > hi:
            return f"a {node.fmt} is at least {len(shortest)} characters, but maxLength is {hi}"
        if not stretches and lo > len(shortest):
            return f"a {node.fmt} is {len(shortest)} characters, but minLength is {lo}"
    pattern = node.pattern
    if pattern is not None:
        if node.fmt in _FORMATS:
            return f"format {node.fmt!r} together with a pattern is not supported"
        if hi is not None and pattern.shortest > hi:
            return f"pattern matches are at least {pattern.shortest} characters, maxLength is {hi}"
        if pattern.anchored and pattern.longest < lo:
            return f"pattern matches are at most {pattern.longest} characters, minLength is {lo}"
    return None


def _domain(node: _Node | None) -> float:
    """How many distinct values ``node`` admits (INF when we do not count them)."""
    if node is None:
        return INF
    if node.alts is not None:
        return sum(_domain(a) for a in node.alts)
    if node.enum is not None:
        return len(node.enum)
    total = 0.0
    for t in node.types:
        if t == "null":
            total += 1
        elif t == "boolean":
            total += 2
        elif t == "integer" and node.mult is None:
            lo, hi = _int_bounds(node)
            total += INF if lo is None or hi is None else max(0, hi - lo + 1)
        else:
            return INF
    return total


def _finite_values(node: _Node) -> list[object] | None:
    """Every value of a node with a small finite domain (nulls, booleans, a short integer range)."""
    values: list[object] = []
    for kind in sorted(node.types):
        if kind == "null":
            values.append(None)
        elif kind == "boolean":
            values += [False, True]
        elif kind == "integer":
            lo, hi = _int_bounds(node)
            if lo is None or hi is None or hi - lo > 64:
                return None
            values += range(lo, hi + 1)
        else:
            return None
    return values if len(values) <= 64 else None


def _array_problem(node: _Node) -> str | None:
    if node.max_items is not None and node.min_items > node.max_items:
        return f"minItems {node.min_items} > maxItems {node.max_items}"
    for i, item in enumerate(node.prefix[: node.min_items]):
        if item is not None and item.alts is None and not item.types:
            return f"item {i} is required (minItems {node.min_items}) but its schema is false"
    if node.min_items > len(node.prefix):
        items = node.items
        if items is not None and items.alts is None and not items.types:
            return f"minItems {node.min_items} but items after {len(node.prefix)} are forbidden"
    if node.unique and node.min_items > len(node.prefix):
        distinct = _domain(node.items)
        if distinct < node.min_items - len(node.prefix):
            return (
                f"uniqueItems with minItems {node.min_items}, but items have {int(distinct)} values"
            )
    return None


def _object_problem(node: _Node) -> str | None:
    props = node.props
    for name in node.required:
        sub = props.get(name, node.additional)
        if sub is not None and sub.alts is None and not sub.types:
            if name in props:
                return f"required property {name!r} has the schema false"
            return f"required property {name!r} is not allowed (additionalProperties is false)"
    if node.max_props is not None:
        if len(node.required) > node.max_props:
            return f"{len(node.required)} required properties but maxProperties {node.max_props}"
        if node.min_props > node.max_props:
            return f"minProperties {node.min_props} > maxProperties {node.max_props}"
    if node.min_props:
        extra = node.additional
        closed = extra is not None and extra.alts is None and not extra.types
        if closed:
            allowed = {k for k, v in props.items() if v is None or v.alts or v.types}
            allowed.update(node.required)
            if len(allowed) < node.min_props:
                return (
                    f"minProperties {node.min_props} but only {len(allowed)} properties are allowed"
                )
    return None


_PROBLEMS: dict[str, Callable[[_Node], str | None]] = {
    "integer": lambda node: _numeric_problem(node, True),
    "number": lambda node: _numeric_problem(node, False),
    "string": _string_problem,
    "array": _array_problem,
    "object": _object_problem,
}


def _type_cost(node: _Node, kind: str) -> float:
    if kind == "object":
        props = node.props
        total = 1.0
        for name in node.required:
            sub = props.get(name, node.additional)
            total += 1.0 if sub is None else sub.cost
        return total + max(0, node.min_props - len(node.required))
    if kind == "array":
        total = 1.0
        prefix = node.prefix[: node.min_items]
        for sub in prefix:
            total += 1.0 if sub is None else sub.cost
        rest = node.min_items - len(prefix)
        if rest:
            total += rest * (1.0 if node.items is None else node.items.cost)
        return total
    if kind == "string":
        shortest = node.pattern.shortest if node.pattern is not None else 0
        return 1.0 + max(node.min_len, shortest) // 8
    return 1.0


def _price(node: _Node) -> tuple[float, str | int | None]:
    """The cost of ``node``'s smallest document, and the type or alternative it is."""
    best = INF
    cheap: str | int | None = None
    if node.alts is not None:
        for i, alt in enumerate(node.alts):
            if alt.cost < best:
                best, cheap = alt.cost, i
        return best, cheap
    if node.enum is not None:
        return (1.0, None) if node.enum else (INF, None)
    for kind in sorted(node.types):
        cost = _type_cost(node, kind)
        if cost < best:
            best, cheap = cost, kind
    return best, cheap


def _type_meet(a: frozenset[str], b: frozenset[str]) -> frozenset[str]:
    types = a & b
    if ("integer" in a and "number" in b and "number" not in a) or (
        "integer" in b and "number" in a and "number" not in b
    ):
        types |= {"integer"}
    return types


#: The fields of a node that says nothing but its type.
_PLAIN = frozenset({"types", "path", "kind", "cost", "cheap", "hint"})


def _subtract(types: frozenset[str], excluded: frozenset[str]) -> tuple[frozenset[str], bool]:
    """
    ``types`` without ``excluded``, and whether that is only part of the
    story: numbers without integers are numbers that must still avoid them.
    """
    left = frozenset(t for t in types if t not in excluded)
    partial = False
    if "number" in types and "integer" in excluded and "number" not in excluded:
        left |= {"number"}
        partial = True
    if "integer" in types and "number" in excluded:
        left -= {"integer"}
    return left, partial


def _overlap(a: _Node | None, b: _Node | None) -> bool:
    if a is None or b is None:
        return True
    if a.alts is not None:
        return any(_overlap(x, b) for x in a.alts)
    if b.alts is not None:
        return any(_overlap(a, y) for y in b.alts)
    return bool(_type_meet(a.types, b.types))


# -- keywords: one handler each, called with the node's __dict__ ----------------

_Handler = Callable[["_Compiler", "dict[str, Any]", Any, str, "dict[str, Any]"], None]


def _k_type(c: _Compiler, d: dict[str, Any], value: Any, path: str, s: dict[str, Any]) -> None:
    if isinstance(value, str) and value in _TYPES:
        d["types"] = _SINGLE[value]
        return
    names = value if isinstance(value, list) else [value]
    if not names or not all(isinstance(n, str) and n in _TYPES for n in names):
        raise Unsatisfiable(path, f"type {value!r} is not a JSON type")
    d["types"] = frozenset(names)


def _k_enum(c: _Compiler, d: dict[str, Any], value: Any, path: str, s: dict[str, Any]) -> None:
    if not isinstance(value, list):
        raise Unsatisfiable(path, "enum must be an array")
    enum = list(value)
    if "enum" in d:  # const came first
        enum = [v for v in d["enum"] if any(_equal(v, e) for e in enum)]
    d["enum"] = enum


def _k_const(c: _Compiler, d: dict[str, Any], value: Any, path: str, s: dict[str, Any]) -> None:
    d["enum"] = [v for v in d["enum"] if _equal(v, value)] if "enum" in d else [value]


def _k_minimum(c: _Compiler, d: dict[str, Any], value: Any, path: str, s: dict[str, Any]) -> None:
    number = _number(value, path, "minimum")
    if d.get("lo") is None or number > d["lo"]:
        d["lo"], d["lo_ex"] = number, False


def _k_maximum(c: _Compiler, d: dict[str, Any], value: Any, path: str, s: dict[str, Any]) -> None:
    number = _number(value, path, "maximum")
    if d.get("hi") is None or number < d["hi"]:
        d["hi"], d["hi_ex"] = number, False


def _k_exclusive_minimum(
    c: _Compiler, d: dict[str, Any], value: Any, path: str, s: dict[str, Any]
) -> None:
    if isinstance(value, bool):  # draft 4: a flag on minimum
        if value and "minimum" in s:
            d["lo"], d["lo_ex"] = _number(s["minimum"], path, "minimum"), True
        return
    number = _number(value, path, "exclusiveMinimum")
    if d.get("lo") is None or number >= d["lo"]:
        d["lo"], d["lo_ex"] = number, True


def _k_exclusive_maximum(
    c: _Compiler, d: dict[str, Any], value: Any, path: str, s: dict[str, Any]
) -> None:
    if isinstance(value, bool):  # draft 4: a flag on maximum
        if value and "maximum" in s:
            d["hi"], d["hi_ex"] = _number(s["maximum"], path, "maximum"), True
        return
    number = _number(value, path, "exclusiveMaximum")
    if d.get("hi") is None or number <= d["hi"]:
        d["hi"], d["hi_ex"] = number, True


def _k_multiple_of(
    c: _Compiler, d: dict[str, Any], value: Any, path: str, s: dict[str, Any]
) -> None:
    mult = _number(value, path, "multipleOf")
    if mult <= 0:
        raise Unsatisfiable(path, f"multipleOf must be > 0, not {value!r}")
    d["mult"] = mult


def _k_pattern(c: _Compiler, d: dict[str, Any], value: Any, path: str, s: dict[str, Any]) -> None:
    if not isinstance(value, str):
        raise Unsatisfiable(path, "pattern must be a string")
    d["pattern"] = _pattern(value, path)


def _k_format(c: _Compiler, d: dict[str, Any], value: Any, path: str, s: dict[str, Any]) -> None:
    if isinstance(value, str) and value in _FORMATS:  # others are annotations
        d["fmt"] = value


def _k_unique(c: _Compiler, d: dict[str, Any], value: Any, path: str, s: dict[str, Any]) -> None:
    if value is True:
        d["unique"] = True


def _k_items(c: _Compiler, d: dict[str, Any], value: Any, path: str, s: dict[str, Any]) -> None:
    if isinstance(value, list):  # draft 2019-09 and before: a tuple, then additionalItems
        d["prefix"] = tuple(c.compile(v, _pointer(path, "items", i)) for i, v in enumerate(value))
        if "additionalItems" in s:
            d["items"] = c.compile(s["additionalItems"], _pointer(path, "additionalItems"))
    else:
        d["items"] = c.compile(value, _pointer(path, "items"))


def _k_prefix_items(
    c: _Compiler, d: dict[str, Any], value: Any, path: str, s: dict[str, Any]
) -> None:
    if not isinstance(value, list):
        raise Unsatisfiable(path, "prefixItems must be an array")
    d["prefix"] = tuple(c.compile(v, _pointer(path, "prefixItems", i)) for i, v in enumerate(value))


def _k_properties(
    c: _Compiler, d: dict[str, Any], value: Any, path: str, s: dict[str, Any]
) -> None:
    if not isinstance(value, dict):
        raise Unsatisfiable(path, "properties must be an object")
    where = path + "/properties/"
    compile_ = c.compile
    d["props"] = {
        name: compile_(
            sub, where + name if "/" not in name and "~" not in name else _pointer(where[:-1], name)
        )
        for name, sub in value.items()
    }


def _k_required(c: _Compiler, d: dict[str, Any], value: Any, path: str, s: dict[str, Any]) -> None:
    if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
        raise Unsatisfiable(path, "required must be an array of strings")
    if value:
        d["required"] = tuple(dict.fromkeys(value))


def _k_additional(
    c: _Compiler, d: dict[str, Any], value: Any, path: str, s: dict[str, Any]
) -> None:
    d["additional"] = c.compile(value, path + "/additionalProperties")


def _k_pattern_properties(
    c: _Compiler, d: dict[str, Any], value: Any, path: str, s: dict[str, Any]
) -> None:
    if value:
        raise Unsatisfiable(path, "'patternProperties' is not supported", True)


def _counter(name: str, field: str) -> _Handler:
    def handler(c: _Compiler, d: dict[str, Any], value: Any, path: str, s: dict[str, Any]) -> None:
        d[field] = _count(value, path, name)

    return handler


def _unsupported(name: str) -> _Handler:
    def handler(c: _Compiler, d: dict[str, Any], value: Any, path: str, s: dict[str, Any]) -> None:
        raise Unsatisfiable(path, f"{name!r} is not supported", True)

    return handler


_SINGLE = {name: frozenset({name}) for name in _TYPES}
#: The nodes of the schemas that say only their type, shared (nodes never change once settled).
_LEAVES: dict[frozenset[str], _Node] = {}
_COMBINATORS = frozenset({"not", "$ref", "allOf", "anyOf", "oneOf"})
_KEYWORDS: dict[str, _Handler] = {
    "type": _k_type,
    "enum": _k_enum,
    "const": _k_const,
    "minimum": _k_minimum,
    "maximum": _k_maximum,
    "exclusiveMinimum": _k_exclusive_minimum,
    "exclusiveMaximum": _k_exclusive_maximum,
    "multipleOf": _k_multiple_of,
    "minLength": _counter("minLength", "min_len"),
    "maxLength": _counter("maxLength", "max_len"),
    "pattern": _k_pattern,
    "format": _k_format,
    "items": _k_items,
    "prefixItems": _k_prefix_items,
    "minItems": _counter("minItems", "min_items"),
    "maxItems": _counter("maxItems", "max_items"),
    "uniqueItems": _k_unique,
    "properties": _k_properties,
    "required": _k_required,
    "additionalProperties": _k_additional,
    "minProperties": _counter("minProperties", "min_props"),
    "maxProperties": _counter("maxProperties", "max_props"),
    "patternProperties": _k_pattern_properties,
    **{name: _unsupported(name) for name in _UNSUPPORTED},
}


class _Compiler:
    def __init__(self, root: object) -> None:
        self.root = root
        self.refs: dict[str, _Node] = {}
        self.nodes: list[_Node] = []
        self.cyclic = False

    # The finished node: contradictions checked, enum filtered, cost known.
    def settle(self, node: _Node, strict: bool) -> _Node:
        types = node.types
        if len(types) == 1 and node.enum is None and not node.avoid:
            for kind in types:
                check = _PROBLEMS.get(kind)
                problem = check(node) if check is not None else None
                if problem is None:
                    node.kind = kind
                    node.cost = _type_cost(node, kind)
                    node.cheap = kind
                elif strict:
                    raise Unsatisfiable(node.path, problem)
                else:
                    node.types, node.kind, node.cost, node.cheap = _NONE, None, INF, None
                self.nodes.append(node)
                return node
        if "number" in types and "integer" in types:
            types = types - {"integer"}
        kept = []
        for kind in sorted(types) if len(types) > 1 else types:
            check = _PROBLEMS.get(kind)
            problem = check(node) if check is not None else None
            if problem is None:
                kept.append(kind)
            elif strict:
                raise Unsatisfiable(node.path, problem)
        if len(kept) != len(types):
            types = frozenset(kept)
        node.types = types
        node.kind = kept[0] if len(kept) == 1 else None
        if node.hint:
            node.hint = node.hint & types
        if node.avoid and node.enum is None:
            node.enum = _finite_values(node)  # then exactly the values not excluded are left
        if node.enum is not None:
            enum, node.enum = node.enum, None
            fmt = node.fmt
            node.enum = [
                value
                for value in enum
                if _accepts(node, value) and (fmt is None or _format_ok(fmt, value))
            ]
            if not node.enum:
                if strict:
                    raise Unsatisfiable(node.path, "no value of enum/const matches the schema")
                node.types = _NONE
        elif not types and strict:
            raise Unsatisfiable(node.path, "no type is left")
        node.cost, node.cheap = _price(node)
        self.nodes.append(node)
        return node

    def compile(self, schema: object, path: str) -> _Node | None:
        """The node of ``schema`` at ``path`` (None: any value)."""
        if schema is True:
            return None
        if schema is False:
            return _NEVER
        if not isinstance(schema, dict):
            raise Unsatisfiable(path, f"a schema must be an object or a boolean, not {schema!r}")
        node = _Node()
        d = node.__dict__
        d["path"] = path
        combined = False
        for key, value in schema.items():
            handler = _KEYWORDS.get(key)
            if handler is not None:
                handler(self, d, value, path, schema)
            elif key in _COMBINATORS:
                combined = True
        base: _Node | None = None
        if len(d) == 2 and "types" in d:  # {"type": ...} and annotations: a shared leaf
            base = _LEAVES.get(d["types"])
            if base is None:
                base = _LEAVES[d["types"]] = self.settle(node, strict=True)
        elif len(d) > 1:  # more than the path: constrained
            if "types" not in d:
                hints = frozenset(_HINTS[k] for k in schema if k in _HINTS)
                if hints:
                    d["hint"] = hints
            base = self.settle(node, strict=True)
        if combined:
            return self.combine(base, schema, path)
        return base

    def combine(self, node: _Node | None, schema: dict[str, object], path: str) -> _Node | None:
        """``node`` with ``not``, ``$ref``, ``allOf``, ``anyOf`` and ``oneOf`` applied."""
        if "not" in schema:
            node = self.negate(node, schema["not"], path)
        ref = schema.get("$ref")
        if ref is not None:
            target = self.ref(ref, path)
            node = target if node is None else self.meet(node, target, path)
        all_of = schema.get("allOf")
        if all_of is not None:
            if not isinstance(all_of, list) or not all_of:
                raise Unsatisfiable(path, "allOf must be a non-empty array")
            for i, sub in enumerate(all_of):
                node = self.meet(node, self.compile(sub, _pointer(path, "allOf", i)), path)
            if node is not None and node.alts is None and not node.types:
                where = _pointer(path, "allOf")
                raise Unsatisfiable(where, "the subschemas have no value in common")
        for keyword in ("anyOf", "oneOf"):
            branches = schema.get(keyword)
            if branches is not None:
                node = self.union(node, branches, _pointer(path, keyword), keyword == "oneOf")
        return node

    def negate(self, node: _Node | None, schema: object, path: str) -> _Node:
        where = _pointer(path, "not")
        base = _ANY.copy() if node is None else node.copy()
        base.path = path
        try:
            excluded = self.compile(schema, where)
        except Unsatisfiable as e:
            if e.unsupported:
                raise
            return base  # not of nothing: everything
        if excluded is None:
            raise Unsatisfiable(where, "not {} excludes every value")
        if excluded.alts is None and not excluded.types:
            return base
        if (
            not isinstance(schema, dict)
            or not set(schema) & {"type", "enum", "const"}
            or any(k in _HINTS or k in ("allOf", "anyOf", "oneOf", "not", "$ref") for k in schema)
        ):
            raise Unsatisfiable(where, "'not' is supported only with type, enum or const", True)
        if excluded.enum is None and excluded.types != _ALL:
            base.types, partial = _subtract(base.types, excluded.types)
            if partial:
                base.avoid = (*base.avoid, excluded)
            if not base.types:
                raise Unsatisfiable(where, "excludes every type the schema allows")
        else:
            base.avoid = (*base.avoid, excluded)
        return self.settle(base, strict=True)

    def ref(self, ref: object, path: str) -> _Node:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise Unsatisfiable(
                path, f"$ref {ref!r}: only references inside the schema are supported", True
            )
        node = self.refs.get(ref)
        if node is not None:
            if node.pending:
                self.cyclic = True
            return node
        target: object = self.root
        for raw in ref[1:].split("/")[1:] if ref != "#" else ():
            segment = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict) and segment in target:
                target = target[segment]
            elif isinstance(target, list) and segment.isdigit() and int(segment) < len(target):
                target = target[int(segment)]
            else:
                raise Unsatisfiable(path, f"$ref {ref!r} points at nothing")
        shell = _Node()
        shell.pending = True
        self.refs[ref] = shell
        compiled = self.compile(target, ref)
        if compiled is shell:
            raise Unsatisfiable(ref, "the $ref refers only to itself")
        shell.__dict__.clear()
        shell.__dict__.update((_ANY if compiled is None else compiled).__dict__)
        shell.path = ref
        self.nodes.append(shell)
        return shell

    def meet(self, a: _Node | None, b: _Node | None, path: str) -> _Node | None:
        """The node of the documents valid under both ``a`` and ``b``."""
        if a is None:
            return b
        if b is None:
            return a
        if a.pending or b.pending:
            raise Unsatisfiable(
                path, "a recursive $ref beside other keywords is not supported", True
            )
        if a.alts is not None or b.alts is not None:
            left = a.alts if a.alts is not None else [a]
            right = b.alts if b.alts is not None else [b]
            if len(left) * len(right) > MAX_ALTERNATIVES:
                raise Unsatisfiable(
                    path, f"more than {MAX_ALTERNATIVES} combinations of branches", True
                )
            alts = []
            for x in left:
                for y in right:
                    both = self.meet(x, y, path)
                    assert both is not None
                    if both.alts is not None or both.types:
                        alts.append(both)
            return self.union_node(alts, path)
        node = a.copy()
        node.path = path
        d, other = node.__dict__, b.__dict__
        if "types" in other:
            d["types"] = _type_meet(a.types, b.types)
        if b.hint:
            d["hint"] = a.hint | b.hint
        if b.enum is not None:
            d["enum"] = (
                list(b.enum)
                if a.enum is None
                else [v for v in a.enum if any(_equal(v, e) for e in b.enum)]
            )
        if b.lo is not None and (
            a.lo is None or b.lo > a.lo or (b.lo == a.lo and b.lo_ex and not a.lo_ex)
        ):
            d["lo"], d["lo_ex"] = b.lo, b.lo_ex
        if b.hi is not None and (
            a.hi is None or b.hi < a.hi or (b.hi == a.hi and b.hi_ex and not a.hi_ex)
        ):
            d["hi"], d["hi_ex"] = b.hi, b.hi_ex
        if b.mult is not None:
            d["mult"] = self.meet_multiples(a.mult, b.mult, path)
        if b.min_len > a.min_len:
            d["min_len"] = b.min_len
        if b.max_len is not None and (a.max_len is None or b.max_len < a.max_len):
            d["max_len"] = b.max_len
        for key in ("pattern", "fmt"):
            if key in other:
                mine, theirs = d.get(key), other[key]
                if key == "pattern" and mine is not None:
                    mine, theirs = mine.regex.pattern, theirs.regex.pattern
                if mine is not None and mine != theirs:
                    # Two patterns or formats at once: more than we draw strings for.
                    d["types"] = d.get("types", a.types) - {"string"}
                d[key] = other[key]
        if "items" in other:
            d["items"] = self.meet(a.items, b.items, path)
        if b.prefix:
            width = max(len(a.prefix), len(b.prefix))
            d["prefix"] = tuple(
                self.meet(
                    a.prefix[i] if i < len(a.prefix) else a.items,
                    b.prefix[i] if i < len(b.prefix) else b.items,
                    path,
                )
                for i in range(width)
            )
        elif a.prefix and "items" in other:
            d["prefix"] = tuple(self.meet(p, b.items, path) for p in a.prefix)
        d["min_items"] = max(a.min_items, b.min_items)
        if b.max_items is not None and (a.max_items is None or b.max_items < a.max_items):
            d["max_items"] = b.max_items
        if b.unique:
            d["unique"] = True
        if b.props or a.props or "additional" in other:
            names = list(a.props) + [k for k in b.props if k not in a.props]
            d["props"] = {
                k: self.meet(
                    a.props.get(k, a.additional),
                    b.props.get(k, b.additional),
                    path,
                )
                for k in names
            }
            d["additional"] = self.meet(a.additional, b.additional, path)
        if b.required:
            d["required"] = tuple(dict.fromkeys(a.required + b.required))
        d["min_props"] = max(a.min_props, b.min_props)
        if b.max_props is not None and (a.max_props is None or b.max_props < a.max_props):
            d["max_props"] = b.max_props
        if b.avoid:
            d["avoid"] = a.avoid + b.avoid
        return self.settle(node, strict=False)

    @staticmethod
    def meet_multiples(a: int | float | None, b: int | float, path: str) -> int | float:
        if a is None or a == b:
            return b
        if isinstance(a, int) and isinstance(b, int):
            return a * b // math.gcd(a, b)
        if _multiple(a, b):
            return a
        if _multiple(b, a):
            return b
        raise Unsatisfiable(path, f"multipleOf {a} and {b} together are not supported", True)

    def union(self, node: _Node | None, branches: object, path: str, one: bool) -> _Node:
        if not isinstance(branches, list) or not branches:
            raise Unsatisfiable(path, "must be a non-empty array")
        compiled: list[_Node | None] = []
        reasons = []
        for i, sub in enumerate(branches):
            try:
                compiled.append(self.compile(sub, _pointer(path, i)))
            except Unsatisfiable as e:
                if one and e.unsupported:
                    raise  # we could not tell whether a document matches it too
                reasons.append(str(e))
        alts: list[_Node] = []
        for i, branch in enumerate(compiled):
            if one:
                others = [b for j, b in enumerate(compiled) if j != i and _overlap(branch, b)]
                if any(b is None for b in others):
                    continue  # another branch matches everything: this one can never be alone
            try:
                alt = self.meet(node, branch, path)
            except Unsatisfiable as e:
                if one and e.unsupported:
                    raise
                reasons.append(str(e))
                continue
            if alt is None:
                alt = _ANY
            if one and others:
                alt = self.exclude(alt, [b for b in others if b is not None], path)
            if alt.alts is not None:
                alts.extend(alt.alts)
            elif alt.types:
                alts.append(alt)
        if not alts:
            detail = f" ({reasons[0]})" if reasons else ""
            raise Unsatisfiable(path, f"no branch can be satisfied{detail}")
        if len(alts) > MAX_ALTERNATIVES:
            raise Unsatisfiable(path, f"more than {MAX_ALTERNATIVES} alternatives")
        return self.union_node(alts, path)

    def exclude(self, alt: _Node, others: list[_Node], path: str) -> _Node:
        if alt.pending:
            # A $ref still being compiled: wrap it, the wrapper carries the exclusions.
            node = _Node()
            node.path = path
            node.alts = [alt]
            node.avoid = tuple(others)
            self.nodes.append(node)
            return node
        if alt.alts is not None:
            parts = [self.exclude(a, others, path) for a in alt.alts]
            return self.union_node([p for p in parts if p.alts is not None or p.types], path)
        node = alt.copy()
        avoid = list(alt.avoid)
        for other in others:
            if other.alts is None and other.__dict__.keys() <= _PLAIN:
                # A branch that says only its type: this alternative is every other type.
                node.types, partial = _subtract(node.types, other.types)
                if not partial:
                    continue
            avoid.append(other)
        node.avoid = tuple(avoid)
        if node.hint:
            node.hint = node.hint & node.types
        return self.settle(node, strict=False)

    def union_node(self, alts: list[_Node], path: str) -> _Node:
        if len(alts) == 1:
            return alts[0]
        node = _Node()
        node.path = path
        node.alts = alts
        if not alts:
            node.types = _NONE
        node.cost, node.cheap = _price(node)
        self.nodes.append(node)
        return node

    def finish(self, root: _Node | None) -> _Node | None:
        if self.cyclic:
            # Least fixed point of the costs: a node's cheapest branch changes only when
            # its cost strictly drops, so following "cheap" always leaves a recursion.
            changed = True
            while changed:
                changed = False
                for node in self.nodes:
                    cost, cheap = _price(node)
                    if cost < node.cost:
                        node.cost, node.cheap = cost, cheap
                        changed = True
        if root is not None and root.cost == INF:
            loops = [n.path for n in self.refs.values() if n.cost == INF and n is not root]
            culprit = loops[0] if loops else root.path
            raise Unsatisfiable(
                culprit, "every document would be infinite (no way out of the $ref)"
            )
        if root is not None and root.cost > MAX_COST:
            why = f"the smallest document has ~{int(root.cost)} values, more than {MAX_COST}"
            raise Unsatisfiable("#", why, True)
        for node in self.nodes:
            if node.cost > MAX_COST:
                node.cost = INF  # an optional part we never draw: too large
        return root


# -- generating ------------------------------------------------------------


class _Drawing:
    __slots__ = ("depth", "draws", "left", "words")

    def __init__(self, draws: Draws, words: Sequence[str], budget: int) -> None:
        self.draws = draws
        self.words = words
        self.left = budget
        self.depth = 0


def _gen(node: _Node | None, ctx: _Drawing) -> object:
    if node is None:
        return _gen_any(ctx)
    ctx.depth += 1
    if ctx.depth > MAX_DEPTH:
        raise Unsatisfiable(node.path, f"documents nest deeper than {MAX_DEPTH}")
    try:
        for _ in range(8):
            value = _gen_node(node, ctx)
            if not node.avoid or not any(_accepts(a, value) for a in node.avoid):
                return value
    finally:
        ctx.depth -= 1
    raise Unsatisfiable(node.path, "could not draw a value that matches exactly one oneOf branch")


def _gen_node(node: _Node, ctx: _Drawing) -> object:
    draws = ctx.draws
    alts = node.alts
    if alts is not None:
        if ctx.left <= 0 and isinstance(node.cheap, int):
            return _gen(alts[node.cheap], ctx)
        start = draws.below(len(alts))
        failure = Unsatisfiable(node.path, "no alternative has a finite document")
        for i in range(len(alts)):
            alt = alts[(start + i) % len(alts)]
            if alt.cost != INF:
                try:
                    return _gen(alt, ctx)
                except Unsatisfiable as e:
                    failure = e
        raise failure
    if node.enum is not None:
        ctx.left -= 1
        return _copy(node.enum[draws.below(len(node.enum))])
    kind = _pick_type(node, ctx)
    if kind == "string":
        return _gen_string(node, ctx)
    if kind == "object":
        return _gen_object(node, ctx)
    if kind == "array":
        return _gen_array(node, ctx)
    ctx.left -= 1
    if kind == "integer":
        return _gen_integer(node, draws)
    if kind == "number":
        return _gen_number(node, draws)
    if kind == "boolean":
        return draws.below(2) == 1
    return None


def _pick_type(node: _Node, ctx: _Drawing) -> str:
    types = node.types
    if len(types) == 1:
        for kind in types:
            return kind
    if ctx.left <= 0 and isinstance(node.cheap, str):
        return node.cheap
    draws = ctx.draws
    if node.hint:
        choices = sorted(node.hint)
    elif types == _ALL:
        return "object" if draws.below(4) == 0 and _type_cost(node, "object") != INF else "string"
    else:
        choices = sorted(types)
    if "null" in choices and len(choices) > 1:
        # A nullable value is null now and then, not half the time.
        if draws.below(5) == 0:
            return "null"
        choices.remove("null")
    finite = [k for k in choices if _type_cost(node, k) != INF]
    if not finite:
        assert isinstance(node.cheap, str)
        return node.cheap
    return finite[draws.below(len(finite))]


def _gen_any(ctx: _Drawing) -> object:
    ctx.left -= 1
    return _word(ctx.draws, ctx.words)


def _gen_string(node: _Node, ctx: _Drawing) -> str:
    draws, words = ctx.draws, ctx.words
    lo, hi = node.min_len, node.max_len
    fmt = node.fmt
    ctx.left -= 1
    if fmt is not None:
        make, shortest, _ = _FORMATS[fmt]
        value = make(draws, words)
        if hi is not None and len(value) > hi:
            value = shortest
        return _pad_format(fmt, value, lo, hi, draws, words) if len(value) < lo else value
    if node.pattern is not None:
        return _gen_pattern(node, node.pattern, draws, words)
    count = 1 if ctx.left <= 0 else 1 + draws.below(4)
    parts = [_word(draws, words) for _ in range(count)]
    length = sum(map(len, parts)) + count - 1
    while length < lo:
        word = _word(draws, words)
        parts.append(word)
        length += len(word) + 1
    value = " ".join(parts)
    ctx.left -= count - 1
    if hi is not None and len(value) > hi:
        value = value[:hi]
        if value.endswith(" "):
            value = value[:-1] + "a"
    return value


_ATTEMPTS = [(3, False)] * 16 + [(0, False)] * 4


def _long_attempts(lo: int) -> list[tuple[int, bool]]:
    return [(3, False)] * 4 + [(lo, False)] * 8 + [(lo, True)] * 4 + [(0, False)] * 4


def _gen_pattern(node: _Node, pattern: _Pattern, draws: Draws, words: Sequence[str]) -> str:
    lo, hi = node.min_len, node.max_len
    # A few short matches; then longer ones, for a minLength; then the shortest, for a maxLength.
    for extra, grow in _ATTEMPTS if lo <= 3 else _long_attempts(lo):
        out: list[str] = []
        _rx_generate(pattern.tree, draws, extra, grow, out)
        value = "".join(out)
        if len(value) < lo and not pattern.anchored:
            filler = " ".join(_word(draws, words) for _ in range(lo // 4 + 1))
            value = value + " " + filler[: max(0, lo - len(value) - 1)]
            value = value.ljust(lo, "a")
        fits = lo <= len(value) and (hi is None or len(value) <= hi)
        if fits and pattern.regex.search(value) is not None:
            return value
    raise Unsatisfiable(node.path, "could not draw a string matching the pattern and lengths")


def _gen_integer(node: _Node, draws: Draws) -> int:
    lo, hi = _int_bounds(node)
    mult = node.mult
    if mult is not None and isinstance(mult, int):
        k_lo, k_hi = _multiples(mult, lo, hi, False, False)
        k = _draw_between(k_lo, k_hi, draws, 10)
        return int(k * mult)
    if lo is None and hi is None:
        lo, hi = 0, 100
    elif lo is None:
        assert hi is not None
        lo = hi - 100
    elif hi is None:
        hi = lo + 100
    if mult is None:
        return lo + draws.below(min(hi - lo, 1 << 40) + 1)
    # A fractional multipleOf: python-jsonschema divides floats, so try candidates.
    for _ in range(64):
        value = lo + draws.below(min(hi - lo, 1 << 40) + 1)
        if _multiple(value, mult):
            return value
    for value in range(lo, min(hi, lo + 10_000) + 1):
        if _multiple(value, mult):
            return value
    raise Unsatisfiable(node.path, f"no integer multiple of {mult} found in the range")


def _draw_between(lo: int | None, hi: int | None, draws: Draws, spread: int) -> int:
    if lo is None and hi is None:
        lo, hi = 0, spread
    elif lo is None:
        assert hi is not None
        lo = hi - spread
    elif hi is None:
        hi = lo + spread
    return lo + draws.below(min(hi - lo, 1 << 40) + 1)


def _gen_number(node: _Node, draws: Draws) -> int | float:
    mult = node.mult
    if mult is not None:
        k_lo, k_hi = _multiples(mult, node.lo, node.hi, node.lo_ex, node.hi_ex)
        for _ in range(32):
            k = _draw_between(k_lo, k_hi, draws, 100)
            value = k * mult
            if isinstance(value, float):
                value = round(value, 12)
            if _in_range(node, value):
                return value
        raise Unsatisfiable(node.path, f"no multiple of {mult} found in the range")
    lo, hi = node.lo, node.hi
    if lo is None and hi is None:
        lo, hi = 0.0, 100.0
    elif lo is None:
        assert hi is not None
        lo = hi - 100.0
    elif hi is None:
        hi = lo + 100.0
    for _ in range(4):
        value = round(lo + (hi - lo) * draws.below(1_000_000) / 1_000_000, 2)
        if _in_range(node, value):
            return value
    middle = lo + (hi - lo) / 2
    return middle if _in_range(node, middle) else lo


def _gen_array(node: _Node, ctx: _Drawing) -> list[object]:
    draws = ctx.draws
    ctx.left -= 1
    low = node.min_items
    high = node.max_items
    items = node.items
    prefix = node.prefix
    closed = items is not None and items.alts is None and not items.types
    if closed:
        high = len(prefix) if high is None else min(high, len(prefix))
    if ctx.left > 0:
        extra = 3 if high is None else min(3, high - low)
        length = low + draws.below(max(0, extra) + 1)
    else:
        length = low
    out: list[object] = []
    seen: set[object] = set()
    for i in range(length):
        sub = prefix[i] if i < len(prefix) else items
        if i >= low and (ctx.left <= 0 or (sub is not None and sub.cost == INF)):
            break
        if not node.unique:
            out.append(_gen(sub, ctx))
            continue
        for _ in range(16):
            value = _gen(sub, ctx)
            key = _key(value)
            if key not in seen:
                seen.add(key)
                out.append(value)
                break
        else:
            if i < low:
                raise Unsatisfiable(node.path, "could not draw enough distinct items")
            break
    return out


def _gen_object(node: _Node, ctx: _Drawing) -> dict[str, object]:
    draws = ctx.draws
    ctx.left -= 1
    props = node.props
    required = node.required
    out: dict[str, object] = {}
    room = INF if node.max_props is None else node.max_props - len(required)
    for name, sub in props.items():
        if name in required:
            out[name] = _gen(sub, ctx)
        elif room > 0 and ctx.left > 0 and (sub is None or sub.cost != INF) and draws.below(2) == 0:
            room -= 1
            out[name] = _gen(sub, ctx)
    for name in required:
        if name not in out:
            out[name] = _gen(node.additional, ctx)
    if not out and not props and node.additional is None and ctx.left > 0 and room > 0:
        out[_word(draws, ctx.words)] = _word(draws, ctx.words)  # an open object: one property
    if len(out) < node.min_props:
        _fill_object(node, out, ctx)
    return out


def _fill_object(node: _Node, out: dict[str, object], ctx: _Drawing) -> None:
    """Properties up to ``minProperties``: declared ones first, then words."""
    for name, sub in node.props.items():
        if len(out) >= node.min_props:
            return
        if name not in out and (sub is None or sub.cost != INF):
            out[name] = _gen(sub, ctx)
    extra = node.additional
    if extra is not None and (extra.cost == INF or (extra.alts is None and not extra.types)):
        raise Unsatisfiable(node.path, "minProperties cannot be reached")
    n = 0
    while len(out) < node.min_props:
        name = f"{_word(ctx.draws, ctx.words)}_{n}"
        n += 1
        if name not in out and name not in node.props:
            out[name] = _gen(extra, ctx)


# -- the API -----------------------------------------------------------------


class CompiledSchema:
    """
    A schema compiled once, to draw many documents from: what L{generate}
    does on every call, for a caller that keeps the schema (a tool's
    parameters across the choices of one request).
    """

    __slots__ = ("_root",)

    def __init__(self, schema: object) -> None:
        compiler = _Compiler(schema)
        if schema is True or (isinstance(schema, dict) and not schema):
            self._root: _Node | None = None
            return
        if schema is False:
            raise Unsatisfiable("#", "the schema is false: no document validates")
        try:
            root = compiler.ref("#", "#")
        except RecursionError:
            raise Unsatisfiable("#", "the schema nests too deeply", True) from None
        if not root.types and root.alts is None:
            raise Unsatisfiable("#", "no document validates")
        self._root = compiler.finish(root)

    def generate(self, draws: Draws, words: Sequence[str], budget: int = 256) -> object:
        """A document that validates against the schema (see L{generate})."""
        return _gen(self._root, _Drawing(draws, words, budget))

    def accepts(self, value: object) -> bool:
        """Whether ``value`` validates (the keywords we generate for; formats unchecked)."""
        return _accepts(self._root, value)


def check(schema: object) -> None:
    """
    Raise L{Unsatisfiable} for a schema we cannot generate a valid document
    for.  Linear in the schema's size (each ``$ref`` target compiled once;
    ``oneOf``/``anyOf`` under ``allOf`` multiply, up to L{MAX_ALTERNATIVES}).
    """
    CompiledSchema(schema)


def generate(schema: object, draws: Draws, words: Sequence[str], budget: int = 256) -> object:
    """
    A Python value (dict/list/str/int/float/bool/None) that validates
    against ``schema``; the same ``draws`` sequence gives the same document.
    Strings are 1-4 of ``words`` (or a value of their ``format``, or a match
    of a simple ``pattern``), within ``minLength``/``maxLength``.  ``budget``
    bounds the size roughly in values: optional properties are included at
    random and arrays get up to 3 items past ``minItems`` while it lasts;
    then only what is required, and the cheapest branch of a recursion.
    """
    return CompiledSchema(schema).generate(draws, words, budget)
