"""The twistd options, generated from the settings registry."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from mockoai.ops.config import FIELDS, Settings
from mockoai.ops.tap import Options

#: Two values for each repeatable option.
REPEATS = {
    "listen": ("tcp:1", "unix:/tmp/mockoai-test.sock"),
    "models": ("a", "org/b"),
    "api_keys": ("k1-abc", "k2-def"),
    "cors_origins": ("https://a.example", "https://b.example:8443"),
}


def squeeze(text: str) -> str:
    """``text`` without whitespace: usage wraps help text at any space."""
    return "".join(text.split())


class OptionsTests(SynchronousTestCase):
    def setUp(self) -> None:
        # The options read os.environ: run them against a clean one.
        self.patch(os, "environ", {})

    def parse(self, *argv: str) -> Settings:
        options = Options()
        options.parseOptions(list(argv))
        return options.settings

    def test_every_repeatable_option_has_a_generated_handler(self) -> None:
        repeatable = [f for f in FIELDS if f.repeatable]
        self.assertEqual({f.name for f in repeatable}, set(REPEATS))
        handlers = {name for name in vars(Options) if name.startswith("opt_")}
        self.assertEqual(handlers, {"opt_" + f.option.replace("-", "_") for f in repeatable})
        for field in repeatable:
            handler = getattr(Options, "opt_" + field.option.replace("-", "_"))
            self.assertEqual(handler.__doc__, field.help)

    def test_repeats_parse_into_a_tuple(self) -> None:
        for field in FIELDS:
            if not field.repeatable:
                continue
            argv = [part for value in REPEATS[field.name] for part in (f"--{field.option}", value)]
            value = field.get(self.parse(*argv))
            self.assertIsInstance(value, tuple)
            self.assertEqual(value, field.parse(list(REPEATS[field.name])), field.name)
            self.assertEqual(len(value), 2, field.name)
        s = self.parse("--cors-origin", "https://a.example", "--cors-origin", "*")
        self.assertEqual(s.cors.origins, ("https://a.example", "*"))

    def test_options_start_empty(self) -> None:
        options = Options()
        for field in FIELDS:
            if field.repeatable:
                self.assertEqual(options[field.option], [])
        self.assertEqual(self.parse(), Settings())

    def test_usage_lists_every_setting_with_its_help(self) -> None:
        usage = Options().getUsage()
        squeezed = squeeze(usage)
        for field in FIELDS:
            spelled = f"--{field.option}" if field.flag else f"--{field.option}="
            self.assertIn(spelled, usage, field.name)
            self.assertIn(squeeze(field.help), squeezed, field.name)
