# -*- test-case-name: tests.test_sampling -*-
"""
Plan an answer: how many tokens each choice gets, which slice of the corpus
it is, why it finishes, and how a stream splits it into events.

All randomness comes from one numpy Generator: the process-wide one, or a
fresh one seeded from the request's ``seed`` so the same seeded request
always gets the same answer.  The plan holds byte offsets into the corpus
only; nothing here copies text.
"""

from __future__ import annotations

import platform
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence

import attrs
import numpy as np

from mockoai.apierror import APIError
from mockoai.ops.config import ModelProfile, Settings
from mockoai.sim import output
from mockoai.sim.corpus import ARTICLE_LEAD, Corpus
from mockoai.sim.latency import Timing
from mockoai.sim.output import Segment
from mockoai.sim.request import TOOLS_NAMED, GenerationRequest

STOP = "stop"
LENGTH = "length"
TOOL_CALLS = "tool_calls"
_BACKSLASH = ord("\\")


class ChoicePlan:
    """
    One choice: ``tokens`` tokens of corpus bytes ``[start, end)``, after
    ``hidden`` reasoning tokens that are counted and timed but never sent.
    A choice that is more than corpus text (reasoning sent, a document,
    tool calls) has ``segments`` instead (L{mockoai.sim.output}), and its
    ``start``/``end`` are unused.

    For streams, ``bounds`` are the byte offsets where its events start and
    end (``bounds[0] == start``, ``bounds[-1] == end``) and ``counts[i]`` is
    how many tokens have been sent once event ``i`` is out (hidden ones
    included).  A segmented choice has ``spans[i]`` instead of bounds:
    ``(segment, start, end)`` of event ``i``.  They are worked out on first
    use, since a non-streaming answer never needs them.
    """

    __slots__ = (
        "_bounds",
        "_counts",
        "_draws",
        "_planner",
        "_spans",
        "end",
        "finish_reason",
        "first",
        "hidden",
        "index",
        "profile",
        "reasoning_tokens",
        "segments",
        "start",
        "tokens",
    )

    _counts: list[int]
    _spans: list[tuple[int, int, int]]

    def __init__(
        self,
        index: int,
        tokens: int,
        finish_reason: str,
        start: int,
        end: int,
        first: int,
        planner: Planner,
        draws: Draws,
        profile: ModelProfile,
        segments: list[Segment] | None = None,
        hidden: int = 0,
    ) -> None:
        self.index = index
        self.profile = profile
        self.tokens = tokens
        self.finish_reason = finish_reason
        self.start = start
        self.end = end
        self.first = first
        self._planner = planner
        self._draws = draws
        self.segments = segments
        self.hidden = hidden
        #: Reasoning tokens, hidden or sent (the segments never change).
        self.reasoning_tokens = (
            hidden
            if segments is None
            else hidden + sum(s.tokens for s in segments if s.kind == output.REASONING)
        )
        # The stream events (_counts, _spans) are set with _bounds, on first use.
        self._bounds: list[int] | None = None

    @property
    def bounds(self) -> list[int]:
        if self._bounds is None:
            self._partition()
        return self._bounds  # type: ignore[return-value]

    @property
    def counts(self) -> list[int]:
        if self._bounds is None:
            self._partition()
        return self._counts

    @property
    def spans(self) -> list[tuple[int, int, int]]:
        if self._bounds is None:
            self._partition()
        return self._spans

    def split(self, spans: list[tuple[int, int, int]], counts: list[int]) -> None:
        """
        Set the stream events of a segmented choice instead of drawing them
        (an answer scripted chunk by chunk: L{mockoai.pipeline.control}).
        """
        self._spans = spans
        self._counts = counts
        self._bounds = []

    def _partition(self) -> None:
        if self.segments is None:
            self._bounds, self._counts = self._planner.partition(self, self._draws)
            self._spans = []
        else:
            profile, draws = self.profile, self._draws
            low, high = profile.stream_tokens

            def size() -> int:
                return low if low == high else draws.below(high - low + 1) + low

            self._spans, self._counts = output.spans(self.segments, size, self.hidden)
            self._bounds = []

    def __repr__(self) -> str:
        return (
            f"ChoicePlan(index={self.index}, tokens={self.tokens}, "
            f"finish_reason={self.finish_reason!r}, start={self.start}, end={self.end})"
        )


class Draws:
    """
    Random numbers drawn from a numpy Generator in blocks and handed out one
    at a time: one numpy call per few thousand draws instead of several per
    request (each costs ~1-3 us of overhead).  A block is kept in an array
    of doubles, filled from numpy's bytes: PyPy turns a block into a list
    (C{tolist}, through cpyext) at ~0.6 us a number, into an array at ~0.02.
    """

    __slots__ = ("_block", "_normals", "_uniforms", "rng")

    def __init__(self, rng: np.random.Generator, block: int = 8192) -> None:
        self.rng = rng
        self._block = block
        self._normals: array[float] = array("d")
        self._uniforms: array[float] = array("d")

    def normal(self) -> float:
        """A standard normal deviate."""
        normals = self._normals
        if not normals:
            normals.frombytes(self.rng.standard_normal(self._block).tobytes())
        return normals.pop()

    def below(self, n: int) -> int:
        """A uniform integer in [0, n)."""
        uniforms = self._uniforms
        if not uniforms:
            uniforms.frombytes(self.rng.random(self._block).tobytes())
        return int(uniforms.pop() * n)

    def uniform(self) -> float:
        """A uniform float in [0, 1)."""
        uniforms = self._uniforms
        if not uniforms:
            uniforms.frombytes(self.rng.random(self._block).tobytes())
        return uniforms.pop()


@attrs.define(slots=True)
class Plan:
    """Everything about an answer except the bytes it is rendered into."""

    wanted: GenerationRequest
    choices: list[ChoicePlan]
    timing: Timing

    @property
    def ttft(self) -> float:
        return self.timing.ttft

    @property
    def tokens(self) -> int:
        """The longest choice: how long the engine works on this request."""
        choices = self.choices
        if len(choices) == 1:
            return choices[0].tokens
        return max((c.tokens for c in choices), default=0)

    @property
    def prompt_tokens(self) -> int:
        return self.wanted.prompt_tokens

    @property
    def completion_tokens(self) -> int:
        choices = self.choices
        return choices[0].tokens if len(choices) == 1 else sum(c.tokens for c in choices)

    @property
    def reasoning_tokens(self) -> int:
        choices = self.choices
        if len(choices) == 1:
            return choices[0].reasoning_tokens
        return sum(c.reasoning_tokens for c in choices)

    def duration(self) -> float:
        """When the last token is out: what a non-streaming answer waits."""
        return self.timing.at(self.tokens - 1)


class Planner:
    """Samples plans over one corpus with the configured distributions."""

    def __init__(self, corpus: Corpus, settings: Settings, seed: int | None = None) -> None:
        self.corpus = corpus
        self.settings = settings
        self._draws = Draws(np.random.default_rng(seed))
        self._profile = settings.profile()
        self._lead = len(ARTICLE_LEAD)
        # Plain ints: indexing numpy arrays from Python costs ~100 ns and
        # returns numpy scalars.  Under PyPy a copy in an array: its JIT reads
        # an array's items in ~2 ns, a memoryview's (a C buffer, through
        # cpyext) in ~150 ns.  CPython reads both alike, and the copy would
        # cost it ~6 MB (its idle RSS must stay under 100 MB).
        offsets = corpus.offsets
        self._offsets: Sequence[int]
        if platform.python_implementation() == "PyPy":
            copy: array[int] = array(offsets.dtype.char)
            copy.frombytes(offsets.tobytes())
            self._offsets = copy
        else:
            self._offsets = memoryview(offsets)  # type: ignore[arg-type]
        self._articles: list[int] = corpus.article_tokens.tolist()

    def limit(self, wanted: GenerationRequest, cap: int | None = None) -> int:
        """
        The most tokens a choice of ``wanted`` may have: ``max_tokens``, or
        the model's output limit ``cap``.  Every token count a request sets
        is bounded by that limit, with the API's 400 (validation checked
        ``min_tokens`` against ``max_tokens``; here against the limit, as
        vLLM checks it against the room left when ``max_tokens`` is unset).
        """
        cap = self._profile.max_output_tokens if cap is None else cap
        if wanted.max_tokens is None:
            if wanted.min_tokens > cap:
                raise APIError(
                    400,
                    f"min_tokens must be less than or equal to max_tokens={cap}, "
                    f"got {wanted.min_tokens}.",
                    param="min_tokens",
                    code="invalid_value",
                )
            return cap
        if wanted.max_tokens > cap:
            name = wanted.max_tokens_param
            raise APIError(
                400,
                f"{name} is too large: {wanted.max_tokens}. This model supports at most "
                f"{cap} completion tokens, whereas you provided {wanted.max_tokens}.",
                param=name,
                code="invalid_value",
            )
        return wanted.max_tokens

    def plan(self, wanted: GenerationRequest, profile: ModelProfile | None = None) -> Plan:
        if profile is None:
            profile = self._profile
        cap = profile.max_output_tokens
        limit = wanted.max_tokens
        if limit is None or limit > cap:
            limit = self.limit(wanted, cap)  # the model's limit, or the API's 400
        if wanted.seed is None:
            draws = self._draws
        else:
            # numpy takes non-negative seeds only; OpenAI's seed is any int64.
            draws = Draws(np.random.default_rng(wanted.seed % 2**64), block=64)
        # Reasoning, tools, documents: a choice of segments (L{output}).
        shaped = wanted.shaped or wanted.reasoning_budget is not None or profile.reasoning != "none"
        if not shaped and wanted.n == 1 and wanted.prompts == 1 and not wanted.stop:
            return self._plain(wanted, profile, limit, draws)
        return self._general(wanted, profile, limit, draws, shaped)

    def _general(
        self,
        wanted: GenerationRequest,
        profile: ModelProfile,
        limit: int,
        draws: Draws,
        shaped: bool,
    ) -> Plan:
        """The plan of any request: choice by choice, of text or (``shaped``) segments."""
        used: set[int] = set()
        choices = []
        for index in range(wanted.n * wanted.prompts):
            if shaped:
                choices.append(self._shaped(index, wanted, profile, limit, draws, used))
            else:
                choices.append(self._text(index, wanted, profile, limit, draws, used))
        longest = max((c.tokens for c in choices), default=0)
        return Plan(
            wanted, choices, profile.latency.timing(draws.rng, wanted.prompt_tokens, longest)
        )

    def _plain(
        self, wanted: GenerationRequest, profile: ModelProfile, limit: int, draws: Draws
    ) -> Plan:
        """
        The plan of one choice of plain text, as L{_general} makes it
        (the same draws give the same plan: tests.test_sampling.PlainTests),
        without what only other requests need (articles other choices used,
        stop strings, the loop over choices): most requests are this one.
        """
        length = self._length(wanted, profile, limit, draws)
        articles = self._articles
        first = articles[draws.below(bisect_right(articles, self.corpus.tokens - length))]
        offsets = self._offsets
        start = offsets[first] + self._lead
        end = offsets[first + length]
        if end < start:
            end = start
        finish = LENGTH if length >= limit else STOP
        choice = ChoicePlan(0, length, finish, start, end, first, self, draws, profile)
        latency = profile.latency
        timing = latency.fixed
        if timing is None:
            timing = latency.timing(draws.rng, wanted.prompt_tokens, length)
        return Plan(wanted, [choice], timing)

    def _length(
        self, wanted: GenerationRequest, profile: ModelProfile, room: int, draws: Draws
    ) -> int:
        """A text answer's tokens: drawn around the model's mean, within ``room``."""
        if wanted.ignore_eos:
            return room
        # Clamped with comparisons: CPython's min() and max() cost ~140 ns a call.
        floor = wanted.min_tokens
        if floor < 1:
            floor = 1
        if floor > room:
            floor = room
        length: int = round(profile.tokens_mean + profile.tokens_stddev * draws.normal())
        if length < floor:
            return floor
        return room if length > room else length

    def _article(self, length: int, draws: Draws, used: set[int]) -> int:
        """The first token of an article with room for ``length`` tokens, not yet used."""
        articles = self._articles
        # Distinct articles per choice, each with room for its answer.
        room = bisect_right(articles, self.corpus.tokens - length)
        first = articles[draws.below(room)]
        for _ in range(8):
            if first not in used:
                break
            first = articles[draws.below(room)]
        used.add(first)
        return first

    def _text(
        self,
        index: int,
        wanted: GenerationRequest,
        profile: ModelProfile,
        limit: int,
        draws: Draws,
        used: set[int],
        hidden: int = 0,
    ) -> ChoicePlan:
        """A choice of corpus text, within ``limit`` tokens (after ``hidden`` reasoning)."""
        length = self._length(wanted, profile, limit, draws)
        finish = LENGTH if length >= limit else STOP
        first = self._article(length, draws, used)
        offsets = self._offsets
        start = offsets[first] + self._lead
        end = max(offsets[first + length], start)
        if wanted.stop:
            cut = self._find_stop(wanted.stop, start, end)
            if cut is not None:
                end = cut
                finish = STOP
                length = 0 if cut == start else bisect_left(offsets, cut) - first
        return ChoicePlan(
            index, hidden + length, finish, start, end, first, self, draws, profile, None, hidden
        )

    def _shaped(
        self,
        index: int,
        wanted: GenerationRequest,
        profile: ModelProfile,
        limit: int,
        draws: Draws,
        used: set[int],
    ) -> ChoicePlan:
        """A choice with reasoning, a document or tool calls (L{mockoai.sim.output})."""
        hidden = 0
        segments: list[Segment] = []
        reasoning = min(self._reasoning(wanted, profile, draws), limit)
        if reasoning:
            visible = wanted.reasoning_visible
            if visible or (visible is None and profile.reasoning == "visible"):
                first = self._article(reasoning, draws, used)
                segments.append(output.corpus_text(self.corpus, first, reasoning, output.REASONING))
            else:
                hidden = reasoning
        room = limit - hidden
        finish = STOP
        body: list[Segment] | None = None
        if wanted.shaped:
            tools = output.calls(wanted, draws, profile.tool_call_rate)
            if tools:
                body = output.call_segments(tools, draws)
                # A call the request forced ends as "stop", as OpenAI's do.
                finish = STOP if wanted.tool_choice == TOOLS_NAMED else TOOL_CALLS
            elif wanted.document is not None or wanted.guided_choice:
                body = [output.document_segment(wanted, draws)]
        if body is None:
            if not segments:
                return self._text(index, wanted, profile, room, draws, used, hidden)
            room -= segments[0].tokens
            length = self._length(wanted, profile, room, draws) if room > 0 else 0
            finish = LENGTH if length >= room else STOP
            first = self._article(length, draws, used)
            body = [output.corpus_text(self.corpus, first, length, output.TEXT)]
        segments, cut = output.cut(segments + body, limit - hidden)
        if cut:
            finish = LENGTH
        tokens = hidden + sum(segment.tokens for segment in segments)
        return ChoicePlan(index, tokens, finish, 0, 0, 0, self, draws, profile, segments, hidden)

    def _reasoning(self, wanted: GenerationRequest, profile: ModelProfile, draws: Draws) -> int:
        """
        Reasoning tokens of one choice: around the model's mean for the effort
        asked (medium by default), within the request's budget; none for a
        model that does not reason unless the request sets a budget
        (Anthropic's extended thinking).
        """
        effort = wanted.reasoning_effort
        budget = wanted.reasoning_budget
        if effort == "none" or (profile.reasoning == "none" and budget is None):
            return 0
        mean = dict(profile.reasoning_tokens)[effort or "medium"]
        if budget is not None:
            mean = min(mean, budget)
        tokens = max(round(mean + mean / 4 * draws.normal()), 0)
        return tokens if budget is None else min(tokens, budget)

    def partition(self, choice: ChoicePlan, draws: Draws) -> tuple[list[int], list[int]]:
        """Split a choice into stream events of --stream-tokens tokens each."""
        hidden = choice.hidden
        length = choice.tokens - hidden
        if not length:
            return [choice.start], []
        low, high = choice.profile.stream_tokens
        if low == high:
            counts = list(range(low, length, low))
        else:
            counts = []
            sent = draws.below(high - low + 1) + low
            while sent < length:
                counts.append(sent)
                sent += draws.below(high - low + 1) + low
        offsets = self._offsets
        first = choice.first
        bounds = [choice.start, *[offsets[first + c] for c in counts], choice.end]
        counts.append(length)
        if hidden:
            counts = [c + hidden for c in counts]
        return bounds, counts

    def _find_stop(self, stops: tuple[str, ...], start: int, end: int) -> int | None:
        """The earliest stop match in [start, end), in escaped bytes."""
        data = self.corpus.data
        best = None
        for stop in stops:
            needle = escape(stop)
            limit = end if best is None else min(end, best + len(needle))
            pos = data.find(needle, start, limit)
            # A match that begins inside an escape sequence (the "n" of "\n")
            # is not a match in the decoded text.
            while pos > start and data[pos - 1] == _BACKSLASH:
                pos = data.find(needle, pos + 1, limit)
            if pos != -1 and (best is None or pos < best):
                best = pos
        return best


def escape(text: str) -> bytes:
    """JSON-string escaping, as the corpus stores text."""
    import ujson

    return ujson.dumps(text, ensure_ascii=False, escape_forward_slashes=False)[1:-1].encode()
