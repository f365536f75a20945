"""The JSON-schema document generator: each keyword, the refusals, determinism, random schemas."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft7Validator, Draft202012Validator
from twisted.trial.unittest import SynchronousTestCase

from mockoai.sim import schema
from mockoai.sim.corpus import VOCABULARY
from mockoai.sim.sampling import Draws

FORMATS = Draft202012Validator.FORMAT_CHECKER


def draws(seed: int = 1) -> Draws:
    return Draws(np.random.default_rng(seed))


def documents(test: SynchronousTestCase, s: object, n: int = 40, **kw: Any) -> list[object]:
    """``n`` documents of ``s`` (seeds 0..n-1), each checked by python-jsonschema."""
    validator = Draft202012Validator(s, format_checker=FORMATS)  # type: ignore[arg-type]
    out = []
    for seed in range(n):
        doc = schema.generate(s, draws(seed), VOCABULARY, **kw)
        errors = [e.message for e in validator.iter_errors(doc)]
        test.assertEqual(errors, [], f"seed {seed}: {json.dumps(doc)} against {json.dumps(s)}")
        out.append(doc)
    return out


class TypeTests(SynchronousTestCase):
    def test_scalars(self) -> None:
        for name, kind in [
            ("string", str),
            ("integer", int),
            ("number", (int, float)),
            ("boolean", bool),
            ("null", type(None)),
            ("array", list),
            ("object", dict),
        ]:
            for doc in documents(self, {"type": name}, 10):
                self.assertIsInstance(doc, kind)
                if name in ("integer", "number"):
                    self.assertNotIsInstance(doc, bool)

    def test_strings_are_corpus_words(self) -> None:
        for doc in documents(self, {"type": "string"}, 20):
            assert isinstance(doc, str)
            words = doc.split(" ")
            self.assertTrue(1 <= len(words) <= 4, doc)
            self.assertTrue(set(words) <= set(VOCABULARY), doc)

    def test_type_list_and_nullable(self) -> None:
        docs = documents(self, {"type": ["string", "null"]}, 60)
        self.assertIn(None, docs)
        self.assertTrue(any(isinstance(d, str) for d in docs))
        self.assertGreater(sum(isinstance(d, str) for d in docs), len(docs) // 2)
        kinds = {type(d) for d in documents(self, {"type": ["integer", "boolean"]}, 30)}
        self.assertEqual(kinds, {int, bool})

    def test_empty_schema_is_any_value(self) -> None:
        for s in ({}, True, {"description": "anything", "title": "x", "default": 3}):
            docs = documents(self, s, 20)
            self.assertTrue(all(isinstance(d, (str, dict)) for d in docs), docs)

    def test_untyped_keywords_hint_the_type(self) -> None:
        for doc in documents(self, {"properties": {"a": {"type": "integer"}}, "required": ["a"]}):
            self.assertIsInstance(doc, dict)
        for doc in documents(self, {"minLength": 30}):
            self.assertIsInstance(doc, str)
        for doc in documents(self, {"maximum": 3, "minimum": 1}):
            self.assertIsInstance(doc, (int, float))
        for doc in documents(self, {"minItems": 2}):
            self.assertIsInstance(doc, list)


class ObjectTests(SynchronousTestCase):
    def test_required_always_optional_sometimes(self) -> None:
        s = {
            "type": "object",
            "properties": {k: {"type": "string"} for k in "abcdef"},
            "required": ["a", "b"],
        }
        docs = documents(self, s, 60)
        seen: set[str] = set()
        for doc in docs:
            assert isinstance(doc, dict)
            self.assertLessEqual({"a", "b"}, doc.keys())
            seen.update(doc)
        self.assertEqual(seen, set("abcdef"))
        self.assertTrue(any(len(d) < 6 for d in docs if isinstance(d, dict)))

    def test_property_order_follows_the_schema(self) -> None:
        s = {"type": "object", "properties": {k: {"type": "integer"} for k in "zyx"}}
        s["required"] = ["x", "y", "z"]
        for doc in documents(self, s, 5):
            assert isinstance(doc, dict)
            self.assertEqual(list(doc), ["z", "y", "x"])

    def test_additional_properties(self) -> None:
        closed = {"type": "object", "properties": {"a": {}}, "additionalProperties": False}
        documents(self, closed)
        typed = {
            "type": "object",
            "required": ["extra"],
            "additionalProperties": {"type": "integer", "minimum": 5, "maximum": 6},
        }
        for doc in documents(self, typed):
            assert isinstance(doc, dict)
            self.assertIn(doc["extra"], (5, 6))
        documents(self, {"type": "object", "required": ["q"], "additionalProperties": True})

    def test_min_and_max_properties(self) -> None:
        s = {
            "type": "object",
            "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
            "minProperties": 3,
            "maxProperties": 4,
        }
        for doc in documents(self, s):
            assert isinstance(doc, dict)
            self.assertTrue(3 <= len(doc) <= 4)

    def test_nested(self) -> None:
        s = {
            "type": "object",
            "properties": {
                "address": {
                    "type": "object",
                    "properties": {
                        "street": {"type": "string"},
                        "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
                        "geo": {
                            "type": "array",
                            "items": {"type": "number", "minimum": -90, "maximum": 90},
                            "minItems": 2,
                            "maxItems": 2,
                        },
                    },
                    "required": ["street", "zip", "geo"],
                    "additionalProperties": False,
                }
            },
            "required": ["address"],
            "additionalProperties": False,
        }
        for doc in documents(self, s):
            assert isinstance(doc, dict)
            self.assertRegex(doc["address"]["zip"], "^[0-9]{5}$")


class NumberTests(SynchronousTestCase):
    def test_bounds(self) -> None:
        for doc in documents(self, {"type": "integer", "minimum": 3, "maximum": 5}):
            self.assertIn(doc, (3, 4, 5))
        for doc in documents(self, {"type": "integer", "exclusiveMinimum": 3, "maximum": 5}):
            self.assertIn(doc, (4, 5))
        for doc in documents(
            self, {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}
        ):
            assert isinstance(doc, (int, float))
            self.assertTrue(0 < doc < 1)
        documents(self, {"type": "number", "minimum": 2.5, "maximum": 2.5})
        documents(self, {"type": "integer", "minimum": 1e6})
        documents(self, {"type": "number", "maximum": -1e3})

    def test_draft4_exclusive_flags(self) -> None:
        s = {"type": "integer", "minimum": 3, "exclusiveMinimum": True, "maximum": 5}
        s["exclusiveMaximum"] = True
        for seed in range(20):
            self.assertEqual(schema.generate(s, draws(seed), VOCABULARY), 4)

    def test_multiple_of(self) -> None:
        for doc in documents(self, {"type": "integer", "multipleOf": 7, "minimum": 10}):
            assert isinstance(doc, int)
            self.assertEqual(doc % 7, 0)
        documents(self, {"type": "integer", "multipleOf": 0.5})
        documents(self, {"type": "number", "multipleOf": 0.01, "minimum": 1, "maximum": 2})
        documents(self, {"type": "number", "multipleOf": 0.1})
        documents(self, {"type": "number", "multipleOf": 2.5, "exclusiveMinimum": 5})

    def test_numbers_are_mostly_fractional(self) -> None:
        docs = documents(self, {"type": "number"})
        self.assertTrue(any(isinstance(d, float) and not d.is_integer() for d in docs))


class StringTests(SynchronousTestCase):
    def test_lengths(self) -> None:
        for lo, hi in [(0, 0), (1, 1), (3, 3), (0, 5), (20, 25), (50, None), (None, 2)]:
            s: dict[str, object] = {"type": "string"}
            if lo is not None:
                s["minLength"] = lo
            if hi is not None:
                s["maxLength"] = hi
            documents(self, s, 20)

    def test_formats(self) -> None:
        checks = {
            "date-time": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$",
            "date": r"^\d{4}-\d\d-\d\d$",
            "time": r"^\d\d:\d\d:\d\dZ$",
            "email": r"^[a-z.]+@example\.com$",
            "uri": r"^https://example\.com/[a-z]+$",
            "uuid": r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$",
            "ipv4": r"^10\.\d+\.\d+\.\d+$",
            "hostname": r"^[a-z]+\.example\.com$",
        }
        for fmt, shape in checks.items():
            for doc in documents(self, {"type": "string", "format": fmt}, 20):
                self.assertRegex(doc, shape)  # type: ignore[arg-type]

    def test_format_lengths(self) -> None:
        documents(self, {"type": "string", "format": "email", "minLength": 60})
        documents(self, {"type": "string", "format": "uri", "minLength": 40, "maxLength": 41})
        documents(self, {"type": "string", "format": "email", "maxLength": 13})
        documents(self, {"type": "string", "format": "uuid", "maxLength": 36})

    def test_unknown_format_is_an_annotation(self) -> None:
        documents(self, {"type": "string", "format": "x-phone-number"})

    def test_patterns(self) -> None:
        for pattern in [
            "^[a-z]+$",
            "^[A-Z]{2}-[0-9]{3,5}$",
            r"^\d{3}-\d{4}$",
            "^(foo|bar|baz)_[a-f0-9]{8}$",
            r"^\+?[1-9]\d{1,14}$",
            "^[^@ ]+@[^@ ]+$",
            "abc",
            r"^(?:[a-z0-9-]+\.)+[a-z]{2,}$",
            r"^sk-[A-Za-z0-9_\-]{8,}$",
            r"\bword\b",
            "^a*$",
            "^x?y?$",
            r"^[\w.]+$",
            r"^\S+ \S+$",
        ]:
            for doc in documents(self, {"type": "string", "pattern": pattern}, 15):
                self.assertIsNotNone(re.search(pattern, doc), (pattern, doc))  # type: ignore[arg-type]

    def test_patterns_with_lengths(self) -> None:
        documents(self, {"type": "string", "pattern": "^[a-z]+$", "minLength": 4, "maxLength": 6})
        documents(self, {"type": "string", "pattern": "[0-9]", "minLength": 30})
        documents(self, {"type": "string", "pattern": "^[a-z]{2,40}$", "minLength": 30})

    def test_unsupported_patterns(self) -> None:
        for pattern in [r"^(?=.*\d).+$", r"(a)\1", r"\p{L}+", "(?i)abc", "[", "a{3,1}"]:
            with self.assertRaises(schema.Unsatisfiable) as caught:
                schema.check({"type": "object", "properties": {"p": {"pattern": pattern}}})
            self.assertEqual(caught.exception.path, "#/properties/p")
            self.assertIn("pattern", str(caught.exception))


class EnumTests(SynchronousTestCase):
    def test_enum_and_const(self) -> None:
        values = ["red", 3, None, [1, 2], {"k": "v"}, True]
        seen = documents(self, {"enum": values}, 80)
        self.assertEqual({json.dumps(v) for v in seen}, {json.dumps(v) for v in values})
        self.assertEqual(documents(self, {"const": {"a": [1]}}, 3), [{"a": [1]}] * 3)
        self.assertEqual(set(documents(self, {"type": "integer", "enum": [1, "1", 2.0]})), {1, 2})

    def test_enum_values_are_copies(self) -> None:
        s = {"const": {"a": [1]}}
        doc = schema.generate(s, draws(), VOCABULARY)
        assert isinstance(doc, dict)
        doc["a"].append(2)
        self.assertEqual(s, {"const": {"a": [1]}})

    def test_booleans_are_not_numbers(self) -> None:
        self.assertEqual(documents(self, {"type": "integer", "enum": [True, 1]}, 5), [1] * 5)
        self.assertEqual(documents(self, {"enum": [True], "type": "boolean"}, 2), [True] * 2)
        with self.assertRaises(schema.Unsatisfiable):
            schema.check({"type": "integer", "const": True})


class ArrayTests(SynchronousTestCase):
    def test_lengths(self) -> None:
        for doc in documents(self, {"type": "array", "items": {"type": "integer"}}):
            assert isinstance(doc, list)
            self.assertLessEqual(len(doc), 3)
        docs = documents(self, {"type": "array", "minItems": 2, "maxItems": 4})
        self.assertEqual({len(d) for d in docs if isinstance(d, list)}, {2, 3, 4})
        self.assertEqual(documents(self, {"type": "array", "maxItems": 0}, 3), [[]] * 3)

    def test_unique_items(self) -> None:
        s = {
            "type": "array",
            "items": {"enum": ["a", "b", "c", 1, 1.0]},
            "minItems": 3,
            "uniqueItems": True,
        }
        documents(self, s)
        documents(self, {"type": "array", "items": {"type": "boolean"}, "uniqueItems": True})

    def test_prefix_items(self) -> None:
        s = {
            "type": "array",
            "prefixItems": [{"type": "number"}, {"type": "string", "format": "date"}],
            "items": False,
            "minItems": 2,
        }
        for doc in documents(self, s):
            assert isinstance(doc, list)
            self.assertEqual(len(doc), 2)
        documents(self, {"type": "array", "prefixItems": [{"const": 1}], "items": {"type": "null"}})

    def test_draft7_tuples(self) -> None:
        s = {"type": "array", "items": [{"const": "x"}, {"type": "integer"}], "minItems": 1}
        s["additionalItems"] = False
        for seed in range(20):
            doc = schema.generate(s, draws(seed), VOCABULARY)
            Draft7Validator(s).validate(doc)


class CombinatorTests(SynchronousTestCase):
    def test_any_of_picks_each_branch(self) -> None:
        s = {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "boolean"}]}
        kinds = {type(d) for d in documents(self, s, 60)}
        self.assertEqual(kinds, {str, int, bool})

    def test_any_of_skips_unsatisfiable_branches(self) -> None:
        s = {"anyOf": [{"type": "integer", "minimum": 5, "maximum": 1}, {"if": {}}, {"const": 7}]}
        self.assertEqual(documents(self, s, 5), [7] * 5)

    def test_any_of_with_sibling_keywords(self) -> None:
        s = {
            "type": "object",
            "properties": {"kind": {"type": "string"}, "n": {"type": "integer"}},
            "anyOf": [{"required": ["kind"]}, {"required": ["n"]}],
        }
        documents(self, s)

    def test_one_of_matches_exactly_one(self) -> None:
        for s in [
            {"oneOf": [{"type": "integer"}, {"type": "number"}]},
            {"oneOf": [{}, {"type": "string"}]},
            {"oneOf": [{"type": "string"}, {"type": "string", "maxLength": 3}]},
            {"oneOf": [{"enum": [1, 2, 3]}, {"enum": [3, 4]}]},
            {"oneOf": [{"type": ["string", "null"]}, {"type": "null"}, {"type": "boolean"}]},
            {
                "oneOf": [
                    {
                        "type": "object",
                        "properties": {"kind": {"const": "circle"}, "r": {"type": "number"}},
                        "required": ["kind", "r"],
                    },
                    {
                        "type": "object",
                        "properties": {"kind": {"const": "square"}, "side": {"type": "number"}},
                        "required": ["kind", "side"],
                    },
                ]
            },
        ]:
            documents(self, s)

    def test_one_of_with_no_lone_branch(self) -> None:
        with self.assertRaises(schema.Unsatisfiable) as caught:
            schema.check({"oneOf": [{"enum": [1, 2]}, {"enum": [1, 2]}]})
        self.assertEqual(caught.exception.path, "#/oneOf")

    def test_all_of_merges(self) -> None:
        s = {
            "allOf": [
                {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                {"properties": {"b": {"type": "integer", "minimum": 0}}, "required": ["b"]},
                {"properties": {"b": {"maximum": 3}}},
            ]
        }
        for doc in documents(self, s):
            assert isinstance(doc, dict)
            self.assertLessEqual({"a", "b"}, doc.keys())
            self.assertTrue(0 <= doc["b"] <= 3)
        documents(self, {"allOf": [{"type": "number"}, {"type": "integer"}, {"multipleOf": 3}]})
        documents(self, {"allOf": [{"minLength": 2}, {"maxLength": 4}, {"type": "string"}]})
        documents(
            self,
            {
                "allOf": [
                    {"type": "object", "properties": {"a": {}}, "additionalProperties": False},
                    {"properties": {"b": {}}, "required": ["a"]},
                ]
            },
        )

    def test_all_of_with_unions(self) -> None:
        s = {
            "allOf": [
                {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                {"anyOf": [{"type": "string", "minLength": 5}, {"type": "boolean"}]},
            ]
        }
        for doc in documents(self, s):
            self.assertIsInstance(doc, str)

    def test_not(self) -> None:
        docs = documents(self, {"not": {"type": "string"}})
        self.assertFalse(any(isinstance(d, str) for d in docs))
        documents(self, {"type": "string", "not": {"enum": ["a", "b"]}, "maxLength": 1})
        documents(self, {"type": "number", "not": {"type": "integer"}})
        documents(self, {"type": "integer", "not": {"const": 0}, "minimum": 0, "maximum": 1})
        with self.assertRaises(schema.Unsatisfiable):
            schema.check({"type": "integer", "not": {"minimum": 3}})
        with self.assertRaises(schema.Unsatisfiable):
            schema.check({"type": "boolean", "not": {"enum": [True, False]}})


class RefTests(SynchronousTestCase):
    def test_defs_and_definitions(self) -> None:
        s = {
            "type": "object",
            "properties": {
                "a": {"$ref": "#/$defs/point"},
                "b": {"$ref": "#/definitions/name", "description": "sibling annotations"},
            },
            "required": ["a", "b"],
            "$defs": {
                "point": {
                    "type": "object",
                    "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
                    "required": ["x", "y"],
                    "additionalProperties": False,
                }
            },
            "definitions": {"name": {"type": "string", "maxLength": 8}},
        }
        documents(self, s)

    def test_ref_with_siblings(self) -> None:
        s = {"$defs": {"n": {"type": "integer"}}, "$ref": "#/$defs/n", "minimum": 10}
        for doc in documents(self, s):
            assert isinstance(doc, int)
            self.assertGreaterEqual(doc, 10)

    def test_recursion_is_bounded_by_the_budget(self) -> None:
        tree = {
            "$defs": {
                "node": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
                        "parent": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]},
                    },
                    "required": ["name", "children", "parent"],
                    "additionalProperties": False,
                }
            },
            "$ref": "#/$defs/node",
        }
        small = documents(self, tree, 20, budget=8)
        large = documents(self, tree, 20, budget=200)
        size = lambda doc: json.dumps(doc).count('"name"')  # noqa: E731
        self.assertLess(max(map(size, small)), 60)
        self.assertLess(max(map(size, large)), 600)
        self.assertGreater(sum(map(size, large)), sum(map(size, small)))
        for seed in range(5):
            least = schema.generate(tree, draws(seed), VOCABULARY, budget=0)
            assert isinstance(least, dict)
            self.assertEqual((least["children"], least["parent"]), ([], None))

    def test_root_recursion(self) -> None:
        s = {
            "type": "object",
            "properties": {"next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}},
            "required": ["next"],
        }
        documents(self, s, budget=10)
        linked = {"oneOf": [{"type": "null"}, {"$ref": "#/$defs/cell"}]}
        linked["$defs"] = {
            "cell": {
                "type": "object",
                "properties": {"v": {"type": "integer"}, "rest": {"$ref": "#"}},
                "required": ["v", "rest"],
            }
        }
        documents(self, linked, budget=10)

    def test_infinite_recursion_is_unsatisfiable(self) -> None:
        s = {
            "$defs": {
                "n": {
                    "type": "object",
                    "properties": {"n": {"$ref": "#/$defs/n"}},
                    "required": ["n"],
                }
            },
            "$ref": "#/$defs/n",
        }
        with self.assertRaises(schema.Unsatisfiable) as caught:
            schema.check(s)
        self.assertEqual(caught.exception.path, "#/$defs/n")
        # Optional, the same recursion is fine.
        s["$defs"]["n"]["required"] = []  # type: ignore[index]
        documents(self, s, 10)


class UnsatisfiableTests(SynchronousTestCase):
    def assertUnsatisfiable(self, s: object, path: str, why: str) -> None:
        with self.assertRaises(schema.Unsatisfiable) as caught:
            schema.check(s)
        self.assertEqual(caught.exception.path, path)
        self.assertIn(why, str(caught.exception))
        self.assertTrue(str(caught.exception).startswith(path + ": "))
        self.assertIsInstance(caught.exception, ValueError)

    def test_contradictions(self) -> None:
        age = {"type": "integer", "minimum": 10, "maximum": 5}
        self.assertUnsatisfiable(
            {"type": "object", "properties": {"age": age}},
            "#/properties/age",
            "minimum 10 > maximum 5",
        )
        self.assertUnsatisfiable(
            {"type": "integer", "minimum": 1.2, "maximum": 1.8}, "#", "no integer"
        )
        self.assertUnsatisfiable({"exclusiveMinimum": 3, "maximum": 3}, "#", "empty")
        self.assertUnsatisfiable(
            {"type": "string", "minLength": 5, "maxLength": 2}, "#", "minLength"
        )
        self.assertUnsatisfiable({"type": "array", "minItems": 3, "maxItems": 1}, "#", "minItems 3")
        self.assertUnsatisfiable(
            {
                "type": "object",
                "properties": {"a": {}},
                "required": ["b"],
                "additionalProperties": False,
            },
            "#",
            "'b' is not allowed",
        )
        self.assertUnsatisfiable(
            {"type": "object", "properties": {"a": False}, "required": ["a"]}, "#", "schema false"
        )
        self.assertUnsatisfiable({"type": "string", "enum": [1, 2]}, "#", "enum")
        self.assertUnsatisfiable(
            {"type": "array", "items": {"type": "boolean"}, "uniqueItems": True, "minItems": 3},
            "#",
            "uniqueItems",
        )
        self.assertUnsatisfiable(
            {"type": "integer", "multipleOf": 10, "minimum": 1, "maximum": 9}, "#", "multiple"
        )
        self.assertUnsatisfiable(
            {"allOf": [{"type": "string"}, {"type": "integer"}]}, "#/allOf", "in common"
        )
        self.assertUnsatisfiable({"anyOf": [False, {"enum": []}]}, "#/anyOf", "no branch")
        self.assertUnsatisfiable(False, "#", "false")
        self.assertUnsatisfiable({"not": True}, "#/not", "every value")
        self.assertUnsatisfiable({"type": "string", "format": "uuid", "maxLength": 10}, "#", "uuid")
        self.assertUnsatisfiable({"type": "string", "format": "date", "minLength": 11}, "#", "date")
        self.assertUnsatisfiable(
            {"type": "string", "pattern": "^ab$", "minLength": 3}, "#", "pattern"
        )

    def test_nested_paths(self) -> None:
        s = {
            "type": "object",
            "properties": {
                "a/b": {"type": "array", "items": {"anyOf": [{"type": "string", "maxLength": -1}]}}
            },
        }
        self.assertUnsatisfiable(s, "#/properties/a~1b/items/anyOf", "no branch")
        s = {"$defs": {"x": {"type": "integer", "maximum": "3"}}, "items": {"$ref": "#/$defs/x"}}
        self.assertUnsatisfiable(s, "#/$defs/x", "maximum must be a number")

    def test_unsupported(self) -> None:
        for keyword, value in [
            ("if", {"type": "string"}),
            ("patternProperties", {"^x": {}}),
            ("propertyNames", {"maxLength": 3}),
            ("dependentRequired", {"a": ["b"]}),
            ("contains", {"type": "string"}),
            ("unevaluatedProperties", False),
        ]:
            self.assertUnsatisfiable({"type": "object", keyword: value}, "#", "not supported")
        self.assertUnsatisfiable({"$ref": "https://example.com/s.json"}, "#", "only references")
        self.assertUnsatisfiable({"$ref": "#/$defs/missing"}, "#", "points at nothing")
        self.assertUnsatisfiable({"type": "strin"}, "#", "not a JSON type")
        self.assertUnsatisfiable({"properties": []}, "#", "properties must be an object")
        self.assertUnsatisfiable("object", "#", "must be an object or a boolean")
        # A oneOf cannot drop a branch it does not understand: it could match the document.
        self.assertUnsatisfiable({"oneOf": [{"type": "string"}, {"if": {}}]}, "#/oneOf/1", "'if'")

    def test_documents_too_large_to_draw(self) -> None:
        # Request-time schemas must not hold the reactor: refused in microseconds.
        for s in [
            {"type": "array", "minItems": 10**8},
            {"type": "string", "minLength": 10**9},
            {"type": "object", "minProperties": 10**7},
            {"type": "string", "pattern": "^a{1000000}$"},
        ]:
            self.assertUnsatisfiable(s, "#", "the smallest document has")
        deep: dict[str, Any] = {"type": "string"}
        for _ in range(3000):
            deep = {"type": "array", "items": deep}
        self.assertUnsatisfiable(deep, "#", "nests too deeply")

    def test_large_optional_parts_are_left_out(self) -> None:
        s = {
            "type": "object",
            "properties": {
                "big": {"type": "array", "minItems": 10**7},
                "x": {"anyOf": [{"type": "string", "minLength": 10**6}, {"type": "null"}]},
            },
        }
        for doc in documents(self, s, 20):
            self.assertIn(doc, ({}, {"x": None}))

    def test_check_is_quiet_for_satisfiable_schemas(self) -> None:
        for s in [{}, True, {"type": "object"}, {"items": {"type": "string"}}, {"enum": [None]}]:
            schema.check(s)


class DeterminismTests(SynchronousTestCase):
    SCHEMA = {
        "type": "object",
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "n": {"type": "number"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "kind": {"enum": ["a", "b", "c"]},
            "maybe": {"type": ["boolean", "null"]},
        },
        "required": ["id", "n"],
    }

    def test_same_draws_same_document(self) -> None:
        first = [schema.generate(self.SCHEMA, draws(seed), VOCABULARY) for seed in range(10)]
        again = [schema.generate(self.SCHEMA, draws(seed), VOCABULARY) for seed in range(10)]
        self.assertEqual(first, again)
        self.assertGreater(len({json.dumps(d) for d in first}), 8)

    def test_same_document_in_every_process(self) -> None:
        """Set order varies with the hash seed; documents must not (seeded requests, workers)."""
        script = (
            "import json, numpy as np\n"
            "from mockoai.sim import schema\n"
            "from mockoai.sim.sampling import Draws\n"
            "from mockoai.sim.corpus import VOCABULARY\n"
            f"s = {self.MIXED!r}\n"
            "draws = [Draws(np.random.default_rng(k)) for k in range(20)]\n"
            "print(json.dumps([schema.generate(s, d, VOCABULARY) for d in draws]))\n"
        )
        outputs = {
            subprocess.run(
                [sys.executable, "-c", script],
                env={**os.environ, "PYTHONHASHSEED": str(seed)},
                capture_output=True,
                check=True,
                text=True,
            ).stdout
            for seed in (1, 2, 3)
        }
        self.assertEqual(len(outputs), 1)
        self.assertEqual(len(json.loads(outputs.pop())), 20)

    MIXED = {
        "type": "object",
        "properties": {
            "a": {"type": ["string", "integer", "null", "boolean", "array"]},
            "b": {"anyOf": [{"type": "number"}, {"type": "object", "properties": {"x": {}}}]},
            "c": {"oneOf": [{"type": "integer"}, {"type": "number"}, {"type": ["string", "null"]}]},
            "d": {"minLength": 3, "maxItems": 2, "minimum": 4},
            "e": {"not": {"type": ["string", "array"]}},
        },
        "required": ["a", "b", "c", "d", "e"],
    }

    def test_compiled_schema_draws_the_same(self) -> None:
        compiled = schema.CompiledSchema(self.SCHEMA)
        for seed in range(5):
            self.assertEqual(
                compiled.generate(draws(seed), VOCABULARY),
                schema.generate(self.SCHEMA, draws(seed), VOCABULARY),
            )
        self.assertTrue(compiled.accepts(compiled.generate(draws(), VOCABULARY)))
        self.assertFalse(compiled.accepts({"id": "x"}))


# -- random schemas, satisfiable by construction -----------------------------

NAMES = st.sampled_from(["a", "b", "id", "name", "x_y", "n/m", "t~1"])
SIMPLE_PATTERNS = st.sampled_from(
    ["^[a-z]{1,8}$", r"^\d+$", "^(ab|cd)+x?$", "[A-Z]", r"^\w+-\d{2}$"]
)
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.sampled_from(["x", "y", 1.5]),
    st.text("ab", max_size=3),
)


@st.composite
def strings(draw: st.DrawFn) -> dict[str, Any]:
    s: dict[str, Any] = {"type": "string"}
    kind = draw(st.sampled_from(["plain", "format", "pattern"]))
    if kind == "format":
        s["format"] = draw(st.sampled_from(["date-time", "date", "time", "email", "uri", "uuid"]))
    elif kind == "pattern":
        s["pattern"] = draw(SIMPLE_PATTERNS)
    else:
        lo = draw(st.none() | st.integers(0, 12))
        hi = draw(st.none() | st.integers(lo or 0, 30))
        if lo is not None:
            s["minLength"] = lo
        if hi is not None:
            s["maxLength"] = hi
    return s


@st.composite
def numbers(draw: st.DrawFn) -> dict[str, Any]:
    integer = draw(st.booleans())
    s: dict[str, Any] = {"type": "integer" if integer else "number"}
    mult = draw(st.none() | st.sampled_from([1, 2, 5] if integer else [0.5, 0.25, 3]))
    width = 2 * (mult or 1) + draw(st.integers(0, 50))
    lo = draw(st.none() | st.integers(-100, 100))
    if lo is not None:
        s["exclusiveMinimum" if draw(st.booleans()) else "minimum"] = lo
    if draw(st.booleans()):
        hi = (lo if lo is not None else 0) + width
        s["exclusiveMaximum" if draw(st.booleans()) else "maximum"] = hi
    if mult is not None:
        s["multipleOf"] = mult
    return s


LEAVES = st.one_of(
    strings(),
    numbers(),
    st.sampled_from(
        [{"type": "boolean"}, {"type": "null"}, {}, True, {"type": ["string", "null"]}]
    ),
    st.lists(JSON_SCALARS, min_size=1, max_size=4).map(lambda values: {"enum": values}),
    JSON_SCALARS.map(lambda value: {"const": value}),
)


def composites(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    @st.composite
    def objects(draw: st.DrawFn) -> dict[str, Any]:
        props = draw(st.dictionaries(NAMES, children, max_size=4))
        s: dict[str, Any] = {"type": "object", "properties": props}
        if props:
            s["required"] = draw(st.lists(st.sampled_from(sorted(props)), unique=True))
        extra = draw(st.sampled_from(["false", "true", "schema", "absent"]))
        if extra == "false":
            s["additionalProperties"] = False
        elif extra == "true":
            s["additionalProperties"] = True
        elif extra == "schema":
            s["additionalProperties"] = draw(children)
        return s

    @st.composite
    def arrays(draw: st.DrawFn) -> dict[str, Any]:
        s: dict[str, Any] = {"type": "array", "items": draw(children)}
        lo = draw(st.integers(0, 3))
        s["minItems"] = lo
        if draw(st.booleans()):
            s["maxItems"] = lo + draw(st.integers(0, 3))
        if draw(st.booleans()):
            s["prefixItems"] = draw(st.lists(children, max_size=2))
        return s

    @st.composite
    def unique_arrays(draw: st.DrawFn) -> dict[str, Any]:
        items = draw(strings().filter(lambda s: "pattern" not in s and s.get("maxLength", 9) > 3))
        return {
            "type": "array",
            "items": items,
            "uniqueItems": True,
            "minItems": draw(st.integers(0, 3)),
        }

    @st.composite
    def one_ofs(draw: st.DrawFn) -> dict[str, Any]:
        # Branches of different types: exactly one matches any document of one of them.
        kinds = draw(
            st.lists(
                st.sampled_from(["string", "boolean", "null", "array", "object"]),
                min_size=1,
                max_size=3,
                unique=True,
            )
        )
        branches = []
        for kind in kinds:
            if kind == "string":
                branches.append(draw(strings()))
            elif kind == "array":
                branches.append({"type": "array", "items": draw(children), "maxItems": 2})
            elif kind == "object":
                branches.append(draw(objects()))
            else:
                branches.append({"type": kind})
        return {"oneOf": branches}

    @st.composite
    def all_ofs(draw: st.DrawFn) -> dict[str, Any]:
        first = draw(objects())
        second = {
            "properties": {"extra": draw(children)},
            # Required only where the first lets any extra property be.
            "required": ["extra"] if first.get("additionalProperties", True) is True else [],
        }
        return {"allOf": [first, second]}

    @st.composite
    def negations(draw: st.DrawFn) -> dict[str, Any]:
        kinds = ["string", "integer", "number", "boolean", "null", "object", "array"]
        if draw(st.booleans()):
            excluded = draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=3))
            return {"not": {"type": excluded}}
        return {"type": "string", "not": {"enum": draw(st.lists(st.text("ab", max_size=2)))}}

    @st.composite
    def split_bounds(draw: st.DrawFn) -> dict[str, Any]:
        lo = draw(st.integers(-50, 50))
        top = {"maximum": lo + draw(st.integers(0, 9))}
        return {
            "allOf": [{"type": draw(st.sampled_from(["integer", "number"])), "minimum": lo}, top]
        }

    return st.one_of(
        negations(),
        split_bounds(),
        objects(),
        arrays(),
        unique_arrays(),
        st.lists(children, min_size=1, max_size=3).map(lambda b: {"anyOf": b}),
        one_ofs(),
        all_ofs(),
    )


REF = {"$ref": "#/$defs/t"}


def with_definitions(definition: Any, body: Any) -> Any:
    """``body``, whose ``$ref`` leaves point at ``definition`` (root ``$defs`` only)."""
    if not isinstance(body, dict):
        return body
    return {**body, "$defs": {"t": definition}}


SCHEMAS = st.builds(
    with_definitions,
    st.recursive(LEAVES, composites, max_leaves=4),
    st.recursive(LEAVES | st.just(REF), composites, max_leaves=12),
)


class PropertyTests(SynchronousTestCase):
    @settings(max_examples=200, deadline=None)
    @given(SCHEMAS, st.integers(0, 2**32 - 1), st.sampled_from([0, 5, 50, 256]))
    def test_documents_validate(self, s: Any, seed: int, budget: int) -> None:
        schema.check(s)
        doc = schema.generate(s, draws(seed), VOCABULARY, budget)
        validator = Draft202012Validator(s, format_checker=FORMATS)
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]
        self.assertEqual(errors, [], json.dumps(doc))
        self.assertEqual(doc, schema.generate(s, draws(seed), VOCABULARY, budget))

    @settings(max_examples=100, deadline=None)
    @given(
        st.sampled_from(["integer", "number", None]),
        st.integers(-1000, 1000) | st.floats(-1e6, 1e6),
        st.integers(0, 1000),
        st.sampled_from(["minimum", "exclusiveMinimum"]),
        st.sampled_from(["maximum", "exclusiveMaximum"]),
        st.none() | st.sampled_from([1, 3, 0.5]),
    )
    def test_contradictory_bounds_are_refused(
        self, kind: str | None, hi: float, gap: int, low: str, high: str, mult: float | None
    ) -> None:
        s: dict[str, Any] = {low: hi + gap, high: hi}
        if gap == 0 and low == "minimum" and high == "maximum":
            s[low] = hi + 1  # a point range is fine: make it empty
        if kind is not None:
            s["type"] = kind
        if mult is not None:
            s["multipleOf"] = mult
        with self.assertRaises(schema.Unsatisfiable) as caught:
            schema.check({"type": "object", "properties": {"v": s}})
        self.assertEqual(caught.exception.path, "#/properties/v")
