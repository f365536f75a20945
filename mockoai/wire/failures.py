# -*- test-case-name: tests.test_envelopes -*-
"""
How the wire turns failures into error answers, whichever stack carries
them.

- L{api_error}: any failure of a route (werkzeug's no-match exceptions, a
  bug) as the L{APIError} OpenAI would answer, noted on the request's record.
- L{answer}: that error written in the envelope of the request's API, by
  the site's L{Envelopes} table (the wire never names a dialect).
- L{refusal}: the raw HTTP/1.1 answer of a connection refused before a
  request object exists (413 by Content-Length, 414, 431, 408, 400, the
  connection cap's 503), for both HTTP/1.1 channels.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from werkzeug.exceptions import MethodNotAllowed, NotFound

from mockoai.pipeline import errors
from mockoai.pipeline.outcome import note_error

if TYPE_CHECKING:
    from mockoai.interfaces import Request

_log = Logger(namespace="mockoai.wire")


def route_error(error: BaseException | None, method: bytes, path: bytes) -> errors.APIError | None:
    """OpenAI's answer to werkzeug's no-match ``error`` (404, 405), else ``None``."""
    if isinstance(error, NotFound):
        return errors.unknown_url(method.decode("latin-1"), path.decode("latin-1"))
    if isinstance(error, MethodNotAllowed):
        allowed = tuple(m for m in (error.valid_methods or ()) if m != "HEAD")
        return errors.wrong_method(method.decode("latin-1"), path.decode("latin-1"), allowed)
    return None


def api_error(request: Request, failure: Failure) -> errors.APIError:
    """``failure`` as the error to answer ``request`` with (unexpected ones are logged)."""
    error = failure.value
    routed = route_error(error, request.method, request.path)
    if routed is not None:
        error = routed
    elif not isinstance(error, errors.APIError):
        _log.failure("Unhandled error serving {uri}", failure, uri=request.uri)
        error = errors.server_error()
    note_error(request, error.code or error.type)
    return error


def answer(request: Request, failure: Failure, envelopes: errors.Envelopes) -> None:
    """Answer ``request`` with ``failure`` in its API's envelope, unless it is over already."""
    error = api_error(request, failure)
    if request.finished or getattr(request, "_disconnected", False):
        return
    errors.write_error(request, error, envelopes.for_path(request.path))


def reason(status: int) -> bytes:
    """The reason phrase of ``status`` (twisted.web's table lacks 431)."""
    if status == 431:
        return b"Request Header Fields Too Large"
    return http.RESPONSES.get(status, b"Error")


def refusal(
    error: errors.APIError,
    request_id: bytes,
    envelope: errors.Envelope,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> bytes:
    """
    The whole answer of a connection refused with ``error`` and closed:
    status line, JSON content type and length, the error's own headers
    (``Retry-After``) and any ``headers`` given (CORS), ``x-request-id`` as
    every answer has (and under the API's own name, when it has one), and
    ``Connection: close``.
    """
    body = envelope(error)
    extra = b"".join(b"%s: %s\r\n" % header for header in (*error.headers, *headers))
    alias = errors.id_header(envelope)
    if alias is not None:
        extra += b"%s: %s\r\n" % (alias, request_id)
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        b"%sx-request-id: %s\r\nConnection: close\r\n\r\n%s"
        % (error.status, reason(error.status), len(body), extra, request_id, body)
    )
