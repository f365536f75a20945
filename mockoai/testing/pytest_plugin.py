# -*- test-case-name: tests.test_testing -*-
"""
The pytest plugin (entry point ``pytest11``: ``mockoai``).

Fixtures:

- ``mockoai``: a L{MockoaiServer} for one test, configured by the
  ``mockoai`` marker (on the test, its class or module: the closest wins
  per setting) and by indirect parametrization
  (``@pytest.mark.parametrize("mockoai", [{"itl_ms": 20}], indirect=True)``,
  which wins over the markers).
- ``mockoai_session``: one server for the whole session, configured by
  indirect parametrization or by overriding the ``mockoai_session_settings``
  fixture in a ``conftest.py``.

Teardown stops the server with SIGTERM and fails the test (an error at
teardown) if it did not exit 0 or logged an error; the server's log is
attached to the test's report.  Nothing but pytest is imported until a
fixture is used, so runs that do not use them pay nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from mockoai.testing.server import MockoaiServer

MARKER = "mockoai"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**settings): settings of the mockoai fixture's server, named as in a "
        "TOML profile (itl_ms=20, models=['gpt-4o'], profile='path.toml', any_model=True)",
    )


def _settings(request: pytest.FixtureRequest, base: Mapping[str, object]) -> dict[str, object]:
    settings = dict(base)
    # iter_markers yields the closest first: apply the farthest first.
    for marker in reversed(list(request.node.iter_markers(MARKER))):
        if marker.args:
            pytest.fail(
                f"@pytest.mark.{MARKER} takes settings as keywords, got {marker.args!r}",
                pytrace=False,
            )
        settings.update(marker.kwargs)
    param = getattr(request, "param", None)
    if param is not None:
        if not isinstance(param, Mapping):
            pytest.fail(
                f"an indirect parameter of the {request.fixturename} fixture is a dict "
                f"of settings, got {param!r}",
                pytrace=False,
            )
        settings.update(param)
    return settings


def _serve(settings: Mapping[str, object]) -> MockoaiServer:
    from mockoai.testing.server import MockoaiServer, ServerError

    try:
        return MockoaiServer(settings).start()
    except (TypeError, ValueError, ServerError) as e:
        pytest.fail(str(e), pytrace=False)


def _stop(server: MockoaiServer, request: pytest.FixtureRequest) -> None:
    from mockoai.testing.server import ServerError

    try:
        server.stop()
    except ServerError as e:
        pytest.fail(str(e), pytrace=False)
    finally:
        add_section = getattr(request.node, "add_report_section", None)
        if add_section is not None:
            add_section("teardown", "mockoai server log", server.log)


@pytest.fixture
def mockoai(request: pytest.FixtureRequest) -> Iterator[MockoaiServer]:
    """A mockoai server for this test (see the module's docstring)."""
    server = _serve(_settings(request, {}))
    try:
        yield server
    finally:
        _stop(server, request)


@pytest.fixture(scope="session")
def mockoai_session_settings() -> dict[str, Any]:
    """The ``mockoai_session`` server's settings: override it in a ``conftest.py``."""
    return {}


@pytest.fixture(scope="session")
def mockoai_session(
    request: pytest.FixtureRequest, mockoai_session_settings: dict[str, Any]
) -> Iterator[MockoaiServer]:
    """One mockoai server for the session (see the module's docstring)."""
    server = _serve(_settings(request, mockoai_session_settings))
    try:
        yield server
    finally:
        _stop(server, request)
