# -*- test-case-name: tests.test_routes -*-
"""
The route table: every endpoint, declared once with Klein's C{@app.route}.

Handlers read top to bottom as the request path does: parse and validate
the body, plan the answer, then return the rendered bytes (a Deferred of
them when the answer takes time) or start a stream.  The same handlers run
under Klein's own resource (tests, embedding) and under the lean
L{mockoai.dispatch.Router} the server uses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Union

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import MethodNotAllowed, NotFound

from mockoai import errors, validate
from mockoai.config import CHAT, COMPLETIONS
from mockoai.core import Core
from mockoai.stream import StreamProducer, completed, delayed
from mockoai.validate import GenerationRequest

JSON = b"application/json"
EVENT_STREAM = b"text/event-stream; charset=utf-8"
HEALTHY = b'{"status":"ok"}'
DRAINING = b'{"status":"draining"}'

Result = Union[bytes, "Deferred[bytes]", "Deferred[None]"]


class MockOAI:
    """The Klein application: routes over one L{Core}."""

    app = Klein()

    def __init__(self, core: Core) -> None:
        self.core = core
        self.draining = False

    @app.route("/v1/chat/completions", methods=["POST"])
    def chat_completions(self, request: IRequest) -> Result:
        return self._generate(request, validate.chat, CHAT)

    @app.route("/v1/completions", methods=["POST"])
    def completions(self, request: IRequest) -> Result:
        return self._generate(request, validate.completions, COMPLETIONS)

    @app.route("/v1/models", methods=["GET"])
    def list_models(self, request: IRequest) -> bytes:
        request.setHeader(b"Content-Type", JSON)
        return self.core.models_body

    @app.route("/v1/models/<path:model_id>", methods=["GET"])
    def get_model(self, request: IRequest, model_id: str) -> bytes:
        request.setHeader(b"Content-Type", JSON)
        return self.core.model(model_id).card

    @app.route("/health", methods=["GET"])
    def health(self, request: IRequest) -> bytes:
        request.setHeader(b"Content-Type", JSON)
        if self.draining:
            request.setResponseCode(503)
            return DRAINING
        return HEALTHY

    def _generate(
        self,
        request: IRequest,
        parse: Callable[[dict[str, object]], GenerationRequest],
        kind: str,
    ) -> Result:
        wanted = parse(validate.parse_body(request.content.read()))
        model = self.core.model(wanted.model, kind)
        plan = self.core.planner.plan(wanted, model.profile)
        clock = self.core.clock
        arrived = clock.seconds()
        created = int(arrived)
        rid = self.core.ids.completion()
        renderer = model.renderer
        if wanted.stream:
            request.setHeader(b"Content-Type", EVENT_STREAM)
            request.setHeader(b"Cache-Control", b"no-cache")
            events = (renderer.chat_stream if kind == CHAT else renderer.completion_stream)(
                plan, rid, created
            )
            return StreamProducer(request, plan, events, model.pacer, model.engine).start()
        request.setHeader(b"Content-Type", JSON)
        body = renderer.chat_body if kind == CHAT else renderer.completion_body

        def render() -> bytes:
            elapsed = clock.seconds() - arrived
            request.setHeader(b"openai-processing-ms", b"%d" % round(elapsed * 1000))
            return body(plan, rid, created)

        if model.engine is not None:
            return completed(model.engine, plan, render)
        return delayed(model.pacer, plan.duration(), render)

    # Errors: the same envelopes whichever resource dispatched the request.

    @app.handle_errors(Exception)
    def failed(self, request: IRequest, failure: Failure) -> bytes:
        return error_body(request, failure)


def error_body(request: IRequest, failure: Failure) -> bytes:
    """Render any failure as OpenAI's envelope; log what we did not expect."""
    error = failure.value
    if isinstance(error, NotFound):
        error = errors.unknown_url(request.method.decode("latin-1"), request.path.decode("latin-1"))
    elif isinstance(error, MethodNotAllowed):
        allowed = tuple(m for m in (error.valid_methods or ()) if m != "HEAD")
        error = errors.wrong_method(
            request.method.decode("latin-1"), request.path.decode("latin-1"), allowed
        )
    elif not isinstance(error, errors.APIError):
        from twisted.logger import Logger

        Logger().failure("Unhandled error serving {uri}", failure, uri=request.uri)
        error = errors.server_error()
    request.setResponseCode(error.status)
    request.setHeader(b"Content-Type", JSON)
    for name, value in error.headers:
        request.setHeader(name, value)
    return error.body()
