# -*- test-case-name: tests.test_envelopes,tests.test_validate -*-
"""
OpenAI's error envelope, and the exact messages OpenAI uses for each kind
of bad input, so clients that match on ``code`` or ``param`` behave as they
do against the real API.  L{APIError} itself is L{mockoai.apierror}'s (the
simulation raises it too), named here as well for the code that answers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from mockoai.apierror import INVALID_REQUEST as INVALID_REQUEST
from mockoai.apierror import SERVER_ERROR as SERVER_ERROR
from mockoai.apierror import APIError as APIError
from mockoai.pipeline.media import JSON

if TYPE_CHECKING:
    from mockoai.interfaces import Request

#: How a dialect shapes an error body: OpenAI's is L{APIError.body}.
Envelope = Callable[[APIError], bytes]


def openai_envelope(error: APIError) -> bytes:
    """OpenAI's ``{"error": {message, type, param, code}}`` (an error subclass may add to it)."""
    return error.body()


class Envelopes:
    """
    The error envelope of each API, by path prefix: what the wire uses for
    refusals it makes before (or without) routing -- 413, 414, 431, 408,
    draining 503, 401, unknown URLs.  The service builds it from the
    dialects; the wire never names one.
    """

    def __init__(
        self, default: Envelope = openai_envelope, prefixes: Sequence[tuple[bytes, Envelope]] = ()
    ) -> None:
        self.default = default
        # Longest prefix first, so /api/v1/ wins over /.
        self.prefixes = sorted(prefixes, key=lambda p: -len(p[0]))

    def for_path(self, path: bytes | None) -> Envelope:
        if path:
            for prefix, envelope in self.prefixes:
                if path.startswith(prefix):
                    return envelope
        return self.default

    def body(self, path: bytes | None, error: APIError) -> bytes:
        return self.for_path(path)(error)


def id_header(envelope: Envelope) -> bytes | None:
    """
    The header an API also names the request id under (Anthropic's
    ``request-id``), when its envelope says one: the site sends
    ``x-request-id`` on every answer, whatever the API.
    """
    return getattr(envelope, "id_header", None)


def response_header(request: Request, name: bytes) -> bytes | None:
    """A header already set on ``request``'s answer, on either HTTP/1.1 stack or HTTP/2."""
    get = getattr(request, "getResponseHeader", None)
    if get is not None:
        value: bytes | None = get(name)
        return value
    headers = getattr(request, "responseHeaders", None)
    values = headers.getRawHeaders(name) if headers is not None else None
    return values[-1] if values else None


def write_error(request: Request, error: APIError, envelope: Envelope = openai_envelope) -> None:
    """
    Answer ``request`` with ``error`` and finish it: status, JSON content
    type, the error's own headers (``retry-after``, ``x-ratelimit-*``), the
    body in ``envelope``.  Every stack (lean HTTP/1.1, twisted.web, HTTP/2)
    and every place (before routing, in a route, a stream refused before its
    first byte) writes an error through here.
    """
    request.write(error_response(request, error, envelope))
    request.finish()


def error_response(
    request: Request, error: APIError, envelope: Envelope = openai_envelope
) -> bytes:
    """
    L{write_error}'s status and headers, set on ``request``; the body is
    returned unwritten, for a caller that writes it itself (Klein's error
    handler returns it).
    """
    body = envelope(error)
    request.setResponseCode(error.status)
    request.setHeader(b"Content-Type", JSON)
    for name, value in error.headers:
        request.setHeader(name, value)
    alias = id_header(envelope)
    if alias is not None:
        rid = response_header(request, b"x-request-id")
        if rid is not None:
            request.setHeader(alias, rid)
    request.setHeader(b"Content-Length", b"%d" % len(body))
    return body


_JSON_TYPES = {
    str: "a string",
    int: "an integer",
    float: "a decimal",
    bool: "a boolean",
    list: "an array",
    dict: "an object",
    type(None): "null",
}


def json_type(value: object) -> str:
    return _JSON_TYPES.get(type(value), "an unknown type")


def invalid_json() -> APIError:
    return APIError(
        400,
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
        "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
        "sent was not valid JSON. If you have trouble figuring out how to fix this, please contact "
        "us through our help center at help.openai.com.)",
    )


def not_an_object(value: object) -> APIError:
    return APIError(
        400,
        f"Invalid body: expected an object, but got {json_type(value)} instead.",
        code="invalid_type",
    )


def missing(param: str) -> APIError:
    return APIError(
        400,
        f"Missing required parameter: '{param}'.",
        param=param,
        code="missing_required_parameter",
    )


def missing_model() -> APIError:
    return APIError(400, "you must provide a model parameter")


def invalid_type(param: str, expected: str, value: object) -> APIError:
    return APIError(
        400,
        f"Invalid type for '{param}': expected {expected}, but got {json_type(value)} instead.",
        param=param,
        code="invalid_type",
    )


def _number(value: float) -> str:
    # Not ``:g`` on ints: an integer of a few hundred digits (JSON allows it)
    # cannot convert to float and would raise OverflowError.
    return str(value) if isinstance(value, int) else f"{value:g}"


def below_min(param: str, minimum: float, value: float, decimal: bool = False) -> APIError:
    kind = "decimal" if decimal else "integer"
    return APIError(
        400,
        f"Invalid '{param}': {kind} below minimum value. "
        f"Expected a value >= {_number(minimum)}, but got {_number(value)} instead.",
        param=param,
        code=f"{kind}_below_min_value",
    )


def above_max(param: str, maximum: float, value: float, decimal: bool = False) -> APIError:
    kind = "decimal" if decimal else "integer"
    return APIError(
        400,
        f"Invalid '{param}': {kind} above maximum value. "
        f"Expected a value <= {_number(maximum)}, but got {_number(value)} instead.",
        param=param,
        code=f"{kind}_above_max_value",
    )


def empty_array(param: str) -> APIError:
    return APIError(
        400,
        f"Invalid '{param}': empty array. Expected an array with minimum length 1, "
        "but got an empty array instead.",
        param=param,
        code="empty_array",
    )


def array_too_long(param: str, maximum: int, length: int) -> APIError:
    return APIError(
        400,
        f"Invalid '{param}': array too long. Expected an array with maximum length {maximum}, "
        f"but got an array with length {length} instead.",
        param=param,
        code="array_above_max_length",
    )


def string_too_long(param: str, maximum: int, length: int) -> APIError:
    return APIError(
        400,
        f"Invalid '{param}': string too long. Expected a string with maximum length {maximum}, "
        f"but got a string with length {length} instead.",
        param=param,
        code="string_above_max_length",
    )


def lone_surrogate(param: str, surrogate: str) -> APIError:
    """A string that is not Unicode (see L{mockoai.dialects.openai.validate.parse_body})."""
    # The name itself may hold one (a key): spelled as its escape, as the message's is.
    param = param.encode("utf-8", "backslashreplace").decode("utf-8")
    return APIError(
        400,
        f"Invalid '{param}': the string holds a lone UTF-16 surrogate (\\u{ord(surrogate):04x}), "
        "which is not valid Unicode. Please send text as UTF-8, with surrogates only in pairs.",
        param=param,
        code="invalid_value",
    )


def unsupported_content_type(content_type: str) -> APIError:
    return APIError(
        400,
        f"Unsupported content type: '{content_type}'. This API method only accepts "
        f"'application/json' requests, but you specified the header 'Content-Type: "
        f"{content_type}'. Please try again with a supported content type.",
        code="unsupported_content_type",
    )


def invalid_value(param: str, value: object, supported: tuple[str, ...]) -> APIError:
    quoted = [f"'{s}'" for s in supported]
    listed = ", ".join(quoted[:-1]) + f", and {quoted[-1]}" if len(quoted) > 1 else quoted[0]
    return APIError(
        400,
        f"Invalid value: '{value}'. Supported values are: {listed}.",
        param=param,
        code="invalid_value",
    )


def invalid(param: str, message: str, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def unsupported_parameter(param: str) -> APIError:
    """A parameter the model does not take (``reasoning_effort`` on gpt-4o)."""
    return APIError(
        400,
        f"Unsupported parameter: '{param}' is not supported with this model.",
        param=param,
        code="unsupported_parameter",
    )


def model_not_found(model: str) -> APIError:
    return APIError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
    )


def wrong_endpoint(kind: str) -> APIError:
    if kind == "completions":
        message = (
            "This is a chat model and not supported in the v1/completions endpoint. "
            "Did you mean to use v1/chat/completions?"
        )
    else:
        message = (
            "This is not a chat model and thus not supported in the v1/chat/completions "
            "endpoint. Did you mean to use v1/completions?"
        )
    return APIError(404, message, param="model")


def unknown_url(method: str, path: str) -> APIError:
    return APIError(404, f"Invalid URL ({method} {path})")


def wrong_method(method: str, path: str, allowed: tuple[str, ...]) -> APIError:
    allow = ", ".join(allowed).encode()
    return APIError(405, f"Invalid method for URL ({method} {path})", headers=((b"Allow", allow),))


def body_too_large(limit: int) -> APIError:
    return APIError(
        413,
        f"Request body too large: the limit is {limit} bytes.",
        code="request_too_large",
    )


def server_error() -> APIError:
    return APIError(
        500,
        "The server had an error while processing your request. Sorry about that!",
        type=SERVER_ERROR,
    )


def draining() -> APIError:
    return APIError(
        503,
        "The server is shutting down and is not accepting new requests.",
        type=SERVER_ERROR,
        code="server_shutting_down",
    )
