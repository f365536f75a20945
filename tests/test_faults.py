"""
The faults seam (L{mockoai.pipeline.faults}) under both dialects, plain and
streamed, through the production request path on a fake clock: a refusal
before the first token, and an answer cut after N tokens.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase, TestCase

from mockoai.apierror import SERVER_ERROR, APIError
from mockoai.ops.config import ModelSpec, ProviderSpec
from mockoai.pipeline.faults import Fault, Faults, StreamErrors, steps
from mockoai.pipeline.generate import Pipeline
from mockoai.sim import tokens
from mockoai.sim.request import GenerationRequest
from tests.support import Client, Response, make_service, sse_data, sse_json, stream_text

MODEL = "acme/model"
KEY = {"Authorization": "Bearer sk-or-v1-faults"}
MESSAGES = [{"role": "user", "content": "Tell me about lorem ipsum, please."}]
REFUSAL = APIError(
    503,
    "The model is overloaded. Please try again later.",
    type=SERVER_ERROR,
    code="overloaded",
    headers=((b"Retry-After", b"7"),),
)
#: OpenAI's words when an answer breaks (L{mockoai.pipeline.errors.server_error}).
BROKEN = {
    "message": "The server had an error while processing your request. Sorry about that!",
    "type": "server_error",
    "param": None,
    "code": None,
}
TTFT = 0.2
ITL = 0.01


class Scripted(Faults):
    """The same fault for every request, and what it was asked."""

    def __init__(self, fault: Fault | None) -> None:
        self.fault = fault
        self.asked: list[GenerationRequest] = []

    def draw(self, request: Any, wanted: GenerationRequest, served: Any, plan: Any) -> Fault | None:
        self.asked.append(wanted)
        return self.fault


class FaultTestCase(TestCase):
    prefix = "/v1"
    headers: dict[str, str] = {}

    def setUp(self) -> None:
        self.service = make_service(
            models=(ModelSpec(MODEL, "acme"),),
            openrouter_providers=(ProviderSpec("OpenAI"),),
            tokens_mean=40.0,
            tokens_stddev=0.0,
            response_delay=TTFT,
            itl=ITL,
        )
        self.clock = self.service.clock
        self.api = self.service.api

    def pipelines(self) -> tuple[Pipeline, Pipeline]:
        return self.api.openai_chat, self.api.openai_completions

    def script(self, fault: Fault | None) -> Scripted:
        faults = Scripted(fault)
        for pipeline in self.pipelines():
            pipeline.dialect.faults = faults
        return faults

    def client(self) -> Client:
        return Client(self.service)

    def post(self, body: dict[str, Any], path: str = "chat/completions") -> Response:
        return self.client().post(f"{self.prefix}/{path}", body, headers=self.headers)

    def body(self, **extra: Any) -> dict[str, Any]:
        return {"model": MODEL, "messages": MESSAGES, "max_tokens": 30, "ignore_eos": True, **extra}

    def text(self, **extra: Any) -> dict[str, Any]:
        return {"model": MODEL, "prompt": "Once", "max_tokens": 30, "ignore_eos": True, **extra}

    def assertRefused(self, response: Response) -> dict[str, Any]:
        """The refusal's status, headers and envelope; not a byte of an answer."""
        self.assertEqual(response.status, 503, response.body)
        self.assertEqual(response.header("Content-Type"), "application/json")
        self.assertEqual(response.header("Retry-After"), "7")
        self.assertIsNone(response.header("Cache-Control"))
        error: dict[str, Any] = response.json()["error"]
        return error


class OpenAIFaultTests(FaultTestCase):
    def test_no_faults_by_default(self) -> None:
        for pipeline in self.pipelines():
            self.assertIsNone(pipeline.dialect.faults)

    def test_refusal_before_the_first_token(self) -> None:
        faults = self.script(Fault(refusal=REFUSAL))
        for stream in (False, True):
            for path, body in (("chat/completions", self.body()), ("completions", self.text())):
                error = self.assertRefused(self.post({**body, "stream": stream}, path))
                self.assertEqual(
                    error,
                    {
                        "message": REFUSAL.message,
                        "type": "server_error",
                        "param": None,
                        "code": "overloaded",
                    },
                )
        self.assertEqual(len(faults.asked), 4)
        stats = self.client().get("/stats").json()["models"][MODEL]
        self.assertEqual((stats["requests"], stats["rejected"]), (4, 4))

    def test_cut_stream_ends_on_an_error_event(self) -> None:
        self.script(Fault(after=5))
        response = self.post(self.body(stream=True, n=2))
        self.assertEqual(response.status, 200)
        self.assertTrue(response.complete)
        payloads = sse_data(response.body)
        self.assertNotIn("[DONE]", payloads)
        *chunks, last = sse_json(response.body, require_done=False)
        self.assertEqual(last, {"error": BROKEN})
        sent = sum(tokens.count_text(stream_text(chunks, i)) for i in (0, 1))
        self.assertEqual(sent, 5)
        for chunk in chunks:
            self.assertIsNone(chunk["choices"][0]["finish_reason"])

    def test_cut_text_stream_at_zero_tokens(self) -> None:
        self.script(Fault(after=0))
        response = self.post(self.text(stream=True), "completions")
        self.assertEqual(sse_json(response.body, require_done=False), [{"error": BROKEN}])

    def test_cut_plain_answer_is_the_error_once_the_token_is_out(self) -> None:
        self.script(Fault(after=5))
        connection = self.client().send(
            "POST", "/v1/chat/completions", self.body(), headers=self.headers
        )
        # Five tokens of one choice are out at ttft + 4 itl.
        self.clock.advance(TTFT + 3.5 * ITL)
        self.assertEqual(connection.responses(), [])
        self.clock.advance(ITL)
        response = connection.response()
        self.assertEqual(response.status, 500)
        self.assertEqual(response.header("Content-Type"), "application/json")
        self.assertEqual(response.json(), {"error": BROKEN})

    def test_cut_under_the_engine_frees_its_place(self) -> None:
        self.service = make_service(
            models=(ModelSpec(MODEL, "acme"),),
            tokens_mean=40.0,
            tokens_stddev=0.0,
            itl=ITL,
            max_running=1,
        )
        self.clock = self.service.clock
        self.api = self.service.api
        self.script(Fault(after=3))
        _ = sse_json(self.post(self.body(stream=True)).body, require_done=False)
        engine = self.service.core.models[MODEL].engine
        self.assertEqual(engine.used, 0)
        response = self.post(self.body())
        self.assertEqual((response.status, response.json()), (500, {"error": BROKEN}))


class OpenRouterFaultTests(FaultTestCase):
    prefix = "/api/v1"
    headers = KEY

    def pipelines(self) -> tuple[Pipeline, Pipeline]:
        return self.api.openrouter_chat, self.api.openrouter_completions

    def test_stream_errors_by_default(self) -> None:
        for pipeline in self.pipelines():
            self.assertIsInstance(pipeline.dialect.faults, StreamErrors)

    def test_refusal_before_the_first_token(self) -> None:
        self.script(Fault(refusal=REFUSAL))
        for stream in (False, True):
            for path, body in (("chat/completions", self.body()), ("completions", self.text())):
                response = self.post({**body, "stream": stream}, path)
                error = self.assertRefused(response)
                self.assertEqual(error, {"code": 503, "message": REFUSAL.message})
                # Refused before the answer began: no generation to look up.
                self.assertIsNone(response.header("X-Generation-Id"))
        self.assertEqual(len(self.api.openrouter.store), 0)

    def test_cut_stream_ends_on_an_error_event(self) -> None:
        self.script(Fault(after=4))
        response = self.post(self.body(stream=True))
        *chunks, last = sse_json(response.body, require_done=False)
        self.assertEqual(tokens.count_text(stream_text(chunks)), 4)
        self.assertEqual(
            last["error"], {"code": "server_error", "message": "Provider disconnected unexpectedly"}
        )
        self.assertEqual(last["choices"][0]["finish_reason"], "error")
        record = self.client().get(
            f"/api/v1/generation?id={response.header('X-Generation-Id')}", headers=KEY
        )
        self.assertEqual(record.json()["data"]["finish_reason"], "error")

    def test_cut_plain_answer_is_a_200_error_body(self) -> None:
        self.script(Fault(after=4))
        response = self.post(self.text(), "completions")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.json()["error"]["code"], 502)


class StreamErrorsTests(SynchronousTestCase):
    """OpenRouter's per-model options, drawn through the seam."""

    def draw(self, faults: StreamErrors, spec: ModelSpec, seed: int | None = None) -> Any:
        service = make_service(models=(spec,), tokens_mean=20.0, tokens_stddev=0.0)
        served = service.core.models[spec.id]
        wanted = GenerationRequest("chat", spec.id, 10, max_tokens=20, ignore_eos=True, seed=seed)
        plan = service.core.planner.plan(wanted, served.profile)
        return faults.draw(None, wanted, served, plan)  # type: ignore[arg-type]

    def test_rates(self) -> None:
        faults = StreamErrors(0)
        self.assertIsNone(self.draw(faults, ModelSpec("m")))
        fault = self.draw(faults, ModelSpec("m", stream_error_rate=1.0, stream_error_after=7))
        self.assertEqual((fault.refusal, fault.after), (None, 7))
        # An answer of 20 tokens ends before a failure after 21.
        late = ModelSpec("m", stream_error_rate=1.0, stream_error_after=21)
        self.assertIsNone(self.draw(faults, late))

    def test_seeded(self) -> None:
        coin = ModelSpec("m", stream_error_rate=0.5, stream_error_after=1)
        fates = {self.draw(StreamErrors(s), coin, seed=5) is None for s in range(8)}
        self.assertEqual(len(fates), 1)
        unseeded = [self.draw(StreamErrors(3), coin) is None for _ in range(2)]
        self.assertEqual(unseeded[0], unseeded[1])

    def test_steps(self) -> None:
        service = make_service(models=("m",), tokens_mean=20.0, tokens_stddev=0.0)
        wanted = GenerationRequest("chat", "m", 10, max_tokens=20, ignore_eos=True, n=3)
        plan = service.core.planner.plan(wanted)
        self.assertEqual([steps(plan, after) for after in (0, 1, 3, 4, 9)], [1, 1, 1, 2, 3])
