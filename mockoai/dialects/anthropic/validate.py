# -*- test-case-name: tests.test_anthropic -*-
"""
Anthropic's validation: a Messages request body into what the simulation
generates, or the 400 Anthropic answers, in its words.

Anthropic validates with pydantic and names a field by its dotted path
(``messages.0.content.1.text: Field required``); unknown fields are
refused (``Extra inputs are not permitted``), unlike OpenAI's tolerance.
The checks a client trips over in an agent loop are Anthropic's too: every
``tool_use`` answered by a ``tool_result`` in the next message, a thinking
budget under ``max_tokens``, no forced tool with thinking on.

Prompt tokens are counted as L{mockoai.sim.tokens} counts text, with
Anthropic's framing: the tool-use system prompt its docs price (346 tokens,
313 when a tool is forced), an image's price, and thinking from earlier
turns not counted at all (Anthropic drops it from the context).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs

from mockoai.apierror import APIError
from mockoai.dialects.anthropic import errors
from mockoai.dialects.anthropic.errors import AnthropicError
from mockoai.dialects.openai import validate as openai_validate
from mockoai.ops.config import MESSAGES, InputLimits
from mockoai.sim import output, schema, tokens
from mockoai.sim.request import (
    TOOLS_AUTO,
    TOOLS_NAMED,
    TOOLS_NONE,
    TOOLS_REQUIRED,
    GenerationRequest,
    Tool,
)

TOKENS_PER_MESSAGE = tokens.TOKENS_PER_MESSAGE
REPLY_PRIMING = tokens.REPLY_PRIMING
#: An image, whatever its size: about what a 1.2-megapixel one costs (w * h / 750).
IMAGE_TOKENS = 1600
#: The tool-use system prompt Anthropic adds when tools are given (auto/none),
#: and when one is forced (any/tool).
TOOLS_PROMPT = 346
FORCED_TOOLS_PROMPT = 313
#: The smallest thinking budget.
MIN_BUDGET = 1024

#: The body's fields (``/v1/messages``); anything else is refused.
FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "stop_sequences",
        "temperature",
        "top_p",
        "top_k",
        "metadata",
        "stream",
        "tools",
        "tool_choice",
        "thinking",
        "service_tier",
        "container",
        "mcp_servers",
        "context_management",
        "output_config",
        "inference_geo",
    }
)
#: What ``/v1/messages/count_tokens`` takes: the prompt, not the answer's limits.
COUNT_FIELDS = frozenset(
    {
        "model",
        "messages",
        "system",
        "tools",
        "tool_choice",
        "thinking",
        "mcp_servers",
        "context_management",
        "output_config",
    }
)
ROLES = ("user", "assistant")
BLOCKS = (
    "text",
    "image",
    "document",
    "search_result",
    "thinking",
    "redacted_thinking",
    "tool_use",
    "tool_result",
    "server_tool_use",
    "web_search_tool_result",
)
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
TOOL_CHOICES = ("auto", "any", "tool", "none")
#: Anthropic's tool choices as the planner names them.
_CHOICES = {"auto": TOOLS_AUTO, "any": TOOLS_REQUIRED, "tool": TOOLS_NAMED, "none": TOOLS_NONE}
THINKING = ("enabled", "disabled", "adaptive")
#: Anthropic's tool names: ``^[a-zA-Z0-9_-]{1,128}$``.
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


@attrs.define
class Extras:
    """What a Messages request asks beyond plain text: tools and thinking."""

    #: (name, compiled input_schema) of each custom tool, in order.
    tools: tuple[tuple[str, object], ...] = ()
    #: auto, any, tool or none; ``tool_name`` for tool.
    tool_choice: str = "auto"
    tool_name: str | None = None
    parallel: bool = True
    #: The last message answers tool calls: an ``auto`` answer is text then.
    after_tool_result: bool = False
    #: ``thinking.budget_tokens`` when thinking is enabled.
    budget: int | None = None


# --- pydantic's words ---------------------------------------------------------------


def _error(path: str, message: str) -> AnthropicError:
    return errors.invalid(f"{path}: {message}")


def missing(path: str) -> AnthropicError:
    return _error(path, "Field required")


def extra(path: str) -> AnthropicError:
    return _error(path, "Extra inputs are not permitted")


_KINDS = {
    int: "a valid integer",
    str: "a valid string",
    list: "a valid list",
    dict: "a valid dictionary",
    bool: "a valid boolean",
    float: "a valid number",
}


def wrong_type(path: str, kind: type) -> AnthropicError:
    return _error(path, f"Input should be {_KINDS[kind]}")


def one_of(path: str, options: Sequence[str]) -> AnthropicError:
    quoted = [f"'{o}'" for o in options]
    listed = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
    return _error(path, f"Input should be {listed}")


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def at_least(path: str, low: float) -> AnthropicError:
    return _error(path, f"Input should be greater than or equal to {_number(low)}")


def at_most(path: str, high: float) -> AnthropicError:
    return _error(path, f"Input should be less than or equal to {_number(high)}")


def bad_tag(path: str, tag: object, tags: Sequence[str]) -> AnthropicError:
    expected = ", ".join(f"'{t}'" for t in tags)
    return _error(
        path,
        f"Input tag '{tag}' found using 'type' does not match any of the expected tags: {expected}",
    )


# --- fields -------------------------------------------------------------------------


def parse_body(body: bytes, limits: InputLimits) -> dict[str, object]:
    """The JSON object in ``body`` (OpenAI's parser, its strictness), or Anthropic's 400."""
    try:
        return openai_validate.parse_body(body, limits.max_json_depth)
    except APIError as e:
        if e.param is not None:  # a lone surrogate, named: keep the name
            raise errors.invalid(e.message) from None
        if e.code == "invalid_type":
            raise errors.invalid("Input should be a valid dictionary") from None
        raise errors.invalid("Invalid JSON body") from None


def _fields(body: dict[str, object], known: frozenset[str], where: str = "") -> None:
    for name in body:
        if name not in known:
            raise extra(where + name)


def _integer(value: object, path: str, low: int | None = None) -> int:
    if type(value) is not int:
        raise wrong_type(path, int)
    if low is not None and value < low:
        raise at_least(path, low)
    return value


def _string(value: object, path: str) -> str:
    if type(value) is not str:
        raise wrong_type(path, str)
    return value


def _object(value: object, path: str) -> dict[str, object]:
    if type(value) is not dict:
        raise wrong_type(path, dict)
    return value


def _number_in(body: dict[str, object], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if type(value) not in (int, float):
        raise wrong_type(name, float)
    assert isinstance(value, (int, float))
    if value < low:
        raise at_least(name, low)
    if value > high:
        raise at_most(name, high)
    return value


def _boolean(value: object, path: str) -> bool:
    if type(value) is not bool:
        raise wrong_type(path, bool)
    return value


class _Prompt:
    """Tokens and characters of a prompt, added up as the body is checked."""

    __slots__ = ("chars", "limits", "tokens")

    def __init__(self, limits: InputLimits) -> None:
        self.limits = limits
        self.tokens = REPLY_PRIMING
        self.chars = 0

    def text(self, text: str, path: str) -> None:
        length = len(text)
        limit = self.limits.max_string_length
        if length > limit:
            raise _error(path, f"String should have at most {limit} characters")
        self.chars += length
        self.tokens += tokens.count_text(text)


def _system(value: object, prompt: _Prompt) -> None:
    if type(value) is str:
        prompt.text(value, "system")
        return
    if type(value) is not list:
        raise _error("system", "Input should be a valid string or a valid list")
    for i, block in enumerate(value):
        path = f"system.{i}"
        block = _object(block, path)
        if block.get("type") != "text":
            raise one_of(f"{path}.type", ("text",))
        _text_block(block, path, prompt)


def _text_block(block: dict[str, object], path: str, prompt: _Prompt) -> None:
    text = block.get("text")
    if text is None:
        raise missing(f"{path}.text")
    text = _string(text, f"{path}.text")
    if not text:
        raise errors.invalid("messages: text content blocks must be non-empty")
    if text.isspace():
        raise errors.invalid("messages: text content blocks must contain non-whitespace text")
    prompt.text(text, f"{path}.text")


def _source(block: dict[str, object], path: str, kinds: dict[str, tuple[str, ...]]) -> str:
    """A media block's ``source``: its type, checked against ``kinds`` (media types by source)."""
    source = block.get("source")
    if source is None:
        raise missing(f"{path}.source")
    source = _object(source, f"{path}.source")
    kind = source.get("type")
    if kind not in kinds:
        raise bad_tag(f"{path}.source", kind, tuple(kinds))
    assert isinstance(kind, str)
    where = f"{path}.source.{kind}"
    media = kinds[kind]
    if media:
        media_type = source.get("media_type")
        if media_type is None:
            raise missing(f"{where}.media_type")
        if media_type not in media:
            raise one_of(f"{where}.media_type", media)
    field = {"base64": "data", "text": "data", "url": "url", "file": "file_id"}.get(kind)
    if field is not None:
        if field not in source:
            raise missing(f"{where}.{field}")
        _string(source[field], f"{where}.{field}")
    return kind


_IMAGE_SOURCES = {"base64": IMAGE_TYPES, "url": (), "file": ()}
_DOCUMENT_SOURCES = {
    "base64": ("application/pdf",),
    "text": ("text/plain",),
    "url": (),
    "file": (),
    "content": (),
}


def _block(
    block: object, path: str, role: str, prompt: _Prompt, uses: list[str], results: list[str]
) -> None:
    """One content block; the ids of its tool calls and results go to ``uses``, ``results``."""
    block = _object(block, path)
    kind = block.get("type")
    if kind is None:
        raise missing(f"{path}.type")
    if kind not in BLOCKS:
        raise bad_tag(path, kind, BLOCKS)
    where = f"{path}.{kind}"
    if kind == "text":
        _text_block(block, where, prompt)
    elif kind == "image":
        _source(block, where, _IMAGE_SOURCES)
        prompt.tokens += IMAGE_TOKENS
    elif kind == "document":
        if _source(block, where, _DOCUMENT_SOURCES) in ("base64", "text"):
            data = block["source"]
            assert isinstance(data, dict)
            prompt.text(data["data"], f"{where}.source.data")
        else:
            prompt.tokens += tokens.count_value(block.get("source"))
    elif kind == "tool_use":
        for name in ("id", "name"):
            if name not in block:
                raise missing(f"{where}.{name}")
            _string(block[name], f"{where}.{name}")
        if "input" not in block:
            raise missing(f"{where}.input")
        _object(block["input"], f"{where}.input")
        uses.append(str(block["id"]))
        prompt.tokens += tokens.count_text(str(block["name"])) + tokens.count_value(block["input"])
    elif kind == "tool_result":
        if "tool_use_id" not in block:
            raise missing(f"{where}.tool_use_id")
        results.append(_string(block["tool_use_id"], f"{where}.tool_use_id"))
        if block.get("is_error") is not None:
            _boolean(block["is_error"], f"{where}.is_error")
        content = block.get("content")
        if type(content) is str:
            prompt.text(content, f"{where}.content")
        elif type(content) is list:
            for j, part in enumerate(content):
                _block(part, f"{where}.content.{j}", role, prompt, uses, results)
        elif content is not None:
            raise _error(f"{where}.content", "Input should be a valid string or a valid list")
    elif kind == "thinking":
        # Thinking of earlier turns is dropped from the context: not counted.
        for name in ("thinking", "signature"):
            if name not in block:
                raise missing(f"{where}.{name}")
            _string(block[name], f"{where}.{name}")
    elif kind == "redacted_thinking":
        if "data" not in block:
            raise missing(f"{where}.data")
    else:
        prompt.tokens += tokens.count_value(block)


def _messages(value: object, prompt: _Prompt) -> bool:
    """Check ``messages``; whether the last one answers tool calls."""
    if value is None:
        raise missing("messages")
    if type(value) is not list:
        raise wrong_type("messages", list)
    if not value:
        raise errors.invalid("messages: at least one message is required")
    limit = prompt.limits.max_messages
    if len(value) > limit:
        raise _error("messages", f"List should have at most {limit} items after validation")
    pending: list[str] = []  # tool_use ids the previous message left unanswered
    answered = False
    last = len(value) - 1
    for i, message in enumerate(value):
        path = f"messages.{i}"
        message = _object(message, path)
        _fields(message, frozenset({"role", "content"}), f"{path}.")
        role = message.get("role")
        if role is None:
            raise missing(f"{path}.role")
        if role not in ROLES:
            raise one_of(f"{path}.role", ROLES)
        assert isinstance(role, str)
        content = message.get("content")
        if content is None:
            raise missing(f"{path}.content")
        prompt.tokens += TOKENS_PER_MESSAGE
        uses: list[str] = []
        results: list[str] = []
        if type(content) is str:
            if not content and not (role == "assistant" and i == last):
                raise errors.invalid(
                    f"{path}: all messages must have non-empty content except for the "
                    "optional final assistant message"
                )
            prompt.text(content, f"{path}.content")
        elif type(content) is list:
            for j, block in enumerate(content):
                _block(block, f"{path}.content.{j}", role, prompt, uses, results)
        else:
            raise _error(f"{path}.content", "Input should be a valid string or a valid list")
        if pending:
            missing_ids = [u for u in pending if u not in results]
            if role != "user" or missing_ids:
                raise errors.invalid(
                    f"messages.{i - 1}: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {', '.join(missing_ids or pending)}. Each `tool_use` "
                    "block must have a corresponding `tool_result` block in the next message."
                )
        for j, result in enumerate(results):
            if result not in pending:
                raise errors.invalid(
                    f"{path}.content.{j}: unexpected `tool_use_id` found in `tool_result` "
                    f"blocks: {result}. Each `tool_result` block must have a corresponding "
                    "`tool_use` block in the previous message."
                )
        pending = uses if role == "assistant" else []
        answered = bool(results)
    if pending:
        raise errors.invalid(
            f"messages.{last}: `tool_use` ids were found without `tool_result` blocks "
            f"immediately after: {', '.join(pending)}. Each `tool_use` block must have a "
            "corresponding `tool_result` block in the next message."
        )
    return answered


def _tools(value: object, prompt: _Prompt) -> tuple[tuple[str, object], ...]:
    if type(value) is not list:
        raise wrong_type("tools", list)
    found: list[tuple[str, object]] = []
    names: set[str] = set()
    for i, tool in enumerate(value):
        path = f"tools.{i}"
        tool = _object(tool, path)
        kind = tool.get("type")
        name = tool.get("name")
        if name is None:
            raise missing(f"{path}.name")
        name = _string(name, f"{path}.name")
        if kind not in (None, "custom"):
            # A server or client tool Anthropic defines (web_search_..., bash_...).
            _string(kind, f"{path}.type")
        else:
            where = f"{path}.custom"
            if not 1 <= len(name) <= 128 or not _NAME_CHARS.issuperset(name):
                raise _error(
                    f"{where}.name", "String should match pattern '^[a-zA-Z0-9_-]{1,128}$'"
                )
            document = tool.get("input_schema")
            if document is None:
                raise missing(f"{where}.input_schema")
            document = _object(document, f"{where}.input_schema")
            if document.get("type") != "object":
                raise one_of(f"{where}.input_schema.type", ("object",))
            try:
                # Compiled once, for every call drawn from it (cached across requests).
                compiled = output.compiled(document)
            except schema.Unsatisfiable:
                raise errors.invalid(
                    f"{where}.input_schema: JSON schema is invalid. It must match JSON Schema "
                    "draft 2020-12 (https://json-schema.org/draft/2020-12). Learn more about "
                    "tool use at https://docs.claude.com/en/docs/tool-use."
                ) from None
            description = tool.get("description")
            if description is not None:
                prompt.text(_string(description, f"{where}.description"), f"{where}.description")
            found.append((name, compiled))
        if name in names:
            raise errors.invalid("tools: Tool names must be unique.")
        names.add(name)
        prompt.tokens += tokens.count_text(name) + tokens.count_value(tool.get("input_schema"))
    return tuple(found)


def _tool_choice(value: object, extras: Extras, names: Iterable[str]) -> None:
    choice = _object(value, "tool_choice")
    kind = choice.get("type")
    if kind is None:
        raise missing("tool_choice.type")
    if kind not in TOOL_CHOICES:
        raise bad_tag("tool_choice", kind, TOOL_CHOICES)
    assert isinstance(kind, str)
    where = f"tool_choice.{kind}"
    _fields(choice, frozenset({"type", "name", "disable_parallel_tool_use"}), f"{where}.")
    if kind == "tool":
        name = choice.get("name")
        if name is None:
            raise missing(f"{where}.name")
        name = _string(name, f"{where}.name")
        if name not in names:
            raise errors.invalid(f"{where}.name: Tool '{name}' not found in `tools`")
        extras.tool_name = name
    elif "name" in choice:
        raise extra(f"{where}.name")
    if choice.get("disable_parallel_tool_use") is not None:
        extras.parallel = not _boolean(
            choice["disable_parallel_tool_use"], f"{where}.disable_parallel_tool_use"
        )
    extras.tool_choice = kind


def _thinking(value: object) -> int | None:
    """The thinking budget, when thinking is on (``adaptive``: none set)."""
    thinking = _object(value, "thinking")
    kind = thinking.get("type")
    if kind is None:
        raise missing("thinking.type")
    if kind not in THINKING:
        raise bad_tag("thinking", kind, THINKING)
    where = f"thinking.{kind}"
    if kind == "enabled":
        _fields(thinking, frozenset({"type", "budget_tokens", "display"}), f"{where}.")
        budget = thinking.get("budget_tokens")
        if budget is None:
            raise missing(f"{where}.budget_tokens")
        return _integer(budget, f"{where}.budget_tokens", MIN_BUDGET)
    _fields(thinking, frozenset({"type", "display"}), f"{where}.")
    return 0 if kind == "adaptive" else None


def _prompt(body: dict[str, object], limits: InputLimits, extras: Extras) -> int:
    """The prompt's checks and its tokens: system, messages, tools and the choice among them."""
    prompt = _Prompt(limits)
    system = body.get("system")
    if system is not None:
        _system(system, prompt)
    extras.after_tool_result = _messages(body.get("messages"), prompt)
    tools = body.get("tools")
    if tools is not None:
        extras.tools = _tools(tools, prompt)
    choice = body.get("tool_choice")
    if choice is not None:
        if not tools:
            raise errors.invalid(
                "tool_choice: tool_choice may only be specified while providing tools."
            )
        _tool_choice(choice, extras, (name for name, _ in extras.tools))
    if tools:
        forced = extras.tool_choice in ("any", "tool")
        prompt.tokens += FORCED_TOOLS_PROMPT if forced else TOOLS_PROMPT
    if limits.max_prompt_chars and prompt.chars > limits.max_prompt_chars:
        raise errors.invalid(
            f"prompt is too long: {prompt.chars} characters of text, over this server's limit "
            f"of {limits.max_prompt_chars}"
        )
    return prompt.tokens


def _model(body: dict[str, object]) -> str:
    model = body.get("model")
    if model is None:
        raise missing("model")
    model = _string(model, "model")
    if not model:
        raise _error("model", "String should have at least 1 character")
    return model


def messages(body: dict[str, object], limits: InputLimits) -> tuple[GenerationRequest, Extras]:
    """A ``/v1/messages`` body: what to generate, and what it asks beyond text."""
    _fields(body, FIELDS)
    model = _model(body)
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise missing("max_tokens")
    max_tokens = _integer(max_tokens, "max_tokens", 1)
    extras = Extras()
    prompt_tokens = _prompt(body, limits, extras)
    stream = body.get("stream")
    stream = False if stream is None else _boolean(stream, "stream")
    temperature = _number_in(body, "temperature", 0, 1)
    top_p = _number_in(body, "top_p", 0, 1)
    top_k = body.get("top_k")
    if top_k is not None:
        _integer(top_k, "top_k", 0)
    metadata = body.get("metadata")
    if metadata is not None:
        metadata = _object(metadata, "metadata")
        _fields(metadata, frozenset({"user_id"}), "metadata.")
        user = metadata.get("user_id")
        if user is not None:
            _string(user, "metadata.user_id")
    service_tier = body.get("service_tier")
    if service_tier is not None and service_tier not in ("auto", "standard_only"):
        raise one_of("service_tier", ("auto", "standard_only"))
    thinking = body.get("thinking")
    if thinking is not None:
        extras.budget = _thinking(thinking)
    if extras.budget is not None:
        if extras.budget and max_tokens <= extras.budget:
            raise errors.invalid(
                "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our "
                "documentation at https://docs.claude.com/en/docs/build-with-claude/"
                "extended-thinking#max-tokens-and-context-window-size"
            )
        if extras.tool_choice in ("any", "tool"):
            raise errors.invalid("Thinking may not be enabled when tool_choice forces tool use.")
        if temperature is not None and temperature != 1:
            raise errors.invalid(
                "`temperature` may only be set to 1 when thinking is enabled. Please consult our "
                "documentation at https://docs.claude.com/en/docs/build-with-claude/"
                "extended-thinking#important-considerations-when-using-extended-thinking"
            )
        if top_k is not None:
            raise errors.invalid("`top_k` must be unset when thinking is enabled.")
        if top_p is not None and top_p < 0.95:
            raise errors.invalid(
                "`top_p` must be greater than or equal to 0.95 or unset when thinking is enabled."
            )
    budget = extras.budget
    wanted = GenerationRequest(
        kind=MESSAGES,
        model=model,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        stream=stream,
        stop=_stop_sequences(body.get("stop_sequences")),
        tools=tuple(Tool(name, document) for name, document in extras.tools),
        tool_choice=_CHOICES[extras.tool_choice],
        tool_name=extras.tool_name,
        parallel_tool_calls=extras.parallel,
        after_tool_result=extras.after_tool_result,
        # Thinking is sent, as thinking blocks; adaptive thinking: as much as
        # the model's medium effort, within max_tokens.
        reasoning_budget=None if budget is None else budget or max_tokens - 1,
        reasoning_visible=True if budget is not None else None,
    )
    return wanted, extras


def _stop_sequences(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if type(value) is not list:
        raise wrong_type("stop_sequences", list)
    for i, item in enumerate(value):
        text = _string(item, f"stop_sequences.{i}")
        if not text or text.isspace():
            raise errors.invalid(
                "stop_sequences: each stop sequence must contain non-whitespace characters"
            )
    return tuple(value)


def count_tokens(body: dict[str, object], limits: InputLimits) -> tuple[str, int]:
    """A ``/v1/messages/count_tokens`` body: its model and its prompt's tokens."""
    _fields(body, COUNT_FIELDS)
    model = _model(body)
    extras = Extras()
    prompt_tokens = _prompt(body, limits, extras)
    thinking = body.get("thinking")
    if thinking is not None:
        _thinking(thinking)
    return model, prompt_tokens
