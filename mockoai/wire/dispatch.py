# -*- test-case-name: tests.test_routes -*-
"""
A lean dispatcher over the Klein route table.

Klein's generic render path costs ~70 us a request on CPython: binding a
werkzeug map adapter, URL-part extraction, prepath bookkeeping and several
Deferreds.  The routes are still declared once, with C{@app.route}; the
L{Router} matches each (method, path) against that same URL map once,
caches the result, and calls the handler directly, keeping only what our
handlers need: bytes are written with a Content-Length, a Deferred is
waited for (and cancelled if the client goes away), errors are answered
by L{mockoai.wire.failures} -- as Klein's error handler answers them -- in
the envelope the router's L{Envelopes} table gives the request's path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from klein import Klein
from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure
from werkzeug.exceptions import HTTPException

from mockoai.pipeline.errors import APIError, Envelopes
from mockoai.wire import failures

if TYPE_CHECKING:
    from mockoai.interfaces import Request

#: Distinct (method, path) pairs remembered; paths with parameters
#: (``/v1/models/<id>``) are bounded by this too.
_CACHE_SIZE = 4096

Handler = Callable[..., Any]


class Router:
    """Routes requests to the handlers of a Klein app bound to its instance."""

    def __init__(self, app: Klein, envelopes: Envelopes | None = None) -> None:
        self._app = app
        #: The error envelope of each API (the site's, see L{MockSite.envelopes}).
        self.envelopes = envelopes or Envelopes()
        self._adapter = app.url_map.bind("localhost")
        self._cache: dict[tuple[bytes, bytes], tuple[str, Mapping[str, Any]]] = {}

    def _match(self, method: bytes, path: bytes) -> tuple[str, Mapping[str, Any]]:
        key = (method, path)
        hit = self._cache.get(key)
        if hit is None:
            path_info = unquote(path.decode("utf-8", "surrogateescape"), errors="surrogateescape")
            endpoint, kwargs = self._adapter.match(path_info, method=method.decode("latin-1"))
            hit = (endpoint, kwargs)
            if len(self._cache) < _CACHE_SIZE:
                self._cache[key] = hit
        return hit

    def route_error(self, method: bytes, path: bytes) -> APIError | None:
        """
        The 404 or 405 ``method`` on ``path`` will get, or ``None`` if a route
        takes it: known from the request head, before its body is read.
        """
        try:
            self._match(method, path)
        except HTTPException as e:
            return failures.route_error(e, method, path)
        return None

    def render(self, request: Request) -> None:
        """Answer ``request`` completely (now or later)."""
        try:
            endpoint, kwargs = self._match(request.method, request.path)
            result = self._app.execute_endpoint(endpoint, request, **kwargs)  # type: ignore[arg-type]
        except (HTTPException, Exception):
            failures.answer(request, Failure(), self.envelopes)
            return
        if isinstance(result, bytes):
            _write(request, result)
        elif isinstance(result, Deferred):
            request.notifyFinish().addErrback(lambda _: result.cancel())
            result.addCallbacks(
                lambda body: _write(request, body), _failed, (), {}, (request, self.envelopes)
            )
        else:
            _write(request, None)


def _failed(failure: Failure, request: Request, envelopes: Envelopes) -> None:
    if failure.check(CancelledError) is None:
        failures.answer(request, failure, envelopes)


def _write(request: Request, body: bytes | None) -> None:
    if request.finished or getattr(request, "_disconnected", False):
        return
    if body is not None:
        request.setHeader(b"Content-Length", b"%d" % len(body))
        request.write(body)
    request.finish()
