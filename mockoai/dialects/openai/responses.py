# -*- test-case-name: tests.test_responses -*-
"""
OpenAI's Responses API: ``POST /v1/responses`` as a dialect of the one
pipeline, and ``GET``/``DELETE /v1/responses/{id}`` and
``GET /v1/responses/{id}/input_items`` over the store.

What is the Responses API's own here: its validation
(L{mockoai.dialects.openai.responses_validate}), the model errors it
words its own way, ``resp_`` ids that say which worker holds them, the
Response object and its event stream (L{responses_render}), and the store
(L{responses_store}): a finished answer with ``store`` (the default) is
kept, and a later request's ``previous_response_id`` adds that
conversation's tokens to its input -- fetched from the worker that holds
it, with ``--workers``, before the request enters the pipeline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import ujson
from twisted.internet.defer import Deferred

from mockoai.dialects.openai import responses_render as render
from mockoai.dialects.openai import responses_store as store
from mockoai.dialects.openai.dialect import _is_json
from mockoai.dialects.openai.responses_render import Item, Response, ResponseEvents
from mockoai.dialects.openai.responses_store import ResponseIds, ResponseStore, Stored
from mockoai.dialects.openai.responses_validate import Params, parse_body, responses
from mockoai.ops.config import CHAT
from mockoai.pipeline import errors
from mockoai.pipeline.dialect import Answer, Dialect
from mockoai.pipeline.errors import APIError
from mockoai.pipeline.media import JSON, dumps

if TYPE_CHECKING:
    from mockoai.dialects.openai.dialect import OpenAI
    from mockoai.interfaces import Request
    from mockoai.pipeline.generate import Result
    from mockoai.pipeline.stream import StreamProducer
    from mockoai.sim.core import ServedModel
    from mockoai.sim.request import GenerationRequest
    from mockoai.sim.sampling import Plan

#: ``/input_items`` pages: at most this many items, 20 unless asked.
MAX_PAGE = 100
DEFAULT_PAGE = 20


def unknown_model(model: str) -> APIError:
    return APIError(
        400, f"The requested model '{model}' does not exist.", param="model", code="model_not_found"
    )


def unsupported_model(model: str) -> APIError:
    return APIError(
        400,
        f"The requested model '{model}' is not supported with the Responses API.",
        param="model",
        code="model_not_found",
    )


def unanswered_call(call_id: str) -> APIError:
    return APIError(
        400, f"No tool call found for function call output with call_id {call_id}.", param="input"
    )


class Responses:
    """The store, the ids and the endpoints that are not generations."""

    def __init__(self, api: OpenAI, size: int, ttl: float) -> None:
        self.api = api
        self.core = api.core
        self.clock = api.clock
        self.limits = api.limits
        self.view = api.core.corpus.view
        self.ids = ResponseIds()
        self.store = ResponseStore(size, ttl, api.clock)
        #: Earlier responses fetched from another worker, for the request they came for.
        self.fetched: dict[Any, Stored] = {}

    def join(self, worker: int, ask: store.Ask) -> None:
        """
        This process is worker ``worker`` of several: its ids say so, and
        others' responses are asked of them with ``ask``.
        """
        self.ids = ResponseIds(worker)
        self.store.worker = worker
        self.store.ask = ask

    # --- POST /v1/responses -----------------------------------------------------

    def create(self, request: Request, generate: Callable[[Request], Result]) -> Result:
        """
        The pipeline's answer; first, when the request continues another
        worker's response, that response, fetched for it.
        """
        content = request.content
        body = content.read()
        content.seek(0)
        if b'"previous_response_id"' not in body or self.store.ask is None:
            return generate(request)
        try:
            previous = ujson.loads(body).get("previous_response_id")
        except (ValueError, AttributeError):
            return generate(request)
        if type(previous) is not str or self.store.elsewhere(previous) is None:
            return generate(request)

        def fetched(stored: Stored | None) -> Result:
            if stored is None:
                raise store.previous_not_found(previous)
            self.fetched[request] = stored
            try:
                return generate(request)
            finally:
                self.fetched.pop(request, None)

        found: Deferred[Any] = self.store.get(previous)
        answered: Deferred[Any] = found.addCallback(fetched)
        return answered

    def previous(self, request: Request, response_id: str) -> Stored:
        """The earlier response a request continues, or OpenAI's 400."""
        stored = self.fetched.get(request) or self.store.local(response_id)
        if stored is None or stored.id != response_id:
            raise store.previous_not_found(response_id)
        return stored

    # --- GET, DELETE ------------------------------------------------------------

    def retrieve(self, request: Request, response_id: str) -> Deferred[bytes]:
        def found(stored: Stored | None) -> bytes:
            if stored is None:
                raise store.not_found(response_id)
            request.setHeader(b"Content-Type", JSON)
            return stored.body

        return self.store.get(response_id).addCallback(found)

    def delete(self, request: Request, response_id: str) -> Deferred[bytes]:
        def done(removed: bool) -> bytes:
            if not removed:
                raise store.not_found(response_id)
            request.setHeader(b"Content-Type", JSON)
            return store.deleted(response_id)

        return self.store.delete(response_id).addCallback(done)

    def input_items(self, request: Request, response_id: str) -> Deferred[bytes]:
        query = parse_qs(urlsplit(bytes(request.uri).decode("utf-8", "replace")).query)
        limit = _page_size(query.get("limit", [str(DEFAULT_PAGE)])[0])
        order = query.get("order", ["desc"])[0]
        if order not in ("asc", "desc"):
            raise errors.invalid_value("order", order, ("asc", "desc"))
        after = query.get("after", [None])[0]

        def found(stored: Stored | None) -> bytes:
            if stored is None:
                raise store.not_found(response_id)
            request.setHeader(b"Content-Type", JSON)
            return store.item_list(store.input_items(stored, self.ids), limit, order, after)

        return self.store.get(response_id).addCallback(found)


def _page_size(value: str) -> int:
    try:
        limit = int(value)
    except ValueError:
        raise errors.invalid_type("limit", "an integer", value) from None
    if limit < 1:
        raise errors.below_min("limit", 1, limit)
    if limit > MAX_PAGE:
        raise errors.above_max("limit", MAX_PAGE, limit)
    return limit


class ResponsesDialect(Dialect):
    """``POST /v1/responses``."""

    kind = CHAT

    def __init__(self, responses: Responses) -> None:
        self.responses = responses
        self.api = responses.api
        self.clock = responses.clock
        self.limits = responses.limits

    def parse(self, request: Request) -> ResponsesAnswer:
        content_type = request.getHeader(b"content-type")
        if content_type is not None and not _is_json(content_type):
            raise errors.unsupported_content_type(content_type.decode("latin-1"))
        body = parse_body(request.content.read(), self.limits)
        wanted, params = responses(body, self.limits)
        answer = ResponsesAnswer(self, request, wanted, params)
        if params.previous is not None:
            earlier = self.responses.previous(request, params.previous)
            wanted.prompt_tokens += earlier.context_tokens
            answer.earlier = earlier
        answered = set(params.calls)
        if answer.earlier is not None:
            answered.update(answer.earlier.calls)
        for _, call_id in params.outputs:
            if call_id not in answered:
                raise unanswered_call(call_id)
        return answer


class ResponsesAnswer(Answer):
    """One Response on its way: its ids, its output items, its object, its store."""

    __slots__ = ("arrived", "earlier", "events_", "id", "output", "params", "response")

    #: Hooked for ``waiting``: the lifecycle events go out at admission.
    hooked = True
    dialect: ResponsesDialect

    def __init__(
        self,
        dialect: ResponsesDialect,
        request: Request,
        wanted: GenerationRequest,
        params: Params,
    ) -> None:
        super().__init__(dialect, request, wanted)
        self.params = params
        self.earlier: Stored | None = None
        self.events_: ResponseEvents | None = None

    def resolve(self) -> ServedModel:
        core = self.dialect.responses.core
        name = self.wanted.model
        served = core.model(name)
        if served is None:
            raise unknown_model(name)
        if not core.serves(served, CHAT):
            raise unsupported_model(name)
        self.served = served
        return served

    def begin(self, plan: Plan, cut: int | None) -> None:
        responses = self.dialect.responses
        self.plan = plan
        self.arrived = responses.clock.seconds()
        ids = responses.ids
        self.id = ids.make("resp")
        self.output: list[Item] = render.items(plan.choices[0], responses.view, ids)
        self.response = Response(self.id, int(self.arrived), render.echo(self.params.echo()))

    def body(self) -> bytes:
        clock = self.dialect.clock
        now = clock.seconds()
        self.request.setHeader(b"openai-processing-ms", b"%d" % round((now - self.arrived) * 1000))
        plan = self.plan
        body = b"".join(
            self.response.pieces(
                render.status_of(plan),
                self.output,
                render.usage(plan, plan.prompt_tokens),
                int(now),
            )
        )
        self._store(body)
        return body

    def events(self) -> ResponseEvents:
        plan = self.plan
        events = self.events_ = ResponseEvents(
            plan,
            self.response,
            self.output,
            lambda: render.usage(plan, plan.prompt_tokens),
            self.dialect.clock.seconds,
            self._store,
        )
        return events

    def waiting(self, stream: StreamProducer) -> None:
        """Admitted: ``response.created`` and ``.in_progress`` go out now, before any token."""
        events = self.events_
        if events is not None and not events.announced:
            self.request.write(b"".join(events.announce()))

    def ended(self, _: None, stream: StreamProducer) -> None:
        """Over: the events hold this answer (to store it); it lets go of them."""
        self.events_ = None

    def _store(self, body: bytes) -> None:
        """The finished answer, kept when the request asked for it (``store``, the default)."""
        params = self.params
        if not params.store:
            return
        plan = self.plan
        calls = tuple(item.call_id for item in self.output if item.kind == render.FUNCTION)
        self.dialect.responses.store.add(
            Stored(
                self.id,
                body,
                dumps(params.input),
                plan.prompt_tokens + plan.completion_tokens,
                calls,
                int(self.arrived),
            )
        )
