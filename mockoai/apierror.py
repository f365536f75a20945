# -*- test-case-name: tests.test_routes -*-
"""
L{APIError}, the one error type of every layer: a status and the fields
of an error answer.  The simulation raises it too (an engine refusing a
request, ``max_tokens`` over a model's cap), so it sits below them all and
imports nothing of mockoai's; OpenAI's messages are in
L{mockoai.pipeline.errors}, and each dialect renders it in its envelope.
"""

from __future__ import annotations

import ujson

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"


class APIError(Exception):
    """An error answer: HTTP status plus OpenAI's ``{"error": {...}}`` body."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = INVALID_REQUEST,
        param: str | None = None,
        code: str | None = None,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers

    def body(self) -> bytes:
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        # "replace": a message may quote a lone surrogate (from a JSON "\\udcff"
        # escape or a non-UTF-8 path); rendering the error must never fail.
        return ujson.dumps(
            {"error": error}, ensure_ascii=False, escape_forward_slashes=False
        ).encode("utf-8", "replace")

    def __repr__(self) -> str:
        return f"APIError({self.status}, {self.message!r}, code={self.code!r})"


class OverloadedError(APIError):
    """
    A refusal for want of capacity (an engine whose queue is full), in
    OpenAI's words; a dialect whose API has its own answer for it (Anthropic's
    529 ``overloaded_error``) tells it apart by its class.
    """
