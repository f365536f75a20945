# -*- test-case-name: tests.test_faultspec -*-
"""
The one grammar of faults, the same in a rules file, in the
``x-mockoai-fault`` header and in the admin API::

    status:503                    the status, in the dialect's envelope
    status:429:retry-after=2      ... with a Retry-After header (seconds)
    hang                          accept, never answer
    hang:after=3                  stall after 3 tokens, never end
    reset                         TCP reset before any byte
    reset:after=5                 TCP reset after 5 tokens
    truncate:after=5              a clean close after 5 tokens, without the end of the stream
    malformed:after=2             after 2 tokens an event that is not JSON, then a clean close
    error-event:after=4           the dialect's own mid-stream error event after 4 tokens
    ttft:ms=5000                  the first token after 5 s
    itl-spike:ms=500:every=10     every 10th gap between tokens is 500 ms
    empty                         200 with an empty body

Several join with commas (``ttft:ms=2000,truncate:after=5``): at most one
that ends the answer, with any that only time it.  Nothing here knows a
request or a dialect: L{mockoai.pipeline.control} turns a spec into what
the pipeline does (L{mockoai.pipeline.faults.Fault}).  Pure Python, so the
settings can check a rules file at startup without the rest of the server.
"""

from __future__ import annotations

import math

import attrs

STATUS = "status"
HANG = "hang"
RESET = "reset"
TRUNCATE = "truncate"
MALFORMED = "malformed"
ERROR_EVENT = "error-event"
TTFT = "ttft"
ITL_SPIKE = "itl-spike"
EMPTY = "empty"

#: Faults that end the answer (at most one per request) ...
ENDINGS = (STATUS, HANG, RESET, TRUNCATE, MALFORMED, ERROR_EVENT, EMPTY)
#: ... and those that only move its tokens in time.
TIMINGS = (TTFT, ITL_SPIKE)
KINDS = ENDINGS + TIMINGS

#: The parameters each kind takes (``status`` also takes its code, unnamed).
_PARAMETERS: dict[str, tuple[str, ...]] = {
    STATUS: ("retry-after",),
    HANG: ("after",),
    RESET: ("after",),
    TRUNCATE: ("after",),
    MALFORMED: ("after",),
    ERROR_EVENT: ("after",),
    TTFT: ("ms",),
    ITL_SPIKE: ("ms", "every"),
    EMPTY: (),
}
#: The parameters a kind cannot go without.
_REQUIRED: dict[str, tuple[str, ...]] = {TTFT: ("ms",), ITL_SPIKE: ("ms",)}
#: Every Nth gap of an ``itl-spike`` unless it says.
DEFAULT_EVERY = 10
#: The longest time a spec may set (a day), in ms or seconds.
_MAX_MS = 86_400_000.0
_MAX_TOKENS = 10_000_000


@attrs.frozen
class FaultSpec:
    """One fault as the grammar says it; L{__str__} writes it back the same way."""

    kind: str
    status: int | None = None
    retry_after: float | None = None
    after: int | None = None
    ms: float | None = None
    every: int | None = None

    @property
    def ends(self) -> bool:
        """Whether it ends the answer (else it only times it)."""
        return self.kind in ENDINGS

    def __str__(self) -> str:
        parts = [self.kind]
        if self.status is not None:
            parts.append(str(self.status))
        if self.retry_after is not None:
            parts.append(f"retry-after={_number(self.retry_after)}")
        if self.after is not None:
            parts.append(f"after={self.after}")
        if self.ms is not None:
            parts.append(f"ms={_number(self.ms)}")
        if self.every is not None:
            parts.append(f"every={self.every}")
        return ":".join(parts)


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"


class SpecError(ValueError):
    """A fault spec the grammar does not take; the message says why, quoting it."""


def parse(text: str) -> tuple[FaultSpec, ...]:
    """
    ``text``, one spec or several joined by commas, as specs: the one that
    ends the answer (if any) last.  Raises L{SpecError}.
    """
    if not isinstance(text, str) or not text.strip():
        raise SpecError(f"expected a fault such as status:503 or hang, got {text!r}")
    specs = [parse_one(part.strip()) for part in text.split(",")]
    endings = [spec for spec in specs if spec.ends]
    if len(endings) > 1:
        raise SpecError(
            f"{text!r}: at most one fault may end an answer, got "
            + " and ".join(str(spec) for spec in endings)
        )
    kinds = [spec.kind for spec in specs]
    if len(set(kinds)) != len(kinds):
        raise SpecError(f"{text!r}: a kind of fault is given twice")
    return tuple(spec for spec in specs if not spec.ends) + tuple(endings)


def parse_one(text: str) -> FaultSpec:
    """One spec, ``kind[:code][:name=value]...``."""
    parts = text.split(":")
    kind = parts[0].strip().lower()
    if kind not in KINDS:
        raise SpecError(f"{text!r}: unknown fault {kind!r}; one of {', '.join(KINDS)}")
    rest = parts[1:]
    status = None
    if kind == STATUS:
        if not rest or "=" in rest[0]:
            raise SpecError(f"{text!r}: status needs its code, as in status:503")
        status = _status(text, rest[0])
        rest = rest[1:]
    values: dict[str, str] = {}
    allowed = _PARAMETERS[kind]
    for part in rest:
        name, equals, value = part.partition("=")
        name = name.strip().lower()
        if not equals or not name or not value.strip():
            raise SpecError(f"{text!r}: expected name=value, got {part!r}")
        if name not in allowed:
            takes = ", ".join(allowed) if allowed else "nothing"
            raise SpecError(f"{text!r}: {kind} takes {takes}, not {name!r}")
        if name in values:
            raise SpecError(f"{text!r}: {name} is given twice")
        values[name] = value.strip()
    for name in _REQUIRED.get(kind, ()):
        if name not in values:
            raise SpecError(f"{text!r}: {kind} needs {name}=, as in {kind}:{name}=500")
    every = values.get("every")
    return FaultSpec(
        kind,
        status=status,
        retry_after=None if "retry-after" not in values else _seconds(text, values["retry-after"]),
        after=None if "after" not in values else _count(text, "after", values["after"], 0),
        ms=None if "ms" not in values else _milliseconds(text, values["ms"]),
        every=(
            (DEFAULT_EVERY if kind == ITL_SPIKE else None)
            if every is None
            else _count(text, "every", every, 1)
        ),
    )


def _status(text: str, raw: str) -> int:
    try:
        code = int(raw.strip())
    except ValueError:
        raise SpecError(f"{text!r}: the status must be a number, got {raw!r}") from None
    if not 400 <= code <= 599:
        raise SpecError(f"{text!r}: the status must be an error, 400-599, got {code}")
    return code


def _float(text: str, name: str, raw: str, high: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SpecError(f"{text!r}: {name} must be a number, got {raw!r}") from None
    if not (0 <= value <= high) or math.isnan(value):
        raise SpecError(f"{text!r}: {name} must be between 0 and {high:g}, got {raw}")
    return value


def _seconds(text: str, raw: str) -> float:
    return _float(text, "retry-after", raw, _MAX_MS / 1000)


def _milliseconds(text: str, raw: str) -> float:
    return _float(text, "ms", raw, _MAX_MS)


def _count(text: str, name: str, raw: str, low: int) -> int:
    if not raw.isdigit():
        raise SpecError(f"{text!r}: {name} must be a whole number, got {raw!r}")
    value = int(raw)
    if not low <= value <= _MAX_TOKENS:
        raise SpecError(f"{text!r}: {name} must be between {low} and {_MAX_TOKENS}, got {value}")
    return value
