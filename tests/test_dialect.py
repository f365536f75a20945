"""
A new API is one module and one registration: a made-up dialect, defined
here as its module would be, routed on a Klein app of its own and served
end to end by the production site and dispatcher over the one pipeline --
with the shared simulation's pacing, the gate's rate limits, faults and its
own error envelope, and nothing of OpenAI's or OpenRouter's.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from klein import Klein
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from mockoai.apierror import APIError
from mockoai.dialects.openai import validate
from mockoai.interfaces import Request
from mockoai.ops.config import CHAT, ModelSpec, Settings
from mockoai.ops.stats import Stats
from mockoai.pipeline.dialect import Answer, Dialect
from mockoai.pipeline.errors import Envelopes
from mockoai.pipeline.faults import Fault, Faults
from mockoai.pipeline.gate import Gate
from mockoai.pipeline.generate import Pipeline, Result
from mockoai.pipeline.ids import IdMaker
from mockoai.pipeline.limits import RateLimits
from mockoai.pipeline.media import dumps
from mockoai.pipeline.stream import Pieces
from mockoai.sim.core import Core, ServedModel
from mockoai.sim.sampling import ChoicePlan, Plan
from mockoai.sim.tokens import count_text
from mockoai.wire.dispatch import Router
from mockoai.wire.site import MockSite
from tests.support import EPOCH, Client, Response, sse_data

MODEL = "echo-1"

# --- the dialect's module -------------------------------------------------------


def echo_envelope(error: APIError) -> bytes:
    return b'{"problem":%s,"status":%d}' % (dumps(error.message), error.status)


class EchoDialect(Dialect):
    """``POST /echo/say``: ``{"model", "messages"}`` in, ``{"id", "said"}`` out."""

    kind = CHAT
    envelope = staticmethod(echo_envelope)

    def __init__(self, core: Core) -> None:
        self.core = core
        self.count = 0

    def parse(self, request: Request) -> EchoAnswer:
        return EchoAnswer(self, request, validate.chat(validate.parse_body(request.content.read())))


class EchoAnswer(Answer):
    __slots__ = ("id",)

    dialect: EchoDialect

    def resolve(self) -> ServedModel:
        served = self.dialect.core.model(self.wanted.model)
        if served is None:
            raise APIError(404, f"no {self.wanted.model} here")
        self.served = served
        return served

    def begin(self, plan: Plan, cut: int | None) -> None:
        self.plan = plan
        self.dialect.count += 1
        self.id = b"echo-%d" % self.dialect.count
        self.request.setHeader(b"X-Echo-Id", self.id)

    def body(self) -> bytes:
        view = self.dialect.core.corpus.view
        said = b"".join(bytes(view[c.start : c.end]) for c in self.plan.choices)
        return b'{"id":"%s","said":"%s"}' % (self.id, said)

    def events(self) -> EchoEvents:
        return EchoEvents(self.dialect.core.corpus.view)

    def mid_stream_error(self) -> APIError:
        return APIError(500, "echo lost")


class EchoEvents:
    """One ``data:`` line per slice of text; ``bye`` at the end."""

    def __init__(self, view: memoryview) -> None:
        self.view = view
        self.sent = 0

    def opening(self, choice: ChoicePlan) -> Pieces:
        return [b"data: hello\n\n"]

    def content(self, choice: ChoicePlan, event: int) -> Pieces:
        counts, bounds = choice.counts, choice.bounds
        self.sent += counts[event] - (counts[event - 1] if event else 0)
        return [b"data: ", self.view[bounds[event] : bounds[event + 1]], b"\n\n"]

    def finish(self, choice: ChoicePlan) -> Pieces:
        return [b"data: %s\n\n" % choice.finish_reason.encode()]

    def closing(self) -> Pieces:
        return [b"data: bye\n\n"]

    def error_event(self, error: APIError) -> Pieces:
        return [b"data: ", echo_envelope(error), b"\n\n"]


# --- its registration: a route, and the wiring --------------------------------


class EchoRoutes:
    app = Klein()

    def __init__(self, say: Pipeline) -> None:
        self.say_pipeline = say

    @app.route("/echo/say", methods=["POST"])
    def say(self, request: Request) -> Result:
        return self.say_pipeline.generate(request)


def serve(rpm: int = 0, **settings: Any) -> tuple[MockSite, EchoDialect, Clock]:
    clock = Clock()
    clock.advance(EPOCH)
    values = {"articles": 64, "tokens_mean": 12.0, "tokens_stddev": 0.0, **settings}
    core = Core(Settings.from_values(models=(ModelSpec(MODEL),), **values), clock)
    dialect = EchoDialect(core)
    gate = Gate(core.planner, RateLimits(clock, rpm=rpm))
    routes = EchoRoutes(Pipeline(dialect, core, gate, Stats()))
    router = Router(routes.app)
    site = MockSite(routes.app.resource(), router, clock, IdMaker(), 1 << 20, 0.0)  # type: ignore[arg-type]
    site.envelopes = Envelopes(echo_envelope)
    return site, dialect, clock


class Once(Faults):
    def __init__(self, fault: Fault) -> None:
        self.fault: Fault | None = fault

    def draw(self, request: Any, wanted: Any, served: Any, plan: Any) -> Fault | None:
        fault, self.fault = self.fault, None
        return fault


class EchoTests(TestCase):
    def setUp(self) -> None:
        self.use()

    def use(self, **settings: Any) -> None:
        self.site, self.dialect, clock = serve(response_delay=0.5, itl=0.01, **settings)
        self.client = Client(SimpleNamespace(site=self.site, clock=clock))  # type: ignore[arg-type]

    def say(self, **extra: Any) -> Response:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **extra}
        return self.client.post("/echo/say", body)

    def test_plain(self) -> None:
        response = self.say(max_tokens=5, ignore_eos=True)
        self.assertEqual(response.status, 200, response.body)
        self.assertEqual(response.header("Content-Type"), "application/json")
        self.assertEqual(response.header("X-Echo-Id"), "echo-1")
        said = json.loads(response.body)["said"]
        self.assertEqual(count_text(said), 5)
        self.assertAlmostEqual(self.client.clock.seconds(), EPOCH + 0.5 + 4 * 0.01, delta=1e-3)

    def test_streamed(self) -> None:
        response = self.say(max_tokens=5, ignore_eos=True, stream=True)
        self.assertEqual(response.header("Content-Type"), "text/event-stream; charset=utf-8")
        events = sse_data(response.body)
        self.assertEqual((events[0], events[-2:]), ("hello", ["length", "bye"]))
        self.assertEqual(count_text("".join(events[1:-2])), 5)

    def test_errors_in_its_envelope(self) -> None:
        response = self.say(model="nope")
        self.assertEqual(response.status, 404)
        self.assertEqual(response.body, b'{"problem":"no nope here","status":404}')
        invalid = self.say(messages=[])
        self.assertEqual(invalid.status, 400)
        self.assertEqual(set(invalid.json()), {"problem", "status"})
        self.use(rpm=1)
        self.assertEqual(self.say().status, 200)
        limited = self.say()
        self.assertEqual(limited.status, 429)
        self.assertIn("Rate limit reached", limited.json()["problem"])

    def test_faults(self) -> None:
        self.dialect.faults = Once(Fault(after=2))
        events = sse_data(self.say(max_tokens=5, ignore_eos=True, stream=True).body)
        self.assertEqual(events[-1], '{"problem":"echo lost","status":500}')
        self.assertNotIn("bye", events)
        self.dialect.faults = Once(Fault(after=2))
        broken = self.say(max_tokens=5, ignore_eos=True)
        self.assertEqual((broken.status, broken.json()["problem"]), (500, "echo lost"))
