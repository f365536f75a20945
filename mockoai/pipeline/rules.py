# -*- test-case-name: tests.test_rules -*-
"""
Rules: what a rules file (``--rules FILE``, TOML or JSON) and the admin API
(``PUT /_mockoai/rules``) say, checked and compiled, and how a rule tells
whether it matches a request.

A document is ``{"seed": N, "rules": [...]}`` (TOML: ``seed = N`` and
``[[rules]]`` tables); its JSON schema is ``docs/rules.schema.json``, and
docs/faults.md explains each field.  A rule has

- conditions, all of which must hold: ``dialect``, ``path``, ``model``,
  ``stream``, ``user``/``user_regex`` (the last user message),
  ``system``/``system_regex`` (the system prompt), ``tools``, ``headers``,
  ``key``;
- a time: ``window`` and ``schedule`` (seconds since the rules were
  loaded, or with ``clock = "wall"`` the wall clock);
- a count: ``nth``, ``first`` or ``every`` (of the requests that met the
  conditions and the time);
- a chance: ``probability``, or a ``ramp`` of it over time;
- what it does: ``fault`` (L{mockoai.pipeline.faultspec}), an answer
  (``text``, ``chunks``, ``tool_calls`` or ``json``) and ``latency``.

The first rule that matches wins.  This module is pure Python over plain
values (the settings check a file with it at startup); the request path's
side, which reads requests and keeps the counts, is
L{mockoai.pipeline.control}.
"""

from __future__ import annotations

import calendar
import fnmatch
import json
import math
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs

from mockoai.pipeline import faultspec
from mockoai.pipeline.faultspec import FaultSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - PyPy 3.9
    import tomli as tomllib

#: The APIs a ``dialect`` condition names (the package of the dialect).
DIALECTS = ("openai", "openrouter", "anthropic")
#: What a time is counted from: the rules' loading, or the Unix epoch.
START = "start"
WALL = "wall"

#: The most rules a document may hold, and the longest text a rule may script.
MAX_RULES = 10_000
MAX_TEXT = 1_000_000

_CONDITIONS = (
    "dialect",
    "path",
    "model",
    "stream",
    "user",
    "user_regex",
    "system",
    "system_regex",
    "tools",
    "headers",
    "key",
)
_TIMES = ("clock", "window", "schedule")
_COUNTS = ("nth", "first", "every")
_CHANCES = ("probability", "ramp")
_ANSWERS = ("text", "chunks", "tool_calls", "json")
_ACTIONS = ("fault", *_ANSWERS, "latency")
FIELDS = ("name", *_CONDITIONS, *_TIMES, *_COUNTS, *_CHANCES, *_ACTIONS)


class RuleError(ValueError):
    """A rules document that does not hold; the message names the rule and the field."""


@attrs.frozen
class Chunk:
    """Text the answer sends as one event, ``delay`` seconds after the one before."""

    text: str
    delay: float


@attrs.frozen
class Call:
    """A tool call the answer makes: its name and its arguments as JSON text."""

    name: str
    arguments: str


@attrs.frozen
class Answer:
    """
    What a rule answers instead of a generated text: ``chunks`` of text (one
    chunk for ``text`` and ``json``), or ``calls``.
    """

    chunks: tuple[Chunk, ...] = ()
    calls: tuple[Call, ...] = ()

    @property
    def timed(self) -> bool:
        """Whether its chunks set their own times."""
        return len(self.chunks) > 1 or any(c.delay for c in self.chunks)

    @property
    def text(self) -> str:
        return "".join(chunk.text for chunk in self.chunks)


@attrs.frozen
class Latency:
    """A rule's timing: TTFT and ITL in seconds, tokens per stream event (None: the model's)."""

    ttft: float | None = None
    itl: float | None = None
    tokens_per_event: int | None = None


@attrs.frozen
class Schedule:
    """Active ``length`` seconds of every ``period``, from ``offset`` on."""

    period: float
    length: float
    offset: float = 0.0

    def active(self, t: float) -> bool:
        if t < self.offset:
            return False
        return (t - self.offset) % self.period < self.length


@attrs.frozen
class Ramp:
    """A chance going from ``low`` at ``start`` to ``high`` ``over`` seconds later, then staying."""

    low: float
    high: float
    over: float
    start: float = 0.0

    def at(self, t: float) -> float:
        if t <= self.start:
            return self.low
        if self.over <= 0 or t >= self.start + self.over:
            return self.high
        return self.low + (self.high - self.low) * (t - self.start) / self.over


class View(Protocol):
    """What a rule may ask about a request (L{mockoai.pipeline.control} reads it lazily)."""

    dialect: str
    served: str

    @property
    def path(self) -> str: ...

    @property
    def model(self) -> str: ...

    @property
    def stream(self) -> bool: ...

    def tools(self) -> frozenset[str]: ...

    def header(self, name: bytes) -> bytes | None: ...

    def key(self) -> bytes | None: ...

    def user(self) -> str: ...

    def system(self) -> str: ...

    def raw(self) -> bytes:
        """The body's bytes (to rule text out before parsing it)."""
        ...


@attrs.frozen(eq=False)
class Rule:
    """One compiled rule; ``document`` is what it was written as (normalized, for the admin API)."""

    name: str
    index: int
    document: Mapping[str, Any]
    dialects: frozenset[str] | None = None
    paths: tuple[str, ...] | None = None
    models: tuple[str, ...] | None = None
    stream: bool | None = None
    user: str | None = None
    user_regex: re.Pattern[str] | None = None
    #: ``user`` as it must appear in any JSON body that holds it, when that is
    #: certain (plain ASCII): a body without it is ruled out unparsed.
    user_raw: bytes | None = None
    system: str | None = None
    system_regex: re.Pattern[str] | None = None
    system_raw: bytes | None = None
    tools: bool | None = None
    tool_names: frozenset[str] | None = None
    headers: tuple[tuple[bytes, bytes | None], ...] = ()
    keys: frozenset[bytes] | None = None
    wall: bool = False
    window: tuple[float, float] | None = None
    schedule: Schedule | None = None
    nth: int | None = None
    first: int | None = None
    every: int | None = None
    probability: float | None = None
    ramp: Ramp | None = None
    faults: tuple[FaultSpec, ...] = ()
    answer: Answer | None = None
    latency: Latency | None = None

    @property
    def timed(self) -> bool:
        """Whether it has a time (window, schedule or ramp)."""
        return self.window is not None or self.schedule is not None or self.ramp is not None

    @property
    def counted(self) -> bool:
        return self.nth is not None or self.first is not None or self.every is not None

    def fits(self, dialect: str, path: str, model: str, served: str, stream: bool) -> bool:
        """
        Whether a request of this kind may match: the conditions on what
        the request is (its API, path, models, streaming), which a control
        tests once per kind and remembers.
        """
        if self.dialects is not None and dialect not in self.dialects:
            return False
        if self.paths is not None and not any(_path_matches(p, path) for p in self.paths):
            return False
        if self.models is not None and not any(
            _model_matches(pattern, model) or _model_matches(pattern, served)
            for pattern in self.models
        ):
            return False
        return self.stream is None or stream == self.stream

    @property
    def gate(self) -> tuple[str, Any] | None:
        """
        One condition a request must meet that is cheap to rule out for many
        rules at once (L{mockoai.pipeline.control}): ``("key", keys)``,
        ``("header", name)`` or ``("text", bytes)``; None for a rule without one.
        """
        if self.keys is not None:
            return ("key", self.keys)
        if self.headers:
            return ("header", self.headers[0][0])
        if self.user_raw is not None:
            return ("text", self.user_raw)
        if self.system_raw is not None:
            return ("text", self.system_raw)
        return None

    def holds(self, view: View) -> bool:
        """Whether the conditions hold for the request ``view`` (cheap ones first)."""
        if not self.fits(view.dialect, view.path, view.model, view.served, view.stream):
            return False
        if self.keys is not None and view.key() not in self.keys:
            return False
        for name, value in self.headers:
            got = view.header(name)
            if got is None or (value is not None and got != value):
                return False
        if self.tools is not None or self.tool_names is not None:
            present = view.tools()
            if self.tools is not None and bool(present) != self.tools:
                return False
            if self.tool_names is not None and not (self.tool_names & present):
                return False
        if self.user_raw is not None and self.user_raw not in view.raw():
            return False
        if self.system_raw is not None and self.system_raw not in view.raw():
            return False
        if (self.user is not None or self.user_regex is not None) and not _text_matches(
            view.user(), self.user, self.user_regex
        ):
            return False
        return (self.system is None and self.system_regex is None) or _text_matches(
            view.system(), self.system, self.system_regex
        )

    def in_time(self, t: float) -> bool:
        """Whether ``t`` (seconds on the rule's clock) is within its window and schedule."""
        window = self.window
        if window is not None and not window[0] <= t < window[1]:
            return False
        schedule = self.schedule
        return schedule is None or schedule.active(t)

    def counts_in(self, n: int) -> bool:
        """Whether the ``n``-th request (1-based) that met the conditions and the time fires it."""
        if self.nth is not None:
            return n == self.nth
        if self.first is not None:
            return n <= self.first
        if self.every is not None:
            return n % self.every == 0
        return True

    def chance(self, t: float) -> float:
        """Its probability at time ``t`` (1 when it sets none)."""
        if self.ramp is not None:
            return self.ramp.at(t)
        return 1.0 if self.probability is None else self.probability


def _model_matches(pattern: str, model: str) -> bool:
    if "*" in pattern or "?" in pattern:
        return fnmatch.fnmatchcase(model, pattern)
    return pattern == model


def _path_matches(pattern: str, path: str) -> bool:
    if pattern.endswith("*"):
        return path.startswith(pattern[:-1])
    return path == pattern


def _text_matches(text: str, needle: str | None, regex: re.Pattern[str] | None) -> bool:
    if needle is not None and needle not in text:
        return False
    return regex is None or regex.search(text) is not None


@attrs.frozen(eq=False)
class RuleBook:
    """A checked document: its rules in order, its seed, and where it came from."""

    rules: tuple[Rule, ...] = ()
    seed: int = 0
    source: str = ""

    def document(self) -> dict[str, Any]:
        """The document, normalized: what ``GET /_mockoai/rules`` answers and a PUT takes back."""
        return {"seed": self.seed, "rules": [dict(rule.document) for rule in self.rules]}

    def __str__(self) -> str:
        """What the startup log shows."""
        where = f"{self.source}: " if self.source else ""
        return f"{where}{len(self.rules)} rule(s)"


EMPTY = RuleBook()


# --- reading documents --------------------------------------------------------------


def load_file(path: object) -> RuleBook:
    """A rules file: TOML, or JSON for a ``.json`` name (as ``--rules`` reads it), checked."""
    if not isinstance(path, str) or not path:
        raise RuleError(f"expected a file name, got {path!r}")
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as e:
        raise RuleError(f"cannot read {path}: {e.strerror}") from None
    if path.endswith(".json"):
        document = loads_json(raw, path)
    else:
        try:
            document = tomllib.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise RuleError(f"{path} is not valid TOML: {e}") from None
    return compile_file(path, document)


def compile_file(path: str, document: object) -> RuleBook:
    """The document of the file at ``path``, checked (errors start with the path)."""
    try:
        return compile_document(document, path)
    except RuleError as e:
        raise RuleError(f"{path}: {e}") from None


def loads_json(raw: bytes, where: str = "the body") -> object:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise RuleError(f"{where} is not valid JSON: {e}") from None


def compile_document(document: object, source: str = "") -> RuleBook:
    """A document (``{"seed", "rules"}``, or a bare list of rules) as a L{RuleBook}."""
    seed: object = 0
    if isinstance(document, list):
        entries: object = document
    elif isinstance(document, dict):
        unknown = sorted(set(document) - {"seed", "rules"})
        if unknown:
            raise RuleError(f"unknown field {unknown[0]!r} (a document has seed and rules)")
        entries = document.get("rules", [])
        seed = document.get("seed", 0)
    else:
        raise RuleError("expected a table with a rules list (or a list of rules)")
    if not isinstance(entries, list):
        raise RuleError("rules must be a list of tables")
    if len(entries) > MAX_RULES:
        raise RuleError(f"at most {MAX_RULES} rules, got {len(entries)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise RuleError(f"seed must be a whole number >= 0, got {seed!r}")
    rules = []
    names: set[str] = set()
    for index, entry in enumerate(entries):
        rule = compile_rule(entry, index)
        if rule.name in names:
            raise RuleError(f"rule {rule.name!r}: the name is given twice")
        names.add(rule.name)
        rules.append(rule)
    return RuleBook(tuple(rules), seed, source)


def compile_rule(entry: object, index: int) -> Rule:
    """One rule table, checked (errors name it: ``rule 3`` or its ``name``)."""
    label = f"rule {index + 1}"
    if not isinstance(entry, dict):
        raise RuleError(f"{label}: expected a table, got {entry!r}")
    name = entry.get("name", f"rule-{index + 1}")
    if not isinstance(name, str) or not name or len(name) > 200:
        raise RuleError(f"{label}: name must be a string of 1-200 characters")
    label = f"rule {name!r}"
    try:
        return _compile(entry, name, index)
    except RuleError as e:
        raise RuleError(f"{label}: {e}") from None


def _compile(entry: dict[str, Any], name: str, index: int) -> Rule:
    unknown = sorted(set(entry) - set(FIELDS))
    if unknown:
        raise RuleError(f"unknown field {unknown[0]!r}")
    if not any(field in entry for field in _ACTIONS):
        raise RuleError(f"does nothing: give it one of {', '.join(_ACTIONS)}")
    answers = [field for field in _ANSWERS if field in entry]
    if len(answers) > 1:
        raise RuleError(f"{' and '.join(answers)}: a rule answers one way only")
    counts = [field for field in _COUNTS if field in entry]
    if len(counts) > 1:
        raise RuleError(f"{' and '.join(counts)}: a rule counts one way only")
    if "probability" in entry and "ramp" in entry:
        raise RuleError("probability and ramp: give one")
    clock = entry.get("clock", START)
    if clock not in (START, WALL):
        raise RuleError(f"clock must be {START!r} or {WALL!r}, got {clock!r}")
    wall = clock == WALL
    faults: tuple[FaultSpec, ...] = ()
    if "fault" in entry:
        try:
            faults = faultspec.parse(_string(entry, "fault"))
        except faultspec.SpecError as e:
            raise RuleError(f"fault: {e}") from None
    answer = _answer(entry)
    user_regex = _regex(entry, "user_regex")
    system_regex = _regex(entry, "system_regex")
    tools, tool_names = _tools(entry)
    return Rule(
        name=name,
        index=index,
        document=_normalized(entry, name),
        dialects=_dialects(entry),
        paths=_strings(entry, "path", _check_path),
        models=_strings(entry, "model"),
        stream=_boolean(entry, "stream"),
        user=_optional_string(entry, "user"),
        user_regex=user_regex,
        user_raw=_raw(entry, "user"),
        system=_optional_string(entry, "system"),
        system_regex=system_regex,
        system_raw=_raw(entry, "system"),
        tools=tools,
        tool_names=tool_names,
        headers=_headers(entry),
        keys=_keys(entry),
        wall=wall,
        window=_window(entry, wall),
        schedule=_schedule(entry),
        nth=_count(entry, "nth"),
        first=_count(entry, "first"),
        every=_count(entry, "every"),
        probability=_fraction(entry, "probability"),
        ramp=_ramp(entry),
        faults=faults,
        answer=answer,
        latency=_latency(entry),
    )


def _normalized(entry: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The rule as given, its name filled in: JSON-able (TOML dates are not taken anyway)."""
    document = {"name": name}
    document.update((key, value) for key, value in entry.items() if key != "name")
    return document


# --- field checks ---------------------------------------------------------------------


def _string(entry: Mapping[str, Any], field: str) -> str:
    value = entry[field]
    if not isinstance(value, str) or not value:
        raise RuleError(f"{field} must be a non-empty string, got {value!r}")
    return value


def _optional_string(entry: Mapping[str, Any], field: str) -> str | None:
    return _string(entry, field) if field in entry else None


def _strings(
    entry: Mapping[str, Any], field: str, check: Callable[[str], None] | None = None
) -> tuple[str, ...] | None:
    """A string or a non-empty list of them."""
    if field not in entry:
        return None
    value = entry[field]
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) and i for i in items):
        raise RuleError(f"{field} must be a string or a list of strings, got {value!r}")
    for item in items:
        if check is not None:
            check(item)
    return tuple(items)


def _check_path(path: str) -> None:
    if not path.startswith("/"):
        raise RuleError(f"path must start with /, got {path!r}")


#: Text every JSON encoder writes as itself: no quote, backslash or slash (some write
#: ``\/``), nothing beyond ASCII (some write ``\u00e9``), no control characters.
_VERBATIM = re.compile(r"^[ !#-.0-\[\]-~]+$")


def _raw(entry: Mapping[str, Any], field: str) -> bytes | None:
    """The bytes a body holding ``field``'s text must hold, when they are certain."""
    text = entry.get(field)
    if isinstance(text, str) and _VERBATIM.match(text):
        return text.encode("ascii")
    return None


def _dialects(entry: Mapping[str, Any]) -> frozenset[str] | None:
    names = _strings(entry, "dialect")
    if names is None:
        return None
    for name in names:
        if name not in DIALECTS:
            raise RuleError(f"dialect must be one of {', '.join(DIALECTS)}, got {name!r}")
    return frozenset(names)


def _boolean(entry: Mapping[str, Any], field: str) -> bool | None:
    if field not in entry:
        return None
    value = entry[field]
    if not isinstance(value, bool):
        raise RuleError(f"{field} must be true or false, got {value!r}")
    return value


def _regex(entry: Mapping[str, Any], field: str) -> re.Pattern[str] | None:
    if field not in entry:
        return None
    pattern = _string(entry, field)
    try:
        return re.compile(pattern)
    except re.error as e:
        raise RuleError(f"{field}: not a regular expression: {e}") from None


def _tools(entry: Mapping[str, Any]) -> tuple[bool | None, frozenset[str] | None]:
    """``tools = true/false`` (any present or none), or a tool name (or names) present."""
    if "tools" not in entry:
        return None, None
    value = entry["tools"]
    if isinstance(value, bool):
        return value, None
    names = _strings(entry, "tools")
    assert names is not None
    return None, frozenset(names)


def _headers(entry: Mapping[str, Any]) -> tuple[tuple[bytes, bytes | None], ...]:
    """``{name: value}``: each header present with that value (``*``: with any)."""
    if "headers" not in entry:
        return ()
    value = entry["headers"]
    if not isinstance(value, dict) or not value:
        raise RuleError(f"headers must be a table of name = value, got {value!r}")
    out = []
    for name, wanted in value.items():
        if not isinstance(name, str) or not re.match(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", name):
            raise RuleError(f"headers: {name!r} is not a header name")
        if not isinstance(wanted, str):
            raise RuleError(f"headers: {name} must be a string, got {wanted!r}")
        out.append(
            (name.lower().encode("latin-1"), None if wanted == "*" else wanted.encode("utf-8"))
        )
    return tuple(out)


def _keys(entry: Mapping[str, Any]) -> frozenset[bytes] | None:
    keys = _strings(entry, "key")
    return None if keys is None else frozenset(k.encode("utf-8") for k in keys)


def _time(value: object, field: str, wall: bool) -> float:
    """Seconds (since the start, or for the wall clock since the epoch), or an ISO time (wall)."""
    if isinstance(value, str) and wall:
        return _iso(value, field)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        kind = "seconds or an ISO 8601 time" if wall else "seconds since the rules were loaded"
        raise RuleError(f"{field}: expected {kind}, got {value!r}")
    if value < 0:
        raise RuleError(f"{field}: must be >= 0, got {value!r}")
    return float(value)


def _iso(text: str, field: str) -> float:
    """``2030-01-01T12:00:00Z`` (UTC; ``Z`` or no zone) as Unix seconds."""
    stripped = text[:-1] if text.endswith("Z") else text
    for layout in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S"):
        try:
            return float(calendar.timegm(time.strptime(stripped, layout)))
        except ValueError:
            continue
    raise RuleError(
        f"{field}: expected an ISO 8601 UTC time like 2030-01-01T12:00:00Z, got {text!r}"
    )


def _window(entry: Mapping[str, Any], wall: bool) -> tuple[float, float] | None:
    """``[from, to]``: from ``from`` (inclusive) to ``to`` (exclusive; omitted: for ever)."""
    if "window" not in entry:
        return None
    value = entry["window"]
    if not isinstance(value, list) or not 1 <= len(value) <= 2:
        raise RuleError(f"window must be [from, to] (or [from]), got {value!r}")
    low = _time(value[0], "window", wall)
    high = _time(value[1], "window", wall) if len(value) == 2 else math.inf
    if high <= low:
        raise RuleError(f"window: its end must come after its start, got {value!r}")
    return low, high


def _positive(table: Mapping[str, Any], field: str, where: str, zero: bool = False) -> float:
    value = table[field]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise RuleError(f"{where}.{field} must be a number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not zero) or math.isinf(value):
        raise RuleError(f"{where}.{field} must be {'>= 0' if zero else '> 0'}, got {value!r}")
    return float(value)


def _table(entry: Mapping[str, Any], field: str, keys: Sequence[str]) -> dict[str, Any] | None:
    if field not in entry:
        return None
    value = entry[field]
    if not isinstance(value, dict):
        raise RuleError(f"{field} must be a table with {', '.join(keys)}, got {value!r}")
    unknown = sorted(set(value) - set(keys))
    if unknown:
        raise RuleError(f"{field}: unknown field {unknown[0]!r} (it takes {', '.join(keys)})")
    return value


def _schedule(entry: Mapping[str, Any]) -> Schedule | None:
    """``{every = S, for = S, offset = S}``: ``for`` seconds out of every ``every``."""
    table = _table(entry, "schedule", ("every", "for", "offset"))
    if table is None:
        return None
    for field in ("every", "for"):
        if field not in table:
            raise RuleError(f"schedule needs {field}, as in {{every = 300, for = 30}}")
    period = _positive(table, "every", "schedule")
    length = _positive(table, "for", "schedule")
    if length > period:
        raise RuleError(f"schedule: for ({length:g} s) is longer than every ({period:g} s)")
    offset = _positive(table, "offset", "schedule", zero=True) if "offset" in table else 0.0
    return Schedule(period, length, offset)


def _count(entry: Mapping[str, Any], field: str) -> int | None:
    if field not in entry:
        return None
    value = entry[field]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10**12:
        raise RuleError(f"{field} must be a whole number >= 1, got {value!r}")
    return value


def _fraction(entry: Mapping[str, Any], field: str, where: str = "") -> float | None:
    if field not in entry:
        return None
    value = entry[field]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise RuleError(f"{where}{field} must be between 0 and 1, got {value!r}")
    return float(value)


def _ramp(entry: Mapping[str, Any]) -> Ramp | None:
    """``{from = 0, to = 0.5, over = 600, start = 0}``: the chance ramping over time."""
    table = _table(entry, "ramp", ("from", "to", "over", "start"))
    if table is None:
        return None
    for field in ("to", "over"):
        if field not in table:
            raise RuleError(f"ramp needs {field}, as in {{from = 0, to = 0.5, over = 600}}")
    low = _fraction(table, "from", "ramp.") if "from" in table else 0.0
    high = _fraction(table, "to", "ramp.")
    assert low is not None and high is not None
    over = _positive(table, "over", "ramp")
    start = _positive(table, "start", "ramp", zero=True) if "start" in table else 0.0
    return Ramp(low, high, over, start)


def _text(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise RuleError(f"{field} must be a string, got {value!r}")
    if len(value) > MAX_TEXT:
        raise RuleError(f"{field}: at most {MAX_TEXT} characters")
    return value


def _answer(entry: Mapping[str, Any]) -> Answer | None:
    if "text" in entry:
        return Answer(chunks=(Chunk(_text(entry["text"], "text"), 0.0),))
    if "json" in entry:
        try:
            text = json.dumps(entry["json"], ensure_ascii=False, separators=(",", ":"))
        except (TypeError, ValueError) as e:
            raise RuleError(f"json: cannot be written as JSON: {e}") from None
        return Answer(chunks=(Chunk(text, 0.0),))
    if "chunks" in entry:
        return Answer(chunks=_chunks(entry["chunks"]))
    if "tool_calls" in entry:
        return Answer(calls=_calls(entry["tool_calls"]))
    return None


def _chunks(value: object) -> tuple[Chunk, ...]:
    """``[{text, delay_ms}]`` (or bare strings): each an event, ``delay_ms`` after the last."""
    if not isinstance(value, list) or not value:
        raise RuleError(f"chunks must be a non-empty list, got {value!r}")
    chunks = []
    for n, item in enumerate(value, 1):
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, dict) or "text" not in item:
            raise RuleError(f"chunks[{n}] must be a string or a table with text, got {item!r}")
        unknown = sorted(set(item) - {"text", "delay_ms"})
        if unknown:
            raise RuleError(f"chunks[{n}]: unknown field {unknown[0]!r} (text, delay_ms)")
        text = _text(item["text"], f"chunks[{n}].text")
        if not text:
            raise RuleError(f"chunks[{n}].text is empty")
        delay = 0.0
        if "delay_ms" in item:
            delay = _positive(item, "delay_ms", f"chunks[{n}]", zero=True) / 1000.0
        chunks.append(Chunk(text, delay))
    return tuple(chunks)


def _calls(value: object) -> tuple[Call, ...]:
    """``[{name, arguments}]``: arguments a table (written as JSON) or JSON text."""
    if not isinstance(value, list) or not value:
        raise RuleError(f"tool_calls must be a non-empty list, got {value!r}")
    calls = []
    for n, item in enumerate(value, 1):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise RuleError(f"tool_calls[{n}] must be a table with a name, got {item!r}")
        unknown = sorted(set(item) - {"name", "arguments"})
        if unknown:
            raise RuleError(f"tool_calls[{n}]: unknown field {unknown[0]!r} (name, arguments)")
        arguments = item.get("arguments", {})
        if isinstance(arguments, str):
            try:
                json.loads(arguments)
            except ValueError:
                raise RuleError(f"tool_calls[{n}].arguments is not JSON: {arguments!r}") from None
            text = arguments
        elif isinstance(arguments, dict):
            text = json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))
        else:
            raise RuleError(f"tool_calls[{n}].arguments must be a table or JSON text")
        calls.append(Call(item["name"], text))
    return tuple(calls)


def _latency(entry: Mapping[str, Any]) -> Latency | None:
    table = _table(entry, "latency", ("ttft_ms", "itl_ms", "tokens_per_event"))
    if table is None:
        return None
    if not table:
        raise RuleError("latency is empty: give ttft_ms, itl_ms or tokens_per_event")
    ttft = _positive(table, "ttft_ms", "latency", zero=True) / 1000 if "ttft_ms" in table else None
    itl = _positive(table, "itl_ms", "latency", zero=True) / 1000 if "itl_ms" in table else None
    per_event = None
    if "tokens_per_event" in table:
        per_event = table["tokens_per_event"]
        if isinstance(per_event, bool) or not isinstance(per_event, int) or per_event < 1:
            raise RuleError(
                f"latency.tokens_per_event must be a whole number >= 1, got {per_event!r}"
            )
    return Latency(ttft, itl, per_event)
