# -*- test-case-name: tests.test_validate -*-
"""
Turn a request body into a typed L{GenerationRequest}, or raise the
L{APIError} OpenAI would send for it.

This is the only place that looks at the JSON.  Both endpoints (and both
wire dialects) produce the same protocol-agnostic object, so everything
after validation -- planning, pacing, rendering -- never sees a dict.
Unknown fields are tolerated, as vLLM and OpenRouter tolerate them:
benchmark tools send many engine-specific extras.
"""

from __future__ import annotations

import attrs
import ujson

from mockoai import errors, tokens
from mockoai.config import CHAT, COMPLETIONS

ROLES = ("system", "assistant", "user", "function", "tool", "developer")
MAX_N = 128
MAX_STOP = 4


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


def parse_body(body: bytes) -> dict[str, object]:
    try:
        data = ujson.loads(body)
    except (ValueError, OverflowError):
        raise errors.invalid_json() from None
    if not isinstance(data, dict):
        raise errors.not_an_object(data)
    return data


def _optional_int(
    body: dict[str, object], name: str, low: int, high: int | None = None
) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if type(value) is not int:
        raise errors.invalid_type(name, "an integer", value)
    if value < low:
        raise errors.below_min(name, low, value)
    if high is not None and value > high:
        raise errors.above_max(name, high, value)
    return value


def _optional_number(body: dict[str, object], name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if type(value) not in (int, float):
        raise errors.invalid_type(name, "a number", value)
    assert isinstance(value, (int, float))
    if value < low:
        raise errors.below_min(name, low, value, decimal=True)
    if value > high:
        raise errors.above_max(name, high, value, decimal=True)


def _optional_bool(
    body: dict[str, object], name: str, default: bool = False, where: str = ""
) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if type(value) is not bool:
        raise errors.invalid_type(where + name, "a boolean", value)
    return value


def _optional_string(body: dict[str, object], name: str) -> None:
    value = body.get(name)
    if value is not None and type(value) is not str:
        raise errors.invalid_type(name, "a string", value)


def _stop(body: dict[str, object]) -> tuple[str, ...]:
    value = body.get("stop")
    if value is None:
        return ()
    if type(value) is str:
        return (value,) if value else ()
    if type(value) is not list:
        raise errors.invalid_type("stop", "a string or an array of strings", value)
    if len(value) > MAX_STOP:
        raise errors.array_too_long("stop", MAX_STOP, len(value))
    for i, item in enumerate(value):
        if type(item) is not str:
            raise errors.invalid_type(f"stop[{i}]", "a string", item)
    return tuple(s for s in value if s)


def _common(
    body: dict[str, object], kind: str, prompt_tokens: int, max_n: int
) -> GenerationRequest:
    model = body.get("model")
    if model is None or model == "":
        raise errors.missing_model()
    if type(model) is not str:
        raise errors.invalid_type("model", "a string", model)

    stream = _optional_bool(body, "stream")
    include_usage = continuous = False
    obfuscation = True
    options = body.get("stream_options")
    if options is not None:
        if type(options) is not dict:
            raise errors.invalid_type("stream_options", "an object", options)
        if not stream:
            raise errors.invalid(
                "stream_options",
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            )
        # Nested fields are named by their full path, as OpenAI names them.
        where = "stream_options."
        include_usage = _optional_bool(options, "include_usage", where=where)
        continuous = _optional_bool(options, "continuous_usage_stats", where=where)
        obfuscation = _optional_bool(options, "include_obfuscation", True, where)

    n = _optional_int(body, "n", 1, max_n) or 1
    max_tokens = _optional_int(body, "max_tokens", 1)
    max_tokens_param = "max_tokens"
    if kind == CHAT:
        newer = _optional_int(body, "max_completion_tokens", 1)
        if newer is not None:
            max_tokens, max_tokens_param = newer, "max_completion_tokens"
    min_tokens = _optional_int(body, "min_tokens", 0) or 0
    if max_tokens is not None and min_tokens > max_tokens:
        raise errors.invalid(
            "min_tokens",
            f"min_tokens must be less than or equal to max_tokens={max_tokens}, got {min_tokens}.",
            code="invalid_value",
        )
    seed = body.get("seed")
    if seed is not None and type(seed) is not int:
        raise errors.invalid_type("seed", "an integer", seed)

    _optional_number(body, "temperature", 0, 2)
    _optional_number(body, "top_p", 0, 1)
    _optional_number(body, "presence_penalty", -2, 2)
    _optional_number(body, "frequency_penalty", -2, 2)
    _optional_string(body, "user")
    logit_bias = body.get("logit_bias")
    if logit_bias is not None and type(logit_bias) is not dict:
        raise errors.invalid_type("logit_bias", "an object", logit_bias)

    return GenerationRequest(
        kind=kind,
        model=model,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        max_tokens_param=max_tokens_param,
        n=n,
        stream=stream,
        include_usage=include_usage,
        continuous_usage=continuous,
        include_obfuscation=obfuscation,
        stop=_stop(body),
        seed=seed,  # type: ignore[arg-type]
        ignore_eos=_optional_bool(body, "ignore_eos"),
        min_tokens=min_tokens,
    )


def _message(index: int, message: object) -> None:
    where = f"messages[{index}]"
    if type(message) is not dict:
        raise errors.invalid_type(where, "an object", message)
    role = message.get("role")
    if role is None:
        raise errors.missing(f"{where}.role")
    if role not in ROLES:
        raise errors.invalid_value(f"{where}.role", role, ROLES)
    content = message.get("content")
    if content is None:
        if role == "assistant" and (message.get("tool_calls") or message.get("function_call")):
            return
        if role == "assistant" and "content" in message:
            return
        raise errors.missing(f"{where}.content")
    if type(content) is list:
        for j, part in enumerate(content):
            if type(part) is not dict:
                raise errors.invalid_type(f"{where}.content[{j}]", "an object", part)
            if "type" not in part:
                raise errors.missing(f"{where}.content[{j}].type")
    elif type(content) is not str:
        raise errors.invalid_type(f"{where}.content", "a string or an array", content)
    if role == "tool" and "tool_call_id" not in message:
        raise errors.missing(f"{where}.tool_call_id")


def chat(body: dict[str, object]) -> GenerationRequest:
    messages = body.get("messages")
    if messages is None:
        raise errors.missing("messages")
    if type(messages) is not list:
        raise errors.invalid_type("messages", "an array", messages)
    if not messages:
        raise errors.empty_array("messages")
    for i, message in enumerate(messages):
        _message(i, message)
    logprobs = _optional_bool(body, "logprobs")
    top = _optional_int(body, "top_logprobs", 0, 20)
    if top is not None and not logprobs:
        raise errors.invalid(
            "top_logprobs",
            "Using top_logprobs requires logprobs to be set to true.",
            "invalid_value",
        )
    tools = body.get("tools")
    if tools is not None and type(tools) is not list:
        raise errors.invalid_type("tools", "an array", tools)
    prompt_tokens = tokens.count_messages(messages)  # type: ignore[arg-type]
    if tools:
        prompt_tokens += tokens.count_value(tools)
    return _common(body, CHAT, prompt_tokens, MAX_N)


def _prompts(value: object) -> list[str | list[int]]:
    """The legacy prompt forms: text, texts, token ids, lists of token ids."""
    if type(value) is str:
        return [value]
    if type(value) is list:
        if not value:
            raise errors.empty_array("prompt")
        if all(type(v) is int for v in value):
            return [value]  # type: ignore[list-item]
        out: list[str | list[int]] = []
        for i, item in enumerate(value):
            token_ids = type(item) is list and item and all(type(v) is int for v in item)
            if type(item) is str or token_ids:
                out.append(item)
            else:
                raise errors.invalid_type(f"prompt[{i}]", "a string or an array of integers", item)
        return out
    raise errors.invalid_type("prompt", "a string or an array", value)


def completions(body: dict[str, object]) -> GenerationRequest:
    if "prompt" not in body or body["prompt"] is None:
        raise errors.missing("prompt")
    prompts = _prompts(body["prompt"])
    prompt_tokens = sum(tokens.count_prompt(p) for p in prompts)
    _optional_string(body, "suffix")
    _optional_int(body, "logprobs", 0, 5)
    request = _common(body, COMPLETIONS, prompt_tokens, MAX_N)
    best_of = _optional_int(body, "best_of", 1, 20)
    if best_of is not None and best_of < request.n:
        raise errors.invalid(
            "best_of", "best_of must be greater than or equal to n.", code="invalid_value"
        )
    request.prompts = len(prompts)
    if request.n * request.prompts > MAX_N:
        raise errors.above_max("n", MAX_N // request.prompts, request.n)
    if _optional_bool(body, "echo"):
        if not all(type(p) is str for p in prompts):
            raise errors.invalid(
                "echo", "echo is only supported with text prompts by this server.", "invalid_value"
            )
        request.echo = tuple(p for p in prompts if isinstance(p, str))
    return request
