"""
Rules documents (L{mockoai.pipeline.rules}): what they may say, the errors
that say what is wrong, how each condition, time, count and chance decides,
files in TOML and JSON, ``--rules`` at startup, and the JSON schema that
documents them (``docs/rules.schema.json``).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any

import jsonschema
from twisted.trial.unittest import SynchronousTestCase

from mockoai.ops.config import ConfigError, load_settings
from mockoai.ops.tap import Options
from mockoai.pipeline import rules
from mockoai.pipeline.rules import RuleError, compile_document, compile_rule, load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA_PATH = os.path.join(ROOT, "docs", "rules.schema.json")
EXAMPLES = os.path.join(ROOT, "etc", "rules", "failures.toml")


class View:
    """A request as a rule sees it, without a server."""

    def __init__(self, **values: Any) -> None:
        self.dialect = values.get("dialect", "openai")
        self.path = values.get("path", "/v1/chat/completions")
        self.model = values.get("model", "gpt-4o")
        self.served = values.get("served", self.model)
        self.stream = values.get("stream", False)
        self._tools = frozenset(values.get("tools", ()))
        self._headers = {k.encode(): v.encode() for k, v in values.get("headers", {}).items()}
        self._key = values.get("key")
        self._user = values.get("user", "")
        self._system = values.get("system", "")
        self.read: list[str] = []

    def tools(self) -> frozenset[str]:
        return self._tools

    def header(self, name: bytes) -> bytes | None:
        return self._headers.get(name)

    def key(self) -> bytes | None:
        return None if self._key is None else self._key.encode()

    def user(self) -> str:
        self.read.append("user")
        return str(self._user)

    def system(self) -> str:
        self.read.append("system")
        return str(self._system)

    def raw(self) -> bytes:
        return json.dumps({"user": self._user, "system": self._system}).encode()


def rule(**fields: Any) -> rules.Rule:
    fields.setdefault("fault", "status:503")
    return compile_rule(fields, 0)


class ConditionTests(SynchronousTestCase):
    def test_no_condition_matches_everything(self) -> None:
        self.assertTrue(rule().holds(View()))

    def test_each_condition(self) -> None:
        cases: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = [
            ({"dialect": "anthropic"}, {"dialect": "anthropic"}, {"dialect": "openai"}),
            (
                {"dialect": ["openai", "openrouter"]},
                {"dialect": "openrouter"},
                {"dialect": "anthropic"},
            ),
            ({"path": "/api/v1/*"}, {"path": "/api/v1/completions"}, {"path": "/v1/completions"}),
            ({"path": "/v1/messages"}, {"path": "/v1/messages"}, {"path": "/v1/messages/x"}),
            ({"model": "gpt-4*"}, {"model": "gpt-4o-mini"}, {"model": "claude-3"}),
            ({"model": "x"}, {"model": "openrouter/auto", "served": "x"}, {"model": "y"}),
            ({"stream": True}, {"stream": True}, {"stream": False}),
            ({"user": "hello"}, {"user": "say hello now"}, {"user": "Hello"}),
            ({"user_regex": "(?i)^hel+o"}, {"user": "HELLO there"}, {"user": "oh hello"}),
            ({"system": "pirate"}, {"system": "talk like a pirate"}, {"system": ""}),
            ({"system_regex": "json$"}, {"system": "answer in json"}, {"system": "json please"}),
            ({"tools": True}, {"tools": ["f"]}, {"tools": []}),
            ({"tools": False}, {"tools": []}, {"tools": ["f"]}),
            ({"tools": ["a", "b"]}, {"tools": ["b", "c"]}, {"tools": ["c"]}),
            (
                {"headers": {"X-Test": "fail"}},
                {"headers": {"x-test": "fail"}},
                {"headers": {"x-test": "ok"}},
            ),
            ({"headers": {"x-test": "*"}}, {"headers": {"x-test": "any"}}, {}),
            ({"key": ["sk-a", "sk-b"]}, {"key": "sk-b"}, {"key": "sk-c"}),
            ({"key": "sk-a"}, {"key": "sk-a"}, {}),
        ]
        for conditions, yes, no in cases:
            compiled = rule(**conditions)
            self.assertTrue(compiled.holds(View(**yes)), (conditions, yes))
            self.assertFalse(compiled.holds(View(**no)), (conditions, no))

    def test_the_body_is_read_last(self) -> None:
        """Text is asked for only once every cheaper condition holds."""
        compiled = rule(model="gpt-4o", user="hi")
        view = View(model="other", user="hi")
        self.assertFalse(compiled.holds(view))
        self.assertEqual(view.read, [])
        view = View(user="hi")
        self.assertTrue(compiled.holds(view))
        self.assertEqual(view.read, ["user"])

    def test_plain_text_is_ruled_out_from_the_bytes(self) -> None:
        """A body whose bytes lack a plain needle is not parsed; other needles always are."""
        plain = rule(user="needle 1", system="be [brief]")
        self.assertEqual((plain.user_raw, plain.system_raw), (b"needle 1", b"be [brief]"))
        view = View(user="no such thing", system="be [brief]")
        self.assertFalse(plain.holds(view))
        self.assertEqual(view.read, [])
        for needle in ("a/b", "caf\u00e9", 'say "hi"', "tab\tbed"):
            self.assertIsNone(rule(user=needle).user_raw, needle)
        escaped = rule(user="a/b")
        view = View(user="a/b")
        self.assertTrue(escaped.holds(view))
        self.assertEqual(view.read, ["user"])

    def test_fits_a_kind_of_request(self) -> None:
        kind = ("openai", "/v1/chat/completions", "bee", "bee", False)
        self.assertTrue(rule().fits(*kind))
        self.assertTrue(rule(model=["a", "b*"]).fits(*kind))
        self.assertFalse(rule(model="a").fits(*kind))
        self.assertFalse(rule(stream=True).fits(*kind))
        self.assertFalse(rule(dialect="anthropic").fits(*kind))
        self.assertTrue(rule(path="/v1/*").fits(*kind))

    def test_gates(self) -> None:
        self.assertIsNone(rule(model="a", tools=True).gate)
        self.assertEqual(rule(key="k", headers={"x": "1"}).gate, ("key", frozenset({b"k"})))
        self.assertEqual(rule(headers={"X-A": "1", "x-b": "*"}).gate, ("header", b"x-a"))
        self.assertEqual(rule(user="needle").gate, ("text", b"needle"))
        self.assertIsNone(rule(user="a/b").gate)  # not certain in the bytes: no gate


class TimeCountChanceTests(SynchronousTestCase):
    def test_window(self) -> None:
        compiled = rule(window=[60, 90])
        self.assertEqual(
            [compiled.in_time(t) for t in (0, 59.9, 60, 89.9, 90)],
            [False, False, True, True, False],
        )
        self.assertTrue(rule(window=[5]).in_time(1e9))

    def test_schedule(self) -> None:
        compiled = rule(schedule={"every": 300, "for": 30})
        self.assertEqual(
            [compiled.in_time(t) for t in (0, 29.9, 30, 299, 300, 329, 330)],
            [True, True, False, False, True, True, False],
        )
        offset = rule(schedule={"every": 10, "for": 2, "offset": 5})
        self.assertEqual(
            [offset.in_time(t) for t in (0, 4.9, 5, 6.9, 7, 15)],
            [False, False, True, True, False, True],
        )

    def test_wall_clock_times(self) -> None:
        compiled = rule(clock="wall", window=["2030-01-01T00:00:00Z", "2030-01-01T00:01Z"])
        start = 1893456000.0
        self.assertTrue(compiled.wall)
        self.assertEqual(compiled.window, (start, start + 60))

    def test_counts(self) -> None:
        self.assertEqual(
            [rule(nth=3).counts_in(n) for n in range(1, 6)], [False, False, True, False, False]
        )
        self.assertEqual(
            [rule(first=2).counts_in(n) for n in range(1, 5)], [True, True, False, False]
        )
        self.assertEqual(
            [rule(every=2).counts_in(n) for n in range(1, 5)], [False, True, False, True]
        )
        self.assertTrue(rule().counts_in(10**6))

    def test_chance(self) -> None:
        self.assertEqual(rule().chance(0), 1.0)
        self.assertEqual(rule(probability=0.25).chance(1e6), 0.25)
        ramp = rule(ramp={"from": 0.0, "to": 0.5, "over": 600})
        self.assertEqual([ramp.chance(t) for t in (0, 300, 600, 6000)], [0.0, 0.25, 0.5, 0.5])
        late = rule(ramp={"to": 1, "over": 10, "start": 100})
        self.assertEqual([late.chance(t) for t in (50, 105, 110)], [0.0, 0.5, 1.0])


class ActionTests(SynchronousTestCase):
    def test_answers(self) -> None:
        text = compile_rule({"text": "Hi!"}, 0).answer
        assert text is not None
        self.assertEqual((text.text, text.timed), ("Hi!", False))
        chunks = compile_rule({"chunks": ["a", {"text": "b", "delay_ms": 250}]}, 0).answer
        assert chunks is not None
        self.assertEqual([(c.text, c.delay) for c in chunks.chunks], [("a", 0.0), ("b", 0.25)])
        self.assertTrue(chunks.timed)
        data = compile_rule({"json": {"b": [1, 2], "a": "é"}}, 0).answer
        assert data is not None
        self.assertEqual(data.text, '{"b":[1,2],"a":"é"}')
        calls = compile_rule(
            {
                "tool_calls": [
                    {"name": "f", "arguments": {"x": 1}},
                    {"name": "g", "arguments": "[]"},
                ]
            },
            0,
        ).answer
        assert calls is not None
        self.assertEqual(
            [(c.name, c.arguments) for c in calls.calls], [("f", '{"x":1}'), ("g", "[]")]
        )

    def test_latency_and_faults(self) -> None:
        compiled = compile_rule(
            {
                "latency": {"ttft_ms": 1500, "itl_ms": 20, "tokens_per_event": 4},
                "fault": "hang:after=2",
            },
            0,
        )
        self.assertEqual(compiled.latency, rules.Latency(1.5, 0.02, 4))
        self.assertEqual([str(f) for f in compiled.faults], ["hang:after=2"])


class DocumentTests(SynchronousTestCase):
    def test_names_and_order(self) -> None:
        book = compile_document(
            {"seed": 3, "rules": [{"fault": "hang"}, {"name": "b", "text": "x"}]}
        )
        self.assertEqual([r.name for r in book.rules], ["rule-1", "b"])
        self.assertEqual([r.index for r in book.rules], [0, 1])
        self.assertEqual(book.seed, 3)
        self.assertEqual(
            book.document(),
            {"seed": 3, "rules": [{"name": "rule-1", "fault": "hang"}, {"name": "b", "text": "x"}]},
        )
        self.assertEqual(len(compile_document([{"fault": "hang"}]).rules), 1)
        self.assertEqual(compile_document({}).rules, ())

    def test_errors_name_the_rule_and_field(self) -> None:
        cases: list[tuple[object, str]] = [
            ("nope", "expected a table with a rules list"),
            ({"rules": {}}, "rules must be a list"),
            ({"rule": []}, "unknown field 'rule'"),
            ({"seed": -1}, "seed must be a whole number"),
            ([5], "rule 1: expected a table"),
            ([{"name": ""}], "name must be a string"),
            ([{"name": "x"}], "rule 'x': does nothing"),
            ([{"fault": "hang", "colour": 1}], "rule 'rule-1': unknown field 'colour'"),
            ([{"fault": "boom"}], "fault: 'boom': unknown fault"),
            ([{"text": "a", "json": 1}], "text and json: a rule answers one way only"),
            ([{"fault": "hang", "nth": 1, "every": 2}], "counts one way only"),
            ([{"fault": "hang", "probability": 1.5}], "probability must be between 0 and 1"),
            ([{"fault": "hang", "probability": 0.5, "ramp": {"to": 1, "over": 1}}], "give one"),
            ([{"fault": "hang", "ramp": {"to": 1}}], "ramp needs over"),
            ([{"fault": "hang", "ramp": {"to": 1, "over": 5, "x": 1}}], "ramp: unknown field 'x'"),
            ([{"fault": "hang", "window": [90, 60]}], "its end must come after its start"),
            ([{"fault": "hang", "window": ["2030-01-01"]}], "seconds since the rules were loaded"),
            ([{"fault": "hang", "clock": "wall", "window": ["noon"]}], "an ISO 8601 UTC time"),
            ([{"fault": "hang", "clock": "moon"}], "clock must be"),
            ([{"fault": "hang", "schedule": {"every": 10}}], "schedule needs for"),
            ([{"fault": "hang", "schedule": {"every": 10, "for": 20}}], "is longer than every"),
            ([{"fault": "hang", "schedule": {"every": 0, "for": 0}}], "schedule.every must be > 0"),
            ([{"fault": "hang", "dialect": "azure"}], "dialect must be one of"),
            ([{"fault": "hang", "path": "v1"}], "path must start with /"),
            ([{"fault": "hang", "model": []}], "model must be a string or a list"),
            ([{"fault": "hang", "user_regex": "("}], "user_regex: not a regular expression"),
            ([{"fault": "hang", "headers": {"bad name": "x"}}], "is not a header name"),
            ([{"fault": "hang", "stream": "yes"}], "stream must be true or false"),
            ([{"fault": "hang", "first": 0}], "first must be a whole number >= 1"),
            ([{"chunks": []}], "chunks must be a non-empty list"),
            ([{"chunks": [{"text": "a", "when": 1}]}], "chunks[1]: unknown field 'when'"),
            ([{"chunks": [{"text": "a", "delay_ms": -1}]}], "chunks[1].delay_ms must be >= 0"),
            ([{"tool_calls": [{"arguments": {}}]}], "tool_calls[1] must be a table with a name"),
            ([{"tool_calls": [{"name": "f", "arguments": "{"}]}], "arguments is not JSON"),
            ([{"latency": {}}], "latency is empty"),
            ([{"latency": {"tokens_per_event": 0}}], "tokens_per_event must be a whole number"),
            (
                [{"name": "a", "fault": "hang"}, {"name": "a", "text": "x"}],
                "rule 'a': the name is given twice",
            ),
        ]
        for document, message in cases:
            with self.assertRaises(RuleError, msg=repr(document)) as caught:
                compile_document(document)
            self.assertIn(message, str(caught.exception), repr(document))


class FileTests(SynchronousTestCase):
    def write(self, name: str, text: str) -> str:
        directory = tempfile.mkdtemp(prefix="mockoai-rules-")
        path = os.path.join(directory, name)
        with open(path, "w") as handle:
            handle.write(text)
        self.addCleanup(lambda: (os.unlink(path), os.rmdir(directory)))
        return path

    def test_toml_and_json(self) -> None:
        toml = self.write("r.toml", 'seed = 2\n[[rules]]\nname = "a"\nfault = "status:503"\n')
        book = load_file(toml)
        self.assertEqual((book.seed, [r.name for r in book.rules], book.source), (2, ["a"], toml))
        self.assertEqual(str(book), f"{toml}: 1 rule(s)")
        data = self.write("r.json", json.dumps({"rules": [{"name": "b", "text": "hi"}]}))
        self.assertEqual([r.name for r in load_file(data).rules], ["b"])

    def test_file_errors(self) -> None:
        for name, text, message in (
            ("bad.toml", "[[rules]\n", "is not valid TOML"),
            ("bad.json", "{", "is not valid JSON"),
            (
                "odd.toml",
                "[[rules]]\nfault = 5\n",
                "rule 'rule-1': fault must be a non-empty string",
            ),
        ):
            path = self.write(name, text)
            with self.assertRaises(RuleError) as caught:
                load_file(path)
            self.assertIn(message, str(caught.exception))
            self.assertTrue(str(caught.exception).startswith(path))
        with self.assertRaises(RuleError):
            load_file("/nonexistent/rules.toml")

    def test_rules_setting_checks_the_file_at_startup(self) -> None:
        """The settings read it; the command line checks what it says, in one line."""
        with self.assertRaises(ConfigError) as caught:
            load_settings({"rules": self.write("r.toml", "[[rules]\n")}, environ={})
        self.assertIn("--rules: ", str(caught.exception))
        self.assertIn("is not valid TOML", str(caught.exception))
        path = self.write("r.toml", "[[rules]]\nfault = 'explode'\n")
        settings = load_settings({"rules": path}, environ={})
        assert settings.faults.rules is not None
        self.assertEqual(settings.faults.rules.document, {"rules": [{"fault": "explode"}]})
        with self.assertRaises(SystemExit) as exited:
            Options().parseOptions(["--rules", path])
        self.assertEqual(
            str(exited.exception),
            f"mockoai: error: --rules: {path}: rule 'rule-1': fault: 'explode': unknown fault "
            "'explode'; one of status, hang, reset, truncate, malformed, error-event, empty, "
            "ttft, itl-spike",
        )
        options = Options()
        options.parseOptions(["--rules", self.write("g.toml", "[[rules]]\nfault = 'hang'\n")])
        self.assertEqual(options.settings.faults.rules.document, {"rules": [{"fault": "hang"}]})

    def test_the_examples_load(self) -> None:
        book = load_file(EXAMPLES)
        self.assertEqual(
            [r.name for r in book.rules],
            ["greeting", "weather", "outage", "rate-limit-ramp", "gpt-4o-down", "flaky-streams"],
        )


class SchemaTests(SynchronousTestCase):
    """The schema says what the parser takes: the same fields, the same verdicts."""

    def setUp(self) -> None:
        with open(SCHEMA_PATH) as handle:
            self.schema = json.load(handle)
        jsonschema.Draft202012Validator.check_schema(self.schema)
        self.validator = jsonschema.Draft202012Validator(self.schema)

    def test_the_same_fields(self) -> None:
        properties = self.schema["$defs"]["rule"]["properties"]
        self.assertEqual(sorted(properties), sorted(rules.FIELDS))

    def test_examples_are_valid(self) -> None:
        import sys

        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover
            import tomli as tomllib
        with open(EXAMPLES, "rb") as handle:
            self.validator.validate(tomllib.load(handle))

    def test_schema_and_parser_agree(self) -> None:
        documents: list[object] = [
            {"rules": [{"fault": "hang"}]},
            [{"text": "a", "latency": {"ttft_ms": 5}}],
            {"rules": [{"chunks": ["a", {"text": "b", "delay_ms": 1}], "model": ["x", "y"]}]},
            {"rules": [{"tool_calls": [{"name": "f", "arguments": "{}"}], "tools": "f"}]},
            {"rules": [{"json": None, "clock": "wall", "window": [0, 10]}]},
            {"rules": [{"fault": "hang", "ramp": {"to": 0.5, "over": 60}}]},
            # Each of these the parser refuses, and so does the schema.
            {"rules": [{"name": "x"}]},
            {"rules": [{"text": "a", "json": 1}]},
            {"rules": [{"fault": "hang", "first": 1, "nth": 2}]},
            {"rules": [{"fault": "hang", "probability": 2}]},
            {"rules": [{"fault": "hang", "schedule": {"every": 10}}]},
            {"rules": [{"fault": "hang", "window": [1, 2, 3]}]},
            {"rules": [{"fault": "hang", "dialect": "azure"}]},
            {"rules": [{"latency": {}}]},
            {"rules": [{"fault": "hang", "colour": "red"}]},
            {"rules": [], "extra": 1},
        ]
        for document in documents:
            try:
                compile_document(document)
                parsed = True
            except RuleError:
                parsed = False
            valid = self.validator.is_valid(document)
            self.assertEqual(parsed, valid, document)


class NumbersTests(SynchronousTestCase):
    def test_infinite_window_end(self) -> None:
        self.assertEqual(rule(window=[1]).window, (1.0, math.inf))
