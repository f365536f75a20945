# -*- test-case-name: tests.test_sampling -*-
"""
What a request asks the simulation for, once a dialect has validated it
(L{mockoai.dialects.openai.validate}): the planner's only input.
"""

from __future__ import annotations

import attrs


@attrs.define(slots=True)
class GenerationRequest:
    """What to generate, independent of endpoint and wire format."""

    kind: str
    model: str
    prompt_tokens: int
    max_tokens: int | None = None
    max_tokens_param: str = "max_tokens"
    n: int = 1
    prompts: int = 1
    stream: bool = False
    include_usage: bool = False
    continuous_usage: bool = False
    include_obfuscation: bool = True
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False
    min_tokens: int = 0
    echo: tuple[str, ...] = ()
