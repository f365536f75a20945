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

from bisect import bisect_left, bisect_right

import attrs
import numpy as np

from mockoai.apierror import APIError
from mockoai.ops.config import ModelProfile, Settings
from mockoai.sim.corpus import ARTICLE_LEAD, Corpus
from mockoai.sim.latency import Timing
from mockoai.sim.request import GenerationRequest

STOP = "stop"
LENGTH = "length"
_BACKSLASH = ord("\\")


class ChoicePlan:
    """
    One choice: ``tokens`` tokens of corpus bytes ``[start, end)``.

    For streams, ``bounds`` are the byte offsets where its events start and
    end (``bounds[0] == start``, ``bounds[-1] == end``) and ``counts[i]`` is
    how many tokens have been sent once event ``i`` is out.  They are worked
    out on first use, since a non-streaming answer never needs them.
    """

    __slots__ = (
        "_bounds",
        "_counts",
        "_draws",
        "_planner",
        "end",
        "finish_reason",
        "first",
        "index",
        "profile",
        "start",
        "tokens",
    )

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
        self._bounds: list[int] | None = None
        self._counts: list[int] = []

    @property
    def bounds(self) -> list[int]:
        if self._bounds is None:
            self._bounds, self._counts = self._planner.partition(self, self._draws)
        return self._bounds

    @property
    def counts(self) -> list[int]:
        if self._bounds is None:
            self._bounds, self._counts = self._planner.partition(self, self._draws)
        return self._counts

    def __repr__(self) -> str:
        return (
            f"ChoicePlan(index={self.index}, tokens={self.tokens}, "
            f"finish_reason={self.finish_reason!r}, start={self.start}, end={self.end})"
        )


class Draws:
    """
    Random numbers drawn from a numpy Generator in blocks and handed out one
    at a time: one numpy call per few thousand draws instead of several per
    request (each costs ~1-3 us of overhead).
    """

    __slots__ = ("_block", "_normals", "_uniforms", "rng")

    def __init__(self, rng: np.random.Generator, block: int = 8192) -> None:
        self.rng = rng
        self._block = block
        self._normals: list[float] = []
        self._uniforms: list[float] = []

    def normal(self) -> float:
        """A standard normal deviate."""
        if not self._normals:
            self._normals = self.rng.standard_normal(self._block).tolist()
        return self._normals.pop()

    def below(self, n: int) -> int:
        """A uniform integer in [0, n)."""
        if not self._uniforms:
            self._uniforms = self.rng.random(self._block).tolist()
        return int(self._uniforms.pop() * n)


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
        # Plain-int views: indexing numpy arrays from Python costs ~100 ns
        # and returns numpy scalars.
        self._offsets = memoryview(corpus.offsets)  # type: ignore[arg-type]
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
        profile = profile or self._profile
        limit = self.limit(wanted, profile.max_output_tokens)
        if wanted.seed is None:
            draws = self._draws
        else:
            # numpy takes non-negative seeds only; OpenAI's seed is any int64.
            draws = Draws(np.random.default_rng(wanted.seed % 2**64), block=64)
        mean, stddev = profile.tokens_mean, profile.tokens_stddev
        floor = min(max(wanted.min_tokens, 1), limit)
        offsets = self._offsets
        articles = self._articles
        total = self.corpus.tokens
        used: set[int] = set()

        choices = []
        for index in range(wanted.n * wanted.prompts):
            if wanted.ignore_eos:
                length = limit
            else:
                length = min(max(round(mean + stddev * draws.normal()), floor), limit)
            finish = LENGTH if length >= limit else STOP
            # Distinct articles per choice, each with room for its answer.
            room = bisect_right(articles, total - length)
            first = articles[draws.below(room)]
            for _ in range(8):
                if first not in used:
                    break
                first = articles[draws.below(room)]
            used.add(first)
            start = offsets[first] + self._lead
            end = offsets[first + length]
            if wanted.stop:
                cut = self._find_stop(wanted.stop, start, end)
                if cut is not None:
                    end = cut
                    finish = STOP
                    length = 0 if cut == start else bisect_left(offsets, cut) - first
            choices.append(
                ChoicePlan(index, length, finish, start, end, first, self, draws, profile)
            )
        model = profile.latency
        rng = draws.rng
        ttft = model.first_token(rng, wanted.prompt_tokens)
        longest = max((c.tokens for c in choices), default=0)
        return Plan(wanted, choices, model.times(rng, ttft, longest))

    def partition(self, choice: ChoicePlan, draws: Draws) -> tuple[list[int], list[int]]:
        """Split a choice into stream events of --stream-tokens tokens each."""
        length = choice.tokens
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
