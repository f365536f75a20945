# -*- test-case-name: tests.test_openrouter -*-
"""
OpenRouter-dialect bytes over the same L{Plan} the OpenAI renderer uses.

What differs from OpenAI's wire: ``gen-`` ids, a top-level ``provider``,
``native_finish_reason`` beside every ``finish_reason``, usage always sent
(the last chunk of a stream) with its ``cost`` from the model's prices on
the chosen provider, and a stream that fails mid-way ending on a ``data:``
event carrying an ``error`` and ``finish_reason: "error"``.  As in
L{mockoai.dialects.openai.render}, everything constant for a (model, provider) pair is
rendered once; per request only numbers, ids and corpus slices are spliced.
The event templates repeat some of OpenAI's literal pieces (``"delta"``,
``"index"``) on purpose: each event stays one list of constants and slices,
joined once, with no shared helper call per event.
"""

from __future__ import annotations

from collections.abc import Callable

from mockoai.apierror import APIError
from mockoai.dialects.openai.render import DONE, EventStream, echoes
from mockoai.ops.config import ModelSpec, ProviderSpec
from mockoai.pipeline.media import dumps
from mockoai.pipeline.stream import Pieces
from mockoai.sim.corpus import Corpus
from mockoai.sim.sampling import ChoicePlan, Plan


def _number(value: float) -> bytes:
    """A float as JSON, exactly (the generation record repeats the same value)."""
    return repr(value).encode()


_TEXT_OPEN = b',"logprobs":null,"finish_reason":null,"native_finish_reason":null}]}\n\n'
_CHAT_OPEN = b',"finish_reason":null,"native_finish_reason":null,"logprobs":null}]}\n\n'


#: Costs are kept to the picodollar: ``2e-05 + 5e-05`` is ``7e-05``, not ``7.000000000000001e-05``.
_DIGITS = 12


def effective(price: float, factor: float) -> float:
    """A price times a provider's factor, to 12 digits (``2.5e-6 * 0.8`` is ``2e-6``)."""
    return float(f"{price * factor:.12g}")


class Costs:
    """A model's prices on one provider, in USD per token."""

    __slots__ = ("completion", "prompt")

    def __init__(self, spec: ModelSpec, provider: ProviderSpec) -> None:
        self.prompt = effective(spec.prompt_price, provider.price)
        self.completion = effective(spec.completion_price, provider.price)

    def of(self, prompt_tokens: int, completion_tokens: int) -> tuple[float, float, float]:
        """What the prompt, the completion and both together cost."""
        prompt = round(prompt_tokens * self.prompt, _DIGITS)
        completion = round(completion_tokens * self.completion, _DIGITS)
        return prompt, completion, round(prompt + completion, _DIGITS)


class RouterRenderer:
    """OpenRouter-dialect templates for one model served by one provider."""

    def __init__(
        self, spec: ModelSpec, provider: ProviderSpec, fingerprint: str, corpus: Corpus
    ) -> None:
        self.corpus = corpus
        self.model = spec.id
        self.provider = provider.name
        self.costs = Costs(spec, provider)
        fp = dumps(fingerprint)
        who = b'","provider":' + dumps(provider.name) + b',"model":' + dumps(spec.id)
        self.chat_head = who + b',"object":"chat.completion","created":'
        self.text_head = who + b',"object":"text_completion","created":'
        self.chunk_head = who + b',"object":"chat.completion.chunk","created":'
        self.tail = b',"system_fingerprint":' + fp

    def usage(self, prompt: int, completion: int, reasoning: int) -> bytes:
        """The usage object; ``completion`` includes the ``reasoning`` tokens."""
        prompt_cost, completion_cost, cost = self.costs.of(prompt, completion)
        return (
            b'{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d,"cost":%s,'
            b'"is_byok":false,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},'
            b'"cost_details":{"upstream_inference_cost":null,'
            b'"upstream_inference_prompt_cost":%s,"upstream_inference_completions_cost":%s},'
            b'"completion_tokens_details":{"reasoning_tokens":%d,"image_tokens":0}}'
            % (
                prompt,
                completion,
                prompt + completion,
                _number(cost),
                _number(prompt_cost),
                _number(completion_cost),
                reasoning,
            )
        )

    # --- non-streaming bodies -------------------------------------------------

    def chat_body(self, plan: Plan, gid: str, created: int, reasoning: int) -> bytes:
        view = self.corpus.view
        pieces: Pieces = [b'{"id":"', gid.encode(), self.chat_head, b"%d" % created]
        pieces.append(b',"choices":[')
        for choice in plan.choices:
            if choice.index:
                pieces.append(b",")
            reason = choice.finish_reason.encode()
            pieces += (
                b'{"logprobs":null,"finish_reason":"%s","native_finish_reason":"%s","index":%d,'
                b'"message":{"role":"assistant","content":"' % (reason, reason, choice.index),
                view[choice.start : choice.end],
                b'","refusal":null,"reasoning":null}}',
            )
        completion = plan.completion_tokens + reasoning
        pieces += (
            b"]",
            self.tail,
            b',"usage":',
            self.usage(plan.prompt_tokens, completion, reasoning),
            b"}",
        )
        return b"".join(pieces)

    def completion_body(self, plan: Plan, gid: str, created: int, reasoning: int) -> bytes:
        view = self.corpus.view
        echo = echoes(plan)
        pieces: Pieces = [b'{"id":"', gid.encode(), self.text_head, b"%d" % created]
        pieces.append(b',"choices":[')
        for choice in plan.choices:
            if choice.index:
                pieces.append(b",")
            reason = choice.finish_reason.encode()
            pieces += (
                b'{"text":"',
                echo[choice.index // plan.wanted.n] if echo else b"",
                view[choice.start : choice.end],
                b'","index":%d,"logprobs":null,"finish_reason":"%s","native_finish_reason":"%s"}'
                % (choice.index, reason, reason),
            )
        completion = plan.completion_tokens + reasoning
        pieces += (
            b"]",
            self.tail,
            b',"usage":',
            self.usage(plan.prompt_tokens, completion, reasoning),
            b"}",
        )
        return b"".join(pieces)

    # --- streams --------------------------------------------------------------

    def _stream_head(self, head: bytes, gid: str, created: int) -> bytes:
        return b"".join((b'data: {"id":"', gid.encode(), head, b"%d" % created, self.tail, b","))

    def chat_stream(self, plan: Plan, gid: str, created: int, reasoning: int) -> ChatEvents:
        head = self._stream_head(self.chunk_head, gid, created)
        return ChatEvents(self, plan, head, reasoning)

    def completion_stream(self, plan: Plan, gid: str, created: int, reasoning: int) -> TextEvents:
        head = self._stream_head(self.text_head, gid, created)
        return TextEvents(self, plan, head, reasoning)


class RouterEvents(EventStream):
    """
    The events of one OpenRouter stream.  ``head`` ends just before
    ``"choices":``; ``first`` is called when the first event goes out.
    """

    def __init__(self, renderer: RouterRenderer, plan: Plan, head: bytes, reasoning: int) -> None:
        super().__init__(renderer.corpus, plan, head)
        self.renderer = renderer
        self.choice_head = head + b'"choices":['
        self.reasoning = reasoning
        self.first: Callable[[], None] | None = None
        self.started = False
        self.closed = False
        self._open = {choice.index for choice in plan.choices}

    def _begin(self) -> None:
        if not self.started:
            self.started = True
            if self.first is not None:
                self.first()

    def error_event(self, error: APIError) -> Pieces:
        """
        A generation that breaks mid-way ends on a chunk with an ``error``
        (its type as ``code``) and ``finish_reason: "error"`` for every
        choice still open; no usage chunk, no ``[DONE]``.
        """
        return [
            self.head,
            b'"error":{"code":%s,"message":%s},"choices":['
            % (dumps(error.type), dumps(error.message)),
            b",".join(self._error_choice(i) for i in sorted(self._open)),
            b"]}\n\n",
        ]

    def _error_choice(self, index: int) -> bytes:
        raise NotImplementedError

    def finish(self, choice: ChoicePlan) -> Pieces:
        self._open.discard(choice.index)
        return self._finish(choice)

    def _finish(self, choice: ChoicePlan) -> Pieces:
        raise NotImplementedError

    def closing(self) -> Pieces:
        """The usage chunk OpenRouter always sends, and ``[DONE]``."""
        self.closed = True
        plan = self.plan
        completion = plan.completion_tokens + self.reasoning
        usage = self.renderer.usage(plan.prompt_tokens, completion, self.reasoning)
        return [self.head, b'"choices":[],"usage":', usage, b"}\n\n", DONE]


class ChatEvents(RouterEvents):
    """``chat.completion.chunk`` events."""

    def opening(self, choice: ChoicePlan) -> Pieces:
        self._begin()
        return [
            self.choice_head,
            b'{"index":%d,"delta":{"role":"assistant","content":""}' % choice.index,
            _CHAT_OPEN,
        ]

    def content(self, choice: ChoicePlan, event: int) -> Pieces:
        self._count(choice, event)
        bounds = choice.bounds
        return [
            self.choice_head,
            b'{"index":%d,"delta":{"content":"' % choice.index,
            self.view[bounds[event] : bounds[event + 1]],
            b'"}',
            _CHAT_OPEN,
        ]

    def _finish(self, choice: ChoicePlan) -> Pieces:
        reason = choice.finish_reason.encode()
        return [
            self.choice_head,
            b'{"index":%d,"delta":{},"finish_reason":"%s","native_finish_reason":"%s",'
            b'"logprobs":null}]}\n\n' % (choice.index, reason, reason),
        ]

    def _error_choice(self, index: int) -> bytes:
        return (
            b'{"index":%d,"delta":{"content":""},"finish_reason":"error",'
            b'"native_finish_reason":"error","logprobs":null}' % index
        )


class TextEvents(RouterEvents):
    """``text_completion`` events of the legacy completions endpoint."""

    def __init__(self, renderer: RouterRenderer, plan: Plan, head: bytes, reasoning: int) -> None:
        super().__init__(renderer, plan, head, reasoning)
        self.echo = echoes(plan)

    def opening(self, choice: ChoicePlan) -> Pieces:
        self._begin()
        pieces: Pieces = []
        if self.echo:
            pieces += (
                self.choice_head,
                b'{"text":"',
                self.echo[choice.index // self.plan.wanted.n],
                b'","index":%d' % choice.index,
                _TEXT_OPEN,
            )
        return pieces

    def content(self, choice: ChoicePlan, event: int) -> Pieces:
        self._count(choice, event)
        bounds = choice.bounds
        return [
            self.choice_head,
            b'{"text":"',
            self.view[bounds[event] : bounds[event + 1]],
            b'","index":%d' % choice.index,
            _TEXT_OPEN,
        ]

    def _finish(self, choice: ChoicePlan) -> Pieces:
        reason = choice.finish_reason.encode()
        return [
            self.choice_head,
            b'{"text":"","index":%d,"logprobs":null,"finish_reason":"%s",'
            b'"native_finish_reason":"%s"}]}\n\n' % (choice.index, reason, reason),
        ]

    def _error_choice(self, index: int) -> bytes:
        return (
            b'{"text":"","index":%d,"logprobs":null,"finish_reason":"error",'
            b'"native_finish_reason":"error"}' % index
        )
