"""Validate JSON bodies against OpenAI's official response schemas.

The schemas come from ``tests/openapi/openai-subset.json``, vendored from OpenAI's OpenAPI
spec by ``tools/vendor_openapi.py``. They are applied with the JSON Schema 2020-12 dialect,
strictly, with two adjustments made at load time:

* OpenAPI 3.0's ``nullable: true`` (a few are left in the 3.1 spec) is not a JSON Schema
  keyword, so such a schema is rewritten as ``anyOf: [<schema>, {"type": "null"}]``; this also
  admits null where the schema has an ``enum`` that lacks null.
* ``CreateCompletionStreamResponse`` is derived from ``CreateCompletionResponse``: the spec
  describes ``/v1/completions`` stream events with the non-stream schema, but real events carry
  ``finish_reason: null`` until the last one, so only ``choices[].finish_reason`` becomes
  nullable.

* A schema that refers to itself with draft 2019-09's ``$recursiveAnchor``/``$recursiveRef``
  (the file-search ``CompoundFilter`` does), which 2020-12 no longer has, gets a plain
  ``$ref`` to itself instead.

``format`` is not checked (the spec uses non-standard formats such as ``unixtime``).
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

__all__ = ["SUBSET_PATH", "schema", "schema_names", "validate", "validator"]

SUBSET_PATH = Path(__file__).resolve().parent / "openapi" / "openai-subset.json"

# URI under which the subset document is registered; its internal "#/components/schemas/X"
# references resolve against it.
_BASE_URI = "urn:mockoai:openai-subset"
_SCHEMAS_POINTER = "#/components/schemas/"

_NAME_MAP_KEYS = frozenset({"properties", "patternProperties", "$defs", "definitions"})
_LITERAL_KEYS = frozenset({"enum", "const", "default", "required", "discriminator"})


def _apply_nullable(schema: Any) -> Any:
    """Rewrite OpenAPI 3.0 ``nullable`` flags, recursively, into JSON Schema."""
    if isinstance(schema, list):
        return [_apply_nullable(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "nullable" or key in _LITERAL_KEYS:
            out[key] = value
        elif key in _NAME_MAP_KEYS and isinstance(value, dict):
            out[key] = {name: _apply_nullable(sub) for name, sub in value.items()}
        else:
            out[key] = _apply_nullable(value)
    nullable = out.pop("nullable", False)
    if nullable is True:
        return {"anyOf": [out, {"type": "null"}]}
    if nullable is not False:
        raise ValueError(f"unexpected nullable value {nullable!r}")
    return out


def _derive_completion_stream(schemas: dict[str, Any]) -> dict[str, Any]:
    derived: dict[str, Any] = copy.deepcopy(schemas["CreateCompletionResponse"])
    try:
        finish_reason = derived["properties"]["choices"]["items"]["properties"]["finish_reason"]
    except KeyError as e:  # pragma: no cover - only if the spec changes shape
        raise RuntimeError(
            "CreateCompletionResponse no longer has choices[].finish_reason; update tests/spec.py"
        ) from e
    if not isinstance(finish_reason, dict) or "nullable" in finish_reason:
        raise RuntimeError("unexpected finish_reason schema in CreateCompletionResponse")
    finish_reason["nullable"] = True
    return derived


def _own_refs(schema: Any, pointer: str) -> Any:
    """``schema`` with its 2019-09 recursive self-references as plain ``$ref``s to ``pointer``."""
    if isinstance(schema, list):
        return [_own_refs(item, pointer) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "$recursiveAnchor":
            continue
        if key == "$recursiveRef":
            if value != "#":  # pragma: no cover - only if the spec changes shape
                raise RuntimeError(f"unexpected $recursiveRef {value!r}; update tests/spec.py")
            out["$ref"] = pointer
        elif key in _LITERAL_KEYS:
            out[key] = value
        else:
            out[key] = _own_refs(value, pointer)
    return out


@functools.cache
def _document() -> dict[str, Any]:
    with SUBSET_PATH.open(encoding="utf-8") as f:
        raw: dict[str, Any] = json.load(f)
    schemas: dict[str, Any] = dict(raw["components"]["schemas"])
    schemas["CreateCompletionStreamResponse"] = _derive_completion_stream(schemas)
    for name, schema in schemas.items():
        if isinstance(schema, dict) and schema.get("$recursiveAnchor"):
            schemas[name] = _own_refs(schema, _SCHEMAS_POINTER + name)
    return {
        "source": raw["source"],
        "components": {
            "schemas": {name: _apply_nullable(s) for name, s in sorted(schemas.items())}
        },
    }


@functools.cache
def _registry() -> Registry[Any]:
    resource: Resource[Any] = DRAFT202012.create_resource(_document())
    registry: Registry[Any] = Registry().with_resource(_BASE_URI, resource)
    return registry


def schema_names() -> list[str]:
    """Names of all schemas available to :func:`validator` and :func:`validate`."""
    return sorted(_document()["components"]["schemas"])


def schema(schema_name: str) -> dict[str, Any]:
    """A copy of the (load-time adjusted) schema called ``schema_name``."""
    schemas: dict[str, Any] = _document()["components"]["schemas"]
    if schema_name not in schemas:
        raise KeyError(f"unknown schema {schema_name!r}; known: {', '.join(sorted(schemas))}")
    result: dict[str, Any] = copy.deepcopy(schemas[schema_name])
    return result


@functools.cache
def validator(schema_name: str) -> Draft202012Validator:
    """A strict 2020-12 validator for the component schema ``schema_name`` (cached)."""
    if schema_name not in _document()["components"]["schemas"]:
        schema(schema_name)  # raises a KeyError listing the known names
    return Draft202012Validator(
        {"$ref": f"{_BASE_URI}{_SCHEMAS_POINTER}{schema_name}"},
        registry=_registry(),
        format_checker=None,
    )


def validate(schema_name: str, instance: object) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``instance`` matches ``schema_name``.

    The error's message names the schema, the location in the instance (a JSON path) and
    the most relevant failure, and counts any further failures.
    """
    errors = list(validator(schema_name).iter_errors(instance))
    if not errors:
        return
    best = best_match(errors)
    assert best is not None
    more = len(errors) - 1
    suffix = f" (and {more} more error{'s' if more != 1 else ''})" if more else ""
    detail = best.message
    if best.context:  # anyOf/oneOf with no branch matching: say why each branch failed
        reasons = dict.fromkeys(
            f"{e.json_path}: {e.message}" if e.relative_path else e.message
            for e in sorted(best.context, key=lambda e: list(e.relative_schema_path))
        )
        detail += f" ({'; '.join(reasons)})"
    message = f"{schema_name}: at {best.json_path}: {detail}{suffix}"
    # schema and validator_value are left unset so that str(error) is just that one line.
    raise jsonschema.ValidationError(
        message,
        validator=best.validator,
        path=best.absolute_path,
        schema_path=best.absolute_schema_path,
        instance=best.instance,
        cause=best.cause,
    ) from None
