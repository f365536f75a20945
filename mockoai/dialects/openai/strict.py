# -*- test-case-name: tests.test_strict -*-
"""
OpenAI's Structured Outputs rules for a strict schema -- a tool with
``"strict": true``, or ``response_format.json_schema.strict`` -- and the 400
OpenAI answers a schema that breaks one with.

The messages are OpenAI's, as clients quote them (sources and what is
unconfirmed: ``docs/wire-facts-structured-outputs.md``)::

    Invalid schema for function 'NAME': In context=('properties', 'address'),
    'additionalProperties' is required to be supplied and to be false.

The context is the Python repr of the path of the offending subschema, its
indexes as strings (``('properties', 'x', 'anyOf', '0')``).  The first
broken rule in document order is reported; within one subschema: a
keyword that is not permitted, then a missing ``type``, then an object's
``properties``, ``additionalProperties`` and ``required``, an array's
``items``, a ``format`` outside the supported ones.
"""

from __future__ import annotations

from mockoai.pipeline.errors import APIError, invalid

RESPONSE_FORMAT = "response_format"
FUNCTION = "function"

#: Keywords strict mode refuses (OpenAI's guide, "Supported schemas"; observed 400s).
NOT_PERMITTED = frozenset(
    {
        "allOf",
        "oneOf",
        "if",
        "then",
        "else",
        "dependentRequired",
        "dependentSchemas",
        "dependencies",
        "patternProperties",
        "propertyNames",
        "unevaluatedProperties",
        "unevaluatedItems",
        "minProperties",
        "maxProperties",
        "contains",
        "minContains",
        "maxContains",
        "uniqueItems",
    }
)
#: The string formats strict mode supports (OpenAI's guide).
FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"}
)
#: What may stand where a ``type`` is missing: the schema is then a union, reference or literal.
_UNTYPED = ("anyOf", "$ref", "enum", "const")
_DEFAULT_CODES = {RESPONSE_FORMAT: None, FUNCTION: "invalid_function_parameters"}
_DEFAULT_PARAMS = {RESPONSE_FORMAT: "response_format", FUNCTION: "tools[0].function.parameters"}


class _RuleError(Exception):
    def __init__(self, message: str) -> None:
        self.message = message


def check_strict(
    schema: object,
    name: str,
    kind: str,
    param: str | None = None,
    code: str | None = "",
) -> None:
    """
    Raise OpenAI's 400 if ``schema`` breaks a strict-mode rule.  ``kind`` is
    L{RESPONSE_FORMAT} or L{FUNCTION}; ``param`` names the schema in the
    request (``tools[2].function.parameters``, Responses'
    ``text.format.schema``), by default the first tool's or
    ``response_format``; ``code`` is by default OpenAI's for ``kind``
    (``invalid_function_parameters``, or null for Chat's response_format;
    Responses answers ``invalid_json_schema``).
    """
    if kind not in _DEFAULT_CODES:
        raise ValueError(f"kind must be {RESPONSE_FORMAT!r} or {FUNCTION!r}, not {kind!r}")
    try:
        _check_root(schema)
    except _RuleError as broken:
        raise _error(broken.message, name, kind, param, code) from None


def strict_error(message: str, name: str, kind: str, param: str | None = None) -> APIError:
    """The 400 for a strict-mode ``message`` about schema ``name`` (for a caller's own checks)."""
    return _error(message, name, kind, param, "")


def _error(message: str, name: str, kind: str, param: str | None, code: str | None) -> APIError:
    return invalid(
        _DEFAULT_PARAMS[kind] if param is None else param,
        f"Invalid schema for {kind} '{name}': {message}",
        code=_DEFAULT_CODES[kind] if code == "" else code,
    )


def _check_root(schema: object) -> None:
    if not isinstance(schema, (dict, bool)):
        raise _RuleError(f"{schema!r} is not of type 'object', 'boolean'.")
    kind = schema.get("type") if isinstance(schema, dict) else None
    if kind != "object":
        got = "None" if kind is None else str(kind)
        raise _RuleError(
            f"schema must be a JSON Schema of 'type: \"object\"', got 'type: \"{got}\"'."
        )
    assert isinstance(schema, dict)
    _check(schema, ())


def _check(schema: object, path: tuple[str, ...]) -> None:
    if not isinstance(schema, dict):
        if isinstance(schema, bool):
            raise _RuleError(f"In context={path!r}, schema must have a 'type' key.")
        raise _RuleError(f"{schema!r} is not of type 'object', 'boolean'.")
    if "$ref" in schema and len(schema) > 1:
        others = ", ".join(repr(k) for k in sorted(schema) if k != "$ref")
        raise _RuleError(f"context={path!r}, $ref cannot have keywords {{{others}}}.")
    for keyword in schema:
        if keyword == "not":
            raise _RuleError(f"In context={path!r}, Unsupported keywords ('not',).")
        if keyword in NOT_PERMITTED:
            raise _RuleError(f"In context={path!r}, '{keyword}' is not permitted.")
    kind = schema.get("type")
    if kind is None and not any(k in schema for k in _UNTYPED):
        raise _RuleError(f"In context={path!r}, schema must have a 'type' key.")
    kinds = kind if isinstance(kind, list) else [kind]
    if "object" in kinds:
        _check_object(schema, path)
    if "array" in kinds and "items" not in schema:
        raise _RuleError(f"In context={path!r}, array schema missing items.")
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt not in FORMATS:
        raise _RuleError(f"In context={path!r}, '{fmt}' is not a valid format.")
    for key in ("$defs", "definitions"):
        definitions = schema.get(key)
        if isinstance(definitions, dict):
            for name, sub in definitions.items():
                _check(sub, (*path, key, name))
    properties = schema.get("properties")
    if isinstance(properties, dict):
        for name, sub in properties.items():
            _check(sub, (*path, "properties", name))
    items = schema.get("items")
    if items is not None:
        _check(items, (*path, "items"))
    branches = schema.get("anyOf")
    if isinstance(branches, list):
        for i, sub in enumerate(branches):
            _check(sub, (*path, "anyOf", str(i)))


def _check_object(schema: dict[str, object], path: tuple[str, ...]) -> None:
    properties = schema.get("properties")
    if "properties" not in schema:
        raise _RuleError(f"In context={path!r}, object schema missing properties.")
    if schema.get("additionalProperties", True) is not False:
        raise _RuleError(
            f"In context={path!r}, "
            "'additionalProperties' is required to be supplied and to be false."
        )
    required = schema.get("required")
    listed = {n for n in required if isinstance(n, str)} if isinstance(required, list) else set()
    for name in properties if isinstance(properties, dict) else ():
        if name not in listed:
            raise _RuleError(
                f"In context={path!r}, 'required' is required to be supplied and to be an array "
                f"including every key in properties. Missing '{name}'."
            )
