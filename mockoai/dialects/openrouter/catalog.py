# -*- test-case-name: tests.test_openrouter -*-
"""
``GET /api/v1/models`` and friends in OpenRouter's shape, generated from
the model config once at startup: prices as decimal strings per token, the
context window, the providers serving each model as its endpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from mockoai.dialects.openrouter.render import effective
from mockoai.dialects.openrouter.routing import ProviderRouter
from mockoai.ops.config import ModelSpec, ProviderSpec
from mockoai.pipeline.media import dumps

#: The request parameters every model accepts and honours.
SUPPORTED_PARAMETERS = (
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "frequency_penalty",
    "presence_penalty",
    "seed",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "reasoning",
    "include_reasoning",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "structured_outputs",
)
_ARCHITECTURE = {
    "modality": "text->text",
    "input_modalities": ["text"],
    "output_modalities": ["text"],
    "tokenizer": "Other",
    "instruct_type": None,
}


def decimal(price: float) -> str:
    """A per-token price as OpenRouter writes it: ``"0.0000025"``, ``"0"``."""
    return format(Decimal(repr(price)).normalize(), "f")


def display_name(spec: ModelSpec) -> str:
    author, slash, name = spec.id.partition("/")
    return f"{author}: {name}" if slash else spec.id


def _pricing(spec: ModelSpec, factor: float) -> dict[str, str]:
    completion = decimal(effective(spec.completion_price, factor))
    return {
        "prompt": decimal(effective(spec.prompt_price, factor)),
        "completion": completion,
        "request": "0",
        "image": "0",
        "internal_reasoning": completion,
    }


class Catalog:
    """The pre-rendered model list, model cards and endpoint lists."""

    def __init__(self, models: Sequence[tuple[ModelSpec, int]], router: ProviderRouter) -> None:
        self.router = router
        self.cards: dict[str, bytes] = {}
        self.endpoint_lists: dict[str, bytes] = {}
        listed = []
        for spec, max_output in models:
            card = self._card(spec, max_output)
            listed.append(card)
            self.cards[spec.id] = dumps({"data": card})
            endpoints = {
                key: card[key] for key in ("id", "name", "created", "description", "architecture")
            }
            endpoints["endpoints"] = [
                self._endpoint(spec, provider, max_output) for provider in router.serving(spec)
            ]
            self.endpoint_lists[spec.id] = dumps({"data": endpoints})
        self.body = dumps({"data": listed})

    def _card(self, spec: ModelSpec, max_output: int) -> dict[str, Any]:
        cheapest = min(p.price for p in self.router.serving(spec))
        return {
            "id": spec.id,
            "canonical_slug": spec.id,
            "hugging_face_id": "",
            "name": display_name(spec),
            "created": spec.created,
            "description": (
                f"{spec.id} as simulated by mockoai: lorem-ipsum answers with the configured "
                "latency, pricing and providers."
            ),
            "context_length": spec.context_length,
            "architecture": _ARCHITECTURE,
            "pricing": _pricing(spec, cheapest),
            "top_provider": {
                "context_length": spec.context_length,
                "max_completion_tokens": max_output,
                "is_moderated": False,
            },
            "per_request_limits": None,
            "supported_parameters": list(SUPPORTED_PARAMETERS),
            "default_parameters": None,
        }

    def _endpoint(self, spec: ModelSpec, provider: ProviderSpec, max_output: int) -> dict[str, Any]:
        failing = self.router.failure(spec.id, provider) is not None
        return {
            "name": f"{provider.name} | {spec.id}",
            "model_name": display_name(spec),
            "context_length": spec.context_length,
            "pricing": _pricing(spec, provider.price),
            "provider_name": provider.name,
            "tag": provider.slug,
            "quantization": "unknown",
            "max_completion_tokens": max_output,
            "max_prompt_tokens": spec.context_length,
            "supported_parameters": list(SUPPORTED_PARAMETERS),
            "status": -5 if failing else 0,
            "uptime_last_30m": 0.0 if failing else 100.0,
            "supports_implicit_caching": False,
            "latency_last_30m": {"p50": provider.latency} if provider.latency else None,
            "throughput_last_30m": {"p50": provider.throughput} if provider.throughput else None,
        }
