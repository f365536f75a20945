# -*- test-case-name: tests.test_control -*-
"""
Rules and control headers, decided in one place for every dialect: the
faults seam's L{Control} (L{mockoai.pipeline.faults}).

With rules loaded (``--rules``, or ``PUT /_mockoai/rules``) or control
headers allowed (``--allow-control-headers``), every generation pipeline's
dialect draws its faults through a L{Seam} of the one L{Control}; with
neither, the dialects keep what they had (None, or OpenRouter's own
stream errors) and a request pays the one ``None`` check it always paid.

For each request, in order: the control headers (``x-mockoai-fault``,
``x-mockoai-ttft-ms``, ``x-mockoai-itl-ms``, ``x-mockoai-tokens``,
``x-mockoai-tokens-per-event``), when allowed and present, decide alone;
else the first rule that matches (L{mockoai.pipeline.rules}); else the
dialect's own faults.  What is decided becomes a
L{mockoai.pipeline.faults.Fault}: a refusal in OpenAI's words (the
dialect's refusal mapping and envelope word it as its API does: Anthropic's
529 ``overloaded_error``), a cut, no answer, or another plan -- a scripted
answer built of the simulation's segments (L{mockoai.sim.output}), so
every dialect renders it with the code it renders any answer with, and
timings (L{mockoai.sim.latency.Timing}) for latency overrides.

Every request seen gets a L{Decision} on its record (its arrival, the rule,
what was done) for the journal and the verdict (L{mockoai.ops.journal}),
and faults are counted by kind, model and rule for /metrics and /stats.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np
import ujson

from mockoai.apierror import SERVER_ERROR, APIError, OverloadedError
from mockoai.pipeline import errors, faultspec
from mockoai.pipeline.auth import presented_key
from mockoai.pipeline.faults import EMPTY, ERROR_EVENT, HANG, RESET, Fault, Faults
from mockoai.pipeline.faultspec import FaultSpec
from mockoai.pipeline.outcome import outcome_of
from mockoai.pipeline.rules import EMPTY as NO_RULES
from mockoai.pipeline.rules import Answer, Latency, Rule, RuleBook
from mockoai.sim import output
from mockoai.sim.latency import Timing
from mockoai.sim.output import CALL, TEXT, Segment
from mockoai.sim.sampling import LENGTH, STOP, TOOL_CALLS, ChoicePlan, Draws, Plan

if TYPE_CHECKING:
    from mockoai.interfaces import Clock, Request
    from mockoai.ops.config import ModelProfile
    from mockoai.pipeline.dialect import Dialect
    from mockoai.sim.core import ServedModel
    from mockoai.sim.request import GenerationRequest
    from mockoai.sim.sampling import Planner

#: The per-request control headers (``--allow-control-headers``).
FAULT_HEADER = b"x-mockoai-fault"
TTFT_HEADER = b"x-mockoai-ttft-ms"
ITL_HEADER = b"x-mockoai-itl-ms"
TOKENS_HEADER = b"x-mockoai-tokens"
PER_EVENT_HEADER = b"x-mockoai-tokens-per-event"
HEADERS = (FAULT_HEADER, TTFT_HEADER, ITL_HEADER, TOKENS_HEADER, PER_EVENT_HEADER)
#: The rule label of what control headers decided.
BY_HEADER = "header"
#: What a rule that scripts an answer, or times one, counts as (beside its faults).
ANSWER = "answer"
LATENCY = "latency"

#: Distinct (requested, served) model pairs whose candidate rules are cached.
_CANDIDATES = 4096
#: Distinct (kind, model, rule) fault series kept; beyond, the model is "other".
_MAX_SERIES = 4096


@attrs.define(slots=True)
class Decision:
    """What was decided for one request: for the journal, the request log and the verdict."""

    arrived: float
    rule: str | None = None
    actions: tuple[str, ...] = ()
    #: The request's headers by name, if the rules read them (the journal reuses them).
    headers: Callable[[bytes], bytes | None] | None = None


def header_table(request: Any) -> Callable[[bytes], bytes | None]:
    """
    How to look up ``request``'s headers by lower-case name, fast for many
    lookups: the lean stack's ``getHeader`` scans its list, so its list is
    made a dict once (the first of repeated headers, as its ``getHeader``
    returns); twisted.web's ``getHeader`` is a dict lookup already.
    """
    raw = getattr(request, "raw_headers", None)
    if raw is None:
        get: Callable[[bytes], bytes | None] = request.getHeader
        return get
    table: dict[bytes, bytes] = {}
    for name, value in raw:
        table.setdefault(name.lower(), value)
    return table.get


class FaultCounts:
    """Faults applied by (kind, model, rule): plain ints, merged over workers."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, str], int] = {}

    def add(self, kind: str, model: str, rule: str) -> None:
        counts = self.counts
        key = (kind, model, rule)
        n = counts.get(key)
        if n is None and len(counts) >= _MAX_SERIES:
            key = (kind, "other", rule)
            n = counts.get(key)
        counts[key] = (n or 0) + 1

    def state(self) -> list[tuple[str, str, str, int]]:
        return [(kind, model, rule, n) for (kind, model, rule), n in self.counts.items()]

    def load(self, state: list[Any]) -> FaultCounts:
        counts = self.counts
        for kind, model, rule, n in state:
            key = (kind, model, rule)
            counts[key] = counts.get(key, 0) + n
        return self

    def clear(self) -> None:
        self.counts.clear()


def dialect_name(dialect: Dialect) -> str:
    """The API a dialect speaks, as rules name it: its package under ``mockoai.dialects``."""
    parts = type(dialect).__module__.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "dialects" else parts[-1]


def _kept(get: Callable[[bytes], bytes | None] | None) -> Callable[[bytes], bytes | None] | None:
    """A header table worth keeping on the record: a dict's, never the request's own method."""
    return get if get is not None and isinstance(getattr(get, "__self__", None), dict) else None


class Seam(Faults):
    """One dialect's faults while the control is on: its rules, then its own faults."""

    def __init__(self, control: Control, dialect: str, fallback: Faults | None) -> None:
        self.control = control
        self.dialect = dialect
        self.fallback = fallback

    def draw(
        self, request: Request, wanted: GenerationRequest, served: ServedModel, plan: Plan
    ) -> Fault | None:
        fault = self.control.decide(request, wanted, served, plan, self.dialect)
        if fault is None and self.fallback is not None:
            return self.fallback.draw(request, wanted, served, plan)
        return fault


class Control:
    """The rules in force, the counts they keep, and whether control headers are taken."""

    def __init__(
        self,
        clock: Clock,
        planner: Planner,
        book: RuleBook = NO_RULES,
        headers: bool = False,
        counts: FaultCounts | None = None,
    ) -> None:
        self.clock = clock
        self.planner = planner
        self.headers = headers
        self.counts = FaultCounts() if counts is None else counts
        #: The dialects whose faults this draws, and what they drew before.
        self._dialects: list[tuple[Dialect, Faults | None]] = []
        #: Called when the control turns on or off (the journal listens).
        self.on_change: list[Any] = []
        self.book = NO_RULES
        self.load(book)

    # --- what is in force -------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Whether requests are looked at at all (rules loaded, or headers taken)."""
        return bool(self.book.rules) or self.headers

    def install(self, dialects: list[Dialect]) -> None:
        """Draw the faults of ``dialects`` (each pipeline's), from now on while active."""
        self._dialects = [(dialect, dialect.faults) for dialect in dialects]
        self._apply()

    def _apply(self) -> None:
        active = self.active
        for dialect, fallback in self._dialects:
            dialect.faults = Seam(self, dialect_name(dialect), fallback) if active else fallback
        for listener in self.on_change:
            listener(active)

    def load(self, book: RuleBook) -> None:
        """Put ``book`` in force: counts start again, and times count from now."""
        self.book = book
        self._rng = random.Random(book.seed)
        self._draws = Draws(np.random.default_rng(book.seed), block=256)
        self._restart()
        self._apply()

    def _restart(self) -> None:
        """Rule counts to zero; rule times count from now."""
        count = len(self.book.rules)
        self.matched = [0] * count
        self.applied = [0] * count
        self.started = self.clock.seconds()
        self._candidates: dict[tuple[str, bytes, str, str, bool], Candidates] = {}

    def reset(self) -> None:
        """Rule counts and the fault counters to zero; rule times count from now."""
        self._restart()
        self.counts.clear()

    def rules_state(self) -> dict[str, Any]:
        """The rules in force and how often each matched and applied (``GET /_mockoai/rules``)."""
        document = self.book.document()
        for rule, entry in zip(self.book.rules, document["rules"]):
            entry["_counts"] = {
                "matched": self.matched[rule.index],
                "applied": self.applied[rule.index],
            }
        document["source"] = self.book.source
        document["loaded"] = self.started
        document["control_headers"] = self.headers
        return document

    # --- the request path ----------------------------------------------------------

    def decide(
        self,
        request: Request,
        wanted: GenerationRequest,
        served: ServedModel,
        plan: Plan,
        dialect: str,
    ) -> Fault | None:
        """What this request gets (None: what was planned), recorded on its record."""
        now = self.clock.seconds()
        decision = Decision(now)
        outcome = outcome_of(request)
        if outcome is not None:
            outcome.decision = decision
        if self.headers:
            get = header_table(request)
            decision.headers = _kept(get)
            sent = [get(name) for name in HEADERS]
            if any(value is not None for value in sent):
                return self._headers(sent, wanted, served, plan, decision)
        if not self.book.rules:
            return None
        path = request.path
        key = (dialect, path, wanted.model, served.spec.id, wanted.stream)
        candidates = self._candidates.get(key)
        if candidates is None:
            candidates = self._candidates_of(key)
        if not candidates.rules:
            return None
        view = RequestView(request, wanted, served, dialect, decision.headers)
        alive = candidates.alive(view)
        decision.headers = _kept(view._get)
        for rule in alive:
            if not rule.holds(view):
                continue
            t = now if rule.wall else now - self.started
            if not rule.in_time(t):
                continue
            index = rule.index
            self.matched[index] += 1
            if not rule.counts_in(self.matched[index]):
                continue
            chance = rule.chance(t)
            if chance < 1.0:
                rng = (
                    self._rng
                    if wanted.seed is None
                    else random.Random(f"{self.book.seed}:{wanted.seed}:{index}")
                )
                if not rng.random() < chance:
                    continue
            self.applied[index] += 1
            decision.rule = rule.name
            return self._act(
                rule.name,
                rule.faults,
                rule.answer,
                rule.latency,
                None,
                wanted,
                served,
                plan,
                decision,
            )
        return None

    def _candidates_of(self, key: tuple[str, bytes, str, str, bool]) -> Candidates:
        """The rules a kind of request may match (by API, path, models, streaming), kept."""
        dialect, path, model, served, stream = key
        text = path.decode("latin-1")
        found = Candidates(
            [rule for rule in self.book.rules if rule.fits(dialect, text, model, served, stream)]
        )
        if len(self._candidates) >= _CANDIDATES:
            self._candidates.clear()
        self._candidates[key] = found
        return found

    def _headers(
        self,
        sent: list[bytes | None],
        wanted: GenerationRequest,
        served: ServedModel,
        plan: Plan,
        decision: Decision,
    ) -> Fault | None:
        """What the control headers ``sent`` (L{HEADERS}, in order) ask for."""
        spec, ttft, itl, tokens, per_event = sent
        faults: tuple[FaultSpec, ...] = ()
        if spec is not None:
            try:
                faults = faultspec.parse(spec.decode("latin-1"))
            except faultspec.SpecError as e:
                raise _bad_header(FAULT_HEADER, str(e)) from None
        latency = None
        if ttft is not None or itl is not None or per_event is not None:
            latency = Latency(
                None if ttft is None else _milliseconds(TTFT_HEADER, ttft) / 1000,
                None if itl is None else _milliseconds(ITL_HEADER, itl) / 1000,
                None if per_event is None else _whole(PER_EVENT_HEADER, per_event, 1),
            )
        length = None if tokens is None else _whole(TOKENS_HEADER, tokens, 0)
        decision.rule = BY_HEADER
        return self._act(BY_HEADER, faults, None, latency, length, wanted, served, plan, decision)

    def _act(
        self,
        rule: str,
        specs: tuple[FaultSpec, ...],
        answer: Answer | None,
        latency: Latency | None,
        length: int | None,
        wanted: GenerationRequest,
        served: ServedModel,
        plan: Plan,
        decision: Decision,
    ) -> Fault | None:
        """The fault of a rule's (or the headers') actions, counted."""
        model = served.spec.id
        counts = self.counts
        actions = [str(spec) for spec in specs]
        ending = None
        timings = []
        for spec in specs:
            counts.add(_kind(spec), model, rule)
            if spec.ends:
                ending = spec
            else:
                timings.append(spec)
        if answer is not None:
            counts.add(ANSWER, model, rule)
            actions.append(ANSWER)
        if latency is not None:
            counts.add(LATENCY, model, rule)
            actions.append(LATENCY)
        if length is not None:
            actions.append(f"tokens={length}")
        decision.actions = tuple(actions)
        if ending is not None and ending.kind == faultspec.STATUS:
            return Fault(refusal=refusal(ending, wanted.model))
        if ending is not None and ending.after is None and ending.kind in (HANG, RESET, EMPTY):
            return Fault(end=ending.kind)
        new, timed = self._plan(plan, wanted, served, answer, latency, length, timings)
        if ending is None:
            return None if new is None else Fault(plan=new, timed=timed)
        after = 0 if ending.after is None else ending.after
        return Fault(after=after, end=_END[ending.kind], plan=new, timed=timed)

    # --- plans ---------------------------------------------------------------------

    def _plan(
        self,
        plan: Plan,
        wanted: GenerationRequest,
        served: ServedModel,
        answer: Answer | None,
        latency: Latency | None,
        length: int | None,
        timings: list[FaultSpec],
    ) -> tuple[Plan | None, bool]:
        """Another plan for the answer (None: keep it), and whether it times itself."""
        if answer is None and latency is None and length is None and not timings:
            return None, False
        profile = served.profile
        limit = self.planner.limit(wanted, profile.max_output_tokens)
        if latency is not None and latency.tokens_per_event is not None:
            profile = _per_event(profile, latency.tokens_per_event)
        chunked = answer is not None and answer.timed
        if answer is not None:
            choices = [self._scripted(i, answer, limit, profile) for i in range(_width(plan))]
        elif length is not None:
            tokens = min(length, limit)
            choices = [self._generated(i, tokens, limit, profile) for i in range(_width(plan))]
        else:
            choices = plan.choices
            if latency is not None and latency.tokens_per_event is not None:
                for choice in choices:
                    choice.profile = profile
        longest = max((c.tokens for c in choices), default=0)
        timing = plan.timing
        if choices is not plan.choices:
            timing = served.profile.latency.times(self._draws.rng, plan.ttft, longest)
        timed = (
            chunked
            or bool(timings)
            or (latency is not None and (latency.ttft is not None or latency.itl is not None))
        )
        if chunked:
            assert answer is not None
            timing = _chunk_timing(answer, plan.ttft)
        if latency is not None:
            timing = _retimed(timing, latency.ttft, latency.itl, longest)
        for spec in timings:
            if spec.kind == faultspec.TTFT:
                assert spec.ms is not None
                timing = _retimed(timing, spec.ms / 1000, None, longest)
            else:
                assert spec.ms is not None and spec.every is not None
                timing = _spiked(timing, spec.ms / 1000, spec.every, longest)
        return Plan(wanted, choices, timing), timed

    def _scripted(
        self, index: int, answer: Answer, limit: int, profile: ModelProfile
    ) -> ChoicePlan:
        """A choice that says what the rule says: its text (chunk by chunk) or its calls."""
        if answer.calls:
            segments = [
                output.tokenized(call.arguments, CALL, call.name, i)
                for i, call in enumerate(answer.calls)
            ]
            finish = TOOL_CALLS
        else:
            segments = [_joined(answer)]
            finish = STOP
        kept, cut = output.cut(segments, limit)
        tokens = sum(s.tokens for s in kept)
        choice = ChoicePlan(
            index, tokens, LENGTH if cut else finish, 0, 0, 0, self.planner, self._draws,
            profile, kept, 0,
        )  # fmt: skip
        if answer.timed and kept:
            choice.split(*_chunk_events(answer, kept[0].tokens))
        return choice

    def _generated(self, index: int, tokens: int, limit: int, profile: ModelProfile) -> ChoicePlan:
        """``tokens`` tokens of corpus text (``x-mockoai-tokens``), as any answer's text."""
        corpus = self.planner.corpus
        articles = corpus.article_tokens
        room = max(1, int(np.searchsorted(articles, corpus.tokens - max(tokens, 1), "right")))
        first = int(articles[self._draws.below(room)])
        segment = output.corpus_text(corpus, first, tokens, TEXT)
        finish = LENGTH if tokens >= limit else STOP
        return ChoicePlan(
            index, tokens, finish, 0, 0, 0, self.planner, self._draws, profile, [segment], 0
        )


class Candidates:
    """
    The rules a kind of request may match, in order, and their gates: the
    keys, header names and plain texts that rule many of them out at once.
    Most requests meet none of them: then only the rules without a gate
    are looked at, and a hundred rules that cannot match cost a request a
    few lookups, not a hundred tests.
    """

    __slots__ = ("finder", "gated", "headers", "keys", "order", "rules", "texts", "ungated")

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = tuple(rules)
        #: Each rule with its gate (None: it has none).
        self.order = tuple((rule, rule.gate) for rule in rules)
        self.ungated = tuple(rule for rule, gate in self.order if gate is None)
        gates = [gate for _, gate in self.order if gate is not None]
        self.gated = bool(gates)
        self.keys: frozenset[bytes] = frozenset().union(
            *(what for kind, what in gates if kind == "key")
        )
        self.headers = tuple({what: None for kind, what in gates if kind == "header"})
        self.texts = tuple({what: None for kind, what in gates if kind == "text"})
        #: One search for all the texts: most bodies hold none of them.
        self.finder = (
            re.compile(b"|".join(re.escape(text) for text in self.texts)) if self.texts else None
        )

    def alive(self, view: RequestView) -> tuple[Rule, ...] | list[Rule]:
        """The rules, in order, whose gates ``view`` opens (and those without one)."""
        if not self.gated:
            return self.ungated
        opened: set[object] = set()
        if self.keys:
            key = view.key()
            if key in self.keys:
                opened.add(key)
        for name in self.headers:
            if view.header(name) is not None:
                opened.add(name)
        finder = self.finder
        if finder is not None:
            raw = view.raw()
            if finder.search(raw) is not None:
                opened.update(text for text in self.texts if text in raw)
        if not opened:
            return self.ungated
        return [rule for rule, gate in self.order if gate is None or _opens(gate, opened)]


def _opens(gate: tuple[str, Any], opened: set[object]) -> bool:
    kind, what = gate
    return not opened.isdisjoint(what) if kind == "key" else what in opened


class RequestView:
    """A request as rules ask about it; the body is read only if a rule asks for its text."""

    __slots__ = (
        "_body",
        "_get",
        "_key",
        "_messages",
        "dialect",
        "request",
        "served",
        "wanted",
    )

    def __init__(
        self,
        request: Request,
        wanted: GenerationRequest,
        served: ServedModel,
        dialect: str,
        headers: Callable[[bytes], bytes | None] | None = None,
    ) -> None:
        self.request = request
        self.wanted = wanted
        self.served = served.spec.id
        self.dialect = dialect
        self._messages: tuple[str, str] | None = None
        self._body: bytes | None = None
        self._get = headers
        self._key: bytes | bool | None = False

    @property
    def path(self) -> str:
        return self.request.path.decode("latin-1")

    @property
    def model(self) -> str:
        return self.wanted.model

    @property
    def stream(self) -> bool:
        return self.wanted.stream

    def tools(self) -> frozenset[str]:
        return frozenset(tool.name for tool in self.wanted.tools)

    def header(self, name: bytes) -> bytes | None:
        get = self._get
        if get is None:
            get = self._get = header_table(self.request)
        return get(name)

    #: What L{presented_key} reads.
    getHeader = header

    def key(self) -> bytes | None:
        key = self._key
        if key is False:
            key = self._key = presented_key(self)
        return key  # type: ignore[return-value]

    def raw(self) -> bytes:
        if self._body is None:
            content = self.request.content
            try:
                content.seek(0)
                self._body = content.read()
            except (OSError, ValueError):
                self._body = b""
        return self._body

    def user(self) -> str:
        return self._texts()[0]

    def system(self) -> str:
        return self._texts()[1]

    def _texts(self) -> tuple[str, str]:
        if self._messages is None:
            try:
                body = ujson.loads(self.raw())
            except ValueError:
                body = None
            self._messages = texts(body)
        return self._messages


def texts(body: object) -> tuple[str, str]:
    """
    The last user message and the system prompt of a request body, in any
    of the APIs' shapes: ``messages`` (chat, OpenRouter, Anthropic, with
    Anthropic's ``system``), ``input``/``instructions`` (Responses),
    ``prompt`` (completions).
    """
    if not isinstance(body, dict):
        return "", ""
    system = [_text(body.get("system")), _text(body.get("instructions"))]
    user = ""
    items = body.get("messages")
    if items is None and "input" in body:
        items = body["input"]
        if isinstance(items, str):
            user, items = items, None
    if isinstance(items, list):
        for item in items:
            if not isinstance(item, dict):
                continue
            role = item.get("role")
            if role in ("system", "developer"):
                system.append(_text(item.get("content")))
            elif role == "user":
                user = _text(item.get("content"))
    elif "prompt" in body:
        prompt = body["prompt"]
        user = prompt[-1] if isinstance(prompt, list) and prompt else _text(prompt)
        user = user if isinstance(user, str) else ""
    return user, "\n".join(part for part in system if part)


def _text(content: object) -> str:
    """A message's content: a string, or the text of its parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


# --- what a fault says -------------------------------------------------------------

_END = {
    faultspec.ERROR_EVENT: ERROR_EVENT,
    faultspec.TRUNCATE: "truncate",
    faultspec.MALFORMED: "malformed",
    faultspec.RESET: RESET,
    faultspec.HANG: HANG,
}

#: OpenAI's words for the statuses a fault may answer with.
_MESSAGES = {
    400: "Simulated bad request (a mockoai fault).",
    401: "Incorrect API key provided. You can find your API key at "
    "https://platform.openai.com/account/api-keys.",
    403: "You are not allowed to sample from this model",
    408: "Request timed out.",
    409: "The request conflicted with another request. Please try again.",
    500: "The server had an error while processing your request. Sorry about that!",
    502: "Bad gateway.",
    503: "That model is currently overloaded with other requests. You can retry your request, "
    "or contact us through our help center at help.openai.com if the error persists.",
    504: "Gateway timeout.",
    529: "The server is overloaded. Please try again later.",
}


def _kind(spec: FaultSpec) -> str:
    """A fault's counter label: ``status:503``, or its kind."""
    return f"status:{spec.status}" if spec.kind == faultspec.STATUS else spec.kind


def refusal(spec: FaultSpec, model: str) -> APIError:
    """
    The error of a ``status`` fault, in OpenAI's words; a dialect words it
    its own way (its refusal mapping, its envelope).  529 is an
    L{OverloadedError}, which Anthropic's mapping answers as its own
    ``overloaded_error``.
    """
    status = spec.status or 500
    headers: tuple[tuple[bytes, bytes], ...] = ()
    if spec.retry_after is not None:
        value = spec.retry_after
        text = b"%d" % value if value == int(value) else b"%g" % value
        headers = ((b"Retry-After", text),)
    if status == 429:
        wait = f"{spec.retry_after:g}s" if spec.retry_after is not None else "a moment"
        return APIError(
            429,
            f"Rate limit reached for {model} in organization org-mockoai on requests per min "
            f"(RPM): Limit 1, Used 1, Requested 1. Please try again in {wait}. Visit "
            "https://platform.openai.com/account/rate-limits to learn more.",
            type="requests",
            code="rate_limit_exceeded",
            headers=headers,
        )
    if status == 404:
        error = errors.model_not_found(model)
        error.headers = headers
        return error
    message = _MESSAGES.get(status, f"Simulated error {status} (a mockoai fault).")
    kind = SERVER_ERROR if status >= 500 else errors.INVALID_REQUEST
    code = "invalid_api_key" if status == 401 else None
    if status == 529:
        return OverloadedError(529, message, type=kind, code="overloaded", headers=headers)
    return APIError(status, message, type=kind, code=code, headers=headers)


def _bad_header(name: bytes, why: str) -> APIError:
    return errors.invalid(name.decode(), f"Invalid {name.decode()} header: {why}")


def _milliseconds(name: bytes, raw: bytes) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise _bad_header(name, f"expected milliseconds, got {raw.decode('latin-1')!r}") from None
    if not 0 <= value <= 86_400_000:
        raise _bad_header(name, f"expected 0-86400000 ms, got {raw.decode('latin-1')}")
    return value


def _whole(name: bytes, raw: bytes, low: int) -> int:
    if not raw.strip().isdigit() or not low <= int(raw) <= 10_000_000:
        raise _bad_header(name, f"expected a whole number >= {low}, got {raw.decode('latin-1')!r}")
    return int(raw)


# --- plans and timings ---------------------------------------------------------------


def _width(plan: Plan) -> int:
    wanted = plan.wanted
    return wanted.n * wanted.prompts


_PROFILES: dict[tuple[int, int], ModelProfile] = {}


def _per_event(profile: ModelProfile, tokens: int) -> ModelProfile:
    """``profile`` sending ``tokens`` tokens per stream event (kept: few distinct ones)."""
    key = (id(profile), tokens)
    found = _PROFILES.get(key)
    if found is None or found.stream_tokens != (tokens, tokens):
        if len(_PROFILES) > 256:
            _PROFILES.clear()
        found = _PROFILES[key] = attrs.evolve(profile, stream_tokens=(tokens, tokens))
    return found


def _joined(answer: Answer) -> Segment:
    """The answer's text as one segment, its chunks tokenized apart (no token spans two)."""
    views: list[bytes] = []
    offsets = [0]
    for chunk in answer.chunks:
        segment = output.tokenized(chunk.text, TEXT)
        base = offsets[-1]
        views.append(segment.text())
        offsets += [base + o for o in segment.offsets[1:]]
    return Segment(TEXT, memoryview(b"".join(views)), offsets)


def _chunk_sizes(answer: Answer) -> list[int]:
    return [output.tokenized(chunk.text, TEXT).tokens for chunk in answer.chunks]


def _chunk_events(answer: Answer, kept: int) -> tuple[list[tuple[int, int, int]], list[int]]:
    """One stream event per chunk (of the ``kept`` tokens a cut left)."""
    joined = _joined(answer)
    offsets = joined.offsets
    spans: list[tuple[int, int, int]] = []
    counts: list[int] = []
    sent = 0
    for size in _chunk_sizes(answer):
        end = min(sent + size, kept)
        if end <= sent:
            break
        spans.append((0, offsets[sent], offsets[end]))
        counts.append(end)
        sent = end
    return spans, counts


def _chunk_timing(answer: Answer, ttft: float) -> Timing:
    """Every token of a chunk out at its chunk's time: the first after its delay (or the TTFT)."""
    table: list[float] = []
    at = 0.0
    for n, (chunk, size) in enumerate(zip(answer.chunks, _chunk_sizes(answer))):
        at = (chunk.delay or ttft) if n == 0 else at + chunk.delay
        table += [at] * size
    return Timing(table[0] if table else ttft, 0.0, table or None)


def _retimed(timing: Timing, ttft: float | None, itl: float | None, tokens: int) -> Timing:
    """``timing`` with its first token at ``ttft`` and ``itl`` between tokens (None: as it was)."""
    first = timing.ttft if ttft is None else ttft
    if itl is not None:
        return Timing(first, itl)
    shift = first - timing.ttft
    if timing.table is None:
        return Timing(first, timing.itl)
    return Timing(first, 0.0, [t + shift for t in timing.table])


def _spiked(timing: Timing, gap: float, every: int, tokens: int) -> Timing:
    """``timing`` with every ``every``-th gap between tokens ``gap`` seconds long."""
    table = [timing.ttft]
    for t in range(1, max(tokens, 1)):
        step = gap if t % every == 0 else timing.at(t) - timing.at(t - 1)
        table.append(table[-1] + step)
    return Timing(timing.ttft, 0.0, table)
