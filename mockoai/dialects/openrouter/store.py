# -*- test-case-name: tests.test_openrouter -*-
"""
Finished generations, for ``GET /api/v1/generation?id=``.

A bounded, insertion-ordered map: records go in as generations finish, so
the oldest is always first and both limits -- the count and the age -- are
enforced by popping from the front, in O(1) per record.  A record is a
slotted object rendered to JSON only when asked for.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from mockoai.pipeline.media import dumps


class Generation:
    """The stats of one finished (or cancelled) generation."""

    __slots__ = (
        "api_type",
        "cancelled",
        "completion_cost",
        "completion_tokens",
        "created",
        "finish_reason",
        "generation_time",
        "id",
        "key",
        "latency",
        "model",
        "origin",
        "prompt_cost",
        "prompt_tokens",
        "provider",
        "reasoning_tokens",
        "streamed",
        "title",
        "total_cost",
        "upstream_id",
        "user",
    )

    def __init__(
        self,
        id: str,
        key: str,
        model: str,
        provider: str,
        created: float,
        api_type: str,
        streamed: bool,
        cancelled: bool,
        finish_reason: str | None,
        prompt_tokens: int,
        completion_tokens: int,
        reasoning_tokens: int,
        prompt_cost: float,
        completion_cost: float,
        total_cost: float,
        latency: float,
        generation_time: float,
        origin: str,
        title: str | None,
        user: str | None,
        upstream_id: str,
    ) -> None:
        self.id = id
        self.key = key
        self.model = model
        self.provider = provider
        self.created = created
        self.api_type = api_type
        self.streamed = streamed
        self.cancelled = cancelled
        self.finish_reason = finish_reason
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.reasoning_tokens = reasoning_tokens
        self.prompt_cost = prompt_cost
        self.completion_cost = completion_cost
        self.total_cost = total_cost
        self.latency = latency
        self.generation_time = generation_time
        self.origin = origin
        self.title = title
        self.user = user
        self.upstream_id = upstream_id

    def body(self) -> bytes:
        """The ``{"data": ...}`` answer of ``GET /api/v1/generation``."""
        created_at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.created))
        micros = int((self.created % 1) * 1e6)
        data = {
            "id": self.id,
            "upstream_id": self.upstream_id,
            "total_cost": self.total_cost,
            "cache_discount": None,
            "upstream_inference_cost": None,
            "created_at": f"{created_at}.{micros:06d}+00:00",
            "model": self.model,
            "app_id": None,
            "streamed": self.streamed,
            "cancelled": self.cancelled,
            "provider_name": self.provider,
            "latency": round(self.latency * 1000),
            "moderation_latency": None,
            "generation_time": round(self.generation_time * 1000),
            "finish_reason": self.finish_reason,
            "native_finish_reason": self.finish_reason,
            "tokens_prompt": self.prompt_tokens,
            "tokens_completion": self.completion_tokens,
            "native_tokens_prompt": self.prompt_tokens,
            "native_tokens_completion": self.completion_tokens,
            "native_tokens_completion_images": 0,
            "native_tokens_reasoning": self.reasoning_tokens,
            "native_tokens_cached": 0,
            "num_media_prompt": None,
            "num_input_audio_prompt": None,
            "num_media_completion": None,
            "num_search_results": None,
            "origin": self.origin,
            "http_referer": self.origin or None,
            "app_title": self.title,
            "usage": self.total_cost,
            "is_byok": False,
            "external_user": self.user,
            "api_type": self.api_type,
        }
        return dumps({"data": data})


class GenerationStore:
    """At most ``size`` generations, each for ``ttl`` seconds after it finished."""

    def __init__(self, size: int, ttl: float) -> None:
        self.size = size
        self.ttl = ttl
        self._records: OrderedDict[str, tuple[float, Generation]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def add(self, generation: Generation, now: float) -> None:
        records = self._records
        records[generation.id] = (now, generation)
        while len(records) > self.size:
            records.popitem(last=False)
        self._expire(now)

    def get(self, generation_id: str, now: float) -> Generation | None:
        self._expire(now)
        entry = self._records.get(generation_id)
        return entry[1] if entry is not None else None

    def _expire(self, now: float) -> None:
        records = self._records
        horizon = now - self.ttl
        while records:
            stored, _ = next(iter(records.values()))
            if stored > horizon:
                break
            records.popitem(last=False)
