# -*- test-case-name: tests.test_limits -*-
"""
What a generation request must pass before any work starts, the same for
every dialect: its API key (checked by the site before routing, with the
401 of the API the path belongs to) and the rate limits, charged once the
model is known.  The engine's own admission comes later, when the answer
is submitted to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mockoai.pipeline import auth
from mockoai.pipeline.limits import RateLimits

if TYPE_CHECKING:
    from mockoai.interfaces import Clock, Request
    from mockoai.ops.config import Settings
    from mockoai.pipeline.auth import Authenticator, KeyRefusals
    from mockoai.pipeline.limits import HeaderRenderer
    from mockoai.sim.core import ServedModel
    from mockoai.sim.request import GenerationRequest
    from mockoai.sim.sampling import Planner


class Gate:
    """The keys (None: any key or none passes) and the rate limits, built once."""

    def __init__(
        self,
        planner: Planner,
        limits: RateLimits,
        auth: Authenticator | None = None,
        headers: HeaderRenderer | None = None,
    ) -> None:
        self.planner = planner
        self.limits = limits
        self.auth = auth
        #: The rate-limit headers' names and forms (None: OpenAI's ``x-ratelimit-*``).
        self.headers = headers

    def speaking(self, headers: HeaderRenderer) -> Gate:
        """
        The same keys and buckets, reporting them in another API's headers
        (Anthropic's ``anthropic-ratelimit-*``): its requests spend from the
        same allowance as everyone else's.
        """
        return Gate(self.planner, self.limits, self.auth, headers)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        planner: Planner,
        clock: Clock,
        refusals: Sequence[tuple[bytes, KeyRefusals]] = (),
    ) -> Gate:
        """
        The configured keys and limits; ``refusals`` are the 401s of the
        APIs that are not OpenAI's, by path prefix.
        """
        keys = auth.from_settings(settings.auth, refusals)
        rates = settings.rates
        limits = RateLimits(
            clock,
            rates.rpm,
            rates.tpm,
            rates.ip_rpm,
            per_key=keys.limits() if keys is not None else None,
        )
        return cls(planner, limits, keys)

    def charge(self, request: Request, wanted: GenerationRequest, served: ServedModel) -> None:
        """
        Spend the request's allowance, or raise the 429; ``x-ratelimit-*``
        headers either way.  OpenAI charges a request's tokens up front: its
        prompt plus the most it may generate.
        """
        limits = self.limits
        if limits.enabled:
            cap = self.planner.limit(wanted, served.profile.max_output_tokens)
            tokens = wanted.prompt_tokens + cap * wanted.n * wanted.prompts
            limits.enforce(request, tokens, served.spec.id, self.headers)

    def charge_prompt(self, request: Request, tokens: int, served: ServedModel) -> None:
        """Spend an answer that generates nothing (embeddings): its prompt tokens alone."""
        limits = self.limits
        if limits.enabled:
            limits.enforce(request, tokens, served.spec.id, self.headers)
