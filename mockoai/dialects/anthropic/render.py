# -*- test-case-name: tests.test_anthropic -*-
"""
Anthropic's Message and its event stream, from templates built once per
model, over the same L{Plan} every dialect renders.

A Message's content is a list of blocks; a stream opens it with
``message_start``, then each block is ``content_block_start``, its
``content_block_delta`` events and ``content_block_stop``; ``message_delta``
carries the stop reason and the output usage, and ``message_stop`` ends it.
Every event has its ``event:`` line (the SDKs skip ``data:`` without one),
and a ``ping`` follows the first block's start, as Anthropic's do.  Field
order is Anthropic's (``model`` first, as its servers send it now).
"""

from __future__ import annotations

import base64
import hashlib
from typing import TYPE_CHECKING

import ujson

from mockoai.dialects.anthropic.errors import envelope
from mockoai.pipeline.media import dumps
from mockoai.sim.output import CALL, REASONING, Segment
from mockoai.sim.sampling import LENGTH, STOP, escape

if TYPE_CHECKING:
    from mockoai.apierror import APIError
    from mockoai.pipeline.stream import Pieces
    from mockoai.sim.corpus import Corpus
    from mockoai.sim.sampling import ChoicePlan, Plan

END_TURN = b"end_turn"
MAX_TOKENS = b"max_tokens"
STOP_SEQUENCE = b"stop_sequence"
TOOL_USE = b"tool_use"

_CACHE = b'"cache_creation_input_tokens":0,"cache_read_input_tokens":0,'
_CACHE_CREATION = b'"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},'


def usage(input_tokens: int, output_tokens: int) -> bytes:
    """A Message's ``usage``: no prompt caching here, so every cache count is 0."""
    return (
        b'{"input_tokens":%d,' % input_tokens
        + _CACHE
        + _CACHE_CREATION
        + b'"output_tokens":%d,"service_tier":"standard"}' % output_tokens
    )


def delta_usage(input_tokens: int, output_tokens: int) -> bytes:
    """``message_delta``'s usage: cumulative, the input side repeated."""
    return b'{"input_tokens":%d,' % input_tokens + _CACHE + b'"output_tokens":%d}' % output_tokens


#: Every event but the deltas, framed.
MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
# Anthropic's servers write this one with a space, unlike every other event.
PING = b'event: ping\ndata: {"type": "ping"}\n\n'
_TEXT_START = (
    b'event: content_block_start\ndata: {"type":"content_block_start","index":%d,'
    b'"content_block":{"type":"text","text":""}}\n\n'
)
_BLOCK_STOP = b'event: content_block_stop\ndata: {"type":"content_block_stop","index":%d}\n\n'
_TEXT_DELTA = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
    b'"delta":{"type":"text_delta","text":"'
)
_DELTA_END = b'"}}\n\n'
_THINKING_START = (
    b'event: content_block_start\ndata: {"type":"content_block_start","index":%d,'
    b'"content_block":{"type":"thinking","thinking":"","signature":""}}\n\n'
)
_THINKING_DELTA = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
    b'"delta":{"type":"thinking_delta","thinking":"'
)
_SIGNATURE_DELTA = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
    b'"delta":{"type":"signature_delta","signature":"%s"}}\n\n'
)
_TOOL_START = (
    b'event: content_block_start\ndata: {"type":"content_block_start","index":%d,'
    b'"content_block":{"type":"tool_use","id":"%s","name":%s,"input":{}}}\n\n'
)
_JSON_DELTA = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
    b'"delta":{"type":"input_json_delta","partial_json":"'
)


def tool_id(mid: str, call: int) -> bytes:
    """``toolu_01`` and 22 more characters: the message's own, and the call's number."""
    return b"toolu_01%s%02d" % (mid[6:26].encode(), call)


def signature(mid: str) -> bytes:
    """
    An opaque thinking signature, the same for the same message: clients
    keep it and send it back with the thinking block, and nothing checks it.
    """
    return base64.b64encode(hashlib.sha256(mid.encode()).digest() * 6)


def tool_input(segment: Segment) -> bytes:
    """A call's arguments as the JSON object ``input`` is (``{}`` for one cut short)."""
    raw = bytes(segment.view[segment.start : segment.end])
    try:
        text = ujson.loads(b'"' + raw + b'"')
        value = ujson.loads(text)
    except ValueError:
        return b"{}"
    return dumps(value) if isinstance(value, dict) else b"{}"


class MessagesRenderer:
    """The templates of one model."""

    def __init__(self, model: str, corpus: Corpus) -> None:
        self.model = model
        self.corpus = corpus
        model_json = dumps(model)
        self.body_head = b'{"model":' + model_json + b',"id":"'
        self.start_head = (
            b'event: message_start\ndata: {"type":"message_start","message":{"model":'
            + model_json
            + b',"id":"'
        )

    def stop(self, plan: Plan, choice: ChoicePlan) -> tuple[bytes, bytes]:
        """
        The stop reason and ``stop_sequence`` (JSON) of ``choice``: the stop
        sequence the text was cut before, when it was.
        """
        finish = choice.finish_reason
        if finish == LENGTH:
            return MAX_TOKENS, b"null"
        segments = choice.segments
        if finish != STOP or (segments and any(s.kind == CALL for s in segments)):
            return TOOL_USE, b"null"
        stops = plan.wanted.stop
        if stops and segments is None:
            data, end = self.corpus.data, choice.end
            for stop in stops:
                if data.startswith(escape(stop), end):
                    return STOP_SEQUENCE, dumps(stop)
        return END_TURN, b"null"

    def body(self, plan: Plan, mid: str) -> bytes:
        """The whole Message."""
        choice = plan.choices[0]
        reason, sequence = self.stop(plan, choice)
        pieces: Pieces = [
            self.body_head,
            mid.encode(),
            b'","type":"message","role":"assistant","content":[',
        ]
        segments = choice.segments
        if segments is not None:
            pieces += _blocks(segments, mid)
        elif choice.end > choice.start:
            pieces += (
                b'{"type":"text","text":"',
                self.corpus.view[choice.start : choice.end],
                b'"}',
            )
        pieces += (
            b'],"stop_reason":"',
            reason,
            b'","stop_sequence":',
            sequence,
            b',"usage":',
            usage(plan.prompt_tokens, plan.completion_tokens),
            b"}",
        )
        return b"".join(pieces)

    def stream(self, plan: Plan, mid: str) -> MessageEvents:
        head = b"".join(
            (
                self.start_head,
                mid.encode(),
                b'","type":"message","role":"assistant","content":[],"stop_reason":null,'
                b'"stop_sequence":null,"usage":',
                usage(plan.prompt_tokens, 1),
                b"}}\n\n",
            )
        )
        return MessageEvents(self, plan, head, mid)


def _blocks(segments: list[Segment], mid: str) -> Pieces:
    """A segmented answer's content: thinking, text and tool_use blocks, in order."""
    pieces: Pieces = []
    for segment in segments:
        kind = segment.kind
        if kind == CALL:
            block = b'{"type":"tool_use","id":"%s","name":%s,"input":%s}' % (
                tool_id(mid, segment.call),
                dumps(segment.name),
                tool_input(segment),
            )
            pieces.append(block if not pieces else b"," + block)
            continue
        if kind != REASONING and not segment.tokens:
            continue  # no text at all: no block
        view = segment.view[segment.start : segment.end]
        if pieces:
            pieces.append(b",")
        if kind == REASONING:
            pieces += (
                b'{"type":"thinking","thinking":"',
                view,
                b'","signature":"%s"}' % signature(mid),
            )
        else:
            pieces += (b'{"type":"text","text":"', view, b'"}')
    return pieces


class MessageEvents:
    """
    The events of one streamed Message (the pipeline's L{Events}): a text
    answer is one block, its deltas the plan's event slices.
    """

    def __init__(self, renderer: MessagesRenderer, plan: Plan, start: bytes, mid: str) -> None:
        self.renderer = renderer
        self.view = renderer.corpus.view
        self.plan = plan
        self.start = start
        self.mid = mid
        self.sent = 0
        #: The blocks started so far; a segmented answer's open one is the last,
        #: for segment ``_open`` (a segment without tokens has no block).
        self.blocks = 0
        self._open: Segment | None = None

    def opening(self, choice: ChoicePlan) -> Pieces:
        if choice.segments is not None or choice.end <= choice.start:
            return [self.start]
        self.blocks = 1
        return [self.start, _TEXT_START % 0, PING]

    def content(self, choice: ChoicePlan, event: int) -> Pieces:
        counts = choice.counts
        self.sent += counts[event] - (counts[event - 1] if event else 0)
        segments = choice.segments
        if segments is None:
            bounds = choice.bounds
            return [_TEXT_DELTA % 0, self.view[bounds[event] : bounds[event + 1]], _DELTA_END]
        index, start, end = choice.spans[event]
        segment = segments[index]
        pieces: Pieces = []
        if segment is not self._open:
            pieces += self._close()
            pieces += self._begin(segment)
        kind = segment.kind
        head = (
            _THINKING_DELTA if kind == REASONING else _JSON_DELTA if kind == CALL else _TEXT_DELTA
        )
        pieces += (head % (self.blocks - 1), segment.view[start:end], _DELTA_END)
        return pieces

    def _begin(self, segment: Segment) -> Pieces:
        """Open the next block, for ``segment`` (a ping after the first, as Anthropic's)."""
        index = self.blocks
        kind = segment.kind
        if kind == REASONING:
            pieces: Pieces = [_THINKING_START % index]
        elif kind == CALL:
            pieces = [
                _TOOL_START % (index, tool_id(self.mid, segment.call), dumps(segment.name)),
                # Anthropic opens every tool's input with an empty piece.
                _JSON_DELTA % index,
                _DELTA_END,
            ]
        else:
            pieces = [_TEXT_START % index]
        if not index:
            pieces.append(PING)
        self.blocks = index + 1
        self._open = segment
        return pieces

    def _close(self) -> Pieces:
        """Close the open block: a thinking block's signature comes last."""
        segment = self._open
        if segment is None:
            return []
        self._open = None
        index = self.blocks - 1
        if segment.kind == REASONING:
            return [_SIGNATURE_DELTA % (index, signature(self.mid)), _BLOCK_STOP % index]
        return [_BLOCK_STOP % index]

    def finish(self, choice: ChoicePlan) -> Pieces:
        plan = self.plan
        reason, sequence = self.renderer.stop(plan, choice)
        if choice.segments is None:
            pieces: Pieces = [_BLOCK_STOP % i for i in range(self.blocks)]
        else:
            pieces = self._close()
        pieces += (
            b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"',
            reason,
            b'","stop_sequence":',
            sequence,
            b'},"usage":',
            delta_usage(plan.prompt_tokens, plan.completion_tokens),
            b"}\n\n",
        )
        return pieces

    def closing(self) -> Pieces:
        return [MESSAGE_STOP]

    def error_event(self, error: APIError) -> Pieces:
        """A broken stream ends on an ``error`` event (the SDKs raise it), not ``message_stop``."""
        return [b"event: error\ndata: ", envelope(error), b"\n\n"]
