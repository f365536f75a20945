# -*- test-case-name: tests.test_testing -*-
"""
A real mockoai server inside a test suite.

- pytest: the ``mockoai`` fixture (and ``mockoai_session``), configured by
  ``@pytest.mark.mockoai(itl_ms=20, models=[...], profile="p.toml")``;
  see L{mockoai.testing.pytest_plugin}.
- blocking code: L{MockoaiServer} (``with MockoaiServer(itl_ms=20) as s:``).
- Twisted (trial): L{start_server} fires with a L{ReactorServer} whose
  ``get``, ``post`` and ``stop`` return Deferreds.

Why a ``twistd`` child process, not a reactor in a thread of the test
process:

- Twisted's reactor is global and cannot be restarted.  One in a thread
  would have to live for the whole test session, and could not coexist
  with trial or pytest-twisted, which run the reactor in the main thread.
- Isolation: the server tunes process-wide state (the cyclic GC's
  thresholds, the C heap's trimming, its allocator during floods); a bug
  that blocks its reactor, or a crash in a C extension (httptools,
  ujson), takes down the child, not the test run; and its log is its own
  output, which teardown reads for errors without capturing the test
  process's logging.
- Fidelity: it is the deployed thing, started by the twistd plugin and
  stopped by SIGTERM, which drains in-flight requests as in production;
  ``--workers`` needs processes anyway.
- The price is the start: a fresh interpreter imports the server (~0.8 s
  of CPU, which a thread would pay once per session) and builds its
  corpus.  Measured from ``start()`` to ready: 1.0-1.25 s of the child's
  CPU time with the default 4096 articles, 0.8 s with ``articles=64``
  (on a 2-core machine shared with other work, wall time was 2.6-3.4 s
  and 1.6-2.2 s).  A session-scoped server (``mockoai_session``) pays it
  once.

Only the standard library is imported here (and by the pytest plugin), so
a pytest run that does not use the fixture pays nothing; Twisted is
imported when L{start_server} or L{ReactorServer} is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mockoai.testing.server import (
    MockoaiServer,
    Reply,
    ServerError,
    logged_errors,
    server_arguments,
)

if TYPE_CHECKING:
    from mockoai.testing.deferred import ReactorServer, start_server

_DEFERRED = ("ReactorServer", "start_server")


def __getattr__(name: str) -> Any:
    if name in _DEFERRED:
        from mockoai.testing import deferred

        return getattr(deferred, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MockoaiServer",
    "ReactorServer",
    "Reply",
    "ServerError",
    "logged_errors",
    "server_arguments",
    "start_server",
]
