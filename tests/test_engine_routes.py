"""
The engine seen through the real request path: queueing, refusals, queue
timeouts and engine-paced streams, on a Clock.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from mockoai.ops.config import ModelSpec, load_settings
from mockoai.sim.latency import constant
from tests.spec import validate
from tests.support import Client, make_service, sse_json


def chat(stream: bool = False, max_tokens: int = 5) -> dict[str, Any]:
    return {
        "model": "m",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": stream,
    }


class EngineRouteTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.service = make_service(
            models=("m",),
            response_delay=constant(0.1),
            itl=constant(0.02),
            max_running=1,
            max_waiting=1,
            queue_timeout=0.5,
        )
        self.client = Client(self.service)
        self.clock = self.service.clock

    def test_plain_answer_waits_for_the_engine(self) -> None:
        connection = self.client.send("POST", "/v1/chat/completions", chat())
        self.clock.advance(0.1 + 3 * 0.02)
        self.assertEqual(connection.responses(), [])
        self.clock.advance(0.02)
        response = connection.response()
        self.assertEqual(response.status, 200)
        body = response.json()
        validate("CreateChatCompletionResponse", body)
        self.assertEqual(body["usage"]["completion_tokens"], 5)
        self.assertEqual(response.header("openai-processing-ms"), "180")

    def test_queue_then_refusal(self) -> None:
        self.client.send("POST", "/v1/chat/completions", chat(max_tokens=50))
        second = self.client.send("POST", "/v1/chat/completions", chat())
        third = self.client.send("POST", "/v1/chat/completions", chat())
        refused = third.response()
        self.assertEqual(refused.status, 429)
        self.assertEqual(refused.json()["error"]["code"], "rate_limit_exceeded")
        validate("ErrorResponse", refused.json())
        self.assertEqual(refused.header("Retry-After"), "1")  # 50 tokens x 20 ms
        self.assertEqual(second.responses(), [])
        self.clock.advance(0.45)
        self.assertEqual(second.responses(), [])

    def test_queue_timeout_answers_with_the_envelope(self) -> None:
        self.client.send("POST", "/v1/chat/completions", chat(max_tokens=100))
        waiting = self.client.send("POST", "/v1/chat/completions", chat(stream=True))
        self.clock.advance(0.499)
        self.assertEqual(waiting.responses(), [])
        self.clock.advance(0.001)
        response = waiting.response()
        self.assertEqual(response.status, 503)
        self.assertEqual(response.header("Content-Type"), "application/json")
        self.assertEqual(response.json()["error"]["code"], "queue_timeout")
        validate("ErrorResponse", response.json())

    def test_stream_paced_by_engine_steps(self) -> None:
        connection = self.client.send("POST", "/v1/chat/completions", chat(stream=True))
        self.assertIn(b"200 OK", connection.received())  # admitted at once: headers out

        def events() -> int:
            return connection.received().count(b"data: ")

        self.assertEqual(events(), 0)
        self.clock.advance(0.0999)
        self.assertEqual(events(), 0)
        self.clock.advance(0.0001)  # prefill done: role chunk and first token
        self.assertEqual(events(), 2)
        for expected in (3, 4, 5):
            self.clock.advance(0.02)
            self.assertEqual(events(), expected)
        self.clock.advance(0.02)  # last token: content, finish, [DONE]
        self.assertEqual(events(), 8)
        chunks = sse_json(connection.response().body)
        for chunk in chunks:
            validate("CreateChatCompletionStreamResponse", chunk)
        contents = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
        self.assertEqual(len(contents), 5)

    def test_disconnect_frees_the_slot(self) -> None:
        first = self.client.send("POST", "/v1/chat/completions", chat(stream=True, max_tokens=1000))
        waiting = self.client.send("POST", "/v1/chat/completions", chat())
        self.clock.advance(0.2)
        first.disconnect()
        self.clock.advance(0.1 + 5 * 0.02)
        self.assertEqual(waiting.response().status, 200)


class ProfileTests(SynchronousTestCase):
    def test_models_with_their_own_profiles(self) -> None:
        """One process standing in for a fast small model and a slow large one."""
        settings_fast = ModelSpec(
            "fast", overrides=(("response_delay", constant(0.05)), ("itl", constant(0.005)))
        )
        settings_slow = ModelSpec(
            "slow", overrides=(("response_delay", constant(0.5)), ("itl", constant(0.05)))
        )
        service = make_service(models=(settings_fast, settings_slow))
        client = Client(service)
        fast = client.send("POST", "/v1/chat/completions", {**chat(), "model": "fast"})
        slow = client.send("POST", "/v1/chat/completions", {**chat(), "model": "slow"})
        service.clock.advance(0.05 + 4 * 0.005)
        self.assertEqual(fast.response().status, 200)
        self.assertEqual(slow.responses(), [])
        service.clock.advance(0.5 + 4 * 0.05 - 0.07)
        self.assertEqual(slow.response().status, 200)

    def test_toml_models_table(self) -> None:
        import os
        import tempfile

        with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
            f.write(
                'itl = "normal:20:2"\n'
                "[[models]]\n"
                'id = "big"\n'
                'response_delay = "lognormal:800:200"\n'
                "max_running = 32\n"
                "tokens_mean = 600\n"
                "[[models]]\n"
                'id = "small"\n'
            )
        self.addCleanup(os.unlink, f.name)
        settings = load_settings({"config": f.name}, {})
        big = settings.profile(settings.served.models[0])
        small = settings.profile(settings.served.models[1])
        self.assertEqual(big.response_delay.kind, "lognormal")
        self.assertEqual(big.engine.max_running, 32)
        self.assertEqual(big.tokens_mean, 600)
        self.assertEqual(big.itl, small.itl)
        self.assertEqual(small.engine.max_running, 0)
        self.assertEqual(small.tokens_mean, settings.served.defaults.tokens_mean)

    def test_bad_model_override(self) -> None:
        from mockoai.ops.config import ConfigError

        with self.assertRaises(ConfigError) as caught:
            load_settings({"models": [{"id": "x", "itl": "gauss:1"}]}, {})
        self.assertIn("itl: unknown distribution", str(caught.exception))
