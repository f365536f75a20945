"""
The fault grammar (L{mockoai.pipeline.faultspec}): every kind the issue
names, written back as read, and the errors that say what is wrong.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from mockoai.pipeline import faultspec
from mockoai.pipeline.faultspec import FaultSpec, SpecError, parse, parse_one


class GrammarTests(SynchronousTestCase):
    def test_every_example(self) -> None:
        examples = {
            "status:503": FaultSpec("status", status=503),
            "status:429:retry-after=2": FaultSpec("status", status=429, retry_after=2.0),
            "hang": FaultSpec("hang"),
            "hang:after=3": FaultSpec("hang", after=3),
            "reset": FaultSpec("reset"),
            "reset:after=5": FaultSpec("reset", after=5),
            "truncate:after=5": FaultSpec("truncate", after=5),
            "malformed:after=2": FaultSpec("malformed", after=2),
            "error-event:after=4": FaultSpec("error-event", after=4),
            "ttft:ms=5000": FaultSpec("ttft", ms=5000.0),
            "itl-spike:ms=500:every=10": FaultSpec("itl-spike", ms=500.0, every=10),
            "empty": FaultSpec("empty"),
        }
        for text, spec in examples.items():
            self.assertEqual(parse_one(text), spec, text)
            self.assertEqual(str(spec), text)
            self.assertEqual(parse(text), (spec,))

    def test_defaults_and_decimals(self) -> None:
        self.assertEqual(parse_one("itl-spike:ms=250").every, faultspec.DEFAULT_EVERY)
        self.assertEqual(str(parse_one("status:429:retry-after=0.5")), "status:429:retry-after=0.5")
        self.assertEqual(parse_one(" STATUS:503 ").kind, "status")

    def test_several_join_with_commas(self) -> None:
        specs = parse("truncate:after=5, ttft:ms=2000")
        self.assertEqual([str(s) for s in specs], ["ttft:ms=2000", "truncate:after=5"])
        self.assertEqual([s.ends for s in specs], [False, True])

    def test_errors_say_why(self) -> None:
        cases = {
            "": "expected a fault",
            "explode": "unknown fault 'explode'",
            "status": "status needs its code",
            "status:abc": "the status must be a number",
            "status:200": "must be an error, 400-599",
            "status:503:after=2": "status takes retry-after, not 'after'",
            "hang:ms=3": "hang takes after, not 'ms'",
            "empty:after=1": "empty takes nothing",
            "ttft": "ttft needs ms=",
            "ttft:ms=-1": "ms must be between 0",
            "truncate:after=x": "after must be a whole number",
            "truncate:after": "expected name=value",
            "itl-spike:ms=5:every=0": "every must be between 1",
            "hang:after=1:after=2": "after is given twice",
            "hang,reset": "at most one fault may end an answer",
            "ttft:ms=1,ttft:ms=2": "a kind of fault is given twice",
        }
        for text, message in cases.items():
            with self.assertRaises(SpecError, msg=text) as caught:
                parse(text)
            self.assertIn(message, str(caught.exception), text)
        self.assertTrue(issubclass(SpecError, ValueError))
