# -*- test-case-name: tests.test_openrouter,tests.test_openrouter_tools -*-
"""
OpenRouter's generation endpoints, ``/api/v1/chat/completions`` and
``/api/v1/completions``, as dialects of the one pipeline.

What OpenRouter does around the shared path: it takes any bearer key and
checks its credits, routes among ``model``/``models`` and the providers
(L{mockoai.dialects.openrouter.routing}), turns its ``reasoning``
parameter into the planner's (L{routing.Reasoning.apply}), renders in its
own shape (reasoning text, tool calls and all) with ``gen-`` ids
and an ``X-Generation-Id`` header, sends ``: OPENROUTER PROCESSING``
comments while a stream waits for its first token, breaks the configured
share of a model's generations mid-way (L{mockoai.pipeline.faults}), and
records every generation with its cost once it is over, however it ended.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError
from twisted.python.failure import Failure

from mockoai.dialects.openai import validate
from mockoai.dialects.openrouter import errors, routing
from mockoai.dialects.openrouter.api import OpenRouter, api_key
from mockoai.dialects.openrouter.render import RouterEvents, RouterRenderer
from mockoai.dialects.openrouter.store import Generation
from mockoai.ops.config import CHAT, COMPLETIONS, EMBEDDINGS
from mockoai.pipeline.auth import KeyRefusals
from mockoai.pipeline.dialect import Answer, Dialect

if TYPE_CHECKING:
    from mockoai.apierror import APIError
    from mockoai.dialects.openrouter.stream import Processing
    from mockoai.interfaces import Request
    from mockoai.ops.config import InputLimits
    from mockoai.pipeline.stream import StreamProducer
    from mockoai.sim.core import ServedModel
    from mockoai.sim.request import GenerationRequest
    from mockoai.sim.sampling import Plan

#: The endpoints a model that generates answers on (an embedding model on none of them).
GENERATING = frozenset({CHAT, COMPLETIONS})

#: OpenRouter's 401s, for the site's key check under L{errors.PREFIX}.
KEY_REFUSALS = KeyRefusals(errors.no_credentials, lambda _: errors.user_not_found())


class RouterDialect(Dialect):
    """``/api/v1/chat/completions`` or ``/api/v1/completions``."""

    envelope = staticmethod(errors.body)
    #: A generation that breaks is still a 200: its status line went out long ago.
    cut_status = 200

    def __init__(self, api: OpenRouter, kind: str) -> None:
        self.api = api
        self.kind = kind
        self.clock = api.clock
        self.limits = api.limits
        self.faults = api.faults
        chat = kind == CHAT
        self.validate: Callable[[dict[str, object], InputLimits], GenerationRequest] = (
            validate.chat if chat else validate.completions
        )
        self.chat = chat
        #: How OpenRouter's errors name the endpoint.
        self.path = "chat/completions" if chat else "completions"
        self.render_body: Callable[[RouterRenderer, Plan, str, int], bytes] = (
            RouterRenderer.chat_body if chat else RouterRenderer.completion_body
        )
        self.render_stream: Callable[[RouterRenderer, Plan, str, int], RouterEvents] = (
            RouterRenderer.chat_stream if chat else RouterRenderer.completion_stream
        )

    def parse(self, request: Request) -> RouterAnswer:
        """The key, the body (``models[0]`` standing in for a missing ``model``), the credits."""
        arrived = self.clock.seconds()
        key = api_key(request)
        limits = self.limits
        body = validate.parse_body(request.content.read(), limits.max_json_depth)
        fallbacks = body.get("models")
        if not body.get("model") and isinstance(fallbacks, list) and fallbacks:
            body["model"] = fallbacks[0]
        wanted = self.validate(body, limits)
        api = self.api
        extras = routing.parse(body, wanted.model, api.router.providers, wanted.reasoning_effort)
        api.accounts.check(key, arrived)
        return RouterAnswer(self, request, wanted, body, extras, key, arrived)


def flagged_text(body: dict[str, Any]) -> str:
    """The input a moderation error quotes: the last message's text, or the prompt."""
    messages = body.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        content = messages[-1].get("content")
        if isinstance(content, list):
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        return str(content or "")
    prompt = body.get("prompt")
    return prompt if isinstance(prompt, str) else ""


def _first_visible(plan: Plan) -> float:
    """When the first token a client sees is out: hidden reasoning comes before it."""
    hidden = plan.choices[0].hidden if plan.choices else 0
    return plan.timing.at(hidden) if hidden else plan.ttft


def _header(request: Request, *names: bytes) -> str | None:
    for name in names:
        value = request.getHeader(name)
        if value:
            return bytes(value).decode("utf-8", "replace")
    return None


class RouterAnswer(Answer):
    """One routed generation on its way out, and its record when it is over."""

    __slots__ = (
        "arrived",
        "body_fields",
        "cut",
        "extras",
        "first_at",
        "gid",
        "key",
        "origin",
        "processing",
        "provider",
        "renderer",
        "stream_events",
        "title",
        "user",
    )

    hooked = True
    dialect: RouterDialect

    def __init__(
        self,
        dialect: RouterDialect,
        request: Request,
        wanted: GenerationRequest,
        body: dict[str, Any],
        extras: routing.Extras,
        key: str,
        arrived: float,
    ) -> None:
        super().__init__(dialect, request, wanted)
        self.body_fields = body
        self.extras = extras
        self.key = key
        self.arrived = arrived
        self.cut: int | None = None
        self.first_at: float | None = None

    def resolve(self) -> ServedModel:
        """The first model and provider of ``model``/``models`` that can answer."""
        body = self.body_fields
        route = self.dialect.api.router.route(self.extras, self.wanted, lambda: flagged_text(body))
        wanted = self.wanted
        wanted.prompt_tokens = route.prompt_tokens
        self.provider = route.provider
        served = self.served = route.served
        endpoints = served.spec.endpoints
        if EMBEDDINGS in endpoints and not endpoints & GENERATING:
            raise errors.embedding_model(served.spec.id, self.dialect.path)
        reasoning = self.extras.reasoning
        if reasoning is not None:
            reasoning.apply(wanted, served.profile, self.dialect.chat)
        elif not self.dialect.chat:
            # A text completion has no field for it: a model thinks out of sight.
            wanted.reasoning_visible = False
        return served

    def begin(self, plan: Plan, cut: int | None) -> None:
        """The ``gen-`` id, who asked."""
        api = self.dialect.api
        served = self.served
        self.plan = plan
        self.cut = cut
        self.gid = f"gen-{int(self.arrived)}-{api.ids.completion()}"
        request = self.request
        request.setHeader(b"X-Generation-Id", self.gid.encode())
        user = self.body_fields.get("user")
        self.origin = _header(request, b"http-referer", b"referer") or ""
        self.title = _header(request, b"x-title", b"x-openrouter-title")
        self.user = user if isinstance(user, str) else None
        self.renderer = api.renderer(served.spec, self.provider)

    # --- plain ------------------------------------------------------------------

    def body(self) -> bytes:
        plan = self.plan
        finish = plan.choices[0].finish_reason if plan.choices else "stop"
        self._record(plan.completion_tokens, finish, False, _first_visible(plan))
        return self.dialect.render_body(self.renderer, plan, self.gid, int(self.arrived))

    def mid_stream_error(self) -> APIError:
        return errors.mid_stream(self.served.spec.id, self.renderer.provider)

    def broken(self) -> bytes:
        """OpenRouter's error in a 200 body, once the failing token is out."""
        assert self.cut is not None
        self._record(self.cut, "error", False, _first_visible(self.plan))
        return super().broken()

    def abandoned(self, failure: Failure) -> Failure:
        """
        A client that leaves a non-streaming request early is still billed in
        full, as OpenRouter does: the provider goes on generating.
        """
        if failure.check(CancelledError):
            plan = self.plan
            if self.cut is None:
                tokens = plan.completion_tokens
                finish = plan.choices[0].finish_reason if plan.choices else "stop"
            else:
                tokens, finish = self.cut, "error"
            self._record(tokens, finish, True, _first_visible(plan))
        return failure

    # --- streamed ---------------------------------------------------------------

    def events(self) -> RouterEvents:
        events = self.dialect.render_stream(self.renderer, self.plan, self.gid, int(self.arrived))
        events.first = self._first
        self.stream_events = events
        self.processing: Processing = self.dialect.api.processing(self.served.pacer)
        return events

    def waiting(self, stream: StreamProducer) -> None:
        """Comment while the first token is pending (one beat per model, not a timer each)."""
        if not self.stream_events.started:
            self.processing.add(self)

    def _first(self) -> None:
        self.first_at = self.dialect.clock.seconds()
        self.processing.discard(self)

    def ended(self, _: None, stream: StreamProducer) -> None:
        """Record it: whole, broken off, or cancelled (billed for what was sent)."""
        self.processing.discard(self)
        events = self.stream_events
        events.first = None  # a bound method of this answer: no cycle left behind
        now = self.dialect.clock.seconds()
        if stream.broken:
            finish: str | None = "error"
        elif events.closed:
            finish = self.plan.choices[0].finish_reason if self.plan.choices else "stop"
        else:
            finish = None
        first = self.first_at if self.first_at is not None else now
        self._record(
            events.sent,
            finish,
            cancelled=not (events.closed or stream.broken),
            latency=first - self.arrived,
            now=now,
        )

    def _record(
        self,
        completion_tokens: int,
        finish: str | None,
        cancelled: bool,
        latency: float,
        now: float | None = None,
    ) -> None:
        api = self.dialect.api
        now = api.clock.seconds() if now is None else now
        prompt = self.plan.prompt_tokens
        renderer = self.renderer
        prompt_cost, completion_cost, cost = renderer.costs.of(prompt, completion_tokens)
        api.record(
            Generation(
                id=self.gid,
                key=self.key,
                model=renderer.model,
                provider=renderer.provider,
                created=self.arrived,
                api_type="completions",
                streamed=self.wanted.stream,
                cancelled=cancelled,
                finish_reason=finish,
                prompt_tokens=prompt,
                completion_tokens=completion_tokens,
                # Reasoning comes first: all of it was out, or all that was.
                reasoning_tokens=min(self.plan.reasoning_tokens, completion_tokens),
                prompt_cost=prompt_cost,
                completion_cost=completion_cost,
                total_cost=cost,
                latency=latency,
                generation_time=now - self.arrived,
                origin=self.origin,
                title=self.title,
                user=self.user,
                upstream_id="chatcmpl-" + self.gid.rsplit("-", 1)[-1],
            ),
            now,
        )
