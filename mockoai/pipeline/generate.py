# -*- test-case-name: tests.test_dialect -*-
"""
The one generation pipeline, for every dialect and both endpoints:

    parse -> resolve the model -> gate -> plan -> faults -> answer

The dialect (L{mockoai.pipeline.dialect}) parses and resolves, and renders
the answer; everything between is the same for every API.  The engine's
admission happens when the answer is submitted to it (a refusal there is
raised before any byte is written, as every refusal up to the answer is).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Union

from twisted.internet.defer import Deferred

from mockoai.apierror import APIError
from mockoai.pipeline import faults
from mockoai.pipeline.media import EVENT_STREAM, JSON
from mockoai.pipeline.outcome import Outcome, attach
from mockoai.pipeline.stream import StreamProducer, after_tokens

if TYPE_CHECKING:
    from mockoai.interfaces import Request
    from mockoai.ops.stats import Stats
    from mockoai.pipeline.dialect import Answer, Dialect
    from mockoai.pipeline.faults import Fault
    from mockoai.pipeline.gate import Gate
    from mockoai.sim.core import Core, ServedModel
    from mockoai.sim.sampling import Plan

#: What a route returns: a body now, or a Deferred of it (None for a stream,
#: which writes itself).
Result = Union[bytes, "Deferred[bytes]", "Deferred[None]"]


class Pipeline:
    """Answers one endpoint's generation requests in ``dialect``."""

    def __init__(
        self,
        dialect: Dialect,
        core: Core,
        gate: Gate,
        stats: Stats,
        streams: set[StreamProducer] | None = None,
    ) -> None:
        self.dialect = dialect
        self.planner = core.planner
        self.gate = gate
        self.stats = stats
        #: The streams running (shared by the pipelines of a service, for its drain).
        self.streams: set[StreamProducer] = set() if streams is None else streams

    def generate(self, request: Request) -> Result:
        dialect = self.dialect
        # Parse: the body, validated (with the API's own checks: keys, credits).
        answer = dialect.parse(request)
        wanted = answer.wanted
        # Resolve the model (OpenRouter: fallbacks, providers, moderation).
        served = answer.resolve()
        model = served.spec.id
        # Recorded into through the request's record, which the finish hook reads.
        stats = attach(
            request, self.stats.for_model(model), model, wanted.stream, wanted.prompt_tokens
        )
        stats.arrived()
        try:
            # Gate: the rate limits (engine admission comes at submission).
            self.gate.charge(request, wanted, served)
            plan = self.planner.plan(wanted, served.profile)
            fault = None
            if dialect.faults is not None:
                fault = dialect.faults.draw(request, wanted, served, plan)
                if fault is not None:
                    if fault.refusal is not None:
                        raise fault.refusal
                    if fault.silent:
                        return faults.silent(request, fault.end, wanted.stream, stats)
                    if fault.plan is not None:
                        plan = fault.plan
            answer.begin(plan, None if fault is None else fault.after)
            if wanted.stream:
                return self._stream(request, answer, served, plan, stats, fault)
            return self._reply(request, answer, served, plan, stats, fault)
        except APIError as error:
            refusal = dialect.refusal
            if refusal is None:
                stats.refused(error.status)
                raise
            error = refusal(error, request)
            stats.refused(error.status)
            raise error from None

    def _stream(
        self,
        request: Request,
        answer: Answer,
        served: ServedModel,
        plan: Plan,
        stats: Outcome,
        fault: Fault | None,
    ) -> Deferred[None]:
        """An SSE answer, paced token by token; headers go out on admission."""
        request.setHeader(b"Content-Type", EVENT_STREAM)
        request.setHeader(b"Cache-Control", b"no-cache")
        hooked = answer.hooked
        producer = StreamProducer(
            request,
            plan,
            answer.events(),
            served.pacer,
            served.engine if fault is None or not fault.timed else None,
            stats,
            answer if hooked else None,
            self.dialect.envelope,
            self.streams,
        )
        if fault is not None and fault.after is not None:
            faults.cut_stream(producer, fault.after, answer.mid_stream_error(), fault.end)
        done = producer.start()
        if hooked:
            done.addCallback(answer.ended, producer)
        return done

    def _reply(
        self,
        request: Request,
        answer: Answer,
        served: ServedModel,
        plan: Plan,
        stats: Outcome,
        fault: Fault | None,
    ) -> bytes | Deferred[bytes]:
        """The whole body once its last token is out (or the error, once the cut is)."""
        request.setHeader(b"Content-Type", JSON)
        engine, pacer = served.engine, served.pacer
        if fault is None:
            result = after_tokens(engine, pacer, plan, plan.tokens, answer.body, stats)
        else:
            if fault.timed:
                engine = None
            cut = fault.after
            if cut is None:
                result = after_tokens(engine, pacer, plan, plan.tokens, answer.body, stats)
            elif fault.end == faults.ERROR_EVENT:
                # Not counted as answered (it was not): as failed once its
                # error goes out (L{Answer.broken}), as cancelled if the client leaves first.
                result = after_tokens(engine, pacer, plan, faults.steps(plan, cut), answer.broken)
                if isinstance(result, Deferred):
                    result.addErrback(faults.count_cancel, stats)
            else:
                result = faults.cut_plain(
                    request,
                    engine,
                    pacer,
                    plan,
                    cut,
                    fault.end,
                    answer.body,
                    stats,
                    self.dialect.envelope,
                )
        if answer.hooked and isinstance(result, Deferred):
            result.addErrback(answer.abandoned)
        return result
