# -*- test-case-name: tests.test_anthropic -*-
"""
Anthropic's Messages API over the simulation: ``POST /v1/messages`` as a
dialect of the one pipeline, ``POST /v1/messages/count_tokens``, and the
model list in Anthropic's shape (``GET /v1/models`` with an
``anthropic-version`` header).

What is Anthropic's here: the ``anthropic-version`` header it requires,
its validation (L{mockoai.dialects.anthropic.validate}), ``msg_`` ids, its
404 for a model it does not serve (a model's family decides: OpenAI's
models are not served here), ``max_tokens`` checked against the model's
limit and the prompt against its context window in its words, its error
envelope with the request id (L{mockoai.dialects.anthropic.errors}) and
its rate-limit headers, ``anthropic-ratelimit-*``, reporting the same
buckets every API spends from.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from twisted.python.failure import Failure

from mockoai.apierror import APIError
from mockoai.dialects.anthropic import errors, validate
from mockoai.dialects.anthropic.errors import AnthropicError
from mockoai.dialects.anthropic.render import MessageEvents, MessagesRenderer
from mockoai.ops.config import MESSAGES
from mockoai.pipeline.dialect import Answer, Dialect
from mockoai.pipeline.media import JSON, dumps

if TYPE_CHECKING:
    from mockoai.interfaces import Clock, Request
    from mockoai.ops.config import InputLimits, ModelSpec, Settings
    from mockoai.pipeline.ids import IdMaker
    from mockoai.pipeline.limits import Decision
    from mockoai.sim.core import Core, ServedModel
    from mockoai.sim.request import GenerationRequest
    from mockoai.sim.sampling import Plan

#: Templates kept for ad-hoc (--any-model) names, beyond the configured models'.
_ADHOC_RENDERERS = 1024
#: ``GET /v1/models``: the page size unless ``limit`` says, and its bounds.
PAGE = 20
MAX_PAGE = 1000


def timestamp(seconds: float) -> str:
    """RFC 3339 in UTC to the second, as Anthropic writes times."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def display_name(model: str) -> str:
    """``claude-opus-4-6`` is "Claude Opus 4.6"; a date suffix goes; other ids stay as they are."""
    parts = model.split("-")
    if parts[0] != "claude" or len(parts) < 2:
        return model
    if len(parts[-1]) == 8 and parts[-1].isdigit():
        parts = parts[:-1]
    words = [p.capitalize() for p in parts[1:] if not p.isdigit()]
    numbers = [p for p in parts[1:] if p.isdigit()]
    return " ".join(["Claude", *words, *([".".join(numbers)] if numbers else [])])


class RateHeaders:
    """
    Anthropic's ``anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}``
    of a rate-limit decision: the gate's own buckets, the reset an RFC 3339
    time (when the bucket is full again, to the second, rounded up).
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def __call__(self, decision: Decision) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        now = self.clock.seconds()
        for kind, quota in ((b"requests", decision.requests), (b"tokens", decision.tokens)):
            if quota is not None:
                head = b"anthropic-ratelimit-" + kind
                reset = timestamp(math.ceil(now + quota.reset)).encode()
                out += [
                    (head + b"-limit", b"%d" % quota.limit),
                    (head + b"-remaining", b"%d" % quota.remaining),
                    (head + b"-reset", reset),
                ]
        return out


class Anthropic:
    """What Anthropic's endpoints share: each model's templates, the model list, count_tokens."""

    def __init__(self, core: Core, ids: IdMaker, settings: Settings) -> None:
        self.core = core
        self.clock = core.clock
        self.ids = ids
        #: What a request body may hold (the hostile-input settings).
        self.limits: InputLimits = settings.input_limits
        self.rate_headers = RateHeaders(core.clock)
        specs = [served.spec for served in core.models.values() if core.serves(served, MESSAGES)]
        self._renderers = {s.id: MessagesRenderer(s.id, core.corpus) for s in specs}
        self._adhoc: dict[str, MessagesRenderer] = {}
        self._infos = [self._info(spec) for spec in specs]
        self._cards = {info["id"]: dumps(info) for info in self._infos}

    def _info(self, spec: ModelSpec) -> dict[str, object]:
        served = self.core.model(spec.id)
        max_tokens = served.profile.max_output_tokens if served is not None else None
        return {
            "type": "model",
            "id": spec.id,
            "display_name": display_name(spec.id),
            "created_at": timestamp(spec.created),
            "lifecycle": "active",
            "max_input_tokens": spec.context_length,
            "max_tokens": max_tokens,
        }

    def model(self, name: str) -> ServedModel:
        """The model a request names, or Anthropic's 404 (also for a model not served here)."""
        core = self.core
        served = core.model(name)
        if served is None or not core.serves(served, MESSAGES):
            raise errors.model_not_found(name)
        return served

    def renderer(self, served: ServedModel) -> MessagesRenderer:
        name = served.spec.id
        renderer = self._renderers.get(name) or self._adhoc.get(name)
        if renderer is None:
            renderer = MessagesRenderer(name, self.core.corpus)
            if len(self._adhoc) < _ADHOC_RENDERERS:
                self._adhoc[name] = renderer
        return renderer

    def message_id(self) -> str:
        """``msg_01`` and 22 more characters, as Anthropic's are."""
        return "msg_01" + self.ids.completion()[7:]

    # --- the endpoints that are not generations ---------------------------------

    def count_tokens(self, request: Request) -> bytes:
        """``POST /v1/messages/count_tokens``: ``{"input_tokens": N}`` of a prompt."""
        rid = errors.stamp(request)
        try:
            _version(request)
            body = validate.parse_body(request.content.read(), self.limits)
            model, tokens = validate.count_tokens(body, self.limits)
            self.model(model)
        except AnthropicError as e:
            e.request_id = rid
            raise
        request.setHeader(b"Content-Type", JSON)
        return b'{"input_tokens":%d}' % tokens

    def models(self, request: Request) -> bytes:
        """``GET /v1/models`` in Anthropic's shape: a page of the models served here."""
        errors.stamp(request)
        query = parse_qs(urlsplit(bytes(request.uri).decode("utf-8", "replace")).query)
        infos = self._infos
        limit = PAGE
        if "limit" in query:
            raw = query["limit"][0]
            if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
                raise (
                    validate.at_most("limit", MAX_PAGE)
                    if raw.isdigit()
                    else validate.wrong_type("limit", int)
                )
            limit = int(raw)
        ids = [info["id"] for info in infos]
        if "after_id" in query and query["after_id"][0] in ids:
            page = infos[ids.index(query["after_id"][0]) + 1 :][:limit]
            more = ids.index(query["after_id"][0]) + 1 + limit < len(ids)
        elif "before_id" in query and query["before_id"][0] in ids:
            end = ids.index(query["before_id"][0])
            page = infos[max(0, end - limit) : end]
            more = end - limit > 0
        else:
            page, more = infos[:limit], limit < len(infos)
        request.setHeader(b"Content-Type", JSON)
        return dumps(
            {
                "data": page,
                "has_more": more,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
            }
        )

    def card(self, request: Request, model_id: str) -> bytes:
        """``GET /v1/models/{id}`` in Anthropic's shape, or its 404."""
        rid = errors.stamp(request)
        card = self._cards.get(model_id)
        if card is None:
            try:
                served = self.model(model_id)
            except AnthropicError as e:
                e.request_id = rid
                raise
            card = dumps(self._info(served.spec))
        request.setHeader(b"Content-Type", JSON)
        return card


def _version(request: Request) -> None:
    if not request.getHeader(b"anthropic-version"):
        raise errors.missing_version()


class MessagesDialect(Dialect):
    """``POST /v1/messages``."""

    kind = MESSAGES
    envelope = staticmethod(errors.envelope)

    def __init__(self, api: Anthropic) -> None:
        self.api = api
        self.clock = api.clock
        self.limits = api.limits
        self.refusal = _refused

    def parse(self, request: Request) -> MessagesAnswer:
        rid = errors.stamp(request)
        try:
            _version(request)
            body = validate.parse_body(request.content.read(), self.limits)
            wanted, extras = validate.messages(body, self.limits)
        except AnthropicError as e:
            e.request_id = rid
            raise
        return MessagesAnswer(self, request, wanted, extras, rid)


def _refused(error: APIError, request: Request) -> APIError:
    """The pipeline's refusals (rate limits, a full engine) in Anthropic's words and statuses."""
    rid = errors.request_id(request)
    return errors.translate(error, None if rid is None else rid.decode("latin-1"))


class MessagesAnswer(Answer):
    """One Message on its way out."""

    __slots__ = ("extras", "id", "renderer", "request_id")

    #: Hooked for L{abandoned}: an engine's refusal after the fact is Anthropic's too.
    hooked = True
    dialect: MessagesDialect

    def __init__(
        self,
        dialect: MessagesDialect,
        request: Request,
        wanted: GenerationRequest,
        extras: validate.Extras,
        request_id: str | None,
    ) -> None:
        super().__init__(dialect, request, wanted)
        self.extras = extras
        self.request_id = request_id

    def resolve(self) -> ServedModel:
        wanted = self.wanted
        try:
            served = self.dialect.api.model(wanted.model)
            _fits(served, wanted)
        except AnthropicError as e:
            e.request_id = self.request_id
            raise
        self.served = served
        return served

    def begin(self, plan: Plan, cut: int | None) -> None:
        api = self.dialect.api
        self.plan = plan
        self.id = api.message_id()
        self.renderer = api.renderer(self.served)

    def body(self) -> bytes:
        return self.renderer.body(self.plan, self.id)

    def events(self) -> MessageEvents:
        return self.renderer.stream(self.plan, self.id)

    def mid_stream_error(self) -> APIError:
        error = errors.server_error()
        error.request_id = self.request_id
        return error

    def abandoned(self, failure: Failure) -> Failure:
        """A plain answer the engine gave up on (a queue timeout): in Anthropic's envelope."""
        error = failure.value
        if isinstance(error, APIError):
            return Failure(errors.translate(error, self.request_id))
        return failure


def _fits(served: ServedModel, wanted: GenerationRequest) -> None:
    """``max_tokens`` within the model's output limit, the prompt within its context."""
    cap = served.profile.max_output_tokens
    model = served.spec.id
    asked = wanted.max_tokens or 0
    if asked > cap:
        raise errors.invalid(
            f"max_tokens: {asked} > {cap}, which is the maximum allowed number of output "
            f"tokens for {model}"
        )
    context = served.spec.context_length
    prompt = wanted.prompt_tokens
    if prompt > context:
        raise errors.invalid(f"prompt is too long: {prompt} tokens > {context} maximum")
    if prompt + asked > context:
        raise errors.invalid(
            f"input length and `max_tokens` exceed context limit: {prompt} + {asked} > "
            f"{context}, decrease input length or `max_tokens` and try again"
        )
