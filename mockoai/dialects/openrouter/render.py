# -*- test-case-name: tests.test_openrouter,tests.test_openrouter_tools -*-
"""
OpenRouter-dialect bytes over the same L{Plan} the OpenAI renderer uses.

What differs from OpenAI's wire: ``gen-`` ids, a top-level ``provider``,
``native_finish_reason`` beside every ``finish_reason``, usage always sent
(the last chunk of a stream) with its ``cost`` from the model's prices on
the chosen provider, reasoning text in ``reasoning`` and ``reasoning_details``
(OpenRouter's own fields, not vLLM's ``reasoning_content``), and a
stream that fails mid-way ending on a ``data:`` event carrying an ``error``
and ``finish_reason: "error"``.  Tool calls are OpenAI's, with an ``index``
in the message's calls too, as OpenRouter sends them.  As in
L{mockoai.dialects.openai.render}, everything constant for a (model, provider) pair is
rendered once; per request only numbers, ids and corpus slices are spliced.
The event templates repeat some of OpenAI's literal pieces (``"delta"``,
``"index"``) on purpose: each event stays one list of constants and slices,
joined once, with no shared helper call per event.
"""

from __future__ import annotations

from collections.abc import Callable

from mockoai.apierror import APIError
from mockoai.dialects.openai.logprobs import ChatLogprobs, TextLogprobs
from mockoai.dialects.openai.render import DONE, EventStream, echoes, text_of
from mockoai.ops.config import ModelSpec, ProviderSpec
from mockoai.pipeline.ids import IdMaker
from mockoai.pipeline.media import dumps
from mockoai.pipeline.stream import Pieces
from mockoai.sim.corpus import Corpus
from mockoai.sim.output import CALL, REASONING, TEXT, Segment
from mockoai.sim.sampling import ChoicePlan, Plan


def _number(value: float) -> bytes:
    """A float as JSON, exactly (the generation record repeats the same value)."""
    return repr(value).encode()


_TEXT_OPEN = b',"logprobs":null,"finish_reason":null,"native_finish_reason":null}]}\n\n'
_CHAT_OPEN = b',"finish_reason":null,"native_finish_reason":null,"logprobs":null}]}\n\n'
#: The same with the tokens' logprobs (OpenAI's shapes, passed through).
_TEXT_LOGPROBS = b',"logprobs":%s,"finish_reason":null,"native_finish_reason":null}]}\n\n'
_CHAT_LOGPROBS = b',"finish_reason":null,"native_finish_reason":null,"logprobs":%s}]}\n\n'
#: A chat choice up to its message's ``content`` value.
_CHOICE = (
    b'{"logprobs":null,"finish_reason":"%s","native_finish_reason":"%s","index":%d,'
    b'"message":{"role":"assistant","content":'
)
_NULL_LOGPROBS = len(b'{"logprobs":null')
#: ``reasoning_details`` around one piece of reasoning text: OpenRouter's
#: ``reasoning.text`` detail, of a provider that names no format.
_DETAIL_HEAD = b'"reasoning_details":[{"type":"reasoning.text","text":"'
_DETAIL_TAIL = b'","format":"unknown","index":0}]'


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
        self,
        spec: ModelSpec,
        provider: ProviderSpec,
        fingerprint: str,
        corpus: Corpus,
        ids: IdMaker | None = None,
    ) -> None:
        self.corpus = corpus
        #: What makes tool call ids (the service's, shared with the other ids).
        self.ids = IdMaker() if ids is None else ids
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

    def chat_body(self, plan: Plan, gid: str, created: int) -> bytes:
        view = self.corpus.view
        logprobs = None if plan.wanted.logprobs is None else ChatLogprobs(self.corpus, plan)
        pieces: Pieces = [b'{"id":"', gid.encode(), self.chat_head, b"%d" % created]
        pieces.append(b',"choices":[')
        reasoning = 0
        for choice in plan.choices:
            if choice.index:
                pieces.append(b",")
            reason = choice.finish_reason.encode()
            head = _CHOICE % (reason, reason, choice.index)
            if logprobs is not None:
                head = b'{"logprobs":' + logprobs.choice(choice) + head[_NULL_LOGPROBS:]
            if choice.segments is None:
                pieces += (
                    head,
                    b'"',
                    view[choice.start : choice.end],
                    b'","refusal":null,"reasoning":null}}',
                )
                reasoning += choice.hidden
            else:
                pieces.append(head)
                pieces += self._shaped_message(choice.segments)
                reasoning += choice.reasoning_tokens
        pieces += (
            b"]",
            self.tail,
            b',"usage":',
            self.usage(plan.prompt_tokens, plan.completion_tokens, reasoning),
            b"}",
        )
        return b"".join(pieces)

    def _shaped_message(self, segments: list[Segment]) -> Pieces:
        """
        The message of a choice with reasoning, a document or tool calls,
        from its ``content`` on: the reasoning in ``reasoning`` and in one
        ``reasoning.text`` detail, the calls in ``tool_calls`` (``content``
        null beside them, and ``""`` for an answer cut inside its reasoning).
        """
        text: Segment | None = None
        reasoning: Segment | None = None
        calls: list[Segment] = []
        for segment in segments:
            if segment.kind == TEXT:
                text = segment
            elif segment.kind == REASONING:
                reasoning = segment
            else:
                calls.append(segment)
        pieces: Pieces = []
        if text is not None:
            pieces += (b'"', text.view[text.start : text.end], b'"')
        else:
            pieces.append(b"null" if calls else b'""')
        pieces.append(b',"refusal":null,"reasoning":')
        thought = None if reasoning is None else reasoning.view[reasoning.start : reasoning.end]
        if thought is None:
            pieces.append(b"null")
        else:
            pieces += (b'"', thought, b'"')
        if calls:
            ids = self.ids
            pieces.append(b',"tool_calls":[')
            for call in calls:
                pieces += (
                    b'%s{"type":"function","index":%d,"id":"call_'
                    % (b"," if call.call else b"", call.call),
                    ids.tail().encode(),
                    b'","function":{"name":"',
                    call.name.encode() if call.name else b"",
                    b'","arguments":"',
                    call.view[call.start : call.end],
                    b'"}}',
                )
            pieces.append(b"]")
        if thought is not None:
            pieces += (b",", _DETAIL_HEAD, thought, _DETAIL_TAIL)
        pieces.append(b"}}")
        return pieces

    def completion_body(self, plan: Plan, gid: str, created: int) -> bytes:
        view = self.corpus.view
        echo = echoes(plan)
        pieces: Pieces = [b'{"id":"', gid.encode(), self.text_head, b"%d" % created]
        pieces.append(b',"choices":[')
        logprobs = None if plan.wanted.logprobs is None else TextLogprobs(self.corpus, plan)
        for choice in plan.choices:
            if choice.index:
                pieces.append(b",")
            reason = choice.finish_reason.encode()
            pieces += (
                b'{"text":"',
                echo[choice.index // plan.wanted.n] if echo else b"",
                view[choice.start : choice.end] if choice.segments is None else text_of(choice),
                b'","index":%d,"logprobs":%s,"finish_reason":"%s","native_finish_reason":"%s"}'
                % (
                    choice.index,
                    b"null" if logprobs is None else logprobs.choice(choice),
                    reason,
                    reason,
                ),
            )
        pieces += (
            b"]",
            self.tail,
            b',"usage":',
            self.usage(plan.prompt_tokens, plan.completion_tokens, plan.reasoning_tokens),
            b"}",
        )
        return b"".join(pieces)

    # --- streams --------------------------------------------------------------

    def _stream_head(self, head: bytes, gid: str, created: int) -> bytes:
        return b"".join((b'data: {"id":"', gid.encode(), head, b"%d" % created, self.tail, b","))

    def chat_stream(self, plan: Plan, gid: str, created: int) -> ChatEvents:
        head = self._stream_head(self.chunk_head, gid, created)
        events = ChatEvents(self, plan, head)
        if plan.wanted.logprobs is not None:
            events.logprobs = ChatLogprobs(self.corpus, plan)
        return events

    def completion_stream(self, plan: Plan, gid: str, created: int) -> TextEvents:
        head = self._stream_head(self.text_head, gid, created)
        events = TextEvents(self, plan, head)
        if plan.wanted.logprobs is not None:
            events.logprobs = TextLogprobs(self.corpus, plan)
        return events


class RouterEvents(EventStream):
    """
    The events of one OpenRouter stream.  ``head`` ends just before
    ``"choices":``; ``first`` is called when the first event goes out.
    """

    def __init__(self, renderer: RouterRenderer, plan: Plan, head: bytes) -> None:
        super().__init__(renderer.corpus, plan, head)
        self.renderer = renderer
        self.choice_head = head + b'"choices":['
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
        usage = self.renderer.usage(
            plan.prompt_tokens, plan.completion_tokens, plan.reasoning_tokens
        )
        return [self.head, b'"choices":[],"usage":', usage, b"}\n\n", DONE]


class ChatEvents(RouterEvents):
    """``chat.completion.chunk`` events."""

    def opening(self, choice: ChoicePlan) -> Pieces:
        self._begin()
        segments = choice.segments
        if segments and segments[0].kind == CALL:
            # The first call's header rides on the role chunk, as OpenAI's does.
            return [
                self.choice_head,
                b'{"index":%d,"delta":{"role":"assistant","content":null,' % choice.index,
                self._call_header(segments[0]),
                b"}",
                _CHAT_OPEN,
            ]
        return [
            self.choice_head,
            b'{"index":%d,"delta":{"role":"assistant","content":""}' % choice.index,
            _CHAT_OPEN,
        ]

    #: Set when the request asks for logprobs: content chunks carry their tokens'.
    logprobs: ChatLogprobs | None = None

    def content(self, choice: ChoicePlan, event: int) -> Pieces:
        if choice.segments is not None:
            return self._shaped(choice, choice.segments, event)
        self._count(choice, event)
        bounds = choice.bounds
        logprobs = self.logprobs
        return [
            self.choice_head,
            b'{"index":%d,"delta":{"content":"' % choice.index,
            self.view[bounds[event] : bounds[event + 1]],
            b'"}',
            _CHAT_OPEN if logprobs is None else _CHAT_LOGPROBS % logprobs.event(choice, event),
        ]

    def _shaped(self, choice: ChoicePlan, segments: list[Segment], event: int) -> Pieces:
        """
        One event of a segmented choice: a piece of reasoning (in
        ``reasoning`` and ``reasoning_details``, beside an empty
        ``content``), of text, or of a call's arguments (after the call's
        header event when it is the call's first).
        """
        spans = choice.spans
        index, start, end = spans[event]
        segment = segments[index]
        self._count(choice, event)
        piece = segment.view[start:end]
        head = self.choice_head
        number = b'{"index":%d,"delta":' % choice.index
        kind = segment.kind
        if kind == TEXT:
            logprobs = self.logprobs
            close = (
                _CHAT_OPEN if logprobs is None else _CHAT_LOGPROBS % logprobs.span(choice, event)
            )
            return [head, number, b'{"content":"', piece, b'"}', close]
        if kind == REASONING:
            return [
                head,
                number,
                b'{"content":"","reasoning":"',
                piece,
                b'",',
                _DETAIL_HEAD,
                piece,
                _DETAIL_TAIL,
                b"}",
                _CHAT_OPEN,
            ]
        pieces: Pieces = []
        if index and (event == 0 or spans[event - 1][0] != index):
            # A call's first fragment (the first segment's header went out with the role).
            pieces += (head, number, b"{", self._call_header(segment), b"}", _CHAT_OPEN)
        pieces += (
            head,
            number,
            b'{"tool_calls":[{"index":%d,"function":{"arguments":"' % segment.call,
            piece,
            b'"}}]}',
            _CHAT_OPEN,
        )
        return pieces

    def _call_header(self, call: Segment) -> bytes:
        """The first delta of a call: its index, id, type and name, and no arguments yet."""
        name = call.name.encode() if call.name else b""
        return (
            b'"tool_calls":[{"index":%d,"id":"call_%s","type":"function",'
            b'"function":{"name":"%s","arguments":""}}]'
            % (call.call, self.renderer.ids.tail().encode(), name)
        )

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

    #: Set when the request asks for logprobs: content chunks carry their tokens' columns.
    logprobs: TextLogprobs | None = None

    def __init__(self, renderer: RouterRenderer, plan: Plan, head: bytes) -> None:
        super().__init__(renderer, plan, head)
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
                _TEXT_OPEN
                if self.logprobs is None
                else _TEXT_LOGPROBS % self.logprobs.echoed(choice),
            )
        return pieces

    def content(self, choice: ChoicePlan, event: int) -> Pieces:
        self._count(choice, event)
        if choice.segments is not None:
            # As OpenAI's endpoint sends it: every segment's text, in turn.
            index, start, end = choice.spans[event]
            text = choice.segments[index].view[start:end]
        else:
            bounds = choice.bounds
            text = self.view[bounds[event] : bounds[event + 1]]
        logprobs = self.logprobs
        return [
            self.choice_head,
            b'{"text":"',
            text,
            b'","index":%d' % choice.index,
            _TEXT_OPEN if logprobs is None else _TEXT_LOGPROBS % logprobs.event(choice, event),
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
