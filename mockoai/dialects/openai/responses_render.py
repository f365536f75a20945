# -*- test-case-name: tests.test_responses -*-
"""
The Responses API's bytes: the Response object and the stream's events,
over the same L{Plan} every dialect renders.

An answer's output is a list of items (L{items}): a ``reasoning`` item
for a model that reasoned, a ``message`` with one ``output_text`` part,
``function_call`` items; each is a byte range of the corpus or of a
segment's buffer, so text is spliced in as memoryview slices, never
copied before the final join.  A stream is these items' events in order,
each with its ``sequence_number``::

    response.created, response.in_progress            (at admission)
    response.output_item.added, response.content_part.added
    response.output_text.delta ...                    (one per planned event)
    response.output_text.done, response.content_part.done, response.output_item.done
    (function calls: .function_call_arguments.delta ... / .done)
    response.completed | response.incomplete | response.failed

Everything constant for a request (its settings, echoed in every Response
object) is rendered once, when the answer begins.
"""

from __future__ import annotations

import os
import string
from collections.abc import Callable
from typing import TYPE_CHECKING

from mockoai.apierror import APIError
from mockoai.pipeline.media import dumps
from mockoai.pipeline.stream import Pieces
from mockoai.sim.output import CALL, REASONING, Segment

if TYPE_CHECKING:
    from mockoai.dialects.openai.responses_store import ResponseIds
    from mockoai.sim.sampling import ChoicePlan, Plan

#: Item kinds: a reasoning item whose text is never sent, one whose text is, a message, a call.
HIDDEN = "hidden"
THOUGHT = "thought"
MESSAGE = "message"
FUNCTION = "function"

COMPLETED = b"completed"
INCOMPLETE = b"incomplete"
IN_PROGRESS = b"in_progress"
FAILED = b"failed"


def _obfuscations(count: int = 64) -> list[bytes]:
    """Random ``obfuscation`` paddings, as OpenAI's deltas carry, made once."""
    alphabet = (string.ascii_letters + string.digits).encode()
    pool = []
    for _ in range(count):
        raw = os.urandom(17)
        text = bytes(alphabet[b % len(alphabet)] for b in raw[1 : 2 + raw[0] % 16])
        pool.append(b',"obfuscation":"' + text + b'"}\n\n')
    return pool


_OBFUSCATIONS = _obfuscations()
_PLAIN_END = b"}\n\n"
#: What ends a delta event after its text, one per sequence number's low bits: with
#: an obfuscation or without (``[include_obfuscation]``), a text delta's with its
#: ``logprobs``.
_TAIL_MASK = len(_OBFUSCATIONS) - 1
_TAILS = {True: [b'"' + o for o in _OBFUSCATIONS], False: [b'"' + _PLAIN_END] * len(_OBFUSCATIONS)}
_TEXT_TAILS = {
    obfuscate: [b'","logprobs":[]' + tail[1:] for tail in tails]
    for obfuscate, tails in _TAILS.items()
}


class Item:
    """One output item: its kind, id, and the escaped bytes ``view[start:end]`` it says."""

    __slots__ = ("call_id", "end", "id", "index", "kind", "name", "start", "status", "view")

    def __init__(
        self,
        kind: str,
        item_id: str,
        index: int,
        view: memoryview,
        start: int = 0,
        end: int = 0,
        name: str | None = None,
        call_id: str = "",
    ) -> None:
        self.kind = kind
        self.id = item_id
        self.index = index
        self.view = view
        self.start = start
        self.end = end
        self.name = name
        self.call_id = call_id
        self.status = COMPLETED

    def text(self) -> memoryview:
        return self.view[self.start : self.end]

    def json(self, status: bytes | None = None, text: bool = True) -> list[bytes | memoryview]:
        """The item as the output list shows it (``text=False``: as it is first added)."""
        state = self.status if status is None else status
        kind = self.kind
        if kind == MESSAGE:
            pieces: list[bytes | memoryview] = [
                b'{"id":"%s","type":"message","status":"%s","content":[' % (self.id.encode(), state)
            ]
            if text:
                pieces += (_TEXT_PART, self.text(), b'"}')
            pieces.append(b'],"role":"assistant"}')
            return pieces
        if kind == FUNCTION:
            return [
                b'{"id":"%s","type":"function_call","status":"%s","arguments":"'
                % (self.id.encode(), state),
                self.text() if text else b"",
                b'","call_id":"%s","name":' % self.call_id.encode(),
                dumps(self.name),
                b"}",
            ]
        if kind == THOUGHT:
            pieces = [b'{"id":"%s","type":"reasoning","summary":[],"content":[' % self.id.encode()]
            if text:
                pieces += (_REASONING_PART, self.text(), b'"}')
            pieces.append(b"]}")
            return pieces
        return [b'{"id":"%s","type":"reasoning","summary":[]}' % self.id.encode()]


#: The codes a Response's ``error`` may carry (the spec's ResponseErrorCode); others are
#: ``server_error``.
_ERROR_CODES = frozenset({"server_error", "rate_limit_exceeded", "invalid_prompt"})

_TEXT_PART = b'{"type":"output_text","annotations":[],"logprobs":[],"text":"'
_REASONING_PART = b'{"type":"reasoning_text","text":"'


def items(choice: ChoicePlan, view: memoryview, ids: ResponseIds) -> list[Item]:
    """The output items of ``choice``, with their ids, in order."""
    found: list[Item] = []
    if choice.hidden:
        found.append(Item(HIDDEN, ids.make("rs"), 0, view))
    segments = choice.segments
    if segments is None:
        found.append(Item(MESSAGE, ids.make("msg"), len(found), view, choice.start, choice.end))
    else:
        for segment in segments:
            if not segment.tokens:
                continue
            index = len(found)
            if segment.kind == CALL:
                item = Item(
                    FUNCTION,
                    ids.make("fc"),
                    index,
                    segment.view,
                    segment.start,
                    segment.end,
                    segment.name,
                    ids.call(),
                )
            else:
                kind = THOUGHT if segment.kind == REASONING else MESSAGE
                prefix = "rs" if kind == THOUGHT else "msg"
                item = Item(kind, ids.make(prefix), index, segment.view, segment.start, segment.end)
            found.append(item)
    if choice.finish_reason == "length" and found:
        found[-1].status = INCOMPLETE
    return found


def usage(plan: Plan, input_tokens: int) -> bytes:
    """``usage``: the input with earlier turns, the output with its reasoning."""
    output = plan.completion_tokens
    choices = plan.choices
    reasoning = 0
    if choices:
        choice = choices[0]
        reasoning = choice.reasoning_tokens
    return (
        b'{"input_tokens":%d,"input_tokens_details":{"cached_tokens":0,"cache_write_tokens":0},'
        b'"output_tokens":%d,"output_tokens_details":{"reasoning_tokens":%d},"total_tokens":%d}'
        % (input_tokens, output, reasoning, input_tokens + output)
    )


class Response:
    """
    One answer's Response object in its states: its id, creation second and
    echoed settings rendered once, the status and output spliced per state.
    """

    __slots__ = ("echo", "head")

    def __init__(self, response_id: str, created_at: int, echo: bytes) -> None:
        self.head = b'{"id":"%s","object":"response","created_at":%d,"status":"' % (
            response_id.encode(),
            created_at,
        )
        #: The settings, as ``"key":value,...`` (no braces).
        self.echo = echo

    def pieces(
        self,
        status: bytes,
        output: list[Item] | None = None,
        usage_json: bytes | None = None,
        completed_at: int | None = None,
        error: APIError | None = None,
    ) -> list[bytes | memoryview]:
        """The object, as pieces to join; ``output`` None for an empty list."""
        pieces: list[bytes | memoryview] = [self.head, status, b'","completed_at":']
        pieces.append(b"null" if completed_at is None else b"%d" % completed_at)
        if error is None:
            pieces.append(b',"error":null')
        else:
            code = error.code if error.code in _ERROR_CODES else "server_error"
            pieces += (
                b',"error":{"code":',
                dumps(code),
                b',"message":',
                dumps(error.message),
                b"}",
            )
        if status == INCOMPLETE:
            pieces.append(b',"incomplete_details":{"reason":"max_output_tokens"},')
        else:
            pieces.append(b',"incomplete_details":null,')
        pieces += (self.echo, b',"output":[')
        if output:
            for position, item in enumerate(output):
                if position:
                    pieces.append(b",")
                pieces += item.json()
        pieces.append(b"]")
        if usage_json is not None:
            pieces += (b',"usage":', usage_json)
        pieces.append(b"}")
        return pieces


def echo(settings: dict[str, object]) -> bytes:
    """The request's settings as the Response object repeats them (L{Params.echo})."""
    return dumps(settings)[1:-1]


def status_of(plan: Plan) -> bytes:
    choices = plan.choices
    if choices and choices[0].finish_reason == "length":
        return INCOMPLETE
    return COMPLETED


class ResponseEvents:
    """
    The events of one streamed answer (the pipeline's L{Events}): the
    lifecycle events around the items' own, every one numbered.
    ``announce`` is sent once, at admission or with the first item,
    whichever comes first; ``complete`` is called with the final Response
    object's bytes once the last event is rendered (the answer stores it).
    """

    def __init__(
        self,
        plan: Plan,
        response: Response,
        output: list[Item],
        usage_json: Callable[[], bytes],
        clock: Callable[[], float],
        complete: Callable[[bytes], None],
    ) -> None:
        self.plan = plan
        self.response = response
        self.output = output
        self.usage_json = usage_json
        self.clock = clock
        self.complete = complete
        self.obfuscate = plan.wanted.include_obfuscation
        self.sent = 0
        self.announced = False
        #: Whether the first item is out (``first`` is told then), and the last event.
        self.started = False
        self.closed = False
        self.first: Callable[[], None] | None = None
        self._sequence = 0
        #: The output item open now (its deltas flowing), and the next to open.
        self._open: Item | None = None
        self._next = 0
        #: The open item's delta event, around its sequence number and its text.
        self._delta_head = b""
        self._delta_rest = b""
        self._view = memoryview(b"")
        self._tails = _TAILS[False]

    # --- framing ------------------------------------------------------------

    def _event(self, kind: bytes, body: list[bytes | memoryview]) -> list[bytes | memoryview]:
        """``event: kind`` with its data: ``{"type":kind,"sequence_number":N`` + body."""
        number = self._sequence
        self._sequence += 1
        return [
            b'event: %s\ndata: {"type":"%s","sequence_number":%d' % (kind, kind, number),
            *body,
            b"}\n\n",
        ]

    def _lifecycle(self, kind: bytes, status: bytes, error: APIError | None = None) -> Pieces:
        return self._event(kind, [b',"response":', *self.response.pieces(status, error=error)])

    def announce(self) -> Pieces:
        """``response.created`` and ``response.in_progress``, once."""
        if self.announced:
            return []
        self.announced = True
        return [
            *self._lifecycle(b"response.created", IN_PROGRESS),
            *self._lifecycle(b"response.in_progress", IN_PROGRESS),
        ]

    # --- items --------------------------------------------------------------

    def _where(self, item: Item) -> bytes:
        return b',"item_id":"%s","output_index":%d' % (item.id.encode(), item.index)

    def _added(self, item: Item) -> Pieces:
        """An item opens: its ``added`` events, and its delta template."""
        self._open = item
        self._next = item.index + 1
        pieces = self._event(
            b"response.output_item.added",
            [b',"output_index":%d,"item":' % item.index, *item.json(IN_PROGRESS, text=False)],
        )
        where = self._where(item)
        kind = item.kind
        if kind == FUNCTION:
            delta = b"response.function_call_arguments.delta"
            self._delta_rest = where + b',"delta":"'
        else:
            part = _TEXT_PART if kind == MESSAGE else _REASONING_PART
            pieces += self._event(
                b"response.content_part.added",
                [where, b',"content_index":0,"part":', part, b'"}'],
            )
            delta = (
                b"response.output_text.delta"
                if kind == MESSAGE
                else b"response.reasoning_text.delta"
            )
            self._delta_rest = where + b',"content_index":0,"delta":"'
        self._delta_head = b'event: %s\ndata: {"type":"%s","sequence_number":' % (delta, delta)
        self._view = item.view
        end = _TEXT_TAILS if kind == MESSAGE else _TAILS
        self._tails = end[self.obfuscate]
        return pieces

    def _done(self, item: Item) -> Pieces:
        """An item closes: its ``done`` events, the whole text in each."""
        self._open = None
        where = self._where(item)
        text = item.text()
        pieces: Pieces = []
        if item.kind == MESSAGE:
            pieces += self._event(
                b"response.output_text.done",
                [where, b',"content_index":0,"text":"', text, b'","logprobs":[]'],
            )
            pieces += self._event(
                b"response.content_part.done",
                [where, b',"content_index":0,"part":', _TEXT_PART, text, b'"}'],
            )
        elif item.kind == THOUGHT:
            pieces += self._event(
                b"response.reasoning_text.done", [where, b',"content_index":0,"text":"', text, b'"']
            )
            pieces += self._event(
                b"response.content_part.done",
                [where, b',"content_index":0,"part":', _REASONING_PART, text, b'"}'],
            )
        elif item.kind == FUNCTION:
            pieces += self._event(
                b"response.function_call_arguments.done",
                [where, b',"name":', dumps(item.name), b',"arguments":"', text, b'"'],
            )
        pieces += self._event(
            b"response.output_item.done",
            [b',"output_index":%d,"item":' % item.index, *item.json()],
        )
        return pieces

    def _delta_event(self, text: memoryview) -> Pieces:
        number = self._sequence
        self._sequence = number + 1
        return [
            self._delta_head,
            b"%d" % number,
            self._delta_rest,
            text,
            self._tails[number & _TAIL_MASK],
        ]

    # --- the Events protocol --------------------------------------------------

    def opening(self, choice: ChoicePlan) -> Pieces:
        """At the first token: the lifecycle (if not sent yet), reasoning done, the first item."""
        pieces = self.announce()
        self.started = True
        if self.first is not None:
            self.first()
        output = self.output
        while self._next < len(output) and output[self._next].kind == HIDDEN:
            item = output[self._next]
            pieces += self._added(item)
            pieces += self._done(item)
        if choice.segments is None and self._next < len(output):
            pieces += self._added(output[self._next])
        return pieces

    def content(self, choice: ChoicePlan, event: int) -> Pieces:
        counts = choice.counts
        self.sent = counts[event]
        segments = choice.segments
        if segments is None:
            # A text answer: one message, its deltas cut from the corpus.
            bounds = choice.bounds
            return self._delta_event(self._view[bounds[event] : bounds[event + 1]])
        segment, start, end = choice.spans[event]
        pieces: Pieces = []
        target = self._item_of(segments, segment)
        if self._open is not target:
            if self._open is not None:
                pieces += self._done(self._open)
            pieces += self._added(target)
        pieces += self._delta_event(target.view[start:end])
        return pieces

    def _item_of(self, segments: list[Segment], segment: int) -> Item:
        """The output item of segment ``segment`` (segments of no tokens have none)."""
        skip = sum(1 for s in segments[:segment] if not s.tokens)
        offset = 1 if self.output and self.output[0].kind == HIDDEN else 0
        return self.output[segment - skip + offset]

    def finish(self, choice: ChoicePlan) -> Pieces:
        """After the last token: the open item closes, and any not opened yet open and close."""
        pieces: Pieces = []
        if self._open is not None:
            pieces += self._done(self._open)
        output = self.output
        while self._next < len(output):
            item = output[self._next]
            pieces += self._added(item)
            pieces += self._done(item)
        return pieces

    def closing(self) -> Pieces:
        """``response.completed`` (or ``.incomplete``), with the whole Response object."""
        self.closed = True
        status = status_of(self.plan)
        body = self.response.pieces(status, self.output, self.usage_json(), int(self.clock()))
        self.complete(b"".join(body))
        kind = b"response.completed" if status == COMPLETED else b"response.incomplete"
        return self._event(kind, [b',"response":', *body])

    def error_event(self, error: APIError) -> Pieces:
        """A stream broken off: ``response.failed``, with the error."""
        return self._lifecycle(b"response.failed", FAILED, error=error)
