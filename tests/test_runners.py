"""
The suite's one shape rule: every test is a method of a trial C{TestCase}.

trial collects only test case classes; pytest also collects module-level
C{test_*} functions and C{Test*} classes of any kind, and passes fixtures to
parameters.  A test in one of those forms passes under pytest and is silently
absent from trial's run (or errors there), so CI's two runs would no longer
run the same suite.
"""

from __future__ import annotations

import importlib
import inspect
import unittest
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from twisted.trial.unittest import SynchronousTestCase

HERE = Path(__file__).resolve().parent


def suite_modules() -> list[ModuleType]:
    """Every test module, imported from the files next to this one."""
    return [importlib.import_module(f"tests.{p.stem}") for p in sorted(HERE.glob("test_*.py"))]


def own_classes(module: ModuleType) -> Iterator[tuple[str, type]]:
    for name, value in vars(module).items():
        if inspect.isclass(value) and value.__module__ == module.__name__:
            yield name, value


class ShapeTests(SynchronousTestCase):
    def test_modules_found(self) -> None:
        names = [m.__name__ for m in suite_modules()]
        self.assertIn(__name__, names)
        self.assertIn("tests.test_tls", names)

    def test_no_module_level_tests(self) -> None:
        for module in suite_modules():
            self.assertNotIn("pytestmark", vars(module), module.__name__)
            for name, value in vars(module).items():
                self.assertFalse(
                    name.startswith("test") and inspect.isfunction(value),
                    f"{module.__name__}.{name} is a function: make it a TestCase method",
                )

    def test_test_classes_are_trial_test_cases(self) -> None:
        for module in suite_modules():
            for name, value in own_classes(module):
                if name.startswith("Test") or issubclass(value, unittest.TestCase):
                    self.assertTrue(
                        issubclass(value, SynchronousTestCase),
                        f"{module.__name__}.{name} is not a twisted.trial.unittest.TestCase",
                    )

    def test_test_methods_take_no_fixtures(self) -> None:
        checked = 0
        for module in suite_modules():
            for name, value in own_classes(module):
                for attr, method in vars(value).items():
                    if not (attr.startswith("test") and inspect.isfunction(method)):
                        continue
                    where = f"{module.__name__}.{name}.{attr}"
                    self.assertFalse(hasattr(method, "pytestmark"), f"{where}: a pytest mark")
                    # Decorators that wrap (hypothesis's @given, unittest.skipIf) keep (self).
                    parameters = list(inspect.signature(method).parameters)
                    self.assertEqual(parameters, ["self"], f"{where}: a fixture is pytest's")
                    checked += 1
        self.assertGreater(checked, 500)
