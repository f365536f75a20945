# -*- test-case-name: tests.test_routes -*-
"""
The route table: every endpoint, declared once with Klein's C{@app.route}.

Handlers read top to bottom as the request path does: parse and validate
the body, plan the answer, then return the rendered bytes (a Deferred of
them when the answer takes time) or start a stream.  The same handlers run
under Klein's own resource (tests, embedding) and under the lean
L{mockoai.wire.dispatch.Router} the server uses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Union

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from mockoai.ops.config import CHAT, COMPLETIONS
from mockoai.ops.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from mockoai.ops.metrics import Metrics
from mockoai.pipeline import errors, validate
from mockoai.pipeline.errors import Envelopes
from mockoai.pipeline.outcome import attach
from mockoai.pipeline.stream import StreamProducer, completed, delayed
from mockoai.pipeline.validate import GenerationRequest
from mockoai.sim.core import Core
from mockoai.wire import failures

if TYPE_CHECKING:
    from mockoai.interfaces import Request

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
        #: /metrics and /stats (and the finish hook's counts).
        self.metrics = Metrics(core)

    @app.route("/v1/chat/completions", methods=["POST"])
    def chat_completions(self, request: Request) -> Result:
        return self._generate(request, validate.chat, CHAT)

    @app.route("/v1/completions", methods=["POST"])
    def completions(self, request: Request) -> Result:
        return self._generate(request, validate.completions, COMPLETIONS)

    @app.route("/v1/models", methods=["GET"])
    def list_models(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", JSON)
        return self.core.models_body

    @app.route("/v1/models/<path:model_id>", methods=["GET"])
    def get_model(self, request: Request, model_id: str) -> bytes:
        request.setHeader(b"Content-Type", JSON)
        return self.core.model(model_id).card

    # OpenRouter mode: the same simulation under OpenRouter's API.

    @app.route("/api/v1/chat/completions", methods=["POST"])
    def router_chat_completions(self, request: Request) -> Result:
        return self.core.openrouter.generate(request, CHAT)

    @app.route("/api/v1/completions", methods=["POST"])
    def router_completions(self, request: Request) -> Result:
        return self.core.openrouter.generate(request, COMPLETIONS)

    @app.route("/api/v1/models", methods=["GET"])
    def router_models(self, request: Request) -> bytes:
        return self.core.openrouter.models(request)

    @app.route("/api/v1/models/<path:model_id>/endpoints", methods=["GET"])
    def router_endpoints(self, request: Request, model_id: str) -> bytes:
        return self.core.openrouter.endpoints(request, model_id)

    @app.route("/api/v1/models/<path:model_id>", methods=["GET"])
    def router_model(self, request: Request, model_id: str) -> bytes:
        return self.core.openrouter.model(request, model_id)

    @app.route("/api/v1/generation", methods=["GET"])
    def router_generation(self, request: Request) -> bytes:
        return self.core.openrouter.generation(request)

    @app.route("/api/v1/key", methods=["GET"])
    @app.route("/api/v1/auth/key", methods=["GET"])
    def router_key(self, request: Request) -> bytes:
        return self.core.openrouter.key(request)

    @app.route("/api/v1/credits", methods=["GET"])
    def router_credits(self, request: Request) -> bytes:
        return self.core.openrouter.credits(request)

    @app.route("/health", methods=["GET"])
    def health(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", JSON)
        if self.draining:
            request.setResponseCode(503)
            return DRAINING
        return HEALTHY

    def _generate(
        self,
        request: Request,
        parse: Callable[[dict[str, object], validate.InputLimits], GenerationRequest],
        kind: str,
    ) -> Result:
        content_type = request.getHeader(b"content-type")
        if content_type is not None and not _is_json(content_type):
            raise errors.unsupported_content_type(content_type.decode("latin-1"))
        limits = self.core.input_limits
        wanted = parse(validate.parse_body(request.content.read(), limits.max_json_depth), limits)
        core = self.core
        model = core.model(wanted.model, kind)
        # Recorded into through the request's record, which the finish hook reads.
        stats = attach(request, core.stats.for_model(wanted.model), wanted.model, wanted.stream)
        stats.prompt_tokens = wanted.prompt_tokens
        stats.arrived()
        try:
            core.rate_limit(request, wanted, model)
            plan = core.planner.plan(wanted, model.profile)
            clock = core.clock
            arrived = clock.seconds()
            created = int(arrived)
            rid = core.ids.completion()
            renderer = model.renderer
            if wanted.stream:
                request.setHeader(b"Content-Type", EVENT_STREAM)
                request.setHeader(b"Cache-Control", b"no-cache")
                events = (renderer.chat_stream if kind == CHAT else renderer.completion_stream)(
                    plan, rid, created
                )
                producer = StreamProducer(request, plan, events, model.pacer, model.engine, stats)
                return producer.start()
            request.setHeader(b"Content-Type", JSON)
            body = renderer.chat_body if kind == CHAT else renderer.completion_body

            def render() -> bytes:
                elapsed = clock.seconds() - arrived
                request.setHeader(b"openai-processing-ms", b"%d" % round(elapsed * 1000))
                return body(plan, rid, created)

            if model.engine is not None:
                return completed(model.engine, plan, render, stats)
            return delayed(model.pacer, plan.duration(), render, stats, plan)
        except errors.APIError as e:
            stats.refused(e.status)
            raise

    @app.route("/stats", methods=["GET"])
    def statistics(self, request: Request) -> bytes | Deferred[bytes]:
        """Latency percentiles and counters per model (mockoai's own, not OpenAI's)."""
        request.setHeader(b"Content-Type", JSON)
        return self.metrics.stats_body()

    @app.route("/metrics", methods=["GET"])
    def prometheus(self, request: Request) -> bytes | Deferred[bytes]:
        """Prometheus text exposition: mockoai's series and vLLM's (mockoai/ops/metrics.py)."""
        request.setHeader(b"Content-Type", METRICS_CONTENT_TYPE)
        return self.metrics.exposition()

    # Errors: the same answers whichever resource dispatched the request.

    #: The error envelope of each API, by path (the service sets the site's table).
    envelopes: Envelopes = Envelopes()

    @app.handle_errors(Exception)
    def failed(self, request: Request, failure: Failure) -> bytes:
        """Klein's own resource: what the L{Router} answers (Klein writes the body)."""
        error = failures.api_error(request, failure)
        return errors.error_response(request, error, self.envelopes.for_path(request.path))


def _is_json(content_type: bytes) -> bool:
    """``application/json``, with parameters or not (OpenAI takes ``; charset=utf-8``)."""
    return content_type.split(b";", 1)[0].strip().lower() == JSON
