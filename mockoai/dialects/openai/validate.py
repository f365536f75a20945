# -*- test-case-name: tests.test_validate -*-
"""
OpenAI's validation: turn a request body into a typed
L{GenerationRequest}, or raise the L{APIError} OpenAI would send for it.

Both OpenAI endpoints, and OpenRouter's (which read their own extra fields
besides, L{mockoai.dialects.openrouter.routing}), produce the same
protocol-agnostic object, so everything after validation -- planning,
pacing, rendering -- never sees a dict.  Unknown fields are tolerated, as
vLLM and OpenRouter tolerate them: benchmark tools send many
engine-specific extras.
"""

from __future__ import annotations

import json

from mockoai.dialects.openai import shapes
from mockoai.ops.config import CHAT, COMPLETIONS
from mockoai.ops.config import InputLimits as InputLimits
from mockoai.pipeline import errors, media
from mockoai.sim import tokens
from mockoai.sim.request import GenerationRequest

ROLES = ("system", "assistant", "user", "function", "tool", "developer")
MAX_N = 128
MAX_STOP = 4


DEFAULT_LIMITS = InputLimits()


def parse_body(body: bytes, max_depth: int = DEFAULT_LIMITS.max_json_depth) -> dict[str, object]:
    """
    The JSON object in ``body``, parsed strictly: the decoder
    (L{media.loads}) takes ``NaN`` and ``Infinity``, which are not JSON,
    and nests deeper than the validators' recursion can go (ujson up to
    1,024 levels); both are refused as unparseable,
    as OpenAI refuses them.  The checks cost a few byte scans unless a body
    has more brackets than ``max_depth`` or spells one of those words.  A
    string that is not Unicode (a lone surrogate) is refused too, naming it
    (L{_refuse_lone_surrogates}).
    """
    try:
        data = media.loads(body)
    except (ValueError, OverflowError, RecursionError):
        raise errors.invalid_json() from None
    # find, not ``in``: a bytes ``in`` first tries its operand as an integer
    # and pays for the TypeError, ~0.1 us a test.  A one-byte find is a
    # memchr, so "NaN" (a slow search) is only looked for past an "N".
    find = body.find
    if body.count(b"[") + body.count(b"{") > max_depth and _too_deep(data, max_depth):
        raise errors.invalid_json()
    if ((find(b"N") != -1 and find(b"NaN") != -1) or find(b"Infinity") != -1) and _not_finite(body):
        raise errors.invalid_json()
    if not isinstance(data, dict):
        raise errors.not_an_object(data)
    # A lone surrogate can only come from a "\ud800"-style escape or from the
    # bytes UTF-8 would spend on one (ujson decodes "\xed\xa0\x80" to it).
    # A body with neither a backslash nor a byte past ASCII costs two byte
    # scans (~0.4 us for 1.2 KB, a tenth of the two scans above).
    if (find(b"\\") != -1 and (find(b"\\ud") != -1 or find(b"\\uD") != -1)) or (
        not body.isascii() and find(b"\xed") != -1
    ):
        _refuse_lone_surrogates(data)
    return data


def _too_deep(value: object, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` deep (no recursion)."""
    if type(value) is not dict and type(value) is not list:
        return False
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if type(item) is dict else item
        for child in children:  # type: ignore[attr-defined]
            if type(child) is dict or type(child) is list:
                if depth >= limit:
                    return True
                stack.append((child, depth + 1))
    return False


def _surrogate(text: str) -> str | None:
    """
    The first UTF-16 surrogate in ``text``, if any: never part of a parsed
    string that is Unicode (ujson joins a valid pair's escapes into the
    character they encode, and surrogates spelled as bytes are not UTF-8).
    """
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return text[e.start]
    return None


def _refuse_lone_surrogates(data: dict[str, object]) -> None:
    """
    Refuse a body whose strings (keys or values) hold a lone surrogate,
    naming the first one, with a 400.

    Such a string is not Unicode: it cannot be written as UTF-8, so echoing
    it (``stop``, an ``echo`` prompt, an ``--any-model`` name) would fail,
    and a strict JSON parser -- OpenAI's among them -- refuses the body
    outright ("We could not parse the JSON body of your request").  Refusing
    it here, for every field of every dialect, answers as that parser does
    and names the parameter besides.  Only bodies holding a ``\\ud`` escape
    or an ``0xed`` byte get here; a walk of a few dozen fields costs
    microseconds.
    """
    stack: list[tuple[object, str]] = [(data, "")]
    while stack:
        value, where = stack.pop()
        if type(value) is str:
            found = _surrogate(value)
            if found is not None:
                raise errors.lone_surrogate(where, found)
        elif type(value) is dict:
            children: list[tuple[object, str]] = []
            for key, child in value.items():
                name = f"{where}.{key}" if where else key
                found = _surrogate(key)
                if found is not None:
                    raise errors.lone_surrogate(name, found)
                children.append((child, name))
            stack += reversed(children)  # the first field is looked at first
        elif type(value) is list:
            stack += reversed([(child, f"{where}[{i}]") for i, child in enumerate(value)])


def _reject_constant(name: str) -> object:
    raise ValueError(name)


def _not_finite(body: bytes) -> bool:
    """Whether ``NaN``/``Infinity`` appear as values (not inside strings)."""
    try:
        json.loads(body, parse_constant=_reject_constant, strict=False)
    except (ValueError, RecursionError):
        return True
    return False


# A field is probed with one ``body.get`` and checked by one of these only
# when it is there: a body sets three or four of the twenty optional fields,
# and a call for each of them cost a microsecond a request.


def _int(name: str, value: object, low: int, high: int | None = None) -> int:
    if type(value) is not int:
        raise errors.invalid_type(name, "an integer", value)
    if value < low:
        raise errors.below_min(name, low, value)
    if high is not None and value > high:
        raise errors.above_max(name, high, value)
    return value


def _number(name: str, value: object, low: float, high: float) -> None:
    if type(value) not in (int, float):
        raise errors.invalid_type(name, "a number", value)
    assert isinstance(value, (int, float))
    if value < low:
        raise errors.below_min(name, low, value, decimal=True)
    if value > high:
        raise errors.above_max(name, high, value, decimal=True)


def _bool(name: str, value: object, where: str = "") -> bool:
    if type(value) is not bool:
        raise errors.invalid_type(where + name, "a boolean", value)
    return value


def _optional_int(
    body: dict[str, object], name: str, low: int, high: int | None = None
) -> int | None:
    value = body.get(name)
    return None if value is None else _int(name, value, low, high)


def _optional_bool(
    body: dict[str, object], name: str, default: bool = False, where: str = ""
) -> bool:
    value = body.get(name)
    return default if value is None else _bool(name, value, where)


#: The sampling knobs, checked in this order, and their bounds.
_SAMPLING = (
    ("temperature", 0, 2),
    ("top_p", 0, 1),
    ("presence_penalty", -2, 2),
    ("frequency_penalty", -2, 2),
)


def _stop(value: object) -> tuple[str, ...]:
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


def _stream_options(options: object, request: GenerationRequest) -> None:
    if type(options) is not dict:
        raise errors.invalid_type("stream_options", "an object", options)
    if not request.stream:
        raise errors.invalid(
            "stream_options",
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
        )
    # Nested fields are named by their full path, as OpenAI names them.
    where = "stream_options."
    request.include_usage = _optional_bool(options, "include_usage", where=where)
    request.continuous_usage = _optional_bool(options, "continuous_usage_stats", where=where)
    request.include_obfuscation = _optional_bool(options, "include_obfuscation", True, where)


def _common(
    body: dict[str, object], kind: str, prompt_tokens: int, max_n: int
) -> GenerationRequest:
    model = body.get("model")
    if model is None or model == "":
        raise errors.missing_model()
    if type(model) is not str:
        raise errors.invalid_type("model", "a string", model)
    # The defaults, then each field the body sets: a class called with
    # keywords first packs them into a dict (~0.6 us for fifteen).
    request = GenerationRequest(kind, model, prompt_tokens)
    get = body.get

    value = get("stream")
    if value is not None:
        request.stream = _bool("stream", value)
    value = get("stream_options")
    if value is not None:
        _stream_options(value, request)
    value = get("n")
    if value is not None:
        request.n = _int("n", value, 1, max_n)
    value = get("max_tokens")
    max_tokens = None if value is None else _int("max_tokens", value, 1)
    if kind == CHAT:
        value = get("max_completion_tokens")
        if value is not None:
            max_tokens = _int("max_completion_tokens", value, 1)
            request.max_tokens_param = "max_completion_tokens"
    request.max_tokens = max_tokens
    value = get("min_tokens")
    if value is not None:
        min_tokens = request.min_tokens = _int("min_tokens", value, 0)
        if max_tokens is not None and min_tokens > max_tokens:
            raise errors.invalid(
                "min_tokens",
                f"min_tokens must be less than or equal to max_tokens={max_tokens}, "
                f"got {min_tokens}.",
                code="invalid_value",
            )
    value = get("seed")
    if value is not None:
        if type(value) is not int:
            raise errors.invalid_type("seed", "an integer", value)
        request.seed = value

    for name, low, high in _SAMPLING:
        value = get(name)
        if value is not None:
            _number(name, value, low, high)
    value = get("user")
    if value is not None and type(value) is not str:
        raise errors.invalid_type("user", "a string", value)
    value = get("logit_bias")
    if value is not None and type(value) is not dict:
        raise errors.invalid_type("logit_bias", "an object", value)
    value = get("stop")
    if value is not None:
        request.stop = _stop(value)
    value = get("ignore_eos")
    if value is not None:
        request.ignore_eos = _bool("ignore_eos", value)
    return request


def _string(param: str, value: str, limit: int) -> int:
    """``len(value)``, or OpenAI's 400 when it is over ``limit``."""
    length = len(value)
    if length > limit:
        raise errors.string_too_long(param, limit, length)
    return length


def _prompt_too_long(param: str, chars: int, limit: int) -> errors.APIError:
    return errors.invalid(
        param,
        f"The prompt is too long: {chars} characters of text, over this server's limit of "
        f"{limit}. Please reduce the length of the {param}.",
        code="context_length_exceeded",
    )


def _message(
    index: int, message: object, max_string: int = DEFAULT_LIMITS.max_string_length
) -> int:
    """Check one message; the characters of its text content."""
    # Parameter names are only spelled out for an error: an f-string per
    # message was a measurable share of a valid request's validation.
    if type(message) is not dict:
        raise errors.invalid_type(f"messages[{index}]", "an object", message)
    role = message.get("role")
    if role is None:
        raise errors.missing(f"messages[{index}].role")
    if role not in ROLES:
        raise errors.invalid_value(f"messages[{index}].role", role, ROLES)
    content = message.get("content")
    if content is None:
        if role == "assistant" and (message.get("tool_calls") or message.get("function_call")):
            return 0
        if role == "assistant" and "content" in message:
            return 0
        raise errors.missing(f"messages[{index}].content")
    chars = 0
    if type(content) is str:
        chars = len(content)
        if chars > max_string:
            raise errors.string_too_long(f"messages[{index}].content", max_string, chars)
    elif type(content) is list:
        where = f"messages[{index}]"
        for j, part in enumerate(content):
            if type(part) is not dict:
                raise errors.invalid_type(f"{where}.content[{j}]", "an object", part)
            if "type" not in part:
                raise errors.missing(f"{where}.content[{j}].type")
            text = part.get("text")
            if type(text) is str:
                chars += _string(f"{where}.content[{j}].text", text, max_string)
    else:
        raise errors.invalid_type(f"messages[{index}].content", "a string or an array", content)
    if role == "tool" and "tool_call_id" not in message:
        raise errors.missing(f"messages[{index}].tool_call_id")
    return chars


def chat(body: dict[str, object], limits: InputLimits = DEFAULT_LIMITS) -> GenerationRequest:
    messages = body.get("messages")
    if messages is None:
        raise errors.missing("messages")
    if type(messages) is not list:
        raise errors.invalid_type("messages", "an array", messages)
    if not messages:
        raise errors.empty_array("messages")
    if len(messages) > limits.max_messages:
        raise errors.array_too_long("messages", limits.max_messages, len(messages))
    max_string = limits.max_string_length
    chars = 0
    turns = False
    for i, message in enumerate(messages):
        chars += _message(i, message, max_string)
        turns = turns or message.get("role") == "tool" or "tool_calls" in message
    if limits.max_prompt_chars and chars > limits.max_prompt_chars:
        raise _prompt_too_long("messages", chars, limits.max_prompt_chars)
    value = body.get("logprobs")
    logprobs = value is not None and _bool("logprobs", value)
    value = body.get("top_logprobs")
    top = None if value is None else _int("top_logprobs", value, 0, 20)
    if top is not None and not logprobs:
        raise errors.invalid(
            "top_logprobs",
            "Using top_logprobs requires logprobs to be set to true.",
            "invalid_value",
        )
    tools = body.get("tools")
    if tools is not None and type(tools) is not list:
        raise errors.invalid_type("tools", "an array", tools)
    prompt_tokens = tokens.count_messages(messages)
    if tools:
        prompt_tokens += tokens.count_value(tools)
    functions = body.get("functions")
    if functions:
        prompt_tokens += tokens.count_value(functions)
    request = _common(body, CHAT, prompt_tokens, limits.max_n)
    if turns or not _SHAPES.isdisjoint(body):
        shapes.shape(body, request, messages)
    if logprobs:
        request.logprobs = top or 0
    return request


#: The fields that make an answer more than text (L{shapes}).
_SHAPES = frozenset(
    (
        "tools",
        "functions",
        "tool_choice",
        "function_call",
        "response_format",
        "guided_json",
        "guided_choice",
        "reasoning_effort",
    )
)


def _prompts(value: object) -> list[str | list[int]]:
    """The legacy prompt forms: text, texts, token ids, lists of token ids."""
    if type(value) is str:
        return [value]
    if type(value) is list:
        if not value:
            raise errors.empty_array("prompt")
        if all(type(v) is int for v in value):
            return [value]
        out: list[str | list[int]] = []
        for i, item in enumerate(value):
            token_ids = type(item) is list and item and all(type(v) is int for v in item)
            if type(item) is str or token_ids:
                out.append(item)
            else:
                raise errors.invalid_type(f"prompt[{i}]", "a string or an array of integers", item)
        return out
    raise errors.invalid_type("prompt", "a string or an array", value)


def completions(body: dict[str, object], limits: InputLimits = DEFAULT_LIMITS) -> GenerationRequest:
    value = body.get("prompt")
    if value is None:
        raise errors.missing("prompt")
    prompts = _prompts(value)
    max_string, chars = limits.max_string_length, 0
    for i, prompt in enumerate(prompts):
        if type(prompt) is str:
            where = "prompt" if type(value) is str else f"prompt[{i}]"
            chars += _string(where, prompt, max_string)
    if limits.max_prompt_chars and chars > limits.max_prompt_chars:
        raise _prompt_too_long("prompt", chars, limits.max_prompt_chars)
    prompt_tokens = sum(map(tokens.count_prompt, prompts))
    get = body.get
    value = get("suffix")
    if value is not None and type(value) is not str:
        raise errors.invalid_type("suffix", "a string", value)
    value = get("logprobs")
    logprobs = None if value is None else _int("logprobs", value, 0, 5)
    max_n = limits.max_n
    request = _common(body, COMPLETIONS, prompt_tokens, max_n)
    value = get("best_of")
    if value is not None and _int("best_of", value, 1, 20) < request.n:
        raise errors.invalid(
            "best_of", "best_of must be greater than or equal to n.", code="invalid_value"
        )
    request.prompts = len(prompts)
    if logprobs is not None:
        request.logprobs = logprobs
        request.prompt_chars = tuple(len(p) if type(p) is str else 0 for p in prompts)
    if request.n * request.prompts > max_n:
        raise errors.above_max("n", max_n // request.prompts, request.n)
    value = get("echo")
    if value is not None and _bool("echo", value):
        if not all(type(p) is str for p in prompts):
            raise errors.invalid(
                "echo", "echo is only supported with text prompts by this server.", "invalid_value"
            )
        request.echo = tuple(p for p in prompts if isinstance(p, str))
    return request
