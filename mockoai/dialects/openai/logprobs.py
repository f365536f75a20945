# -*- test-case-name: tests.test_logprobs -*-
"""
OpenAI's ``logprobs`` objects, over the values of L{mockoai.sim.logprobs}.

Chat: ``{"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}],
"refusal": null}``, the sampled token first among its ``top_logprobs``.  A
stream chunk carries the entries of its own tokens; the role chunk, and the
chunks of tool calls and reasoning (which have no content tokens), carry
``{"content": [], "refusal": null}``, and the finish chunk ``null``, as
OpenAI's streams do; a whole answer without content (tool calls) has
``"content": []``.

Completions: ``{"tokens", "token_logprobs", "top_logprobs", "text_offset"}``
as parallel arrays; ``top_logprobs`` maps each alternative to its logprob
(``logprobs: 0`` still names the sampled token, as the API always returns
it).  ``echo`` gives the prompt's tokens entries too, the first one's logprob
and alternatives ``null`` (nothing comes before it), as OpenAI's legacy
models did and vLLM does; a prompt's values depend on the prompt alone.
``text_offset`` counts characters from the start of the prompt, echoed or
not, as OpenAI's do.

Nothing here runs for a request without logprobs: the renderer makes one of
these only when the request asks.  Each token's entry is rendered once,
from bytes cached per distinct token (the corpus has a few hundred), and a
stream chunk joins the entries of its tokens.
"""

from __future__ import annotations

import zlib
from bisect import bisect_left
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from mockoai.sim import logprobs as values
from mockoai.sim.corpus import Corpus
from mockoai.sim.output import TEXT, Segment, tokenized
from mockoai.sim.sampling import ChoicePlan, Plan

#: A chat chunk or answer with no content tokens.
CHAT_EMPTY = b'{"content":[],"refusal":null}'
#: A completions chunk with no tokens (the finish chunk).
TEXT_EMPTY = b'{"tokens":[],"token_logprobs":[],"top_logprobs":[],"text_offset":[]}'
_NULL = b"null"

#: Per distinct escaped token: chat's ``{"token":..,"logprob":`` and
#: ``,"bytes":[..]``, completions' ``"token"``, its length in characters, and
#: its L{values.alternative_id}.
_Rendered = tuple[bytes, bytes, bytes, int, int]
_cache: dict[bytes, _Rendered] = {}
#: Documents and tool arguments bring tokens of their own: bound the cache.
_CACHE_LIMIT = 1 << 16


def _render(token: bytes) -> _Rendered:
    text = values.decoded(token)
    listed = b"[" + b",".join(b"%d" % c for c in text.encode("utf-8")) + b"]"
    rendered = (
        b'{"token":"' + token + b'","logprob":',
        b',"bytes":' + listed,
        b'"' + token + b'"',
        len(text),
        values.alternative_id(token),
    )
    if len(_cache) >= _CACHE_LIMIT:
        _cache.clear()
    _cache[token] = rendered
    return rendered


def _objects(items: Sequence[bytes]) -> npt.NDArray[np.object_]:
    """``items`` as a numpy object array, to gather from with index arrays (in C)."""
    table = np.empty(len(items), dtype=object)
    table[:] = items
    return table


_ALTERNATIVES = [_render(token) for token in values.ALTERNATIVES]
#: Chat's ``,{"token":..,"logprob":`` and ``,"bytes":[..]}`` of each alternative.
_ALT_HEADS = _objects([b"," + r[0] for r in _ALTERNATIVES])
_ALT_TAILS = _objects([r[1] + b"}" for r in _ALTERNATIVES])
#: Completions' ``,"token"`` of each alternative.
_ALT_KEYS = _objects([b"," + r[2] for r in _ALTERNATIVES])
#: Every logprob level as a JSON number, formatted once (L{values.LEVELS}).
_NUMBERS = _objects([repr(v).encode() for v in values.LEVELS.tolist()])


def _grid(n: int, m: int, lead: int, trail: int) -> npt.NDArray[np.object_]:
    """Room for ``n`` entries' pieces: ``lead``, three per alternative, ``trail``."""
    return np.empty((n, lead + 3 * m + trail), dtype=object)


def chat_entries(tokens: Sequence[bytes], top: int, rng: np.random.Generator) -> list[bytes]:
    """
    One ``ChatCompletionTokenLogprob`` per token, ``top`` entries in its
    ``top_logprobs``: laid out as a table of pieces (a row per token) filled
    a column at a time, then joined a row at a time.
    """
    n = len(tokens)
    if not n:
        return []
    m = max(top - 1, 0)
    get = _cache.get
    heads, tails, _, _, sampled = zip(*[get(token) or _render(token) for token in tokens])
    drawn = values.draw(sampled, m, rng)
    numbers = _NUMBERS[drawn.logprob]
    if not top:
        grid = _grid(n, 0, 3, 1)
        grid[:, 3] = b',"top_logprobs":[]}'
    else:
        grid = _grid(n, m, 8, 1)
        grid[:, 3] = b',"top_logprobs":['
        grid[:, 4] = heads
        grid[:, 5] = numbers
        grid[:, 6] = tails
        grid[:, 7] = b"}"
        if m:
            grid[:, 8:-1:3] = _ALT_HEADS[drawn.alternative]
            grid[:, 9:-1:3] = _NUMBERS[drawn.other]
            grid[:, 10:-1:3] = _ALT_TAILS[drawn.alternative]
        grid[:, -1] = b"]}"
    grid[:, 0] = heads
    grid[:, 1] = numbers
    grid[:, 2] = tails
    return list(map(b"".join, grid.tolist()))


def chat_value(entries: Sequence[bytes]) -> bytes:
    """A choice's (or a chunk's) ``logprobs``."""
    return b'{"content":[' + b",".join(entries) + b'],"refusal":null}'


def plain_tokens(corpus: Corpus, choice: ChoicePlan) -> list[bytes]:
    """The tokens of a choice of corpus text, as its partition cuts them."""
    length = choice.tokens - choice.hidden
    start, end = choice.start, choice.end
    if length <= 0 or end <= start:
        return []
    first = choice.first
    bounds = [start, *corpus.offsets[first + 1 : first + length].tolist(), end]
    return values.tokens(corpus.view, bounds)


def segment_tokens(segment: Segment) -> list[bytes]:
    return values.tokens(segment.view, segment.offsets) if segment.tokens else []


class ChatLogprobs:
    """The ``logprobs`` of one chat answer's choices and chunks, rendered once per choice."""

    def __init__(self, corpus: Corpus, plan: Plan) -> None:
        self.corpus = corpus
        wanted = plan.wanted
        self.top = wanted.logprobs or 0
        self.seed = wanted.seed
        self._entries: dict[int, list[bytes]] = {}

    def entries(self, choice: ChoicePlan) -> list[bytes]:
        """Every content token's entry (a segmented choice's text segment's only)."""
        entries = self._entries.get(choice.index)
        if entries is None:
            segments = choice.segments
            if segments is None:
                tokens = plain_tokens(self.corpus, choice)
            else:
                tokens = []
                for segment in segments:
                    if segment.kind == TEXT:
                        tokens += segment_tokens(segment)
            rng = values.generator(self.seed, choice.index)
            entries = self._entries[choice.index] = chat_entries(tokens, self.top, rng)
        return entries

    def choice(self, choice: ChoicePlan) -> bytes:
        """A whole choice's ``logprobs``."""
        return chat_value(self.entries(choice))

    def event(self, choice: ChoicePlan, event: int) -> bytes:
        """The ``logprobs`` of stream event ``event`` of a choice of corpus text."""
        counts = choice.counts
        hidden = choice.hidden
        before = counts[event - 1] if event else hidden
        return chat_value(self.entries(choice)[before - hidden : counts[event] - hidden])

    def span(self, choice: ChoicePlan, event: int) -> bytes:
        """The ``logprobs`` of stream event ``event`` of a segmented choice."""
        index, start, _ = choice.spans[event]
        segments = choice.segments or []
        segment = segments[index]
        if segment.kind != TEXT:
            return CHAT_EMPTY
        counts = choice.counts
        sent = counts[event] - (counts[event - 1] if event else choice.hidden)
        # Text tokens before this segment's (there is one text segment; stay general).
        at = sum(s.tokens for s in segments[:index] if s.kind == TEXT)
        at += bisect_left(segment.offsets, start)
        return chat_value(self.entries(choice)[at : at + sent])


class TextColumns:
    """One completions choice's four arrays, each item rendered."""

    __slots__ = ("logprobs", "offsets", "tokens", "tops")

    def __init__(self) -> None:
        self.tokens: list[bytes] = []
        self.logprobs: list[bytes] = []
        self.tops: list[bytes] = []
        self.offsets: list[bytes] = []

    def add(
        self,
        tokens: Sequence[bytes],
        top: int,
        rng: np.random.Generator,
        offset: int,
        leading_null: bool = False,
    ) -> int:
        """Append ``tokens``, their text from character ``offset``; the offset after them."""
        if not tokens:
            return offset
        n = len(tokens)
        m = max(top - 1, 0)
        get = _cache.get
        _, _, keys, lengths, sampled = zip(*[get(token) or _render(token) for token in tokens])
        drawn = values.draw(sampled, m, rng)
        numbers = _NUMBERS[drawn.logprob]
        # ``{"token":lp,"alternative":lp,...}``: a row of pieces per token.
        grid = _grid(n, m, 4, 1)
        grid[:, 0] = b"{"
        grid[:, 1] = keys
        grid[:, 2] = b":"
        grid[:, 3] = numbers
        if m:
            grid[:, 4:-1:3] = _ALT_KEYS[drawn.alternative]
            grid[:, 5:-1:3] = b":"
            grid[:, 6:-1:3] = _NUMBERS[drawn.other]
        grid[:, -1] = b"}"
        tops = list(map(b"".join, grid.tolist()))
        logprobs: list[bytes] = numbers.tolist()
        if leading_null:
            logprobs[0] = _NULL
            tops[0] = _NULL
        chars = np.array(lengths, dtype=np.int64)
        starts = np.cumsum(chars) - chars + offset
        offsets = [b"%d" % o for o in starts.tolist()]
        offset += int(chars.sum())
        self.tokens += keys
        self.logprobs += logprobs
        self.tops += tops
        self.offsets += offsets
        return offset

    def value(self, start: int = 0, end: int | None = None) -> bytes:
        """The ``logprobs`` of tokens ``[start, end)``."""
        return b"".join(
            (
                b'{"tokens":[',
                b",".join(self.tokens[start:end]),
                b'],"token_logprobs":[',
                b",".join(self.logprobs[start:end]),
                b'],"top_logprobs":[',
                b",".join(self.tops[start:end]),
                b'],"text_offset":[',
                b",".join(self.offsets[start:end]),
                b"]}",
            )
        )


class TextLogprobs:
    """The ``logprobs`` of one completions answer's choices and chunks."""

    def __init__(self, corpus: Corpus, plan: Plan) -> None:
        self.corpus = corpus
        wanted = plan.wanted
        self.top = wanted.logprobs or 0
        self.seed = wanted.seed
        self.echo = wanted.echo
        self.prompt_chars = wanted.prompt_chars
        self.n = wanted.n
        self._columns: dict[int, tuple[TextColumns, int]] = {}

    def columns(self, choice: ChoicePlan) -> tuple[TextColumns, int]:
        """A choice's columns, and how many of them are the echoed prompt's."""
        found = self._columns.get(choice.index)
        if found is not None:
            return found
        columns = TextColumns()
        # Offsets count from the prompt's start, echoed or not, as OpenAI's do.
        chars = self.prompt_chars
        offset = chars[choice.index // self.n] if chars and not self.echo else 0
        if self.echo:
            prompt = self.echo[choice.index // self.n]
            if prompt:
                # A prompt's logprobs depend on the prompt alone, as a model's do.
                rng = np.random.default_rng(zlib.crc32(prompt.encode("utf-8")))
                tokens = segment_tokens(tokenized(prompt, TEXT))
                offset = columns.add(tokens, self.top, rng, 0, leading_null=True)
        echoed = len(columns.tokens)
        segments = choice.segments
        if segments is None:
            tokens = plain_tokens(self.corpus, choice)
        else:
            tokens = []
            for segment in segments:
                tokens += segment_tokens(segment)
        columns.add(tokens, self.top, values.generator(self.seed, choice.index), offset)
        found = self._columns[choice.index] = (columns, echoed)
        return found

    def choice(self, choice: ChoicePlan) -> bytes:
        """A whole choice's ``logprobs``, echoed prompt included."""
        return self.columns(choice)[0].value()

    def echoed(self, choice: ChoicePlan) -> bytes:
        """The ``logprobs`` of the echoed prompt (a stream's first chunk)."""
        columns, echoed = self.columns(choice)
        return columns.value(0, echoed)

    def event(self, choice: ChoicePlan, event: int) -> bytes:
        """The ``logprobs`` of stream event ``event``."""
        columns, echoed = self.columns(choice)
        counts = choice.counts
        hidden = choice.hidden
        before = counts[event - 1] if event else hidden
        # Hidden reasoning is counted, never sent: the columns start after it.
        return columns.value(echoed + before - hidden, echoed + counts[event] - hidden)
