# -*- test-case-name: tests.test_stream -*-
"""
Bytes on the wire, from templates built once per model.

Everything constant for a model (its JSON-escaped id, the fingerprint, the
fixed parts of every object) is rendered at startup.  Per request we only
splice in the id, the timestamp, the numbers, and slices of the corpus
buffer (as memoryviews: the body join is the only copy of the text).
OpenAI-dialect rendering lives here; another dialect is another renderer
over the same L{Plan}.
"""

from __future__ import annotations

import os
import string
from collections.abc import Sequence

from mockoai.apierror import APIError
from mockoai.dialects.openai.logprobs import CHAT_EMPTY, TEXT_EMPTY, ChatLogprobs, TextLogprobs
from mockoai.pipeline.ids import IdMaker
from mockoai.pipeline.media import dumps
from mockoai.pipeline.stream import Pieces
from mockoai.sim.corpus import Corpus
from mockoai.sim.output import CALL, REASONING, TEXT, Segment
from mockoai.sim.sampling import TOOL_CALLS, ChoicePlan, Plan, escape

DONE = b"data: [DONE]\n\n"
_NULL_USAGE = b',"usage":null'


def _obfuscations(count: int = 64) -> list[bytes]:
    """
    OpenAI pads each stream chunk with a random ``obfuscation`` string so
    chunk sizes do not leak token lengths; we cycle through a pool made at
    startup.
    """
    alphabet = (string.ascii_letters + string.digits).encode()
    pool = []
    for _ in range(count):
        raw = os.urandom(17)
        length = 1 + raw[0] % 16
        text = bytes(alphabet[b % len(alphabet)] for b in raw[1 : 1 + length])
        pool.append(b',"obfuscation":"' + text + b'"}\n\n')
    return pool


_OBFUSCATIONS = _obfuscations()
_PLAIN_END = [b"}\n\n"]


#: The usage objects, as formats of (prompt, completion, total[, reasoning]) tokens.
_CHAT_USAGE = (
    b'{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d,'
    b'"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},'
    b'"completion_tokens_details":{"reasoning_tokens":%d,"audio_tokens":0,'
    b'"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}'
)
_TEXT_USAGE = b'{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}'
#: A chat choice of plain text, around its index, content and finish reason.
_MESSAGE = b'{"index":%d,"message":{"role":"assistant","content":"'
_MESSAGE_END = b'","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"'
#: A completions choice, likewise.
_TEXT = b'{"text":"'
_TEXT_END = b'","index":%d,"logprobs":null,"finish_reason":"'
_FIRST_TEXT_END = _TEXT_END % 0
#: After the finish reason of the last choice, before the usage object.
_CHOICES_END = b'"}],"usage":'


def chat_usage(prompt: int, completion: int, reasoning: int = 0) -> bytes:
    return _CHAT_USAGE % (prompt, completion, prompt + completion, reasoning)


def completion_usage(prompt: int, completion: int, reasoning: int = 0) -> bytes:
    return _TEXT_USAGE % (prompt, completion, prompt + completion)


class Renderer:
    """OpenAI-dialect templates for one served model."""

    def __init__(
        self, model: str, fingerprint: str, corpus: Corpus, ids: IdMaker | None = None
    ) -> None:
        self.corpus = corpus
        #: What makes tool call ids (the service's, shared with the other ids).
        self.ids = IdMaker() if ids is None else ids
        model_json = dumps(model)
        fp = dumps(fingerprint)
        self.chat_head = b'{"id":"chatcmpl-'
        self.chat_object = b'","object":"chat.completion","created":'
        self.chat_model = b',"model":' + model_json + b',"choices":['
        self.chat_tail = b',"service_tier":"default","system_fingerprint":' + fp + b"}"
        self.chunk_head = b'data: {"id":"chatcmpl-'
        self.chunk_object = b'","object":"chat.completion.chunk","created":'
        self.chunk_model = (
            b',"model":'
            + model_json
            + b',"service_tier":"default","system_fingerprint":'
            + fp
            + b',"choices":[{"index":'
        )
        self.text_head = b'{"id":"cmpl-'
        self.text_object = b'","object":"text_completion","created":'
        self.text_model = b',"model":' + model_json + b',"choices":['
        self.text_chunk_head = b'data: {"id":"cmpl-'
        self.text_chunk_model = b',"model":' + model_json + b',"choices":['
        # What precedes the text of the answer most requests get (one
        # choice of plain text, no logprobs): its body is one join of a few
        # pieces.  (One bytes % of a template of the whole body costs as
        # much on CPython, and 2-3 times as much on PyPy.)
        self.plain_message = self.chat_model + _MESSAGE % 0
        self.plain_text = self.text_model + _TEXT

    # --- non-streaming bodies -------------------------------------------------

    def chat_body(self, plan: Plan, rid: str, created: int, legacy: bool = False) -> bytes:
        choices = plan.choices
        wanted = plan.wanted
        if len(choices) == 1 and wanted.logprobs is None:
            choice = choices[0]
            if choice.segments is None:
                # The plan's totals, read from its one choice.
                prompt, completion = wanted.prompt_tokens, choice.tokens
                usage = (prompt, completion, prompt + completion, choice.reasoning_tokens)
                return b"".join(
                    (
                        self.chat_head,
                        rid.encode(),
                        self.chat_object,
                        b"%d" % created,
                        self.plain_message,
                        self.corpus.view[choice.start : choice.end],
                        _MESSAGE_END,
                        choice.finish_reason.encode(),
                        _CHOICES_END,
                        _CHAT_USAGE % usage,
                        self.chat_tail,
                    )
                )
        return self._chat_body(plan, rid, created, legacy)

    def _chat_body(self, plan: Plan, rid: str, created: int, legacy: bool) -> bytes:
        """Any chat answer, choice by choice."""
        view = self.corpus.view
        pieces: Pieces = [
            self.chat_head,
            rid.encode(),
            self.chat_object,
            b"%d" % created,
            self.chat_model,
        ]
        logprobs = None if plan.wanted.logprobs is None else ChatLogprobs(self.corpus, plan)
        for choice in plan.choices:
            if choice.index:
                pieces.append(b",")
            if choice.segments is not None:
                pieces += self._shaped_choice(choice, legacy, logprobs)
                continue
            if logprobs is not None:
                pieces += (
                    _MESSAGE % choice.index,
                    view[choice.start : choice.end],
                    b'","refusal":null,"annotations":[]},"logprobs":',
                    logprobs.choice(choice),
                    b',"finish_reason":"',
                    choice.finish_reason.encode(),
                    b'"}',
                )
                continue
            pieces += (
                _MESSAGE % choice.index,
                view[choice.start : choice.end],
                _MESSAGE_END,
                choice.finish_reason.encode(),
                b'"}',
            )
        pieces += (
            b'],"usage":',
            chat_usage(plan.prompt_tokens, plan.completion_tokens, plan.reasoning_tokens),
            self.chat_tail,
        )
        return b"".join(pieces)

    def _shaped_choice(
        self, choice: ChoicePlan, legacy: bool, logprobs: ChatLogprobs | None = None
    ) -> Pieces:
        """A choice with reasoning, a document or tool calls, whole (L{mockoai.sim.output})."""
        text: Segment | None = None
        reasoning: Segment | None = None
        calls: list[Segment] = []
        for segment in choice.segments or ():
            if segment.kind == TEXT:
                text = segment
            elif segment.kind == REASONING:
                reasoning = segment
            else:
                calls.append(segment)
        pieces: Pieces = [b'{"index":%d,"message":{"role":"assistant","content":' % choice.index]
        if text is None:
            pieces.append(b"null")
        else:
            pieces += (b'"', text.view[text.start : text.end], b'"')
        if reasoning is not None:
            pieces += (
                b',"reasoning_content":"',
                reasoning.view[reasoning.start : reasoning.end],
                b'"',
            )
        if calls and legacy:
            call = calls[0]
            pieces += (
                b',"function_call":{"name":"',
                call.name.encode() if call.name else b"",
                b'","arguments":"',
                call.view[call.start : call.end],
                b'"}',
            )
        elif calls:
            pieces.append(b',"tool_calls":[')
            for call in calls:
                pieces += (
                    b',{"id":"call_' if call.call else b'{"id":"call_',
                    self.ids.tail().encode(),
                    b'","type":"function","function":{"name":"',
                    call.name.encode() if call.name else b"",
                    b'","arguments":"',
                    call.view[call.start : call.end],
                    b'"}}',
                )
            pieces.append(b"]")
        pieces += (
            b',"refusal":null,"annotations":[]},"logprobs":',
            b"null" if logprobs is None else logprobs.choice(choice),
            b',"finish_reason":"',
            finish_reason(choice, legacy),
            b'"}',
        )
        return pieces

    def completion_body(self, plan: Plan, rid: str, created: int) -> bytes:
        choices = plan.choices
        wanted = plan.wanted
        if len(choices) == 1 and wanted.logprobs is None and not wanted.echo:
            choice = choices[0]
            if choice.segments is None:
                prompt, completion = wanted.prompt_tokens, choice.tokens
                return b"".join(
                    (
                        self.text_head,
                        rid.encode(),
                        self.text_object,
                        b"%d" % created,
                        self.plain_text,
                        self.corpus.view[choice.start : choice.end],
                        _FIRST_TEXT_END,
                        choice.finish_reason.encode(),
                        _CHOICES_END,
                        _TEXT_USAGE % (prompt, completion, prompt + completion),
                        b"}",
                    )
                )
        return self._completion_body(plan, rid, created)

    def _completion_body(self, plan: Plan, rid: str, created: int) -> bytes:
        """Any completions answer, choice by choice."""
        view = self.corpus.view
        echo = echoes(plan)
        pieces: Pieces = [
            self.text_head,
            rid.encode(),
            self.text_object,
            b"%d" % created,
            self.text_model,
        ]
        logprobs = None if plan.wanted.logprobs is None else TextLogprobs(self.corpus, plan)
        for choice in plan.choices:
            if choice.index:
                pieces.append(b",")
            pieces += (
                _TEXT,
                echo[choice.index // plan.wanted.n] if echo else b"",
                view[choice.start : choice.end] if choice.segments is None else text_of(choice),
                _TEXT_END % choice.index
                if logprobs is None
                else b'","index":%d,"logprobs":%s,"finish_reason":"'
                % (choice.index, logprobs.choice(choice)),
                choice.finish_reason.encode(),
                b'"}',
            )
        pieces += (
            b'],"usage":',
            completion_usage(plan.prompt_tokens, plan.completion_tokens),
            b"}",
        )
        return b"".join(pieces)

    # --- streams --------------------------------------------------------------

    def chat_stream(self, plan: Plan, rid: str, created: int, legacy: bool = False) -> ChatStream:
        head = b"".join(
            (self.chunk_head, rid.encode(), self.chunk_object, b"%d" % created, self.chunk_model)
        )
        if plan.wanted.logprobs is None:
            stream = ChatStream(self.corpus, plan, head)
        else:
            stream = LogprobChatStream(self.corpus, plan, head)
        if legacy or any(c.segments is not None for c in plan.choices):
            stream.ids = self.ids
            stream.legacy = legacy
        return stream

    def completion_stream(self, plan: Plan, rid: str, created: int) -> TextStream:
        head = b"".join(
            (
                self.text_chunk_head,
                rid.encode(),
                self.text_object,
                b"%d" % created,
                self.text_chunk_model,
            )
        )
        if plan.wanted.logprobs is None:
            return TextStream(self.corpus, plan, head)
        return LogprobTextStream(self.corpus, plan, head)


def finish_reason(choice: ChoicePlan, legacy: bool = False) -> bytes:
    """Why a choice ended, as the API says it (the legacy functions API: ``function_call``)."""
    reason = choice.finish_reason
    if legacy and reason == TOOL_CALLS:
        return b"function_call"
    return reason.encode()


def text_of(choice: ChoicePlan) -> bytes:
    """A segmented choice's text as the completions endpoint sends it: every segment's, in turn."""
    return b"".join(segment.text() for segment in choice.segments or ())


def echoes(plan: Plan) -> list[bytes]:
    """The prompts ``echo`` repeats, JSON-escaped (one per prompt)."""
    return [escape(p) for p in plan.wanted.echo]


class EventStream:
    """
    The events of one streamed answer.  Each method returns the pieces of
    one or more ``data:`` events, ready for C{writeSequence}.
    """

    usage_json = staticmethod(chat_usage)

    def __init__(self, corpus: Corpus, plan: Plan, head: bytes) -> None:
        self.view = corpus.view
        self.plan = plan
        self.head = head
        wanted = plan.wanted
        self.include_usage = wanted.include_usage
        self.continuous = wanted.continuous_usage
        self.obfuscate = wanted.include_obfuscation
        self.sent = 0
        self._event = 0

    def _end(self) -> list[bytes]:
        """Usage field (when asked for) and the closing brace of one event."""
        ending: list[bytes] = []
        if self.continuous:
            usage = self.usage_json(self.plan.prompt_tokens, self.sent, self.plan.reasoning_tokens)
            ending += (b',"usage":', usage)
        elif self.include_usage:
            ending.append(_NULL_USAGE)
        self._event += 1
        if self.obfuscate:
            ending.append(_OBFUSCATIONS[self._event % len(_OBFUSCATIONS)])
        else:
            ending += _PLAIN_END
        return ending

    def _count(self, choice: ChoicePlan, event: int) -> None:
        """Add the tokens event ``event`` of ``choice`` carries to ``sent``."""
        counts = choice.counts
        self.sent += counts[event] - (counts[event - 1] if event else 0)

    def opening(self, choice: ChoicePlan) -> Pieces:
        raise NotImplementedError

    def content(self, choice: ChoicePlan, event: int) -> Pieces:
        raise NotImplementedError

    def finish(self, choice: ChoicePlan) -> Pieces:
        raise NotImplementedError

    def error_event(self, error: APIError) -> Pieces:
        """
        A stream broken off mid-way ends on ``data: {"error": {...}}``, as
        OpenAI's do: the status line went out long ago, so the error is an
        event (the SDKs raise it), and no ``[DONE]`` follows.
        """
        return [b"data: ", error.body(), b"\n\n"]

    def closing(self) -> Pieces:
        """The usage-only chunk (when asked for) and ``[DONE]``."""
        if not self.include_usage:
            return [DONE]
        return [
            self._usage_head(),
            self.usage_json(
                self.plan.prompt_tokens, self.plan.completion_tokens, self.plan.reasoning_tokens
            ),
            _OBFUSCATIONS[0] if self.obfuscate else b"}\n\n",
            DONE,
        ]

    def _usage_head(self) -> bytes:
        # The head ends inside the choices array; the usage chunk's is empty.
        return self.head[: self.head.rindex(b'"choices":')] + b'"choices":[],"usage":'


_DELTA_END = b'},"logprobs":null,"finish_reason":null}]'
#: The same, with logprobs asked for, for a chunk without content tokens.
_DELTA_EMPTY = b'},"logprobs":' + CHAT_EMPTY + b',"finish_reason":null}]'


class ChatStream(EventStream):
    """``chat.completion.chunk`` events."""

    #: Set for answers with tool calls: their ids, and the legacy functions API's shape.
    ids: IdMaker | None = None
    legacy = False
    #: Set when the request asks for logprobs.
    logprobs: ChatLogprobs | None = None

    def opening(self, choice: ChoicePlan) -> Pieces:
        segments = choice.segments
        logprobs = self.logprobs
        if segments and segments[0].kind == CALL:
            # The first call's header rides on the role chunk, as OpenAI's does.
            return [
                self.head,
                b'%d,"delta":{"role":"assistant","content":null,' % choice.index,
                self._call_header(segments[0]),
                b',"refusal":null',
                _DELTA_END if logprobs is None else _DELTA_EMPTY,
                *self._end(),
            ]
        if logprobs is not None:
            return [
                self.head,
                b'%d,"delta":{"role":"assistant","content":"","refusal":null' % choice.index,
                _DELTA_EMPTY,
                *self._end(),
            ]
        return [
            self.head,
            b'%d,"delta":{"role":"assistant","content":"","refusal":null},'
            b'"logprobs":null,"finish_reason":null}]' % choice.index,
            *self._end(),
        ]

    def content(self, choice: ChoicePlan, event: int) -> Pieces:
        if choice.segments is not None:
            return self._shaped(choice, event)
        bounds = choice.bounds
        self._count(choice, event)
        return [
            self.head,
            b'%d,"delta":{"content":"' % choice.index,
            self.view[bounds[event] : bounds[event + 1]],
            b'"},"logprobs":null,"finish_reason":null}]',
            *self._end(),
        ]

    def _shaped(self, choice: ChoicePlan, event: int) -> Pieces:
        """One event of a segmented choice: reasoning, text, or a call's arguments."""
        spans = choice.spans
        index, start, end = spans[event]
        segments = choice.segments or []
        segment = segments[index]
        self._count(choice, event)
        head = self.head
        number = b"%d" % choice.index
        kind = segment.kind
        logprobs = self.logprobs
        if logprobs is None:
            close = _DELTA_END
        else:
            close = b'},"logprobs":%s,"finish_reason":null}]' % logprobs.span(choice, event)
        if kind == TEXT:
            return [
                head,
                number,
                b',"delta":{"content":"',
                segment.view[start:end],
                b'"',
                close,
                *self._end(),
            ]
        if kind == REASONING:
            return [
                head,
                number,
                b',"delta":{"reasoning_content":"',
                segment.view[start:end],
                b'"',
                close,
                *self._end(),
            ]
        pieces: Pieces = []
        first = event == 0 or spans[event - 1][0] != index
        if first and (index or segments[0].kind != CALL):
            pieces += (
                head,
                number,
                b',"delta":{',
                self._call_header(segment),
                close,
                *self._end(),
            )
        if self.legacy:
            fragment = b'{"function_call":{"arguments":"'
        else:
            fragment = b'{"tool_calls":[{"index":%d,"function":{"arguments":"' % segment.call
        pieces += (
            head,
            number,
            b',"delta":',
            fragment,
            segment.view[start:end],
            b'"}}]' if not self.legacy else b'"}',
            close,
            *self._end(),
        )
        return pieces

    def _call_header(self, call: Segment) -> bytes:
        """The first delta of a call: its id, type and name, and no arguments yet."""
        name = call.name.encode() if call.name else b""
        if self.legacy:
            return b'"function_call":{"name":"%s","arguments":""}' % name
        ids = self.ids
        tail = ids.tail() if ids is not None else ""
        return (
            b'"tool_calls":[{"index":%d,"id":"call_%s","type":"function","function":'
            b'{"name":"%s","arguments":""}}]' % (call.call, tail.encode(), name)
        )

    def finish(self, choice: ChoicePlan) -> Pieces:
        return [
            self.head,
            b'%d,"delta":{},"logprobs":null,"finish_reason":"%s"}]'
            % (choice.index, finish_reason(choice, self.legacy)),
            *self._end(),
        ]


class LogprobChatStream(ChatStream):
    """
    Chunks with logprobs: each content chunk carries its tokens' entries.  A
    class of its own, so that a plain stream's events check nothing.
    """

    logprobs: ChatLogprobs

    def __init__(self, corpus: Corpus, plan: Plan, head: bytes) -> None:
        super().__init__(corpus, plan, head)
        self.logprobs = ChatLogprobs(corpus, plan)

    def content(self, choice: ChoicePlan, event: int) -> Pieces:
        if choice.segments is not None:
            return self._shaped(choice, event)
        bounds = choice.bounds
        self._count(choice, event)
        return [
            self.head,
            b'%d,"delta":{"content":"' % choice.index,
            self.view[bounds[event] : bounds[event + 1]],
            b'"},"logprobs":',
            self.logprobs.event(choice, event),
            b',"finish_reason":null}]',
            *self._end(),
        ]


class TextStream(EventStream):
    """``text_completion`` events of the legacy completions endpoint."""

    usage_json = staticmethod(completion_usage)

    def __init__(self, corpus: Corpus, plan: Plan, head: bytes) -> None:
        super().__init__(corpus, plan, head)
        self.echo: Sequence[bytes] = echoes(plan)

    def opening(self, choice: ChoicePlan) -> Pieces:
        if not self.echo:
            return []
        return [
            self.head,
            b'{"text":"',
            self.echo[choice.index // self.plan.wanted.n],
            b'","index":%d,"logprobs":null,"finish_reason":null}]' % choice.index,
            *self._end(),
        ]

    def content(self, choice: ChoicePlan, event: int) -> Pieces:
        self._count(choice, event)
        return [
            self.head,
            b'{"text":"',
            self._text(choice, event),
            b'","index":%d,"logprobs":null,"finish_reason":null}]' % choice.index,
            *self._end(),
        ]

    def _text(self, choice: ChoicePlan, event: int) -> memoryview:
        """The escaped text of event ``event``: a corpus slice, or a segment's."""
        if choice.segments is not None:
            index, start, end = choice.spans[event]
            return choice.segments[index].view[start:end]
        bounds = choice.bounds
        return self.view[bounds[event] : bounds[event + 1]]

    def finish(self, choice: ChoicePlan) -> Pieces:
        return [
            self.head,
            b'{"text":"","index":%d,"logprobs":null,"finish_reason":"%s"}]'
            % (choice.index, choice.finish_reason.encode()),
            *self._end(),
        ]


class LogprobTextStream(TextStream):
    """Completions events with logprobs: each carries its tokens' columns."""

    logprobs: TextLogprobs

    def __init__(self, corpus: Corpus, plan: Plan, head: bytes) -> None:
        super().__init__(corpus, plan, head)
        self.logprobs = TextLogprobs(corpus, plan)

    def opening(self, choice: ChoicePlan) -> Pieces:
        if not self.echo:
            return []
        return [
            self.head,
            b'{"text":"',
            self.echo[choice.index // self.plan.wanted.n],
            b'","index":%d,"logprobs":%s,"finish_reason":null}]'
            % (choice.index, self.logprobs.echoed(choice)),
            *self._end(),
        ]

    def content(self, choice: ChoicePlan, event: int) -> Pieces:
        self._count(choice, event)
        return [
            self.head,
            b'{"text":"',
            self._text(choice, event),
            b'","index":%d,"logprobs":%s,"finish_reason":null}]'
            % (choice.index, self.logprobs.event(choice, event)),
            *self._end(),
        ]

    def finish(self, choice: ChoicePlan) -> Pieces:
        return [
            self.head,
            b'{"text":"","index":%d,"logprobs":%s,"finish_reason":"%s"}]'
            % (choice.index, TEXT_EMPTY, choice.finish_reason.encode()),
            *self._end(),
        ]


def models_list(models: Sequence[tuple[str, int, str]]) -> bytes:
    return dumps(
        {
            "object": "list",
            "data": [
                {"id": mid, "object": "model", "created": created, "owned_by": owner}
                for mid, created, owner in models
            ],
        }
    )


def model_object(model: str, created: int, owner: str) -> bytes:
    return dumps({"id": model, "object": "model", "created": created, "owned_by": owner})
