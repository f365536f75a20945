# -*- test-case-name: tests.test_responses -*-
"""
The Responses API's body, checked as OpenAI checks it: into the
L{GenerationRequest} the planner reads, and the L{Params} the answer echoes
and the store keeps.

What is the Responses API's own: ``input`` as text or a list of items
(messages with text and image parts, function calls and their outputs),
``instructions``, flat function tools (``strict`` by default) and OpenAI's
refusal of the hosted ones, ``text.format``, ``reasoning``,
``max_output_tokens`` (16 at least), ``store``, ``previous_response_id``,
``metadata``, ``truncation``.  Unknown fields are tolerated, as everywhere
in mockoai.
"""

from __future__ import annotations

from typing import Any

from mockoai.dialects.openai import shapes, validate
from mockoai.dialects.openai.strict import RESPONSE_FORMAT, check_strict
from mockoai.ops.config import InputLimits
from mockoai.pipeline import errors
from mockoai.pipeline.errors import APIError
from mockoai.sim import tokens
from mockoai.sim.request import (
    TOOLS_AUTO,
    TOOLS_NAMED,
    TOOLS_NONE,
    TOOLS_REQUIRED,
    GenerationRequest,
    Tool,
)

#: What a Responses request is, to the simulation.
RESPONSES = "responses"
#: OpenAI's floor for ``max_output_tokens``.
MIN_OUTPUT_TOKENS = 16
MAX_METADATA = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
MAX_TOOLS = 128
ROLES = ("user", "assistant", "system", "developer")
ITEMS = ("message", "function_call", "function_call_output", "reasoning", "item_reference")
PARTS = ("input_text", "input_image", "input_file", "output_text", "refusal")
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
SUMMARIES = ("auto", "concise", "detailed")
FORMATS = ("text", "json_schema", "json_object")
VERBOSITIES = ("low", "medium", "high")
TRUNCATIONS = ("auto", "disabled")
TIERS = ("auto", "default", "flex", "scale", "priority")
#: Tools OpenAI runs itself: known, and refused here (there is nothing to run them).
HOSTED = (
    "file_search",
    "web_search",
    "web_search_2025_08_26",
    "web_search_preview",
    "web_search_preview_2025_03_11",
    "computer",
    "computer_use",
    "computer_use_preview",
    "code_interpreter",
    "image_generation",
    "mcp",
    "local_shell",
    "shell",
    "apply_patch",
    "custom",
    "tool_search",
)
#: What a function without ``parameters`` takes: nothing.
NO_PARAMETERS: dict[str, object] = {"type": "object", "properties": {}}
#: ``text.format: {"type": "json_object"}``: any JSON object.
ANY_OBJECT: dict[str, object] = {"type": "object"}


class Params:
    """What a Responses answer says back, and the store keeps, beyond the plan."""

    __slots__ = (
        "calls",
        "input",
        "input_tokens",
        "instructions",
        "max_output_tokens",
        "metadata",
        "model",
        "outputs",
        "parallel_tool_calls",
        "previous",
        "prompt_cache_key",
        "reasoning",
        "safety_identifier",
        "service_tier",
        "store",
        "temperature",
        "text",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "truncation",
        "user",
    )

    def __init__(self, model: str) -> None:
        self.model = model
        #: The input as given (a string or items), for ``/input_items``.
        self.input: object = None
        #: Tokens of the instructions, input and tools (not of earlier turns).
        self.input_tokens = 0
        self.instructions: str | None = None
        self.previous: str | None = None
        self.store = True
        self.metadata: dict[str, str] = {}
        #: Function tools as the answer echoes them.
        self.tools: list[dict[str, object]] = []
        self.tool_choice: object = TOOLS_AUTO
        self.text: dict[str, object] = {"format": {"type": "text"}, "verbosity": "medium"}
        self.reasoning: dict[str, object] = {"effort": None, "summary": None}
        self.max_output_tokens: int | None = None
        self.temperature: float = 1.0
        self.top_p: float = 1.0
        self.top_logprobs = 0
        self.truncation = "disabled"
        self.user: str | None = None
        self.safety_identifier: str | None = None
        self.prompt_cache_key: str | None = None
        self.service_tier = "default"
        self.parallel_tool_calls = True
        #: ``call_id``s of the input's function calls, and of its outputs.
        self.calls: list[str] = []
        self.outputs: list[tuple[int, str]] = []

    def echo(self) -> dict[str, Any]:
        """The request's settings as the Response object repeats them."""
        echoed: dict[str, Any] = {
            "background": False,
            "instructions": self.instructions,
            "max_output_tokens": self.max_output_tokens,
            "max_tool_calls": None,
            "model": self.model,
            "parallel_tool_calls": self.parallel_tool_calls,
            "previous_response_id": self.previous,
            "prompt_cache_key": self.prompt_cache_key,
            "reasoning": self.reasoning,
            "safety_identifier": self.safety_identifier,
            "service_tier": self.service_tier,
            "store": self.store,
            "temperature": self.temperature,
            "text": self.text,
            "tool_choice": self.tool_choice,
            "tools": self.tools,
            "top_logprobs": self.top_logprobs,
            "top_p": self.top_p,
            "truncation": self.truncation,
            "metadata": self.metadata,
        }
        if self.user is not None:  # a string when there is one (the spec's type)
            echoed["user"] = self.user
        return echoed


def hosted_tool(kind: str, model: str) -> APIError:
    """OpenAI's answer to a hosted tool a model cannot use: here, none can."""
    return APIError(400, f"Hosted tool '{kind}' is not supported with {model}.", param="tools")


def _number(body: dict[str, object], name: str, low: float, high: float, default: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if type(value) not in (int, float):
        raise errors.invalid_type(name, "a number", value)
    assert isinstance(value, (int, float))
    if value < low:
        raise errors.below_min(name, low, value, decimal=True)
    if value > high:
        raise errors.above_max(name, high, value, decimal=True)
    return float(value)


#: The chat validator's checks of one optional field (the same rules, the same messages).
_integer = validate._optional_int
_boolean = validate._optional_bool


def _string(body: dict[str, object], name: str) -> str | None:
    value = body.get(name)
    if value is not None and type(value) is not str:
        raise errors.invalid_type(name, "a string", value)
    return value


def _choice(body: dict[str, object], name: str, options: tuple[str, ...], where: str = "") -> Any:
    value = body.get(name)
    if value is not None and value not in options:
        raise errors.invalid_value(where + name, value, options)
    return value


def responses(body: dict[str, object], limits: InputLimits) -> tuple[GenerationRequest, Params]:
    """``body`` as the planner's request and the answer's echo, or OpenAI's 400."""
    model = body.get("model")
    if model is None or model == "":
        raise errors.missing("model")
    if type(model) is not str:
        raise errors.invalid_type("model", "a string", model)
    params = Params(model)
    stream = _boolean(body, "stream", False)
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
        obfuscation = _boolean(options, "include_obfuscation", True, "stream_options.")

    instructions = _string(body, "instructions")
    params.instructions = instructions
    prompt_tokens = tokens.REPLY_PRIMING
    if instructions:
        prompt_tokens += tokens.TOKENS_PER_MESSAGE + tokens.count_text(instructions)
    value = body.get("input")
    if value is None:
        if body.get("previous_response_id") is None and body.get("prompt") is None:
            raise errors.missing("input")
        value = []
    prompt_tokens += _input(value, params, limits)
    params.input = value

    previous = _string(body, "previous_response_id")
    if previous is not None and not previous:
        raise errors.invalid(
            "previous_response_id",
            "Invalid 'previous_response_id': empty string. Expected a string with minimum "
            "length 1, but got an empty string instead.",
            code="empty_string",
        )
    params.previous = previous
    params.store = _boolean(body, "store", True)
    if _boolean(body, "background", False):
        raise errors.invalid(
            "background",
            "Background mode is not supported by this server: ask for the response itself "
            "(with 'stream' for its events as they come).",
            code="unsupported_parameter",
        )
    params.metadata = _metadata(body.get("metadata"))

    maximum = _integer(body, "max_output_tokens", MIN_OUTPUT_TOKENS)
    params.max_output_tokens = maximum
    params.temperature = _number(body, "temperature", 0, 2, 1.0)
    params.top_p = _number(body, "top_p", 0, 1, 1.0)
    params.top_logprobs = _integer(body, "top_logprobs", 0, 20) or 0
    _integer(body, "max_tool_calls", 1)
    params.truncation = _choice(body, "truncation", TRUNCATIONS) or "disabled"
    tier = _choice(body, "service_tier", TIERS)
    params.service_tier = "default" if tier in (None, "auto") else str(tier)
    params.user = _string(body, "user")
    params.safety_identifier = _string(body, "safety_identifier")
    params.prompt_cache_key = _string(body, "prompt_cache_key")
    include = body.get("include")
    if include is not None and (
        type(include) is not list or not all(type(i) is str for i in include)
    ):
        raise errors.invalid_type("include", "an array of strings", include)

    wanted = GenerationRequest(
        kind=RESPONSES,
        model=model,
        prompt_tokens=0,
        max_tokens=maximum,
        max_tokens_param="max_output_tokens",
        stream=stream,
        include_obfuscation=obfuscation,
    )
    prompt_tokens += _tools(body, wanted, params)
    _reasoning(body.get("reasoning"), wanted, params)
    _text(body.get("text"), wanted, params, instructions)
    last = value[-1] if type(value) is list and value else None
    wanted.after_tool_result = type(last) is dict and last.get("type") == "function_call_output"
    params.input_tokens = wanted.prompt_tokens = prompt_tokens
    return wanted, params


def _input(value: object, params: Params, limits: InputLimits) -> int:
    """The input's tokens, every item checked as OpenAI checks it."""
    longest = limits.max_string_length
    if type(value) is str:
        if len(value) > longest:
            raise errors.string_too_long("input", longest, len(value))
        return tokens.TOKENS_PER_MESSAGE + tokens.count_text(value)
    if type(value) is not list:
        raise errors.invalid_type("input", "a string or an array", value)
    if len(value) > limits.max_messages:
        raise errors.array_too_long("input", limits.max_messages, len(value))
    total = 0
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if type(item) is not dict:
            raise errors.invalid_type(where, "an object", item)
        kind = item.get("type")
        if kind is None:
            if "role" not in item:
                raise errors.missing(f"{where}.type")
            kind = "message"
        if kind not in ITEMS:
            raise errors.invalid_value(f"{where}.type", kind, ITEMS)
        total += tokens.TOKENS_PER_MESSAGE
        if kind == "message":
            total += _message(item, where, longest)
        elif kind == "function_call":
            for field in ("call_id", "name", "arguments"):
                if type(item.get(field)) is not str:
                    if field not in item:
                        raise errors.missing(f"{where}.{field}")
                    raise errors.invalid_type(f"{where}.{field}", "a string", item[field])
            params.calls.append(str(item["call_id"]))
            total += tokens.count_text(str(item["name"])) + tokens.count_text(
                str(item["arguments"])
            )
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if call_id is None:
                raise errors.missing(f"{where}.call_id")
            if type(call_id) is not str:
                raise errors.invalid_type(f"{where}.call_id", "a string", call_id)
            if "output" not in item:
                raise errors.missing(f"{where}.output")
            output = item["output"]
            if type(output) is str:
                if len(output) > longest:
                    raise errors.string_too_long(f"{where}.output", longest, len(output))
            elif type(output) is not list:
                raise errors.invalid_type(f"{where}.output", "a string or an array", output)
            params.outputs.append((i, call_id))
            total += tokens.count_content(output)
        elif kind == "item_reference" and type(item.get("id")) is not str:
            raise errors.missing(f"{where}.id")
        # A reasoning item passed back counts nothing: its text was never sent.
    return total


def _message(item: dict[str, object], where: str, longest: int) -> int:
    role = item.get("role")
    if role is None:
        raise errors.missing(f"{where}.role")
    if role not in ROLES:
        raise errors.invalid_value(f"{where}.role", role, ROLES)
    if "content" not in item or item["content"] is None:
        raise errors.missing(f"{where}.content")
    content = item["content"]
    if type(content) is str:
        if len(content) > longest:
            raise errors.string_too_long(f"{where}.content", longest, len(content))
        return tokens.count_text(content)
    if type(content) is not list:
        raise errors.invalid_type(f"{where}.content", "a string or an array", content)
    total = 0
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        if type(part) is not dict:
            raise errors.invalid_type(at, "an object", part)
        kind = part.get("type")
        if kind is None:
            raise errors.missing(f"{at}.type")
        if kind not in PARTS:
            raise errors.invalid_value(f"{at}.type", kind, PARTS)
        if kind in ("input_text", "output_text"):
            text = part.get("text")
            if text is None:
                raise errors.missing(f"{at}.text")
            if type(text) is not str:
                raise errors.invalid_type(f"{at}.text", "a string", text)
            if len(text) > longest:
                raise errors.string_too_long(f"{at}.text", longest, len(text))
            total += tokens.count_text(text)
        elif kind == "input_image":
            if part.get("image_url") is None and part.get("file_id") is None:
                raise errors.missing(f"{at}.image_url")
            total += tokens.IMAGE_TOKENS
        else:
            total += tokens.count_value(part)
    return total


def _metadata(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if type(value) is not dict:
        raise errors.invalid_type("metadata", "an object", value)
    if len(value) > MAX_METADATA:
        raise errors.invalid(
            "metadata",
            f"Invalid 'metadata': too many properties. Expected an object with at most "
            f"{MAX_METADATA} properties, but got an object with {len(value)} properties instead.",
            code="object_above_max_properties",
        )
    for key, item in value.items():
        if len(key) > MAX_METADATA_KEY:
            raise errors.invalid(
                "metadata",
                f"Invalid 'metadata': property name too long. Expected a property name with "
                f"maximum length {MAX_METADATA_KEY}, but got a property name with length "
                f"{len(key)} instead.",
                code="invalid_value",
            )
        if type(item) is not str:
            raise errors.invalid_type(f"metadata.{key}", "a string", item)
        if len(item) > MAX_METADATA_VALUE:
            raise errors.string_too_long(f"metadata.{key}", MAX_METADATA_VALUE, len(item))
    return value


def _tools(body: dict[str, object], wanted: GenerationRequest, params: Params) -> int:
    """Function tools (and the hosted ones' refusal), ``tool_choice``; their tokens."""
    value = body.get("tools")
    found: list[Tool] = []
    if value is not None:
        if type(value) is not list:
            raise errors.invalid_type("tools", "an array", value)
        if len(value) > MAX_TOOLS:
            raise errors.array_too_long("tools", MAX_TOOLS, len(value))
        for i, tool in enumerate(value):
            found.append(_function(tool, f"tools[{i}]", wanted.model, params))
    wanted.tools = tuple(found)
    parallel = body.get("parallel_tool_calls")
    if parallel is not None:
        if type(parallel) is not bool:
            raise errors.invalid_type("parallel_tool_calls", "a boolean", parallel)
        wanted.parallel_tool_calls = params.parallel_tool_calls = parallel
    choice = body.get("tool_choice")
    if choice is not None:
        _tool_choice(choice, wanted, params)
    return tokens.count_value(value) if found else 0


def _function(tool: object, where: str, model: str, params: Params) -> Tool:
    if type(tool) is not dict:
        raise errors.invalid_type(where, "an object", tool)
    kind = tool.get("type")
    if kind is None:
        raise errors.missing(f"{where}.type")
    if kind in HOSTED:
        raise hosted_tool(str(kind), model)
    if kind != "function":
        raise errors.invalid_value(f"{where}.type", kind, ("function", *HOSTED))
    name = tool.get("name")
    if name is None:
        raise errors.missing(f"{where}.name")
    if type(name) is not str:
        raise errors.invalid_type(f"{where}.name", "a string", name)
    if not name or len(name) > 64 or not all(c.isalnum() or c in "_-" for c in name):
        raise errors.invalid(
            f"{where}.name",
            f"Invalid '{where}.name': string does not match pattern. Expected a string that "
            "matches the pattern '^[a-zA-Z0-9_-]+$'.",
            code="invalid_value",
        )
    parameters = tool.get("parameters")
    if parameters is not None and type(parameters) is not dict:
        raise errors.invalid_type(f"{where}.parameters", "an object", parameters)
    strict = tool.get("strict")
    if strict is not None and type(strict) is not bool:
        raise errors.invalid_type(f"{where}.strict", "a boolean", strict)
    description = _string(tool, "description")
    # Chat's checks of a function (its schema's type, strict mode's rules,
    # that an answer can satisfy it): a flat tool is its function, and the
    # Responses API is strict unless told otherwise.
    checked = shapes.function_tool(tool if strict is not None else {**tool, "strict": True}, where)
    schema = checked.schema
    # The Responses API is strict unless told otherwise.
    params.tools.append(
        {
            "type": "function",
            "description": description,
            "name": name,
            "parameters": parameters if parameters is not None else NO_PARAMETERS,
            "strict": strict is not False,
        }
    )
    return Tool(name, schema)


def _tool_choice(choice: object, wanted: GenerationRequest, params: Params) -> None:
    if type(choice) is str:
        modes = (TOOLS_NONE, TOOLS_AUTO, TOOLS_REQUIRED)
        if choice not in modes:
            raise errors.invalid_value("tool_choice", choice, modes)
        if choice == TOOLS_REQUIRED and not wanted.tools:
            raise errors.invalid(
                "tool_choice",
                "Tool choice 'required' must be specified with 'tools' parameter.",
            )
        wanted.tool_choice = params.tool_choice = choice
        return
    if type(choice) is not dict:
        raise errors.invalid_type("tool_choice", "a string or an object", choice)
    kind = choice.get("type")
    if kind in HOSTED:
        raise hosted_tool(str(kind), wanted.model)
    if kind == "allowed_tools":
        mode = choice.get("mode")
        if mode not in (TOOLS_AUTO, TOOLS_REQUIRED):
            raise errors.invalid_value("tool_choice.mode", mode, (TOOLS_AUTO, TOOLS_REQUIRED))
        allowed = choice.get("tools")
        if type(allowed) is not list:
            raise errors.invalid_type("tool_choice.tools", "an array", allowed)
        names = {t.get("name") for t in allowed if type(t) is dict}
        wanted.tools = tuple(tool for tool in wanted.tools if tool.name in names)
        wanted.tool_choice = str(mode)
        params.tool_choice = choice
        return
    if kind != "function":
        raise errors.invalid_value("tool_choice.type", kind, ("function", "allowed_tools"))
    name = choice.get("name")
    if name is None:
        raise errors.missing("tool_choice.name")
    if not any(tool.name == name for tool in wanted.tools):
        raise errors.invalid(
            "tool_choice",
            f"Tool choice 'function' not found in 'tools' parameter: no function named '{name}'.",
        )
    wanted.tool_choice = TOOLS_NAMED
    wanted.tool_name = str(name)
    params.tool_choice = {"type": "function", "name": name}


def _reasoning(value: object, wanted: GenerationRequest, params: Params) -> None:
    if value is None:
        return
    if type(value) is not dict:
        raise errors.invalid_type("reasoning", "an object", value)
    effort = _choice(value, "effort", EFFORTS, "reasoning.")
    summary = _choice(value, "summary", SUMMARIES, "reasoning.")
    if effort is not None:
        # Efforts past the planner's four are its highest.
        wanted.reasoning_effort = "high" if effort == "xhigh" else str(effort)
    params.reasoning = {"effort": effort, "summary": summary}


def _text(
    value: object, wanted: GenerationRequest, params: Params, instructions: str | None
) -> None:
    if value is None:
        return
    if type(value) is not dict:
        raise errors.invalid_type("text", "an object", value)
    verbosity = _choice(value, "verbosity", VERBOSITIES, "text.") or "medium"
    fmt = value.get("format")
    echoed: dict[str, object] = {"type": "text"}
    if fmt is not None:
        if type(fmt) is not dict:
            raise errors.invalid_type("text.format", "an object", fmt)
        kind = fmt.get("type")
        if kind is None:
            raise errors.missing("text.format.type")
        if kind not in FORMATS:
            raise errors.invalid_value("text.format.type", kind, FORMATS)
        if kind == "json_object":
            if not _mentions_json(params.input, instructions):
                raise errors.invalid(
                    "input",
                    "Response input messages must contain the word 'json' in some form to use "
                    "'text.format' of type 'json_object'.",
                )
            wanted.document = ANY_OBJECT
            echoed = {"type": "json_object"}
        elif kind == "json_schema":
            name = fmt.get("name")
            if name is None:
                raise errors.missing("text.format.name")
            if type(name) is not str:
                raise errors.invalid_type("text.format.name", "a string", name)
            if "schema" not in fmt:
                raise errors.missing("text.format.schema")
            schema = fmt["schema"]
            if type(schema) is not dict:
                raise errors.invalid_type("text.format.schema", "an object", schema)
            strict = fmt.get("strict")
            if strict is not None and type(strict) is not bool:
                raise errors.invalid_type("text.format.strict", "a boolean", strict)
            if strict:
                check_strict(
                    schema, name, RESPONSE_FORMAT, "text.format.schema", "invalid_json_schema"
                )
            shapes.satisfiable(
                schema, f"Invalid schema for response format '{name}'", "text.format.schema"
            )
            wanted.document = schema
            echoed = {"type": "json_schema", "name": name, "schema": schema, "strict": bool(strict)}
            description = fmt.get("description")
            if description is not None:
                echoed["description"] = description
    params.text = {"format": echoed, "verbosity": verbosity}


def _mentions_json(value: object, instructions: str | None) -> bool:
    """Whether the input (or the instructions) says "json", as json_object requires."""
    if instructions and "json" in instructions.lower():
        return True
    if type(value) is str:
        return "json" in value.lower()
    if type(value) is list:
        for item in value:
            content = item.get("content") if type(item) is dict else None
            if type(content) is str and "json" in content.lower():
                return True
            if type(content) is list:
                for part in content:
                    text = part.get("text") if type(part) is dict else None
                    if type(text) is str and "json" in text.lower():
                        return True
    return False


def parse_body(content: bytes, limits: InputLimits) -> dict[str, object]:
    """The JSON object of a body, as every OpenAI endpoint parses it."""
    return validate.parse_body(content, limits.max_json_depth)
