# -*- test-case-name: tests.test_anthropic -*-
"""
Anthropic's error envelope, ``{"type": "error", "error": {"type", "message"},
"request_id"}``, its error types by status, and its own messages.

Every error answered under ``/v1/messages`` is in this envelope: the
dialect's own (L{AnthropicError}), and those the shared path raises in
OpenAI's words (the gate's 429, the engine's refusals, the wire's 413),
which L{translate} rewords as Anthropic words them: a full engine queue is
its ``529 overloaded_error``, a rate limit its ``rate_limit_error`` with
``retry-after`` (the ``anthropic-ratelimit-*`` headers come from the gate).
Anthropic repeats the request id in the body and in a ``request-id``
header; ours is the site's ``x-request-id``, under both names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mockoai.apierror import APIError, OverloadedError
from mockoai.pipeline.auth import KeyRefusals
from mockoai.pipeline.errors import response_header
from mockoai.pipeline.limits import RateLimited
from mockoai.pipeline.media import dumps

if TYPE_CHECKING:
    from mockoai.interfaces import Request

#: Paths answered in Anthropic's dialect (errors included).
PREFIX = b"/v1/messages"

INVALID_REQUEST = "invalid_request_error"
AUTHENTICATION = "authentication_error"
NOT_FOUND = "not_found_error"
RATE_LIMIT = "rate_limit_error"
API_ERROR = "api_error"
OVERLOADED = "overloaded_error"

#: Anthropic's error type of each status it answers with.
TYPES = {
    400: INVALID_REQUEST,
    401: AUTHENTICATION,
    402: "billing_error",
    403: "permission_error",
    404: NOT_FOUND,
    413: "request_too_large",
    429: RATE_LIMIT,
    500: API_ERROR,
    503: OVERLOADED,
    504: "timeout_error",
    529: OVERLOADED,
}

#: The headers of OpenAI's answers that are not Anthropic's.
_OPENAI_HEADERS = (b"x-ratelimit-",)


def error_type(status: int) -> str:
    """The error type Anthropic answers ``status`` with."""
    found = TYPES.get(status)
    if found is not None:
        return found
    return API_ERROR if status >= 500 else INVALID_REQUEST


def render(kind: str, message: str, request_id: str | None = None) -> bytes:
    """The envelope itself: ``request_id`` last, when there is one."""
    payload: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
    if request_id:
        payload["request_id"] = request_id
    return dumps(payload)


class AnthropicError(APIError):
    """An error in Anthropic's words: its ``type``, and the request id it names."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str | None = None,
        headers: tuple[tuple[bytes, bytes], ...] = (),
        request_id: str | None = None,
    ) -> None:
        super().__init__(status, message, type=kind or error_type(status), headers=headers)
        self.request_id = request_id

    def body(self) -> bytes:
        return render(self.type, self.message, self.request_id)


class _Envelope:
    """Any error in Anthropic's envelope: its type by status, OpenAI's wording kept."""

    #: Anthropic names the request id ``request-id`` (L{mockoai.pipeline.errors.id_header}).
    id_header = b"request-id"

    def __call__(self, error: APIError) -> bytes:
        if isinstance(error, AnthropicError):
            return error.body()
        status = error.status
        message = TOO_LARGE if status == 413 else error.message
        return render(error_type(status), message)


envelope = _Envelope()


def translate(error: APIError, request_id: str | None = None) -> AnthropicError:
    """
    ``error`` as Anthropic answers it: an engine's full queue is a 529, a
    rate limit its own 429, the rest keep their status under Anthropic's
    type; only the headers Anthropic sends too (``retry-after``) are kept.
    """
    if isinstance(error, AnthropicError):
        if error.request_id is None:
            error.request_id = request_id
        return error
    headers = tuple(h for h in error.headers if not h[0].lower().startswith(_OPENAI_HEADERS))
    if isinstance(error, OverloadedError):
        return AnthropicError(529, "Overloaded", OVERLOADED, headers, request_id)
    if isinstance(error, RateLimited):
        return AnthropicError(429, rate_limited(error), RATE_LIMIT, headers, request_id)
    status = error.status
    message = TOO_LARGE if status == 413 else error.message
    return AnthropicError(status, message, error_type(status), headers, request_id)


def rate_limited(error: RateLimited) -> str:
    """Anthropic's 429 message, from the bucket that refused."""
    unit = "requests" if error.type == "requests" else "tokens"
    who = f"IP address ({error.ip})" if error.ip else f"organization ({error.organization})"
    return (
        f"This request would exceed the rate limit for your {who} of {error.limit:,} {unit} "
        "per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits. You "
        "can see the response headers for current usage. Please reduce the prompt length or "
        "the maximum tokens requested, or try again later."
    )


#: Anthropic's 413.
TOO_LARGE = "Request exceeds the maximum size"


def invalid(message: str) -> AnthropicError:
    return AnthropicError(400, message, INVALID_REQUEST)


def model_not_found(model: str) -> AnthropicError:
    return AnthropicError(404, f"model: {model}", NOT_FOUND)


def missing_version() -> AnthropicError:
    return invalid("anthropic-version: header is required")


def server_error() -> AnthropicError:
    return AnthropicError(500, "Internal server error", API_ERROR)


def missing_key() -> AnthropicError:
    return AnthropicError(401, "x-api-key header is required", AUTHENTICATION)


def unknown_key() -> AnthropicError:
    return AnthropicError(401, "invalid x-api-key", AUTHENTICATION)


#: Anthropic's 401s, for the site's key check under L{PREFIX}.
KEY_REFUSALS = KeyRefusals(missing_key, lambda _: unknown_key())


# --- the request id ---------------------------------------------------------------


def request_id(request: Request) -> bytes | None:
    """The id the site gave ``request`` (its ``x-request-id``), on either HTTP stack."""
    return response_header(request, b"x-request-id")


def stamp(request: Request) -> str | None:
    """Name the request's id under Anthropic's header too; the id, for error bodies."""
    rid = request_id(request)
    if rid is None:
        return None
    request.setHeader(b"request-id", rid)
    return rid.decode("latin-1")
