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
from mockoai.pipeline.media import dumps
from mockoai.pipeline.stream import Pieces
from mockoai.sim.corpus import Corpus
from mockoai.sim.sampling import ChoicePlan, Plan, escape

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


def chat_usage(prompt: int, completion: int) -> bytes:
    return (
        b'{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d,'
        b'"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},'
        b'"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,'
        b'"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}'
        % (prompt, completion, prompt + completion)
    )


def completion_usage(prompt: int, completion: int) -> bytes:
    return b'{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}' % (
        prompt,
        completion,
        prompt + completion,
    )


class Renderer:
    """OpenAI-dialect templates for one served model."""

    def __init__(self, model: str, fingerprint: str, corpus: Corpus) -> None:
        self.corpus = corpus
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

    # --- non-streaming bodies -------------------------------------------------

    def chat_body(self, plan: Plan, rid: str, created: int) -> bytes:
        view = self.corpus.view
        pieces: Pieces = [
            self.chat_head,
            rid.encode(),
            self.chat_object,
            b"%d" % created,
            self.chat_model,
        ]
        for choice in plan.choices:
            if choice.index:
                pieces.append(b",")
            pieces += (
                b'{"index":%d,"message":{"role":"assistant","content":"' % choice.index,
                view[choice.start : choice.end],
                b'","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"',
                choice.finish_reason.encode(),
                b'"}',
            )
        pieces += (
            b'],"usage":',
            chat_usage(plan.prompt_tokens, plan.completion_tokens),
            self.chat_tail,
        )
        return b"".join(pieces)

    def completion_body(self, plan: Plan, rid: str, created: int) -> bytes:
        view = self.corpus.view
        echo = echoes(plan)
        pieces: Pieces = [
            self.text_head,
            rid.encode(),
            self.text_object,
            b"%d" % created,
            self.text_model,
        ]
        for choice in plan.choices:
            if choice.index:
                pieces.append(b",")
            pieces += (
                b'{"text":"',
                echo[choice.index // plan.wanted.n] if echo else b"",
                view[choice.start : choice.end],
                b'","index":%d,"logprobs":null,"finish_reason":"' % choice.index,
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

    def chat_stream(self, plan: Plan, rid: str, created: int) -> ChatStream:
        head = b"".join(
            (self.chunk_head, rid.encode(), self.chunk_object, b"%d" % created, self.chunk_model)
        )
        return ChatStream(self.corpus, plan, head)

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
        return TextStream(self.corpus, plan, head)


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
            usage = self.usage_json(self.plan.prompt_tokens, self.sent)
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
            self.usage_json(self.plan.prompt_tokens, self.plan.completion_tokens),
            _OBFUSCATIONS[0] if self.obfuscate else b"}\n\n",
            DONE,
        ]

    def _usage_head(self) -> bytes:
        # The head ends inside the choices array; the usage chunk's is empty.
        return self.head[: self.head.rindex(b'"choices":')] + b'"choices":[],"usage":'


class ChatStream(EventStream):
    """``chat.completion.chunk`` events."""

    def opening(self, choice: ChoicePlan) -> Pieces:
        return [
            self.head,
            b'%d,"delta":{"role":"assistant","content":"","refusal":null},'
            b'"logprobs":null,"finish_reason":null}]' % choice.index,
            *self._end(),
        ]

    def content(self, choice: ChoicePlan, event: int) -> Pieces:
        bounds = choice.bounds
        self._count(choice, event)
        return [
            self.head,
            b'%d,"delta":{"content":"' % choice.index,
            self.view[bounds[event] : bounds[event + 1]],
            b'"},"logprobs":null,"finish_reason":null}]',
            *self._end(),
        ]

    def finish(self, choice: ChoicePlan) -> Pieces:
        return [
            self.head,
            b'%d,"delta":{},"logprobs":null,"finish_reason":"%s"}]'
            % (choice.index, choice.finish_reason.encode()),
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
        bounds = choice.bounds
        self._count(choice, event)
        return [
            self.head,
            b'{"text":"',
            self.view[bounds[event] : bounds[event + 1]],
            b'","index":%d,"logprobs":null,"finish_reason":null}]' % choice.index,
            *self._end(),
        ]

    def finish(self, choice: ChoicePlan) -> Pieces:
        return [
            self.head,
            b'{"text":"","index":%d,"logprobs":null,"finish_reason":"%s"}]'
            % (choice.index, choice.finish_reason.encode()),
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
