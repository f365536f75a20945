# -*- test-case-name: tests.test_routes -*-
"""
A lean dispatcher over the Klein route table.

Klein's generic render path costs ~70 us a request on CPython: binding a
werkzeug map adapter, URL-part extraction, prepath bookkeeping and several
Deferreds.  The routes are still declared once, with C{@app.route}; the
L{Router} matches each (method, path) against that same URL map once,
caches the route's own function bound to the app's instance, and calls it:
one call from the channel to the handler, where Klein's C{execute_endpoint}
adds three wrapper calls and a coroutine check to every request.  It keeps
only what our handlers need: bytes are answered whole (L{Request.respond}),
a Deferred is waited for (and cancelled if the client goes away), errors
are answered by L{mockoai.wire.failures} -- as Klein's error handler
answers them -- in the envelope the router's L{Envelopes} table gives the
request's path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from inspect import iscoroutine
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from klein import Klein
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
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
        self._cache: dict[tuple[bytes, bytes], tuple[Handler, Mapping[str, Any]]] = {}
        self._handlers = {name: _handler(app, name) for name in app.endpoints}

    def _match(self, method: bytes, path: bytes) -> tuple[Handler, Mapping[str, Any]]:
        key = (method, path)
        hit = self._cache.get(key)
        if hit is None:
            path_info = unquote(path.decode("utf-8", "surrogateescape"), errors="surrogateescape")
            endpoint, kwargs = self._adapter.match(path_info, method=method.decode("latin-1"))
            hit = (self._handlers[endpoint], kwargs)
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
            handler, kwargs = self._match(request.method, request.path)
            result = handler(request, **kwargs) if kwargs else handler(request)
        except (HTTPException, Exception):
            failures.answer(request, Failure(), self.envelopes)
            return
        if type(result) is bytes:
            if not (request.finished or request._disconnected):
                request.respond(result)
            return
        if iscoroutine(result):
            result = ensureDeferred(result)
        if isinstance(result, Deferred):
            request.notifyFinish().addErrback(lambda _: result.cancel())
            result.addCallbacks(
                lambda body: _write(request, body), _failed, (), {}, (request, self.envelopes)
            )
        else:
            _write(request, result)


def _handler(app: Klein, endpoint: str) -> Handler:
    """
    The function ``@app.route`` decorated, bound to the app's instance (Klein
    keeps it as its wrapper's ``__original__``), or Klein's own call where
    the route is not a plain method (a ``bindable`` one takes the app too).
    """
    wrapper = app.endpoints[endpoint]
    original = getattr(wrapper, "__original__", None)
    instance = getattr(app, "_instance", None)
    if original is None or getattr(original, "__klein_bound__", False):
        return partial(app.execute_endpoint, endpoint)
    if instance is None:
        return original  # type: ignore[no-any-return]
    return original.__get__(instance, type(instance))  # type: ignore[no-any-return]


def _failed(failure: Failure, request: Request, envelopes: Envelopes) -> None:
    if failure.check(CancelledError) is None:
        failures.answer(request, failure, envelopes)


def _write(request: Request, body: bytes | None) -> None:
    if request.finished or getattr(request, "_disconnected", False):
        return
    if body is None:
        request.finish()
    else:
        request.respond(body)
