# -*- test-case-name: tests.test_routes -*-
"""
The simulation, built once at startup: the corpus, the planner, and one
L{ServedModel} (profile, pacer, maybe an engine) per configured model, plus
the ad-hoc ones ``--any-model`` makes up.  It knows no API: the dialects
(L{mockoai.dialects}) render what it plans, and answer for a model it does
not serve.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import attrs

from mockoai.ops.config import (
    ENDPOINT_KINDS,
    FAMILY_KINDS,
    ModelProfile,
    ModelSpec,
    Settings,
    family,
)
from mockoai.sim import corpus as corpus_module
from mockoai.sim.corpus import Corpus
from mockoai.sim.engine import Engine
from mockoai.sim.pacing import Pacer
from mockoai.sim.sampling import Planner

if TYPE_CHECKING:
    from mockoai.interfaces import Clock

#: How many ad-hoc model names (--any-model) are kept, beyond the configured ones.
_ADHOC_CACHE = 1024


def _is_text(name: str) -> bool:
    """
    Whether ``name`` is Unicode.  A path's bytes that are not UTF-8
    (``/v1/models/%ed%a0%80``) arrive as lone surrogates, which no answer
    naming the model could be written with.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@attrs.define
class ServedModel:
    """A model as served: its spec and profile, its clock and (maybe) its engine."""

    spec: ModelSpec
    profile: ModelProfile
    pacer: Pacer
    engine: Engine | None = None


class Core:
    """Everything about the simulated models that outlives a request."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        corpus: Corpus | None = None,
        slack: float = 0.0005,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.corpus = corpus or corpus_module.build(
            settings.answers.articles, settings.answers.corpus_seed
        )
        self.planner = Planner(self.corpus, settings)
        self._slack = slack
        self.models = {spec.id: self._serve(spec) for spec in settings.served.models}
        self._any_model = settings.served.any_model
        self._adhoc: dict[str, ServedModel] = {}
        self._adhoc_pacer = Pacer(clock, slack)
        self._adhoc_engine: Engine | None = None

    def _serve(self, spec: ModelSpec, pacer: Pacer | None = None) -> ServedModel:
        profile = self.settings.profile(spec)
        pacer = pacer or Pacer(self.clock, self._slack)
        engine = None
        if profile.engine.enabled:
            engine = Engine(pacer, profile.latency, profile.engine, model=spec.id)
        return ServedModel(spec, profile, pacer, engine)

    def model(self, name: str) -> ServedModel | None:
        """The model called ``name``: configured, made up (--any-model), or None."""
        served = self.models.get(name)
        if served is None and self._any_model:
            served = self._adhoc.get(name)
            if served is None:
                if not _is_text(name):
                    return None  # no model is called that: a 404, as for any unknown name
                owner = name.split("/", 1)[0] if "/" in name else "mockoai"
                # Its family decides which APIs it answers on (gpt-*: not Anthropic's).
                kinds = FAMILY_KINDS.get(family(name) or "", ENDPOINT_KINDS)
                spec = ModelSpec(name, owner, int(time.time()), kinds)
                served = self._adhoc_model(spec)
                if len(self._adhoc) < _ADHOC_CACHE:
                    self._adhoc[name] = served
        return served

    def serves(self, served: ServedModel, kind: str) -> bool:
        """Whether ``served`` answers on ``kind`` (chat or completions)."""
        return self.settings.serves(served.spec, kind)

    def _adhoc_model(self, spec: ModelSpec) -> ServedModel:
        """Ad-hoc names share one pacer and one engine: one server behind them all."""
        served = self._serve(spec, self._adhoc_pacer)
        if served.engine is not None:
            if self._adhoc_engine is None:
                self._adhoc_engine = served.engine
            served.engine = self._adhoc_engine
        return served

    def engines(self) -> list[Engine]:
        engines = [m.engine for m in self.models.values() if m.engine is not None]
        return engines + ([self._adhoc_engine] if self._adhoc_engine else [])

    def pacers(self) -> list[Pacer]:
        return [m.pacer for m in self.models.values()] + [self._adhoc_pacer]
