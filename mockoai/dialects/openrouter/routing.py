# -*- test-case-name: tests.test_openrouter,tests.test_openrouter_tools -*-
"""
OpenRouter's request extras, and the routing they ask for: which model of
``model`` + ``models`` answers, on which provider.

OpenRouter tries the models in order and, for each, its providers in the
order the ``provider`` preferences give (``order``, ``only``, ``ignore``,
``sort``, ``max_price``, ``allow_fallbacks``); any error of one attempt
moves on to the next, and the last error is the answer.  Here an attempt
fails when the model is unknown, the prompt does not fit its context (and
``transforms`` has no ``middle-out``), no provider is left after the
preferences, or the provider is configured to fail
(``--openrouter-failing-models``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from mockoai.dialects.openrouter import errors
from mockoai.ops.config import FailingSpec, ModelProfile, ModelSpec, ProviderSpec
from mockoai.pipeline.errors import APIError
from mockoai.sim.request import GenerationRequest

if TYPE_CHECKING:
    from mockoai.sim.core import ServedModel

SORTS = ("price", "throughput", "latency")
#: Share of ``max_tokens`` a model may think for, per ``reasoning.effort``
#: (OpenRouter's effort-to-budget ratios).
EFFORTS = {"xhigh": 0.95, "high": 0.8, "medium": 0.5, "low": 0.2, "minimal": 0.1, "none": 0.0}
QUANTIZATIONS = ("int4", "int8", "fp4", "fp6", "fp8", "fp16", "bf16", "fp32", "unknown")
ROUTES = ("fallback", "sort")


def slug(name: str) -> str:
    return name.lower().replace(" ", "-")


@attrs.frozen
class Preferences:
    """The ``provider`` object, validated; prices in USD per token."""

    order: tuple[str, ...] = ()
    only: frozenset[str] | None = None
    ignore: frozenset[str] = frozenset()
    allow_fallbacks: bool = True
    sort: str | None = None
    max_prompt: float | None = None
    max_completion: float | None = None


#: A request without a ``provider`` object: routing takes its fast path.
NO_PREFERENCES = Preferences()


@attrs.frozen
class Reasoning:
    """
    The ``reasoning`` object (or the legacy ``include_reasoning``, or
    OpenAI's ``reasoning_effort``), validated: an ``effort`` or a budget of
    ``max_tokens``, ``exclude`` (think, but send none of it), ``enabled``.
    """

    effort: str | None = None
    max_tokens: int | None = None
    exclude: bool = False
    enabled: bool | None = None

    def apply(self, wanted: GenerationRequest, profile: ModelProfile, chat: bool) -> None:
        """
        Set ``wanted``'s reasoning for the planner, once the model is known.

        ``enabled: false`` or ``effort: "none"`` turns a reasoning model's
        reasoning off; ``xhigh`` is planned as ``high``.  An effort with
        ``max_tokens`` set may think for its share of them (OpenRouter's
        ratios); ``reasoning.max_tokens`` is the budget.  A model that does
        not reason thinks anyway when asked explicitly (an effort, a budget,
        ``enabled`` or an empty object), up to its output limit.  The text is
        sent unless ``exclude`` or the model keeps it hidden (OpenAI's
        reasoning models), on the chat endpoint only.
        """
        effort = self.effort
        if self.enabled is False or effort == "none":
            wanted.reasoning_effort = "none"
            return
        if effort is not None:
            wanted.reasoning_effort = "high" if effort == "xhigh" else effort
        budget = self.max_tokens
        if budget is None and effort is not None and wanted.max_tokens is not None:
            budget = round(EFFORTS[effort] * wanted.max_tokens)
        asked = self.enabled or effort is not None or budget is not None or not self.exclude
        if budget is None and asked and profile.reasoning == "none":
            budget = profile.max_output_tokens
        wanted.reasoning_budget = budget
        if self.exclude or not chat:
            wanted.reasoning_visible = False
        elif profile.reasoning == "none":
            wanted.reasoning_visible = True


@attrs.frozen
class Extras:
    """What OpenRouter adds to a generation request."""

    models: tuple[str, ...]
    preferences: Preferences = NO_PREFERENCES
    middle_out: bool = False
    #: None when the request says nothing of reasoning: the model's default.
    reasoning: Reasoning | None = None


@attrs.frozen
class Route:
    """Where a request goes, and its prompt after any ``middle-out`` compression."""

    served: ServedModel
    provider: ProviderSpec
    prompt_tokens: int


# --- parsing ------------------------------------------------------------------


def _strings(value: object, name: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise errors.invalid(f"{name} must be an array of non-empty strings")
    return tuple(value)


def _flag(table: dict[str, Any], key: str, where: str) -> bool | None:
    value = table.get(key)
    if value is not None and not isinstance(value, bool):
        raise errors.invalid(f"{where}.{key} must be a boolean")
    return value


def _price(value: object, name: str) -> float | None:
    """A ``max_price`` entry: USD per million tokens, as a number or a decimal string."""
    if value is None:
        return None
    try:
        number = float(value) if isinstance(value, (int, float, str)) else float("nan")
    except ValueError:
        number = float("nan")
    if isinstance(value, bool) or not number >= 0:
        raise errors.invalid(f"provider.max_price.{name} must be a non-negative number")
    return number / 1e6


def _preferences(value: object, known: dict[str, ProviderSpec]) -> Preferences:
    if value is None:
        return NO_PREFERENCES
    if not isinstance(value, dict):
        raise errors.invalid("provider must be an object")

    def names(key: str) -> tuple[str, ...]:
        given = _strings(value[key], f"provider.{key}")
        for name in given:
            if slug(name) not in known:
                raise errors.invalid(
                    f"provider.{key}: unknown provider {name!r}; this server routes to "
                    f"{', '.join(p.name for p in known.values())}"
                )
        return tuple(slug(n) for n in given)

    order = names("order") if value.get("order") is not None else ()
    only = frozenset(names("only")) if value.get("only") is not None else None
    ignore = frozenset(names("ignore")) if value.get("ignore") is not None else frozenset()
    for key in ("require_parameters", "zdr", "enforce_distillable_text"):
        _flag(value, key, "provider")
    if value.get("data_collection") not in (None, "allow", "deny"):
        raise errors.invalid('provider.data_collection must be "allow" or "deny"')
    quantizations = value.get("quantizations")
    if quantizations is not None and not set(
        _strings(quantizations, "provider.quantizations")
    ) <= set(QUANTIZATIONS):
        raise errors.invalid(f"provider.quantizations must be among {', '.join(QUANTIZATIONS)}")
    sort = value.get("sort")
    if isinstance(sort, dict):  # the newer {"by": ..., "partition": ...} form
        sort = sort.get("by")
    if sort is not None and sort not in SORTS:
        raise errors.invalid(f"provider.sort must be one of {', '.join(SORTS)}")
    max_price = value.get("max_price")
    if max_price is not None and not isinstance(max_price, dict):
        raise errors.invalid("provider.max_price must be an object")
    max_price = max_price or {}
    for key in ("request", "image", "audio"):
        _price(max_price.get(key), key)
    allow = _flag(value, "allow_fallbacks", "provider")
    return Preferences(
        order=order,
        only=only,
        ignore=ignore,
        allow_fallbacks=True if allow is None else allow,
        sort=sort,
        max_prompt=_price(max_price.get("prompt"), "prompt"),
        max_completion=_price(max_price.get("completion"), "completion"),
    )


#: ``include_reasoning``, OpenRouter's legacy flag: ``true`` is ``reasoning: {}``,
#: ``false`` is ``reasoning: {"exclude": true}``.
_INCLUDE = Reasoning()
_EXCLUDE = Reasoning(exclude=True)


def _reasoning(body: dict[str, Any], effort: str | None) -> Reasoning | None:
    """
    The reasoning the request asks for, if it says anything of it
    (``effort``: OpenAI's ``reasoning_effort``, already checked).
    """
    legacy = body.get("include_reasoning")
    if legacy is not None and not isinstance(legacy, bool):
        raise errors.invalid("include_reasoning must be a boolean")
    value = body.get("reasoning")
    if value is None:
        if effort is not None:
            return Reasoning(effort=effort)
        return None if legacy is None else _INCLUDE if legacy else _EXCLUDE
    if effort is not None:
        raise errors.invalid('Only one of "reasoning" and "reasoning_effort" may be provided')
    if not isinstance(value, dict):
        raise errors.invalid("reasoning must be an object")
    effort = value.get("effort")
    tokens = value.get("max_tokens")
    exclude = _flag(value, "exclude", "reasoning")
    enabled = _flag(value, "enabled", "reasoning")
    if effort is not None and effort not in EFFORTS:
        raise errors.invalid(f"reasoning.effort must be one of {', '.join(EFFORTS)}")
    if tokens is not None and (type(tokens) is not int or tokens < 0):
        raise errors.invalid("reasoning.max_tokens must be a non-negative integer")
    if effort is not None and tokens is not None:
        raise errors.invalid("Only one of reasoning.effort and reasoning.max_tokens may be given")
    return Reasoning(effort, tokens, bool(exclude), enabled)


def parse(
    body: dict[str, Any],
    model: str,
    known: dict[str, ProviderSpec],
    effort: str | None = None,
) -> Extras:
    """
    The OpenRouter fields of ``body`` (a 400 L{errors.RouterError} if one
    is malformed); ``effort`` is OpenAI's ``reasoning_effort``, if given.
    """
    fallbacks: tuple[str, ...] = ()
    if body.get("models") is not None:
        fallbacks = _strings(body["models"], "models")
    transforms = body.get("transforms")
    middle_out = False
    if transforms is not None:
        middle_out = "middle-out" in _strings(transforms, "transforms")
    route = body.get("route")
    if route is not None and route not in ROUTES:
        raise errors.invalid(f"route must be one of {', '.join(ROUTES)}")
    usage = body.get("usage")
    if usage is not None:
        if not isinstance(usage, dict):
            raise errors.invalid("usage must be an object")
        _flag(usage, "include", "usage")
    plugins = body.get("plugins")
    if plugins is not None and not (
        isinstance(plugins, list)
        and all(isinstance(p, dict) and isinstance(p.get("id"), str) for p in plugins)
    ):
        raise errors.invalid("plugins must be an array of objects with an id")
    return Extras(
        models=tuple(dict.fromkeys((model, *fallbacks))),
        preferences=_preferences(body.get("provider"), known),
        middle_out=middle_out,
        reasoning=_reasoning(body, effort),
    )


# --- routing ------------------------------------------------------------------


class ProviderRouter:
    """Picks the model and provider that answer a request."""

    def __init__(
        self,
        providers: Sequence[ProviderSpec],
        failing: Sequence[FailingSpec],
        find: Callable[[str], ServedModel | None],
    ) -> None:
        self.providers = {p.slug: p for p in providers}
        self._all = list(self.providers.values())
        self._serving: dict[str, list[ProviderSpec]] = {}
        self._find = find
        self._failing = {(f.model, slug(f.provider) if f.provider else None): f for f in failing}

    def serving(self, spec: ModelSpec) -> list[ProviderSpec]:
        """The providers of a model, default first (a shared list: do not change it)."""
        if not spec.providers:
            return self._all
        serving = self._serving.get(spec.id)
        if serving is None:
            serving = [self.providers[slug(name)] for name in spec.providers]
            if len(self._serving) < 4096:
                self._serving[spec.id] = serving
        return serving

    def failure(self, model: str, provider: ProviderSpec) -> int | None:
        """The status ``provider`` fails ``model`` with, if it is configured to."""
        failing = self._failing.get((model, provider.slug)) or self._failing.get((model, None))
        return failing.status if failing else None

    def candidates(self, spec: ModelSpec, prefs: Preferences) -> list[ProviderSpec]:
        """The providers to try for ``spec``, in order, under ``prefs``."""
        if prefs is NO_PREFERENCES:
            return self.serving(spec)
        providers = [
            p
            for p in self.serving(spec)
            if (prefs.only is None or p.slug in prefs.only)
            and p.slug not in prefs.ignore
            and (prefs.max_prompt is None or spec.prompt_price * p.price <= prefs.max_prompt)
            and (
                prefs.max_completion is None
                or spec.completion_price * p.price <= prefs.max_completion
            )
        ]
        if prefs.sort == "price":
            providers.sort(key=lambda p: p.price)
        elif prefs.sort == "throughput":
            providers.sort(key=lambda p: -p.throughput)
        elif prefs.sort == "latency":
            providers.sort(key=lambda p: p.latency)
        if prefs.order:
            first = [p for name in prefs.order for p in providers if p.slug == name]
            rest = [p for p in providers if p not in first]
            return first + rest if prefs.allow_fallbacks else first
        return providers if prefs.allow_fallbacks else providers[:1]

    def route(
        self, extras: Extras, request: GenerationRequest, flagged: Callable[[], str]
    ) -> Route:
        """The first model and provider that can answer, or the last error."""
        error: APIError = errors.invalid_model(extras.models[0])
        output = request.max_tokens or 0
        for name in extras.models:
            served = self._find(name)
            if served is None:
                error = errors.invalid_model(name)
                continue
            spec = served.spec
            thinking = extras.reasoning.max_tokens if extras.reasoning is not None else None
            if thinking is not None and thinking > served.profile.max_output_tokens:
                # Reasoning tokens are output tokens: bounded as max_tokens is.
                error = errors.reasoning_too_large(name, thinking, served.profile.max_output_tokens)
                continue
            prompt = request.prompt_tokens
            if prompt + output > spec.context_length:
                if not extras.middle_out or output >= spec.context_length:
                    error = errors.context_too_long(name, spec.context_length, prompt, output)
                    continue
                prompt = spec.context_length - output
            providers = self.candidates(spec, extras.preferences)
            if not providers:
                error = errors.no_provider(name, [p.name for p in self.serving(spec)])
                continue
            for provider in providers:
                status = self.failure(name, provider)
                if status is None:
                    return Route(served, provider, prompt)
                error = errors.upstream(
                    status, name, provider.name, flagged() if status == 403 else ""
                )
        raise error
