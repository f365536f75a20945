"""The package's public surface: small, and cheap to import."""

from __future__ import annotations

import subprocess
import sys

from twisted.trial.unittest import TestCase

import mockoai
from mockoai.ops import config, service


class PublicSurfaceTests(TestCase):
    def test_every_public_name_resolves(self) -> None:
        self.assertIs(mockoai.Settings, config.Settings)
        self.assertIs(mockoai.load_settings, config.load_settings)
        self.assertIs(mockoai.ConfigError, config.ConfigError)
        self.assertIs(mockoai.build, service.build)
        for name in mockoai.__all__:
            self.assertTrue(hasattr(mockoai, name), name)

    def test_unknown_name(self) -> None:
        with self.assertRaises(AttributeError):
            mockoai.no_such_thing  # noqa: B018

    def test_import_is_cheap(self) -> None:
        """``import mockoai`` loads neither Twisted nor numpy (the pytest plugin relies on it)."""
        code = (
            "import sys, mockoai; "
            "print(','.join(m for m in ('twisted', 'numpy', 'mockoai.ops') if m in sys.modules))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        self.assertEqual(out, "")
