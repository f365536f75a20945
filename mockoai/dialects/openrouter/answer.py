# -*- test-case-name: tests.test_openrouter -*-
"""
One OpenRouter generation on its way out: streamed or plain, whole or
broken off, and its L{Generation} record (with its cost) once it is over.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Union

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

from mockoai.dialects.openrouter import errors
from mockoai.dialects.openrouter.render import RouterEvents
from mockoai.dialects.openrouter.routing import Route
from mockoai.dialects.openrouter.store import Generation
from mockoai.dialects.openrouter.stream import RouterStream, after_tokens
from mockoai.ops.config import CHAT
from mockoai.ops.stats import Recorder
from mockoai.pipeline.stream import completed, delayed
from mockoai.pipeline.validate import GenerationRequest
from mockoai.sim.sampling import Plan

if TYPE_CHECKING:
    from mockoai.dialects.openrouter.api import OpenRouter
    from mockoai.interfaces import Request

JSON = b"application/json"
EVENT_STREAM = b"text/event-stream; charset=utf-8"

Result = Union[bytes, "Deferred[bytes]", "Deferred[None]"]


class Caller:
    """Who asked: the API key and the attribution headers OpenRouter records."""

    __slots__ = ("key", "origin", "title", "user")

    def __init__(self, key: str, origin: str, title: str | None, user: str | None) -> None:
        self.key = key
        self.origin = origin
        self.title = title
        self.user = user


class Answer:
    """One routed, planned generation on its way out, and its record when done."""

    def __init__(
        self,
        api: OpenRouter,
        route: Route,
        plan: Plan,
        gid: str,
        arrived: float,
        reasoning: int,
        caller: Caller,
        request: GenerationRequest,
        stats: Recorder | None = None,
    ) -> None:
        self.api = api
        self.served = route.served
        self.renderer = api.renderer(route.served.spec, route.provider)
        self.plan = plan
        self.gid = gid
        self.arrived = arrived
        self.reasoning = reasoning
        self.caller = caller
        self.streamed = request.stream
        self.stats = stats

    def stream(self, request: Request, kind: str, fail_after: int | None) -> Deferred[None]:
        """Stream it, paced like an OpenAI stream; record it when it ends, however it ends."""
        request.setHeader(b"Content-Type", EVENT_STREAM)
        request.setHeader(b"Cache-Control", b"no-cache")
        renderer = self.renderer
        make = renderer.chat_stream if kind == CHAT else renderer.completion_stream
        events = make(self.plan, self.gid, int(self.arrived), self.reasoning, fail_after)
        served = self.served
        producer = RouterStream(
            request,
            self.plan,
            events,
            served.pacer,
            served.engine,
            self.api.processing(served.pacer),
            self.stats,
        )
        done = producer.start()
        done.addCallback(self._streamed, events, producer)
        return done

    def _streamed(self, _: None, events: RouterEvents, producer: RouterStream) -> None:
        now = self.api.clock.seconds()
        started = events.started
        if events.failed:
            finish: str | None = "error"
        elif events.closed:
            finish = self.plan.choices[0].finish_reason if self.plan.choices else "stop"
        else:
            finish = None
        first = producer.first_at if producer.first_at is not None else now
        self._record(
            events.sent + (self.reasoning if started else 0),
            finish,
            cancelled=not (events.closed or events.failed),
            latency=first - self.arrived,
            now=now,
        )

    def reply(self, request: Request, kind: str, fail_after: int | None) -> Result:
        """
        The whole body once its last token is out -- or, for a generation
        that breaks, OpenRouter's error in a 200 body once the failing token is.
        """
        request.setHeader(b"Content-Type", JSON)
        plan = self.plan
        served = self.served
        if fail_after is not None:
            steps = max(1, -(-fail_after // max(len(plan.choices), 1)))

            def broken() -> bytes:
                self._record(fail_after + self.reasoning, "error", False, plan.ttft)
                spec = self.served.spec
                return errors.mid_stream(spec.id, self.renderer.provider).body()

            if served.engine is not None:
                return self._billed(after_tokens(served.engine, plan, steps, broken), fail_after)
            return self._billed(
                delayed(served.pacer, plan.timing.at(steps - 1), broken), fail_after
            )

        body = self.renderer.chat_body if kind == CHAT else self.renderer.completion_body

        def render() -> bytes:
            finish = plan.choices[0].finish_reason if plan.choices else "stop"
            self._record(plan.completion_tokens + self.reasoning, finish, False, plan.ttft)
            return body(plan, self.gid, int(self.arrived), self.reasoning)

        if served.engine is not None:
            return self._billed(completed(served.engine, plan, render, self.stats), None)
        return self._billed(delayed(served.pacer, plan.duration(), render, self.stats, plan), None)

    def _billed(self, result: bytes | Deferred[bytes], fail_after: int | None) -> Result:
        """
        A client that leaves a non-streaming request early is still billed in
        full, as OpenRouter does: the provider goes on generating.
        """
        if isinstance(result, Deferred):
            result.addErrback(self._abandoned, fail_after)
        return result

    def _abandoned(self, failure: Failure, fail_after: int | None) -> Failure:
        if failure.check(CancelledError):
            plan = self.plan
            if fail_after is None:
                tokens = plan.completion_tokens + self.reasoning
                finish = plan.choices[0].finish_reason if plan.choices else "stop"
            else:
                tokens, finish = fail_after + self.reasoning, "error"
            self._record(tokens, finish, True, plan.ttft)
        return failure

    def _record(
        self,
        completion_tokens: int,
        finish: str | None,
        cancelled: bool,
        latency: float,
        now: float | None = None,
    ) -> None:
        api = self.api
        now = api.clock.seconds() if now is None else now
        prompt = self.plan.prompt_tokens
        prompt_cost, completion_cost, cost = self.renderer.costs.of(prompt, completion_tokens)
        caller = self.caller
        api.record(
            Generation(
                id=self.gid,
                key=caller.key,
                model=self.renderer.model,
                provider=self.renderer.provider,
                created=self.arrived,
                api_type="completions",
                streamed=self.streamed,
                cancelled=cancelled,
                finish_reason=finish,
                prompt_tokens=prompt,
                completion_tokens=completion_tokens,
                reasoning_tokens=self.reasoning,
                prompt_cost=prompt_cost,
                completion_cost=completion_cost,
                total_cost=cost,
                latency=latency,
                generation_time=now - self.arrived,
                origin=caller.origin,
                title=caller.title,
                user=caller.user,
                upstream_id="chatcmpl-" + self.gid.rsplit("-", 1)[-1],
            ),
            now,
        )
