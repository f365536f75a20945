# -*- test-case-name: tests.test_routes -*-
"""
OpenAI's API over the simulation: ``/v1/chat/completions`` and
``/v1/completions`` as dialects of the one pipeline, and ``/v1/models``.

What is OpenAI's here: the content type it insists on, its validation and
its exact 400s (L{mockoai.dialects.openai.validate}), its 404s for unknown
models and wrong endpoints, ``chatcmpl-``/``cmpl-`` ids with the arrival
second as ``created``, ``openai-processing-ms`` on plain answers, and its
templates (L{mockoai.dialects.openai.render}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from mockoai.dialects.openai import validate
from mockoai.dialects.openai.render import EventStream, Renderer, model_object, models_list
from mockoai.ops.config import CHAT
from mockoai.pipeline import errors
from mockoai.pipeline.dialect import Answer, Dialect
from mockoai.pipeline.media import JSON

if TYPE_CHECKING:
    from mockoai.interfaces import Request
    from mockoai.ops.config import InputLimits, Settings
    from mockoai.pipeline.ids import IdMaker
    from mockoai.sim.core import Core, ServedModel
    from mockoai.sim.request import GenerationRequest
    from mockoai.sim.sampling import Plan

#: Templates kept for ad-hoc (--any-model) names, beyond the configured models'.
_ADHOC_RENDERERS = 1024


class OpenAI:
    """What OpenAI's endpoints share: each model's templates, the model list and cards."""

    def __init__(self, core: Core, ids: IdMaker, settings: Settings) -> None:
        self.core = core
        self.clock = core.clock
        self.ids = ids
        #: What a request body may hold (the hostile-input settings).
        self.limits: InputLimits = settings.input_limits
        self._fingerprint = settings.answers.system_fingerprint
        specs = [served.spec for served in core.models.values()]
        self._renderers = {s.id: Renderer(s.id, self._fingerprint, core.corpus, ids) for s in specs}
        self._adhoc: dict[str, Renderer] = {}
        self.models_body = models_list([(s.id, s.created, s.owned_by) for s in specs])
        self._cards = {s.id: model_object(s.id, s.created, s.owned_by) for s in specs}

    def model(self, name: str, kind: str) -> ServedModel:
        """The model a request names, or the 404 OpenAI would answer."""
        core = self.core
        served = core.model(name)
        if served is None:
            raise errors.model_not_found(name)
        if not core.serves(served, kind):
            raise errors.wrong_endpoint(kind)
        return served

    def renderer(self, served: ServedModel) -> Renderer:
        """The templates of ``served``, built at startup for the configured models."""
        name = served.spec.id
        renderer = self._renderers.get(name) or self._adhoc.get(name)
        if renderer is None:
            renderer = Renderer(name, self._fingerprint, self.core.corpus, self.ids)
            if len(self._adhoc) < _ADHOC_RENDERERS:
                self._adhoc[name] = renderer
        return renderer

    def card(self, name: str) -> bytes:
        """``GET /v1/models/{name}``: the model object, or OpenAI's 404."""
        card = self._cards.get(name)
        if card is None:
            served = self.core.model(name)
            if served is None:
                raise errors.model_not_found(name)
            spec = served.spec
            card = model_object(spec.id, spec.created, spec.owned_by)
        return card


class OpenAIDialect(Dialect):
    """``/v1/chat/completions`` or ``/v1/completions``."""

    def __init__(self, api: OpenAI, kind: str) -> None:
        self.api = api
        self.kind = kind
        self.clock = api.clock
        self.ids = api.ids
        self.limits = api.limits
        chat = kind == CHAT
        self.validate: Callable[[dict[str, object], InputLimits], GenerationRequest] = (
            validate.chat if chat else validate.completions
        )
        self.render_body: Callable[[Renderer, Plan, str, int], bytes] = (
            Renderer.chat_body if chat else Renderer.completion_body
        )
        self.render_stream: Callable[[Renderer, Plan, str, int], EventStream] = (
            Renderer.chat_stream if chat else Renderer.completion_stream
        )

    def parse(self, request: Request) -> OpenAIAnswer:
        content_type = request.getHeader(b"content-type")
        if content_type is not None and content_type != JSON and not _is_json(content_type):
            raise errors.unsupported_content_type(content_type.decode("latin-1"))
        limits = self.limits
        body = validate.parse_body(request.content.read(), limits.max_json_depth)
        answer = OpenAIAnswer(self, request, self.validate(body, limits))
        # The legacy functions API answers in its own shape.
        answer.legacy = "functions" in body and body.get("tools") is None
        return answer


def _is_json(content_type: bytes) -> bool:
    """``application/json``, with parameters or not (OpenAI takes ``; charset=utf-8``)."""
    return content_type.split(b";", 1)[0].strip().lower() == JSON


class OpenAIAnswer(Answer):
    """One OpenAI answer: its id, its arrival second and its model's templates."""

    __slots__ = ("arrived", "created", "id", "legacy", "renderer")

    dialect: OpenAIDialect
    #: The legacy functions API (``functions``, not ``tools``): its own shapes.
    legacy: bool

    def resolve(self) -> ServedModel:
        dialect = self.dialect
        wanted = self.wanted
        served = self.served = dialect.api.model(wanted.model, dialect.kind)
        effort = wanted.reasoning_effort
        reasoning = served.profile.reasoning
        if effort is not None and effort != "none" and reasoning == "none":
            raise errors.unsupported_parameter("reasoning_effort")
        # OpenAI's reasoning models give no logprobs.
        if wanted.logprobs is not None and reasoning == "hidden":
            raise errors.unsupported_parameter("logprobs")
        return served

    def begin(self, plan: Plan, cut: int | None) -> None:
        dialect = self.dialect
        self.plan = plan
        self.arrived = dialect.clock.seconds()
        self.created = int(self.arrived)
        self.id = dialect.ids.completion()
        self.renderer = dialect.api.renderer(self.served)

    def body(self) -> bytes:
        dialect = self.dialect
        elapsed = dialect.clock.seconds() - self.arrived
        self.request.setHeader(b"openai-processing-ms", b"%d" % round(elapsed * 1000))
        if self.legacy:
            return self.renderer.chat_body(self.plan, self.id, self.created, legacy=True)
        return dialect.render_body(self.renderer, self.plan, self.id, self.created)

    def events(self) -> EventStream:
        if self.legacy:
            return self.renderer.chat_stream(self.plan, self.id, self.created, legacy=True)
        return self.dialect.render_stream(self.renderer, self.plan, self.id, self.created)
