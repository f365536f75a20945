# -*- test-case-name: tests.test_routes -*-
"""
The protocol-agnostic core: the corpus, the planner, and one L{ServedModel}
(templates + pacer) per configured model.  Built once at startup; routes
only look things up in it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import attrs

from mockoai.dialects.openai.render import Renderer, model_object, models_list
from mockoai.dialects.openrouter.api import OpenRouter
from mockoai.ops.config import ENDPOINT_KINDS, ModelProfile, ModelSpec, Settings
from mockoai.ops.stats import Stats
from mockoai.pipeline import auth, errors
from mockoai.pipeline.ids import IdMaker
from mockoai.pipeline.limits import RateLimits
from mockoai.pipeline.validate import GenerationRequest
from mockoai.sim import corpus as corpus_module
from mockoai.sim.corpus import Corpus
from mockoai.sim.engine import Engine
from mockoai.sim.pacing import Pacer
from mockoai.sim.sampling import Planner

if TYPE_CHECKING:
    from mockoai.interfaces import Clock

#: How many ad-hoc model names (--any-model) keep their templates cached.
_ADHOC_CACHE = 1024


@attrs.define
class ServedModel:
    """A model as served: its profile, templates, clock and (maybe) engine."""

    spec: ModelSpec
    profile: ModelProfile
    renderer: Renderer
    pacer: Pacer
    card: bytes
    engine: Engine | None = None


class Core:
    """Everything a request needs that outlives the request."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        corpus: Corpus | None = None,
        ids: IdMaker | None = None,
        slack: float = 0.0005,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.corpus = corpus or corpus_module.build(
            settings.answers.articles, settings.answers.corpus_seed
        )
        self.planner = Planner(self.corpus, settings)
        self.ids = ids or IdMaker()
        self._slack = slack
        self.models = {spec.id: self._serve(spec) for spec in settings.served.models}
        self._adhoc: dict[str, ServedModel] = {}
        self._adhoc_pacer = Pacer(clock, slack)
        self._adhoc_engine: Engine | None = None
        #: The accepted API keys (None: any key or none is accepted).
        self.auth = auth.from_settings(settings.auth)
        self.limits = RateLimits(
            clock,
            settings.rates.rpm,
            settings.rates.tpm,
            settings.rates.ip_rpm,
            per_key=self.auth.limits() if self.auth is not None else None,
        )
        self.stats = Stats()
        #: What a request body may hold (the hostile-input settings).
        self.input_limits = settings.input_limits
        self.models_body = models_list(
            [(m.id, m.created, m.owned_by) for m in settings.served.models]
        )
        #: OpenRouter mode (/api/v1): its routing, accounts, generations and templates.
        self.openrouter = OpenRouter(self)

    def _serve(self, spec: ModelSpec, pacer: Pacer | None = None) -> ServedModel:
        profile = self.settings.profile(spec)
        pacer = pacer or Pacer(self.clock, self._slack)
        engine = None
        if profile.engine.enabled:
            engine = Engine(pacer, profile.latency, profile.engine, model=spec.id)
        return ServedModel(
            spec,
            profile,
            Renderer(spec.id, self.settings.answers.system_fingerprint, self.corpus),
            pacer,
            model_object(spec.id, spec.created, spec.owned_by),
            engine,
        )

    def model(self, name: str, kind: str | None = None) -> ServedModel:
        """The model a request names, or the 404 OpenAI would answer."""
        served = self.models.get(name)
        if served is None:
            if not self.settings.served.any_model:
                raise errors.model_not_found(name)
            served = self._adhoc.get(name)
            if served is None:
                owner = name.split("/", 1)[0] if "/" in name else "mockoai"
                spec = ModelSpec(name, owner, int(time.time()), ENDPOINT_KINDS)
                served = self._adhoc_model(spec)
                if len(self._adhoc) < _ADHOC_CACHE:
                    self._adhoc[name] = served
        if kind is not None and not self.settings.serves(served.spec, kind):
            raise errors.wrong_endpoint(kind)
        return served

    def _adhoc_model(self, spec: ModelSpec) -> ServedModel:
        """Ad-hoc names share one pacer and one engine: one server behind them all."""
        served = self._serve(spec, self._adhoc_pacer)
        if served.engine is not None:
            if self._adhoc_engine is None:
                self._adhoc_engine = served.engine
            served.engine = self._adhoc_engine
        return served

    def rate_limit(self, request: Any, wanted: GenerationRequest, served: ServedModel) -> None:
        """
        Spend the request's allowance, or raise the 429; ``x-ratelimit-*``
        headers either way.  OpenAI charges a request's tokens up front: its
        prompt plus the most it may generate.
        """
        limits = self.limits
        if limits.enabled:
            cap = self.planner.limit(wanted, served.profile.max_output_tokens)
            tokens = wanted.prompt_tokens + cap * wanted.n * wanted.prompts
            limits.enforce(request, tokens, served.spec.id)

    def engines(self) -> list[Engine]:
        engines = [m.engine for m in self.models.values() if m.engine is not None]
        return engines + ([self._adhoc_engine] if self._adhoc_engine else [])

    def pacers(self) -> list[Pacer]:
        return [m.pacer for m in self.models.values()] + [self._adhoc_pacer]
