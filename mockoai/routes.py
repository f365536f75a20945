# -*- test-case-name: tests.test_routes -*-
"""
The route table: every endpoint, declared once with Klein's C{@app.route}.

The generation endpoints hand the request to the one pipeline
(L{mockoai.pipeline.generate}) in their API's dialect; the rest return
pre-rendered bytes.  A new API is a dialect module (L{mockoai.dialects})
plus its routes here and its construction in L{mockoai.ops.service}.  The
same handlers run under Klein's own resource (tests, embedding) and under
the lean L{mockoai.wire.dispatch.Router} the server uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from mockoai.dialects.anthropic.dialect import Anthropic, MessagesDialect
from mockoai.dialects.openai.dialect import OpenAI, OpenAIDialect
from mockoai.dialects.openai.embeddings import Embeddings
from mockoai.dialects.openai.responses import Responses, ResponsesDialect
from mockoai.dialects.openrouter.api import OpenRouter
from mockoai.dialects.openrouter.dialect import RouterDialect
from mockoai.dialects.openrouter.responses import RouterResponsesDialect
from mockoai.ops.config import CHAT, COMPLETIONS
from mockoai.ops.dashboard import Dashboard
from mockoai.ops.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from mockoai.ops.metrics import Metrics
from mockoai.pipeline import errors
from mockoai.pipeline.errors import Envelopes
from mockoai.pipeline.generate import Pipeline, Result
from mockoai.pipeline.media import JSON
from mockoai.wire import failures

if TYPE_CHECKING:
    from mockoai.interfaces import Request
    from mockoai.ops.admin import Admin
    from mockoai.ops.stats import Stats
    from mockoai.pipeline.dialect import Dialect
    from mockoai.pipeline.gate import Gate
    from mockoai.pipeline.stream import StreamProducer
    from mockoai.sim.core import Core

HEALTHY = b'{"status":"ok"}'
DRAINING = b'{"status":"draining"}'


class MockOAI:
    """The Klein application: every API's routes over one L{Core}."""

    app = Klein()

    def __init__(
        self,
        core: Core,
        stats: Stats,
        gate: Gate,
        openai: OpenAI,
        openrouter: OpenRouter,
        anthropic: Anthropic,
    ) -> None:
        self.core = core
        self.draining = False
        #: /metrics and /stats (and the finish hook's counts).
        self.metrics = Metrics(core, stats)
        #: /_mockoai/dashboard: a live page over the same numbers.
        self.dashboard = Dashboard(
            self.metrics, core.clock, core.settings.observability.dashboard_interval
        )
        #: The keys and rate limits every generation passes.
        self.gate = gate
        self.openai = openai
        self.openrouter = openrouter
        #: Every stream running, whatever its API: what a drain ends once its
        #: grace period is over (L{mockoai.pipeline.faults.cut_now}).
        self.streams: set[StreamProducer] = set()

        def pipeline(dialect: Dialect) -> Pipeline:
            return Pipeline(dialect, core, gate, stats, self.streams)

        self.openai_chat = pipeline(OpenAIDialect(openai, CHAT))
        self.openai_completions = pipeline(OpenAIDialect(openai, COMPLETIONS))
        self.openrouter_chat = pipeline(RouterDialect(openrouter, CHAT))
        self.openrouter_completions = pipeline(RouterDialect(openrouter, COMPLETIONS))
        self.anthropic = anthropic
        #: The same keys and buckets, reported in Anthropic's headers.
        self.anthropic_messages = Pipeline(
            MessagesDialect(anthropic),
            core,
            gate.speaking(anthropic.rate_headers),
            stats,
            self.streams,
        )
        #: Not a generation: the same gate and engines, no pipeline of its own.
        self.embeddings = Embeddings(openai, gate, stats)
        stored = core.settings.responses
        #: The Responses API: its store, and its dialect of the pipeline.
        self.responses = Responses(openai, stored.store_size, stored.store_ttl)
        self.openai_responses = pipeline(ResponsesDialect(self.responses))
        self.openrouter_responses = pipeline(RouterResponsesDialect(openrouter))

    # OpenAI.

    @app.route("/v1/chat/completions", methods=["POST"])
    def chat_completions(self, request: Request) -> Result:
        return self.openai_chat.generate(request)

    @app.route("/v1/completions", methods=["POST"])
    def completions(self, request: Request) -> Result:
        return self.openai_completions.generate(request)

    @app.route("/v1/embeddings", methods=["POST"])
    def create_embeddings(self, request: Request) -> bytes | Deferred[bytes]:
        return self.embeddings.create(request)

    @app.route("/v1/responses", methods=["POST"])
    def create_response(self, request: Request) -> Result:
        return self.responses.create(request, self.openai_responses.generate)

    @app.route("/v1/responses/<string:response_id>", methods=["GET"])
    def get_response(self, request: Request, response_id: str) -> Deferred[bytes]:
        return self.responses.retrieve(request, response_id)

    @app.route("/v1/responses/<string:response_id>", methods=["DELETE"])
    def delete_response(self, request: Request, response_id: str) -> Deferred[bytes]:
        return self.responses.delete(request, response_id)

    @app.route("/v1/responses/<string:response_id>/input_items", methods=["GET"])
    def response_input_items(self, request: Request, response_id: str) -> Deferred[bytes]:
        return self.responses.input_items(request, response_id)

    @app.route("/v1/models", methods=["GET"])
    def list_models(self, request: Request) -> bytes:
        # The one path both APIs list their models at: Anthropic's SDKs say which they are.
        if request.getHeader(b"anthropic-version") is not None:
            return self.anthropic.models(request)
        request.setHeader(b"Content-Type", JSON)
        return self.openai.models_body

    @app.route("/v1/models/<path:model_id>", methods=["GET"])
    def get_model(self, request: Request, model_id: str) -> bytes:
        if request.getHeader(b"anthropic-version") is not None:
            return self.anthropic.card(request, model_id)
        request.setHeader(b"Content-Type", JSON)
        return self.openai.card(model_id)

    # Anthropic: the Messages API.

    @app.route("/v1/messages", methods=["POST"])
    def messages(self, request: Request) -> Result:
        return self.anthropic_messages.generate(request)

    @app.route("/v1/messages/count_tokens", methods=["POST"])
    def count_tokens(self, request: Request) -> bytes:
        return self.anthropic.count_tokens(request)

    # OpenRouter: the same simulation under OpenRouter's API.

    @app.route("/api/v1/chat/completions", methods=["POST"])
    def router_chat_completions(self, request: Request) -> Result:
        return self.openrouter_chat.generate(request)

    @app.route("/api/v1/completions", methods=["POST"])
    def router_completions(self, request: Request) -> Result:
        return self.openrouter_completions.generate(request)

    @app.route("/api/v1/responses", methods=["POST"])
    def router_responses(self, request: Request) -> Result:
        return self.openrouter_responses.generate(request)

    @app.route("/api/v1/models", methods=["GET"])
    def router_models(self, request: Request) -> bytes:
        return self.openrouter.models(request)

    @app.route("/api/v1/models/<path:model_id>/endpoints", methods=["GET"])
    def router_endpoints(self, request: Request, model_id: str) -> bytes:
        return self.openrouter.endpoints(request, model_id)

    @app.route("/api/v1/models/<path:model_id>", methods=["GET"])
    def router_model(self, request: Request, model_id: str) -> bytes:
        return self.openrouter.model(request, model_id)

    @app.route("/api/v1/generation", methods=["GET"])
    def router_generation(self, request: Request) -> bytes:
        return self.openrouter.generation(request)

    @app.route("/api/v1/key", methods=["GET"])
    @app.route("/api/v1/auth/key", methods=["GET"])
    def router_key(self, request: Request) -> bytes:
        return self.openrouter.key(request)

    @app.route("/api/v1/credits", methods=["GET"])
    def router_credits(self, request: Request) -> bytes:
        return self.openrouter.credits(request)

    # mockoai's own.

    @app.route("/health", methods=["GET"])
    def health(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", JSON)
        if self.draining:
            request.setResponseCode(503)
            return DRAINING
        return HEALTHY

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

    # The live dashboard (mockoai/ops/dashboard.py): operations, not generation.

    @app.route("/_mockoai/dashboard", methods=["GET"])
    def dashboard_page(self, request: Request) -> bytes:
        return self.dashboard.page(request)

    @app.route("/_mockoai/dashboard/events", methods=["GET"])
    def dashboard_events(self, request: Request) -> bytes | Deferred[None]:
        return self.dashboard.connect(request)

    # The admin API (mockoai/ops/admin.py): rules, models, resets, the journal, the verdict.

    #: Set by the service (L{mockoai.ops.service.build}), with the control it drives.
    admin: Admin

    @app.route("/_mockoai/rules", methods=["GET"])
    def get_rules(self, request: Request) -> bytes:
        return self.admin.get_rules(request)

    @app.route("/_mockoai/rules", methods=["PUT"])
    def put_rules(self, request: Request) -> bytes | Deferred[bytes]:
        return self.admin.put_rules(request)

    @app.route("/_mockoai/models", methods=["GET"])
    def admin_models(self, request: Request) -> bytes:
        return self.admin.get_models(request)

    @app.route("/_mockoai/models/<path:model_id>", methods=["GET"])
    def admin_model(self, request: Request, model_id: str) -> bytes:
        return self.admin.get_model(request, model_id)

    @app.route("/_mockoai/models/<path:model_id>", methods=["PATCH"])
    def admin_patch_model(self, request: Request, model_id: str) -> bytes | Deferred[bytes]:
        return self.admin.patch_model(request, model_id)

    @app.route("/_mockoai/reset", methods=["POST"])
    def admin_reset(self, request: Request) -> bytes | Deferred[bytes]:
        return self.admin.reset(request)

    @app.route("/_mockoai/journal", methods=["GET"])
    def admin_journal(self, request: Request) -> bytes | Deferred[bytes]:
        return self.admin.get_journal(request)

    @app.route("/_mockoai/verdict", methods=["GET"])
    def admin_verdict(self, request: Request) -> bytes | Deferred[bytes]:
        return self.admin.get_verdict(request)

    # Errors: the same answers whichever resource dispatched the request.

    #: The error envelope of each API, by path (the service sets the site's table).
    envelopes: Envelopes = Envelopes()

    @app.handle_errors(Exception)
    def failed(self, request: Request, failure: Failure) -> bytes:
        """Klein's own resource: what the L{Router} answers (Klein writes the body)."""
        error = failures.api_error(request, failure)
        return errors.error_response(request, error, self.envelopes.for_path(request.path))
