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

from typing import TYPE_CHECKING

from mockoai.dialects.anthropic.errors import envelope
from mockoai.pipeline.media import dumps
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
        if finish != STOP:
            return TOOL_USE, b"null"
        stops = plan.wanted.stop
        if stops:
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
        if choice.end > choice.start:
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
        return MessageEvents(self, plan, head)


class MessageEvents:
    """
    The events of one streamed Message (the pipeline's L{Events}): a text
    answer is one block, its deltas the plan's event slices.
    """

    def __init__(self, renderer: MessagesRenderer, plan: Plan, start: bytes) -> None:
        self.renderer = renderer
        self.view = renderer.corpus.view
        self.plan = plan
        self.start = start
        self.sent = 0
        #: The blocks started so far.
        self.blocks = 0

    def opening(self, choice: ChoicePlan) -> Pieces:
        if choice.end <= choice.start:
            return [self.start]
        self.blocks = 1
        return [self.start, _TEXT_START % 0, PING]

    def content(self, choice: ChoicePlan, event: int) -> Pieces:
        bounds, counts = choice.bounds, choice.counts
        self.sent += counts[event] - (counts[event - 1] if event else 0)
        return [_TEXT_DELTA % 0, self.view[bounds[event] : bounds[event + 1]], _DELTA_END]

    def finish(self, choice: ChoicePlan) -> Pieces:
        plan = self.plan
        reason, sequence = self.renderer.stop(plan, choice)
        pieces: Pieces = [_BLOCK_STOP % i for i in range(self.blocks)]
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
