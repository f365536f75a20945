# -*- test-case-name: tests.test_tools -*-
"""
OpenAI's checks of what shapes a chat answer beyond text: ``tools`` and
``tool_choice`` (and the legacy ``functions`` / ``function_call``), the
tool turns of the conversation, ``response_format`` (and vLLM's
``guided_json`` / ``guided_choice``) and ``reasoning_effort``.  Each sets
its fields of the L{GenerationRequest} or raises the 400 OpenAI answers
(messages in ``docs/wire-facts-structured-outputs.md``).

Only a request that carries one of these fields pays for more than a few
dictionary lookups.
"""

from __future__ import annotations

import re

import ujson

from mockoai.dialects.openai import strict
from mockoai.pipeline import errors
from mockoai.sim import output, schema
from mockoai.sim.request import (
    TOOLS_AUTO,
    TOOLS_NAMED,
    TOOLS_NONE,
    TOOLS_REQUIRED,
    GenerationRequest,
    Tool,
)

MAX_TOOLS = 128
MAX_NAME = 64
_NAME = re.compile(r"[a-zA-Z0-9_-]+")
TOOL_CHOICES = (TOOLS_NONE, TOOLS_AUTO, TOOLS_REQUIRED)
EFFORTS = ("minimal", "low", "medium", "high")
#: What a function without ``parameters`` takes: nothing.
NO_PARAMETERS: dict[str, object] = {"type": "object", "properties": {}}
#: ``response_format: {"type": "json_object"}``: any JSON object.
ANY_OBJECT: dict[str, object] = {"type": "object"}


def shape(
    body: dict[str, object], wanted: GenerationRequest, messages: list[dict[str, object]]
) -> None:
    """Set ``wanted``'s tools, document and reasoning from ``body``."""
    if "tools" in body or "functions" in body:
        _tools(body, wanted)
    elif body.get("tool_choice") is not None:
        raise errors.invalid(
            "tool_choice",
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
            "specified.",
        )
    _turns(messages, wanted)
    if "response_format" in body or "guided_json" in body or "guided_choice" in body:
        _format(body, wanted, messages)
    effort = body.get("reasoning_effort")
    if effort is not None:
        if effort not in EFFORTS and effort != "none":
            raise errors.invalid_value("reasoning_effort", effort, (*EFFORTS, "none"))
        wanted.reasoning_effort = str(effort)


def _tools(body: dict[str, object], wanted: GenerationRequest) -> None:
    tools = body.get("tools")
    legacy = tools is None
    found: list[Tool] = []
    if legacy:
        functions = body.get("functions")
        if functions is None:
            return
        if type(functions) is not list:
            raise errors.invalid_type("functions", "an array", functions)
        for i, function in enumerate(functions):
            found.append(function_tool(function, f"functions[{i}]"))
    else:
        if type(tools) is not list:
            raise errors.invalid_type("tools", "an array", tools)
        if len(tools) > MAX_TOOLS:
            raise errors.array_too_long("tools", MAX_TOOLS, len(tools))
        for i, tool in enumerate(tools):
            where = f"tools[{i}]"
            if type(tool) is not dict:
                raise errors.invalid_type(where, "an object", tool)
            kind = tool.get("type")
            if kind is None:
                raise errors.missing(f"{where}.type")
            if kind != "function":
                raise errors.invalid_value(f"{where}.type", kind, ("function",))
            if "function" not in tool:
                raise errors.missing(f"{where}.function")
            found.append(function_tool(tool["function"], f"{where}.function"))
    if not found:
        if body.get("tool_choice") is not None:
            raise errors.invalid(
                "tool_choice",
                "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
                "specified.",
            )
        return
    wanted.tools = tuple(found)
    choice_param = "function_call" if legacy else "tool_choice"
    _choice(body.get(choice_param), choice_param, wanted, legacy)
    parallel = body.get("parallel_tool_calls")
    if parallel is not None:
        if type(parallel) is not bool:
            raise errors.invalid_type("parallel_tool_calls", "a boolean", parallel)
        wanted.parallel_tool_calls = parallel
    if legacy:
        # The legacy API calls one function at a time.
        wanted.parallel_tool_calls = False


def function_tool(function: object, where: str) -> Tool:
    """One function definition: its name, and its parameters' schema, checked."""
    if type(function) is not dict:
        raise errors.invalid_type(where, "an object", function)
    name = function.get("name")
    if name is None:
        raise errors.missing(f"{where}.name")
    if type(name) is not str:
        raise errors.invalid_type(f"{where}.name", "a string", name)
    if len(name) > MAX_NAME:
        raise errors.string_too_long(f"{where}.name", MAX_NAME, len(name))
    if not _NAME.fullmatch(name):
        raise errors.invalid(
            f"{where}.name",
            f"Invalid '{where}.name': string does not match pattern. Expected a string that "
            "matches the pattern '^[a-zA-Z0-9_-]+$'.",
            code="invalid_value",
        )
    param = f"{where}.parameters"
    parameters = function.get("parameters")
    if parameters is None or parameters == {}:
        return Tool(name, NO_PARAMETERS)
    if type(parameters) is not dict:
        raise errors.invalid_type(param, "an object", parameters)
    kind = parameters.get("type")
    if kind != "object":
        raise errors.invalid(
            param,
            f"Invalid schema for function '{name}': schema must be a JSON Schema of "
            f"'type: \"object\"', got 'type: \"{kind}\"'.",
            code="invalid_function_parameters",
        )
    strict_flag = function.get("strict")
    if strict_flag is not None and type(strict_flag) is not bool:
        raise errors.invalid_type(f"{where}.strict", "a boolean", strict_flag)
    if strict_flag:
        strict.check_strict(parameters, name, "function", param)
    return Tool(name, satisfiable(parameters, f"Invalid schema for function '{name}'", param))


def satisfiable(document: object, what: str, param: str) -> schema.CompiledSchema:
    """
    The schema compiled for the planner; one we could never answer to is
    the client's 400, not a wrong answer.
    """
    try:
        return output.compiled(document)
    except schema.Unsatisfiable as e:
        raise errors.invalid(
            param, f"{what}: {e}", code="invalid_function_parameters" if "tools" in param else None
        ) from None


def _choice(value: object, param: str, wanted: GenerationRequest, legacy: bool) -> None:
    """``tool_choice`` (or ``function_call``): a mode, or the one function to call."""
    if value is None:
        return
    if type(value) is str:
        modes = (TOOLS_NONE, TOOLS_AUTO) if legacy else TOOL_CHOICES
        if value not in modes:
            raise errors.invalid_value(param, value, modes)
        wanted.tool_choice = value
        return
    if type(value) is not dict:
        raise errors.invalid_type(param, "a string or an object", value)
    if legacy:
        name = value.get("name")
    else:
        if value.get("type") != "function":
            raise errors.invalid_value(f"{param}.type", value.get("type"), ("function",))
        function = value.get("function")
        if type(function) is not dict:
            raise errors.missing(f"{param}.function")
        name = function.get("name")
        param = f"{param}.function.name"
    if type(name) is not str:
        raise errors.missing(param)
    if not any(tool.name == name for tool in wanted.tools):
        raise errors.invalid(
            param,
            f"Invalid value for '{param}': function '{name}' is not one of the functions in "
            f"'{'functions' if legacy else 'tools'}'.",
            code="invalid_value",
        )
    wanted.tool_choice = TOOLS_NAMED
    wanted.tool_name = name


def _turns(messages: list[dict[str, object]], wanted: GenerationRequest) -> None:
    """
    Tool turns as OpenAI checks them: every call of an assistant message
    answered by the ``tool`` messages right after it, and no ``tool`` message
    without a call before it.  The last message a tool result means the model
    now answers in text.
    """
    pending: list[str] = []
    asked_at = -1
    for index, message in enumerate(messages):
        role = message.get("role")
        if role == "tool":
            if asked_at < 0:
                raise errors.invalid(
                    f"messages.[{index}].role",
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",
                )
            call_id = message.get("tool_call_id")
            if call_id in pending:
                pending.remove(call_id)
            continue
        if pending:
            raise _unanswered(asked_at, pending)
        asked_at = -1
        calls = message.get("tool_calls") if role == "assistant" else None
        if calls:
            if type(calls) is not list:
                raise errors.invalid_type(f"messages[{index}].tool_calls", "an array", calls)
            pending = [str(c["id"]) for c in calls if type(c) is dict and c.get("id")]
            asked_at = index
    if pending:
        raise _unanswered(asked_at, pending)
    last = messages[-1].get("role") if messages else None
    wanted.after_tool_result = last == "tool" or last == "function"


def _unanswered(index: int, pending: list[str]) -> errors.APIError:
    return errors.invalid(
        f"messages.[{index}].role",
        "An assistant message with 'tool_calls' must be followed by tool messages responding "
        "to each 'tool_call_id'. The following tool_call_ids did not have response messages: "
        + ", ".join(pending),
    )


def _format(
    body: dict[str, object], wanted: GenerationRequest, messages: list[dict[str, object]]
) -> None:
    """``response_format`` (OpenAI) or ``guided_json`` / ``guided_choice`` (vLLM)."""
    fmt = body.get("response_format")
    if fmt is not None:
        if type(fmt) is not dict:
            raise errors.invalid_type("response_format", "an object", fmt)
        kind = fmt.get("type")
        if kind is None:
            raise errors.missing("response_format.type")
        if kind == "json_object":
            if not _mentions_json(messages):
                raise errors.invalid(
                    "messages",
                    "'messages' must contain the word 'json' in some form, to use "
                    "'response_format' of type 'json_object'.",
                )
            wanted.document = ANY_OBJECT
        elif kind == "json_schema":
            spec = fmt.get("json_schema")
            if spec is None:
                raise errors.missing("response_format.json_schema")
            if type(spec) is not dict:
                raise errors.invalid_type("response_format.json_schema", "an object", spec)
            name = spec.get("name")
            if name is None:
                raise errors.missing("response_format.json_schema.name")
            if type(name) is not str:
                raise errors.invalid_type("response_format.json_schema.name", "a string", name)
            document = spec.get("schema", ANY_OBJECT)
            if type(document) is not dict:
                raise errors.invalid_type(
                    "response_format.json_schema.schema", "an object", document
                )
            if spec.get("strict") is True:
                strict.check_strict(document, name, "response_format", "response_format")
            wanted.document = satisfiable(
                document, f"Invalid schema for response_format '{name}'", "response_format"
            )
        elif kind != "text":
            raise errors.invalid_value(
                "response_format.type", kind, ("json_schema", "json_object", "text")
            )
    guided = body.get("guided_json")
    if guided is not None:
        if type(guided) is str:
            try:
                guided = ujson.loads(guided)
            except ValueError:
                raise errors.invalid("guided_json", "guided_json is not valid JSON.") from None
        if type(guided) is not dict:
            raise errors.invalid_type("guided_json", "an object", guided)
        wanted.document = satisfiable(guided, "Invalid guided_json schema", "guided_json")
    options = body.get("guided_choice")
    if options is not None:
        if type(options) is not list or not options or not all(type(o) is str for o in options):
            raise errors.invalid_type("guided_choice", "a non-empty array of strings", options)
        wanted.guided_choice = tuple(options)


def _mentions_json(messages: list[dict[str, object]]) -> bool:
    """Whether any message's text says "json", as OpenAI requires for json_object."""
    for message in messages:
        content = message.get("content")
        if type(content) is str:
            if "json" in content.lower():
                return True
        elif type(content) is list:
            for part in content:
                text = part.get("text") if type(part) is dict else None
                if type(text) is str and "json" in text.lower():
                    return True
    return False
