# -*- test-case-name: tests.test_routes -*-
"""
The protocol-agnostic core: the corpus, the planner, and one L{ServedModel}
(templates + pacer) per configured model.  Built once at startup; routes
only look things up in it.
"""

from __future__ import annotations

import time

import attrs
from twisted.internet.interfaces import IReactorTime

from mockoai import corpus as corpus_module
from mockoai import errors
from mockoai.config import ENDPOINT_KINDS, ModelSpec, Settings
from mockoai.corpus import Corpus
from mockoai.ids import IdMaker
from mockoai.pacing import Pacer
from mockoai.render import Renderer, model_object, models_list
from mockoai.sampling import Planner

#: How many ad-hoc model names (--any-model) keep their templates cached.
_ADHOC_CACHE = 1024


@attrs.define
class ServedModel:
    spec: ModelSpec
    renderer: Renderer
    pacer: Pacer
    card: bytes


class Core:
    """Everything a request needs that outlives the request."""

    def __init__(
        self,
        settings: Settings,
        clock: IReactorTime,
        corpus: Corpus | None = None,
        ids: IdMaker | None = None,
        slack: float = 0.0005,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.corpus = corpus or corpus_module.build(settings.articles, settings.corpus_seed)
        self.planner = Planner(self.corpus, settings)
        self.ids = ids or IdMaker()
        self._slack = slack
        self.models = {spec.id: self._serve(spec) for spec in settings.models}
        self._adhoc: dict[str, ServedModel] = {}
        self._adhoc_pacer = Pacer(clock, slack)
        self.models_body = models_list([(m.id, m.created, m.owned_by) for m in settings.models])

    def _serve(self, spec: ModelSpec, pacer: Pacer | None = None) -> ServedModel:
        return ServedModel(
            spec,
            Renderer(spec.id, self.settings.system_fingerprint, self.corpus),
            pacer or Pacer(self.clock, self._slack),
            model_object(spec.id, spec.created, spec.owned_by),
        )

    def model(self, name: str, kind: str | None = None) -> ServedModel:
        """The model a request names, or the 404 OpenAI would answer."""
        served = self.models.get(name)
        if served is None:
            if not self.settings.any_model:
                raise errors.model_not_found(name)
            served = self._adhoc.get(name)
            if served is None:
                owner = name.split("/", 1)[0] if "/" in name else "mockoai"
                spec = ModelSpec(name, owner, int(time.time()), ENDPOINT_KINDS)
                served = self._serve(spec, self._adhoc_pacer)
                if len(self._adhoc) < _ADHOC_CACHE:
                    self._adhoc[name] = served
        if kind is not None and kind not in served.spec.endpoints:
            raise errors.wrong_endpoint(kind)
        return served

    def pacers(self) -> list[Pacer]:
        return [m.pacer for m in self.models.values()] + [self._adhoc_pacer]
