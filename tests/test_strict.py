"""OpenAI's strict-mode (Structured Outputs) schema rules and their 400s."""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from mockoai.apierror import APIError
from mockoai.dialects.openai.strict import FUNCTION, RESPONSE_FORMAT, check_strict, strict_error


def closed(properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """An object schema strict mode accepts: every property required, no others allowed."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
        **extra,
    }


#: OpenAI's own examples of strict schemas (the Structured Outputs and function calling guides).
WEATHER = closed(
    {
        "location": {"type": "string", "description": "The location to get the weather for"},
        "unit": {"type": ["string", "null"], "enum": ["F", "C"]},
    }
)
QUERY = closed(
    {
        "table_name": {"type": "string", "enum": ["orders"]},
        "columns": {"type": "array", "items": {"type": "string", "enum": ["id", "status"]}},
        "conditions": {
            "type": "array",
            "items": closed(
                {
                    "column": {"type": "string"},
                    "operator": {"type": "string", "enum": ["=", ">", "<"]},
                    "value": {
                        "anyOf": [
                            {"type": "string"},
                            {"type": "number"},
                            closed({"column_name": {"type": "string"}}),
                        ]
                    },
                }
            ),
        },
        "order_by": {"type": "string", "enum": ["asc", "desc"]},
    }
)
UI = closed(
    {
        "type": {"type": "string", "enum": ["div", "button", "header"]},
        "label": {"type": "string"},
        "children": {"type": "array", "items": {"$ref": "#"}},
        "attributes": {"type": "array", "items": closed({"name": {"type": "string"}})},
    }
)
STEPS = closed(
    {
        "steps": {"type": "array", "items": {"$ref": "#/$defs/step"}},
        "final_answer": {"type": "string"},
    },
    **{
        "$defs": {"step": closed({"explanation": {"type": "string"}, "output": {"type": "string"}})}
    },
)
CONSTRAINED = closed(
    {
        "name": {"type": "string", "pattern": "^@[a-zA-Z0-9_]+$", "minLength": 2, "maxLength": 20},
        "email": {"type": "string", "format": "email", "description": "", "title": "Email"},
        "when": {"type": "string", "format": "date-time"},
        "age": {"type": "integer", "minimum": 0, "exclusiveMaximum": 150, "multipleOf": 1},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 5},
        "kind": {"const": "person"},
        "empty": closed({}),
    },
    **{"$schema": "https://json-schema.org/draft/2020-12/schema"},
)


class AcceptedTests(SynchronousTestCase):
    def test_openai_examples(self) -> None:
        for schema in (WEATHER, QUERY, UI, STEPS, CONSTRAINED):
            check_strict(schema, "example", FUNCTION)
            check_strict(schema, "example", RESPONSE_FORMAT)

    def test_unknown_kind(self) -> None:
        self.assertRaises(ValueError, check_strict, WEATHER, "w", "tool")


class RefusedTests(SynchronousTestCase):
    def refused(self, schema: object, kind: str = RESPONSE_FORMAT, **kw: Any) -> APIError:
        with self.assertRaises(APIError) as caught:
            check_strict(schema, "weather", kind, **kw)
        error = caught.exception
        self.assertEqual((error.status, error.type), (400, "invalid_request_error"))
        return error

    def assertMessage(self, schema: object, tail: str) -> None:
        error = self.refused(schema)
        self.assertEqual(error.message, f"Invalid schema for response_format 'weather': {tail}")

    def test_additional_properties_required(self) -> None:
        schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
        error = self.refused(schema)
        body = json.loads(error.body())
        self.assertEqual(
            body,
            {
                "error": {
                    "message": "Invalid schema for response_format 'weather': In context=(), "
                    "'additionalProperties' is required to be supplied and to be false.",
                    "type": "invalid_request_error",
                    "param": "response_format",
                    "code": None,
                }
            },
        )
        schema["additionalProperties"] = True
        self.assertIn("'additionalProperties' is required", self.refused(schema).message)

    def test_functions(self) -> None:
        schema = closed({"a": {"type": "string"}, "b": {"type": "integer"}})
        schema["required"] = ["a"]
        error = self.refused(schema, FUNCTION, param="tools[1].function.parameters")
        self.assertEqual(
            error.message,
            "Invalid schema for function 'weather': In context=(), 'required' is required to be "
            "supplied and to be an array including every key in properties. Missing 'b'.",
        )
        self.assertEqual(error.param, "tools[1].function.parameters")
        self.assertEqual(error.code, "invalid_function_parameters")
        self.assertEqual(self.refused(schema, FUNCTION).param, "tools[0].function.parameters")

    def test_responses_param_and_code(self) -> None:
        error = self.refused(
            {"type": "object"}, param="text.format.schema", code="invalid_json_schema"
        )
        self.assertEqual((error.param, error.code), ("text.format.schema", "invalid_json_schema"))

    def test_nested_context(self) -> None:
        address = {"type": "object", "properties": {"street": {"type": "string"}}}
        self.assertMessage(
            closed({"address": address}),
            "In context=('properties', 'address'), "
            "'additionalProperties' is required to be supplied and to be false.",
        )
        deep = closed({"decisions": {"type": "array", "items": closed({"id": {}, "why": {}})}})
        deep["properties"]["decisions"]["items"]["required"] = ["why"]
        self.assertMessage(
            deep,
            "In context=('properties', 'decisions', 'items'), 'required' is required to be "
            "supplied and to be an array including every key in properties. Missing 'id'.",
        )
        union = closed(
            {"card": {"anyOf": [{"type": "object", "properties": {}}, {"type": "null"}]}}
        )
        self.assertMessage(
            union,
            "In context=('properties', 'card', 'anyOf', '0'), "
            "'additionalProperties' is required to be supplied and to be false.",
        )
        defs = closed({}, **{"$defs": {"a": {"type": "object", "properties": {}}}})
        self.assertIn(
            "In context=('$defs', 'a'), 'additionalProperties'", self.refused(defs).message
        )

    def test_missing_properties_and_items(self) -> None:
        self.assertMessage({"type": "object"}, "In context=(), object schema missing properties.")
        tuple_ = closed({"coords": {"type": "array", "prefixItems": [{"type": "number"}]}})
        self.assertMessage(
            tuple_, "In context=('properties', 'coords'), array schema missing items."
        )

    def test_root_must_be_an_object(self) -> None:
        self.assertMessage(
            {"anyOf": [WEATHER, QUERY]},
            "schema must be a JSON Schema of 'type: \"object\"', got 'type: \"None\"'.",
        )
        self.assertMessage(
            {"type": "string"},
            "schema must be a JSON Schema of 'type: \"object\"', got 'type: \"string\"'.",
        )
        self.assertMessage([], "[] is not of type 'object', 'boolean'.")

    def test_type_key(self) -> None:
        self.assertMessage(
            closed({"args": {}}),
            "In context=('properties', 'args'), schema must have a 'type' key.",
        )
        self.assertMessage(
            closed({"args": "string"}), "'string' is not of type 'object', 'boolean'."
        )

    def test_not_permitted(self) -> None:
        for keyword, value in [
            ("oneOf", [{"type": "string"}]),
            ("allOf", [{"type": "string"}]),
            ("uniqueItems", True),
            ("patternProperties", {}),
            ("if", {}),
        ]:
            schema = closed(
                {"tags": {"type": "array", "items": {"type": "string"}, keyword: value}}
            )
            self.assertMessage(
                schema, f"In context=('properties', 'tags'), '{keyword}' is not permitted."
            )
        self.assertMessage(
            closed({}, minProperties=1), "In context=(), 'minProperties' is not permitted."
        )
        self.assertMessage(
            closed({"a": {"type": "string", "not": {"const": "x"}}}),
            "In context=('properties', 'a'), Unsupported keywords ('not',).",
        )

    def test_ref_siblings(self) -> None:
        schema = closed(
            {"mode": {"$ref": "#/$defs/mode", "description": "d", "default": "a"}},
            **{"$defs": {"mode": {"type": "string", "enum": ["a", "b"]}}},
        )
        self.assertMessage(
            schema,
            "context=('properties', 'mode'), $ref cannot have keywords {'default', 'description'}.",
        )

    def test_formats(self) -> None:
        self.assertMessage(
            closed({"site": {"type": "string", "format": "uri"}}),
            "In context=('properties', 'site'), 'uri' is not a valid format.",
        )

    def test_strict_error(self) -> None:
        error = strict_error("In context=(), x.", "f", FUNCTION, "tools[3].function.parameters")
        self.assertEqual(error.message, "Invalid schema for function 'f': In context=(), x.")
        self.assertEqual(error.code, "invalid_function_parameters")
