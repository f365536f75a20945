# -*- test-case-name: tests.test_responses -*-
"""
OpenRouter's Responses API, ``/api/v1/responses``: OpenAI's request and
Response object (L{mockoai.dialects.openai.responses_validate},
L{mockoai.dialects.openai.responses_render}) around everything OpenRouter
does to a generation (L{mockoai.dialects.openrouter.dialect}): its key and
credits, ``models`` fallbacks and ``provider`` routing, ``gen-`` ids and
``X-Generation-Id``, ``: OPENROUTER PROCESSING`` comments while a stream
waits, its configured failures, its records and costs.

What is OpenRouter's own in the answer: the ``gen-`` id, the model that
answered (a fallback, maybe), usage with its ``cost`` and ``cost_details``,
and no store: OpenRouter's Responses API is stateless, so ``store`` is
always false and ``previous_response_id`` is refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from mockoai.dialects.openai import responses_render as render
from mockoai.dialects.openai.responses_render import Item, Response, ResponseEvents
from mockoai.dialects.openai.responses_store import ResponseIds
from mockoai.dialects.openai.responses_validate import Params, parse_body, responses
from mockoai.dialects.openrouter import errors, routing
from mockoai.dialects.openrouter.api import OpenRouter, api_key
from mockoai.dialects.openrouter.dialect import RouterAnswer, RouterDialect
from mockoai.dialects.openrouter.dialect import _first_visible as first_visible
from mockoai.dialects.openrouter.render import _number as number
from mockoai.ops.config import CHAT

if TYPE_CHECKING:
    from mockoai.interfaces import Request
    from mockoai.pipeline.stream import StreamProducer
    from mockoai.sim.request import GenerationRequest
    from mockoai.sim.sampling import Plan


def stateless() -> errors.RouterError:
    return errors.invalid(
        "previous_response_id is not supported: OpenRouter's Responses API is stateless. "
        "Send the whole conversation as input."
    )


class RouterResponsesDialect(RouterDialect):
    """``/api/v1/responses``."""

    def __init__(self, api: OpenRouter) -> None:
        super().__init__(api, CHAT)
        self.path = "responses"
        self.ids = ResponseIds()
        self.view = api.core.corpus.view

    def parse(self, request: Request) -> RouterResponsesAnswer:
        """The key, the body (``models[0]`` standing in for a missing ``model``), the credits."""
        arrived = self.clock.seconds()
        key = api_key(request)
        body = parse_body(request.content.read(), self.limits)
        fallbacks = body.get("models")
        if not body.get("model") and isinstance(fallbacks, list) and fallbacks:
            body["model"] = fallbacks[0]
        wanted, params = responses(body, self.limits)
        if params.previous is not None:
            raise stateless()
        params.store = False
        api = self.api
        extras = routing.parse(body, wanted.model, api.router.providers)
        api.accounts.check(key, arrived)
        return RouterResponsesAnswer(self, request, wanted, body, extras, key, arrived, params)


class RouterResponsesAnswer(RouterAnswer):
    """A routed Response: OpenRouter's record and costs, OpenAI's object and events."""

    __slots__ = ("output", "params", "response")

    dialect: RouterResponsesDialect

    def __init__(
        self,
        dialect: RouterResponsesDialect,
        request: Request,
        wanted: GenerationRequest,
        body: dict[str, object],
        extras: routing.Extras,
        key: str,
        arrived: float,
        params: Params,
    ) -> None:
        super().__init__(dialect, request, wanted, body, extras, key, arrived)
        self.params = params

    def begin(self, plan: Plan, cut: int | None) -> None:
        super().begin(plan, cut)
        dialect = self.dialect
        params = self.params
        params.model = self.renderer.model  # the model that answers, a fallback maybe
        self.output: list[Item] = render.items(plan.choices[0], dialect.view, dialect.ids)
        self.response = Response(self.gid, int(self.arrived), render.echo(params.echo()))

    def usage(self) -> bytes:
        """OpenAI's usage object with OpenRouter's costs in it."""
        plan = self.plan
        prompt, output = plan.prompt_tokens, plan.completion_tokens
        prompt_cost, output_cost, cost = self.renderer.costs.of(prompt, output)
        return (
            b'{"input_tokens":%d,"input_tokens_details":{"cached_tokens":0,"cache_write_tokens":0},'
            b'"output_tokens":%d,"output_tokens_details":{"reasoning_tokens":%d},'
            b'"total_tokens":%d,"cost":%s,"is_byok":false,"cost_details":'
            b'{"upstream_inference_cost":null,"upstream_inference_input_cost":%s,'
            b'"upstream_inference_output_cost":%s}}'
            % (
                prompt,
                output,
                plan.reasoning_tokens,
                prompt + output,
                number(cost),
                number(prompt_cost),
                number(output_cost),
            )
        )

    def body(self) -> bytes:
        plan = self.plan
        finish = plan.choices[0].finish_reason if plan.choices else "stop"
        self._record(plan.completion_tokens, finish, False, first_visible(plan))
        now = int(self.dialect.clock.seconds())
        pieces = self.response.pieces(render.status_of(plan), self.output, self.usage(), now)
        return b"".join(pieces)

    def events(self) -> ResponseEvents:  # type: ignore[override]
        events = ResponseEvents(
            self.plan,
            self.response,
            self.output,
            self.usage,
            self.dialect.clock.seconds,
            _nowhere,
        )
        events.first = self._first
        self.stream_events = events  # type: ignore[assignment]
        self.processing = self.dialect.api.processing(self.served.pacer)
        return events

    def waiting(self, stream: StreamProducer) -> None:
        """The lifecycle events at admission, then comments until the first token."""
        events = cast(ResponseEvents, self.stream_events)
        if not events.announced:
            self.request.write(b"".join(events.announce()))
        super().waiting(stream)


def _nowhere(body: bytes) -> None:
    """Where a finished OpenRouter Response is kept: nowhere (stateless)."""
