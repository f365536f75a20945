"""
Test dependencies that only CPython installs (setup.cfg marks them so), and the
skip decorators for the tests that need them.

Under PyPy those tests report as skipped, with the reason; under CPython a
missing one is a broken environment, so its ImportError propagates.  The
decorators are the standard library's C{unittest.skipIf}, which trial and
pytest both honour on a test case class or method.
"""

from __future__ import annotations

import importlib
import platform
from types import ModuleType
from unittest import SkipTest, skipIf


def _cpython_only(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        if platform.python_implementation() == "CPython":
            raise
        return None


#: The official SDK: it needs jiter (Rust), which has no PyPy 3.9 wheel.
openai = _cpython_only("openai")
#: scipy.stats (Kolmogorov-Smirnov tests): no PyPy wheel, and no build without Python.h.
stats = _cpython_only("scipy.stats")

needs_openai = skipIf(openai is None, "openai is CPython-only here: jiter has no PyPy wheel")
#: Anthropic's official SDK: jiter too.
anthropic = _cpython_only("anthropic")
needs_anthropic = skipIf(
    anthropic is None, "anthropic is CPython-only here: jiter has no PyPy wheel"
)
needs_scipy = skipIf(stats is None, "scipy is CPython-only here: no PyPy wheel")

#: The lean HTTP/1.1 stack's parser (llhttp, in C); PyPy's lean stack runs on
#: mockoai's own (mockoai.wire.h1parser), which is all ``lean-python`` is.
httptools = _cpython_only("httptools")
#: The HTTP/1.1 stacks (``--http``) that differ on this interpreter: where
#: httptools is installed, the lean channel on both parsers.
STACKS = ("lean", "lean-python", "twisted") if httptools is not None else ("lean", "twisted")


def require_stack(http: str) -> None:
    """Skip the running test if it asks for a stack this interpreter cannot serve with."""
    if http not in ("auto", *STACKS):
        raise SkipTest(f"--http {http} is the same as --http lean here (no httptools)")
