# -*- test-case-name: tests.test_openrouter -*-
"""
OpenRouter mode: what its ``/api/v1`` endpoints share -- routing, accounts,
finished generations, each (model, provider)'s templates -- and the
endpoints that are not generations: ``/generation``, ``/key``,
``/credits`` and the model catalog.  The generation endpoints are the
pipeline's, in OpenRouter's dialect (L{mockoai.dialects.openrouter.dialect}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from mockoai.dialects.openrouter import errors
from mockoai.dialects.openrouter.accounts import Accounts
from mockoai.dialects.openrouter.catalog import Catalog
from mockoai.dialects.openrouter.render import RouterRenderer
from mockoai.dialects.openrouter.routing import ProviderRouter
from mockoai.dialects.openrouter.store import Generation, GenerationStore
from mockoai.dialects.openrouter.stream import Processing
from mockoai.ops.config import ModelSpec, ProviderSpec
from mockoai.pipeline.faults import StreamErrors
from mockoai.pipeline.media import JSON
from mockoai.sim.pacing import Pacer

if TYPE_CHECKING:
    from mockoai.interfaces import Request
    from mockoai.ops.config import InputLimits, Settings
    from mockoai.pipeline.ids import IdMaker
    from mockoai.sim.core import Core

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


class OpenRouter:
    """OpenRouter's shared state and its other endpoints, built once over a L{Core}."""

    def __init__(self, core: Core, ids: IdMaker, settings: Settings) -> None:
        openrouter = settings.openrouter
        self.core = core
        self.clock = core.clock
        self.ids = ids
        #: What a request body may hold (the hostile-input settings).
        self.limits: InputLimits = settings.input_limits
        self.router = ProviderRouter(openrouter.providers, openrouter.failing_models, core.model)
        self.accounts = Accounts(openrouter.credit_limit)
        self.store = GenerationStore(openrouter.generations, openrouter.generation_ttl)
        self.catalog = Catalog(
            [(m.spec, m.profile.max_output_tokens) for m in core.models.values()], self.router
        )
        self._fingerprint = settings.answers.system_fingerprint
        self._interval = openrouter.processing_interval
        self._renderers = {
            (served.spec.id, provider.slug): RouterRenderer(
                served.spec, provider, self._fingerprint, core.corpus, ids
            )
            for served in core.models.values()
            for provider in self.router.serving(served.spec)
        }
        self._adhoc: dict[tuple[str, str], RouterRenderer] = {}
        self._processing: dict[Pacer, Processing] = {}
        #: The models' ``stream_error_rate``: one seeded draw per generation.
        self.faults = StreamErrors(settings.answers.corpus_seed)

    def renderer(self, spec: ModelSpec, provider: ProviderSpec) -> RouterRenderer:
        """The templates of ``spec`` on ``provider``, built at startup for configured models."""
        key = (spec.id, provider.slug)
        renderer = self._renderers.get(key) or self._adhoc.get(key)
        if renderer is None:
            renderer = RouterRenderer(spec, provider, self._fingerprint, self.core.corpus, self.ids)
            if len(self._adhoc) < _ADHOC_RENDERERS:
                self._adhoc[key] = renderer
        return renderer

    def processing(self, pacer: Pacer) -> Processing:
        processing = self._processing.get(pacer)
        if processing is None:
            processing = self._processing[pacer] = Processing(pacer, self._interval)
        return processing

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
