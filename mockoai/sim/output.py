# -*- test-case-name: tests.test_tools -*-
"""
What a choice says when it is more than corpus text: reasoning, a JSON
document, or calls to the request's tools.

Such a choice is a list of L{Segment}s, each a run of JSON-string-escaped
bytes with the offset of every token in it, so it is timed, counted, cut at
``max_tokens`` and split into stream events exactly as corpus text is.
Arguments and documents come from L{mockoai.sim.schema}, drawn from the
request's random numbers, so a seeded request gets the same calls.  Which
wire shape a segment takes (``tool_calls``, ``tool_use``, ``reasoning``,
``thinking``) is the dialect's business; nothing here knows one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import ujson

from mockoai.sim import schema
from mockoai.sim.corpus import ARTICLE_LEAD, VOCABULARY, Corpus
from mockoai.sim.request import TOOLS_NAMED, TOOLS_NONE, TOOLS_REQUIRED, GenerationRequest, Tool
from mockoai.sim.tokens import TOKEN


class Draws(schema.Draws, Protocol):
    """The request's random numbers (L{mockoai.sim.sampling.Draws})."""

    def uniform(self) -> float: ...


REASONING = "reasoning"
TEXT = "text"
CALL = "call"

#: The most calls one answer makes at once (when parallel calls are allowed).
MAX_PARALLEL_CALLS = 3


class Segment:
    """
    Tokens ``[0, tokens)`` of one part of a choice: token ``i`` is
    ``view[offsets[i]:offsets[i + 1]]``.  A CALL segment holds one call's
    arguments, of tool ``name``, the choice's ``call``-th call.
    """

    __slots__ = ("call", "kind", "name", "offsets", "view")

    def __init__(
        self,
        kind: str,
        view: memoryview,
        offsets: Sequence[int],
        name: str | None = None,
        call: int = 0,
    ) -> None:
        self.kind = kind
        self.view = view
        self.offsets = offsets
        self.name = name
        self.call = call

    @property
    def tokens(self) -> int:
        return len(self.offsets) - 1

    @property
    def start(self) -> int:
        return self.offsets[0]

    @property
    def end(self) -> int:
        return self.offsets[-1]

    def text(self) -> bytes:
        """The segment's escaped bytes (for plain bodies and tests)."""
        return bytes(self.view[self.offsets[0] : self.offsets[-1]])

    def cut(self, tokens: int) -> Segment:
        """The segment's first ``tokens`` tokens (an answer cut at ``max_tokens``)."""
        return Segment(self.kind, self.view, self.offsets[: tokens + 1], self.name, self.call)

    def __repr__(self) -> str:
        return f"Segment({self.kind!r}, tokens={self.tokens}, name={self.name!r})"


def tokenized(text: str, kind: str, name: str | None = None, call: int = 0) -> Segment:
    """
    ``text`` as a segment: split into tokens as L{mockoai.sim.tokens} counts
    them, each JSON-string-escaped on its own (escaping is per character, so
    the pieces join into the escaped whole).
    """
    pieces = TOKEN.findall(text)
    joined = "".join(pieces)
    if len(joined) != len(text):
        # Trailing whitespace belongs to no token: it rides on the last one.
        if pieces:
            pieces[-1] += text[len(joined) :]
        else:
            pieces = [text]
    offsets = [0]
    escaped = []
    total = 0
    for piece in pieces:
        raw = _escape(piece)
        escaped.append(raw)
        total += len(raw)
        offsets.append(total)
    return Segment(kind, memoryview(b"".join(escaped)), offsets, name, call)


def _escape(text: str) -> bytes:
    return ujson.dumps(text, ensure_ascii=False, escape_forward_slashes=False)[1:-1].encode()


def corpus_text(corpus: Corpus, first: int, tokens: int, kind: str) -> Segment:
    """``tokens`` tokens of corpus text from the article starting at token ``first``."""
    offsets = corpus.offsets[first : first + tokens + 1].tolist()
    if offsets:
        offsets[0] += len(ARTICLE_LEAD)
    return Segment(kind, corpus.view, offsets)


def document(value: object) -> str:
    """A generated value as the compact JSON a model writes."""
    return ujson.dumps(value, ensure_ascii=False, escape_forward_slashes=False)


def calls(wanted: GenerationRequest, draws: Draws, rate: float) -> list[Tool]:
    """
    The tools this choice calls, in order (none: it answers in text).
    ``required`` or a named tool always calls; ``none`` never; ``auto``
    calls with probability ``rate``, but never right after a tool result.
    """
    tools = wanted.tools
    mode = wanted.tool_choice
    if not tools or mode == TOOLS_NONE:
        return []
    if mode == TOOLS_NAMED:
        return [tool for tool in tools if tool.name == wanted.tool_name][:1]
    if mode != TOOLS_REQUIRED and (
        wanted.after_tool_result or (rate < 1.0 and draws.uniform() >= rate)
    ):
        return []
    if not wanted.parallel_tool_calls or len(tools) == 1:
        return [tools[draws.below(len(tools))]]
    count = 1 + draws.below(min(len(tools), MAX_PARALLEL_CALLS))
    pool = list(tools)
    chosen = []
    for _ in range(count):
        chosen.append(pool.pop(draws.below(len(pool))))
    return chosen


#: Schemas compiled so far, by their canonical JSON (a client sends the same
#: tools with every request: ~40 us to compile one, ~2 us to look it up).
_COMPILED: dict[str, schema.CompiledSchema] = {}
_COMPILED_MAX = 1024


def compiled(document: object) -> schema.CompiledSchema:
    """
    ``document`` compiled for drawing (L{schema.Unsatisfiable} if nothing
    validates): what a dialect keeps in L{Tool.schema} or
    L{GenerationRequest.document}.
    """
    key = ujson.dumps(document, sort_keys=True)
    found = _COMPILED.get(key)
    if found is None:
        found = schema.CompiledSchema(document)
        if len(_COMPILED) >= _COMPILED_MAX:
            _COMPILED.clear()
        _COMPILED[key] = found
    return found


def _draw(document: object, draws: Draws) -> object:
    if isinstance(document, schema.CompiledSchema):
        return document.generate(draws, VOCABULARY)
    return schema.generate(document, draws, VOCABULARY)


def call_segments(tools: list[Tool], draws: Draws) -> list[Segment]:
    """One segment per call: its arguments, generated to its tool's schema."""
    return [
        tokenized(document(_draw(tool.schema, draws)), CALL, tool.name, i)
        for i, tool in enumerate(tools)
    ]


def document_segment(wanted: GenerationRequest, draws: Draws) -> Segment:
    """The structured answer: one of the guided choices, or a document to the schema."""
    if wanted.guided_choice:
        options = wanted.guided_choice
        return tokenized(options[draws.below(len(options))], TEXT)
    return tokenized(document(_draw(wanted.document, draws)), TEXT)


def cut(segments: list[Segment], limit: int) -> tuple[list[Segment], bool]:
    """The segments within ``limit`` tokens, and whether any were cut."""
    kept: list[Segment] = []
    room = limit
    for segment in segments:
        if segment.tokens <= room:
            kept.append(segment)
            room -= segment.tokens
            continue
        if room > 0:
            kept.append(segment.cut(room))
        return kept, True
    return kept, False


def spans(
    segments: list[Segment], size: Callable[[], int], hidden: int
) -> tuple[list[tuple[int, int, int]], list[int]]:
    """
    Stream events over ``segments``: event ``e`` is ``(segment, start, end)``
    bytes of one segment (an event never straddles two), ``counts[e]`` the
    tokens out once it is sent (``hidden`` reasoning tokens come first).
    ``size()`` draws how many tokens the next event carries.
    """
    events: list[tuple[int, int, int]] = []
    counts: list[int] = []
    sent = hidden
    for index, segment in enumerate(segments):
        offsets = segment.offsets
        total = segment.tokens
        at = 0
        while at < total:
            end = min(at + size(), total)
            events.append((index, offsets[at], offsets[end]))
            sent += end - at
            counts.append(sent)
            at = end
    return events, counts
