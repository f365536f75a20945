# -*- test-case-name: tests.test_sampling -*-
"""
What a request asks the simulation for, once a dialect has validated it
(L{mockoai.dialects.openai.validate}): the planner's only input.
"""

from __future__ import annotations

import attrs

#: How a request lets the model call its tools (L{GenerationRequest.tool_choice}).
TOOLS_AUTO = "auto"
TOOLS_NONE = "none"
TOOLS_REQUIRED = "required"
TOOLS_NAMED = "named"


@attrs.frozen
class Tool:
    """A function the model may call: its name and the JSON schema of its arguments."""

    name: str
    schema: object


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
    #: The characters of each text prompt (completions): where the answer's
    #: ``text_offset`` starts when the prompt is not echoed.
    prompt_chars: tuple[int, ...] = ()
    #: The functions the model may call, and how it may (TOOLS_*; ``tool_name``
    #: for TOOLS_NAMED).  After a tool result an ``auto`` answer is text, so
    #: an agent loop ends as it does against a real model.
    tools: tuple[Tool, ...] = ()
    tool_choice: str = TOOLS_AUTO
    tool_name: str | None = None
    parallel_tool_calls: bool = True
    after_tool_result: bool = False
    #: A JSON schema the text answer must validate against (structured
    #: outputs; ``{"type": "object"}`` for a bare JSON object), or the texts
    #: one of which it must be (vLLM's ``guided_choice``).
    document: object | None = None
    guided_choice: tuple[str, ...] = ()
    #: Reasoning: the effort asked for (None: the model's default; "none":
    #: none), a cap in tokens, and whether its text is sent (else it is
    #: only counted and timed, as OpenAI's reasoning models do; None: as the
    #: model's profile says, False: hidden even for a model that shows it,
    #: as OpenRouter's ``reasoning.exclude`` asks).
    reasoning_effort: str | None = None
    reasoning_budget: int | None = None
    reasoning_visible: bool | None = None
    #: Log probabilities: None for none, else how many alternatives per token.
    logprobs: int | None = None

    @property
    def shaped(self) -> bool:
        """Whether the answer is more than plain text (tools, a document, a choice)."""
        return bool(self.tools) or self.document is not None or bool(self.guided_choice)
