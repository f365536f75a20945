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

import attrs
import numpy as np

from mockoai import errors
from mockoai.config import Settings
from mockoai.corpus import ARTICLE_LEAD, Corpus
from mockoai.validate import GenerationRequest

STOP = "stop"
LENGTH = "length"
_BACKSLASH = ord("\\")


@attrs.define(slots=True)
class ChoicePlan:
    """
    One choice: ``bounds`` are the byte offsets in the corpus where its
    stream events start and end (``bounds[0]`` is the content's first byte,
    ``bounds[-1]`` one past its last); ``counts[i]`` is how many tokens have
    been sent once event ``i`` is out.
    """

    index: int
    tokens: int
    finish_reason: str
    bounds: list[int]
    counts: list[int]

    @property
    def start(self) -> int:
        return self.bounds[0]

    @property
    def end(self) -> int:
        return self.bounds[-1]


@attrs.define(slots=True)
class Plan:
    """Everything about an answer except the bytes it is rendered into."""

    request: GenerationRequest
    choices: list[ChoicePlan]
    ttft: float
    itl: float

    @property
    def prompt_tokens(self) -> int:
        return self.request.prompt_tokens

    @property
    def completion_tokens(self) -> int:
        return sum(c.tokens for c in self.choices)

    def duration(self) -> float:
        """When the last token is out: what a non-streaming answer waits."""
        longest = max((c.tokens for c in self.choices), default=0)
        return self.ttft + max(longest - 1, 0) * self.itl


class Planner:
    """Samples plans over one corpus with the configured distributions."""

    def __init__(self, corpus: Corpus, settings: Settings, seed: int | None = None) -> None:
        self.corpus = corpus
        self.settings = settings
        self._rng = np.random.default_rng(seed)
        self._lead = len(ARTICLE_LEAD)

    def limit(self, request: GenerationRequest) -> int:
        cap = self.settings.max_output_tokens
        if request.max_tokens is None:
            return cap
        if request.max_tokens > cap:
            name = request.max_tokens_param
            raise errors.invalid(
                name,
                f"{name} is too large: {request.max_tokens}. This model supports at most "
                f"{cap} completion tokens, whereas you provided {request.max_tokens}.",
                code="invalid_value",
            )
        return request.max_tokens

    def plan(self, request: GenerationRequest) -> Plan:
        limit = self.limit(request)
        rng = self._rng if request.seed is None else np.random.default_rng(request.seed)
        count = request.n * request.prompts
        settings = self.settings

        if request.ignore_eos:
            lengths = np.full(count, limit, dtype=np.int64)
        else:
            drawn = rng.normal(settings.tokens_mean, settings.tokens_stddev, size=count)
            lengths = np.clip(np.rint(drawn), 1, limit).astype(np.int64)
            if request.min_tokens:
                lengths = np.maximum(lengths, min(request.min_tokens, limit))
        starts = self._article_starts(rng, lengths)
        corpus = self.corpus
        offsets = corpus.offsets
        low, high = settings.stream_tokens

        choices = []
        for index in range(count):
            first = int(starts[index])
            length = int(lengths[index])
            finish = LENGTH if length >= limit else STOP
            start = int(offsets[first]) + self._lead
            end = int(offsets[first + length])
            if request.stop:
                cut = self._find_stop(request.stop, start, end)
                if cut is not None:
                    end = cut
                    finish = STOP
                    length = 0 if cut == start else int(np.searchsorted(offsets, cut)) - first
            if low == high:
                sizes = np.full(-(-length // low), low, dtype=np.int64)
            else:
                sizes = rng.integers(low, high + 1, size=-(-length // low))
            counts = np.minimum(np.cumsum(sizes), length)
            counts = counts[: int(np.searchsorted(counts, length)) + 1]
            bounds = [start, *offsets[first + counts[:-1]].tolist(), end] if length else [start]
            choices.append(ChoicePlan(index, length, finish, bounds, counts.tolist()))
        return Plan(request, choices, settings.response_delay, settings.itl)

    def _article_starts(self, rng: np.random.Generator, lengths: np.ndarray) -> np.ndarray:
        """Distinct articles per choice, each with room for its answer."""
        articles = self.corpus.article_tokens
        count = len(lengths)
        if count == 1:
            picks = rng.integers(0, len(articles), size=1)
        else:
            picks = rng.choice(len(articles), size=count, replace=False)
        # Articles late in the buffer may not have room for a long answer:
        # fold those picks onto the articles that do.
        room = np.searchsorted(articles, self.corpus.tokens - lengths, side="right")
        return articles[picks % room]

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
