# -*- test-case-name: tests.test_openrouter -*-
"""
OpenRouter mode: the ``/api/v1`` endpoints over the core's simulation.

A generation request runs the same path as an OpenAI one -- validate,
L{Planner.plan}, pacing by the shared producer or timer -- with OpenRouter's
steps around it: authenticate the key and check its credits, route among
``model``/``models`` and the providers, render in OpenRouter's dialect, and
record the finished generation and its cost for ``/generation``, ``/key``
and ``/credits``.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from mockoai.dialects.openrouter import errors, routing
from mockoai.dialects.openrouter.accounts import Accounts
from mockoai.dialects.openrouter.answer import Answer, Caller, Result
from mockoai.dialects.openrouter.catalog import Catalog
from mockoai.dialects.openrouter.render import RouterRenderer
from mockoai.dialects.openrouter.routing import Router
from mockoai.dialects.openrouter.store import Generation, GenerationStore
from mockoai.dialects.openrouter.stream import Processing
from mockoai.ops.config import CHAT, ModelSpec, ProviderSpec
from mockoai.pipeline import validate
from mockoai.pipeline.errors import APIError
from mockoai.pipeline.outcome import Outcome, attach
from mockoai.pipeline.validate import GenerationRequest
from mockoai.sim.latency import Timing
from mockoai.sim.pacing import Pacer

if TYPE_CHECKING:
    from mockoai.interfaces import Request
    from mockoai.sim.core import Core

JSON = b"application/json"
#: Renderers kept for ad-hoc (--any-model) models, beyond the configured ones.
_ADHOC_RENDERERS = 4096


def api_key(request: Request) -> str:
    """The ``Authorization: Bearer`` key, or OpenRouter's 401."""
    header = request.getHeader(b"authorization") or b""
    scheme, _, key = header.partition(b" ")
    key = key.strip()
    if scheme.lower() != b"bearer" or not key:
        raise errors.no_credentials()
    return key.decode("utf-8", "replace")


def _header(request: Request, *names: bytes) -> str | None:
    for name in names:
        value = request.getHeader(name)
        if value:
            return bytes(value).decode("utf-8", "replace")
    return None


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


def thinking(timing: Timing, tokens: int, itl: float) -> Timing:
    """``timing`` pushed back by ``tokens`` tokens of hidden reasoning."""
    extra = tokens * itl
    table = None if timing.table is None else [t + extra for t in timing.table]
    return Timing(timing.ttft + extra, timing.itl, table)


class OpenRouter:
    """OpenRouter's endpoints, state and renderers, built once over a L{Core}."""

    def __init__(self, core: Core) -> None:
        settings = core.settings
        openrouter = settings.openrouter
        self.core = core
        self.clock = core.clock
        self.router = Router(openrouter.providers, openrouter.failing_models, core.model)
        self.accounts = Accounts(openrouter.credit_limit)
        self.store = GenerationStore(openrouter.generations, openrouter.generation_ttl)
        self.catalog = Catalog(
            [(m.spec, m.profile.max_output_tokens) for m in core.models.values()], self.router
        )
        self._fingerprint = settings.answers.system_fingerprint
        self._interval = openrouter.processing_interval
        self._renderers = {
            (served.spec.id, provider.slug): RouterRenderer(
                served.spec, provider, self._fingerprint, core.corpus
            )
            for served in core.models.values()
            for provider in self.router.serving(served.spec)
        }
        self._adhoc: dict[tuple[str, str], RouterRenderer] = {}
        self._processing: dict[Pacer, Processing] = {}
        self._rng = random.Random(settings.answers.corpus_seed)

    def renderer(self, spec: ModelSpec, provider: ProviderSpec) -> RouterRenderer:
        """The templates of ``spec`` on ``provider``, built at startup for configured models."""
        key = (spec.id, provider.slug)
        renderer = self._renderers.get(key) or self._adhoc.get(key)
        if renderer is None:
            renderer = RouterRenderer(spec, provider, self._fingerprint, self.core.corpus)
            if len(self._adhoc) < _ADHOC_RENDERERS:
                self._adhoc[key] = renderer
        return renderer

    def processing(self, pacer: Pacer) -> Processing:
        processing = self._processing.get(pacer)
        if processing is None:
            processing = self._processing[pacer] = Processing(pacer, self._interval)
        return processing

    def fails(self, spec: ModelSpec, seed: int | None) -> bool:
        """Whether this request's stream breaks: a draw against the model's error rate."""
        rate = spec.stream_error_rate
        if rate <= 0:
            return False
        if rate >= 1:
            return True
        rng = self._rng if seed is None else random.Random(seed)
        return rng.random() < rate

    # --- generation ---------------------------------------------------------------

    def generate(self, request: Request, kind: str) -> Result:
        """``POST /api/v1/chat/completions`` and ``/api/v1/completions``."""
        clock = self.clock
        arrived = clock.seconds()
        key = api_key(request)
        limits = self.core.input_limits
        body = validate.parse_body(request.content.read(), limits.max_json_depth)
        fallbacks = body.get("models")
        if not body.get("model") and isinstance(fallbacks, list) and fallbacks:
            body["model"] = fallbacks[0]
        wanted = (validate.chat if kind == CHAT else validate.completions)(body, limits)
        extras = routing.parse(body, wanted.model, self.router.providers)
        self.accounts.check(key, arrived)
        route = self.router.route(extras, wanted, lambda: flagged_text(body))
        wanted.prompt_tokens = route.prompt_tokens
        served = route.served
        model_stats = self.core.stats.for_model(served.spec.id)
        # Recorded into through the request's record, which the finish hook reads.
        stats = attach(request, model_stats, served.spec.id, wanted.stream, wanted.prompt_tokens)
        stats.arrived()
        try:
            return self._answer(request, kind, body, wanted, extras, route, key, arrived, stats)
        except APIError as e:
            stats.refused(e.status)
            raise

    def _answer(
        self,
        request: Request,
        kind: str,
        body: dict[str, Any],
        wanted: GenerationRequest,
        extras: routing.Extras,
        route: routing.Route,
        key: str,
        arrived: float,
        stats: Outcome,
    ) -> Result:
        """A routed request: rate-limited, planned, then answered like an OpenAI one."""
        served = route.served
        core = self.core
        core.rate_limit(request, wanted, served)
        plan = core.planner.plan(wanted, served.profile)
        reasoning = extras.reasoning(served.profile.tokens_mean)
        if reasoning and served.engine is None:
            plan.timing = thinking(plan.timing, reasoning, served.profile.itl.mean)
        fails = self.fails(served.spec, wanted.seed)
        fail_after = served.spec.stream_error_after if fails else None
        if fail_after is not None and fail_after > plan.completion_tokens:
            fail_after = None  # the answer ends before the failure would come
        created = int(arrived)
        gid = f"gen-{created}-{self.core.ids.completion()}"
        request.setHeader(b"X-Generation-Id", gid.encode())
        user = body.get("user")
        caller = Caller(
            key,
            _header(request, b"http-referer", b"referer") or "",
            _header(request, b"x-title", b"x-openrouter-title"),
            user if isinstance(user, str) else None,
        )
        answer = Answer(self, route, plan, gid, arrived, reasoning, caller, wanted, stats)
        if wanted.stream:
            return answer.stream(request, kind, fail_after)
        return answer.reply(request, kind, fail_after)

    # --- generations, keys, credits, models -----------------------------------------

    def generation(self, request: Request) -> bytes:
        """``GET /api/v1/generation?id=``: a finished generation of the caller's key."""
        key = api_key(request)
        query = parse_qs(urlsplit(bytes(request.uri).decode("utf-8", "replace")).query)
        ids = query.get("id")
        if not ids or not ids[0]:
            raise errors.invalid("Missing required query parameter: id")
        record = self.store.get(ids[0], self.clock.seconds())
        if record is None or record.key != key:
            raise errors.generation_not_found(ids[0])
        request.setHeader(b"Content-Type", JSON)
        return record.body()

    def key(self, request: Request) -> bytes:
        """``GET /api/v1/key`` (and the older ``/api/v1/auth/key``)."""
        # A configured key (--api-key) is shown by its label.
        label = getattr(request, "key_label", None)
        body = self.accounts.key_body(api_key(request), self.clock.seconds(), label)
        request.setHeader(b"Content-Type", JSON)
        return body

    def credits(self, request: Request) -> bytes:
        """``GET /api/v1/credits``."""
        body = self.accounts.credits_body(api_key(request), self.clock.seconds())
        request.setHeader(b"Content-Type", JSON)
        return body

    def models(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", JSON)
        return self.catalog.body

    def model(self, request: Request, model_id: str) -> bytes:
        card = self.catalog.cards.get(model_id)
        if card is None:
            raise errors.model_not_found(model_id)
        request.setHeader(b"Content-Type", JSON)
        return card

    def endpoints(self, request: Request, model_id: str) -> bytes:
        endpoints = self.catalog.endpoint_lists.get(model_id)
        if endpoints is None:
            raise errors.model_not_found(model_id)
        request.setHeader(b"Content-Type", JSON)
        return endpoints

    def record(self, generation: Generation, now: float) -> None:
        """A generation is over: keep its stats and charge its key."""
        self.store.add(generation, now)
        self.accounts.charge(generation.key, generation.total_cost, now)
