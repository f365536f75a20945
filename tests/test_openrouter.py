"""
OpenRouter mode (``/api/v1/...``) through the production request path.

In memory: the real service tree on a L{Clock}, requests through
L{MockSite}'s protocol and the L{Router} (L{tests.support.Client}).  One
end-to-end class starts ``twistd -n mockoai`` and drives it with the
official ``openai`` SDK pointed at ``/api/v1``.  Tests are grouped by the
numbered points of the OpenRouter-mode issue: routes (1), response shape
(2), request extras and routing (3), errors (4), generations and keys (5),
the model catalog (6), plus configuration.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from decimal import Decimal
from typing import Any, ClassVar

from twisted.trial.unittest import SynchronousTestCase, TestCase

from mockoai.dialects.openrouter.stream import COMMENT
from mockoai.ops.config import (
    DEFAULT_MODELS,
    DEFAULT_PROVIDERS,
    ConfigError,
    FailingSpec,
    ModelSpec,
    ProviderSpec,
    load_settings,
)
from mockoai.sim import tokens
from tests.optional import needs_openai, openai
from tests.spec import validate
from tests.support import (
    Client,
    Response,
    TwistdProcess,
    make_service,
    sse_data,
    sse_json,
    stream_text,
)

KEY = "sk-or-v1-0123456789abcdef0123456789abcdef"
OTHER_KEY = "sk-or-v1-fedcba9876543210fedcba9876543210"
AUTH = {"Authorization": f"Bearer {KEY}"}
GPT = "openai/gpt-4o"
LLAMA = "meta-llama/llama-3.1-8b-instruct"
BROKEN = "acme/broken"
SMALL = "acme/small-context"
PROVIDERS = (
    ProviderSpec("OpenAI"),
    ProviderSpec("Azure", price=0.8, latency=0.3, throughput=80.0),
    ProviderSpec("DeepInfra", price=1.0, latency=0.2, throughput=120.0),
    ProviderSpec("Together", price=1.5, latency=0.1, throughput=200.0),
)
MODELS = (
    ModelSpec(
        GPT, "openai", 1715367049, prompt_price=2.5e-6, completion_price=1e-5,
        providers=("OpenAI", "Azure"),
    ),
    ModelSpec(
        LLAMA, "meta-llama", 1721692800, prompt_price=2e-8, completion_price=5e-8,
        providers=("DeepInfra", "Together"),
    ),
    ModelSpec(BROKEN, "acme", prompt_price=1e-6, completion_price=2e-6),
    ModelSpec(SMALL, "acme", prompt_price=1e-6, completion_price=1e-6, context_length=64),
)  # fmt: skip
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Tell me about lorem ipsum, please."},
]
PROMPT_TOKENS = tokens.count_messages(MESSAGES)
GEN_ID = re.compile(r"^gen-\d+-[A-Za-z0-9]{29}$")
CHAT_CHUNK = "CreateChatCompletionStreamResponse"
TEXT_CHUNK = "CreateCompletionStreamResponse"


def chat(model: str = GPT, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": MESSAGES, **extra}


def completion(model: str = GPT, **extra: Any) -> dict[str, Any]:
    return {"model": model, "prompt": "Once upon a time", **extra}


def price(model: str, provider: str) -> tuple[float, float]:
    """USD per (prompt, completion) token of ``model`` on ``provider``."""
    spec = next(m for m in MODELS if m.id == model)
    factor = next(p.price for p in PROVIDERS if p.name == provider)
    return spec.prompt_price * factor, spec.completion_price * factor


class RouterTestCase(TestCase):
    """A service on a fake clock, with OpenRouter-mode settings, and a client."""

    http = "auto"
    settings: ClassVar[dict[str, Any]] = {}

    def setUp(self) -> None:
        self.use()

    def use(self, **overrides: Any) -> None:
        values: dict[str, Any] = {
            "models": MODELS,
            "openrouter_providers": PROVIDERS,
            "tokens_mean": 40.0,
            "tokens_stddev": 10.0,
            "http": self.http,
            **self.settings,
            **overrides,
        }
        self.service = make_service(**values)
        self.clock = self.service.clock
        self.core = self.service.core
        self.router = self.service.api.openrouter
        self.client = Client(self.service)

    def post(
        self, path: str, body: object, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> Response:
        headers = AUTH if headers is None else headers
        return self.client.post(f"/api/v1/{path}", body, headers=headers, **kwargs)

    def get(self, path: str, headers: dict[str, str] | None = None) -> Response:
        return self.client.get(f"/api/v1/{path}", headers=AUTH if headers is None else headers)

    def answer(self, body: dict[str, Any], path: str = "chat/completions") -> dict[str, Any]:
        response = self.post(path, body)
        self.assertEqual(response.status, 200, response.body[:400])
        self.assertEqual(response.header("Content-Type"), "application/json")
        answer: dict[str, Any] = response.json()
        self.assertEqual(response.header("X-Generation-Id"), answer["id"])
        return answer

    def stream(
        self, body: dict[str, Any], path: str = "chat/completions", done: bool = True
    ) -> tuple[Response, list[dict[str, Any]]]:
        response = self.post(path, {**body, "stream": True})
        self.assertEqual(response.status, 200, response.body[:400])
        self.assertTrue(response.complete)
        self.assertEqual(response.header("Content-Type"), "text/event-stream; charset=utf-8")
        chunks = sse_json(response.body, require_done=done)
        self.assertTrue(chunks)
        for chunk in chunks:
            self.assertEqual(chunk["id"], response.header("X-Generation-Id"))
        return response, chunks

    def error(self, response: Response, status: int) -> dict[str, Any]:
        """OpenRouter's envelope: ``code`` is the status, nothing of OpenAI's."""
        self.assertEqual(response.status, status, response.body[:400])
        self.assertEqual(response.header("Content-Type"), "application/json")
        error: dict[str, Any] = response.json()["error"]
        self.assertEqual(error["code"], status)
        self.assertTrue(error["message"])
        self.assertLessEqual(set(error), {"code", "message", "metadata"})
        return error

    def record(self, generation_id: str, key: str = KEY) -> dict[str, Any]:
        response = self.get(f"generation?id={generation_id}", {"Authorization": f"Bearer {key}"})
        self.assertEqual(response.status, 200, response.body)
        data: dict[str, Any] = response.json()["data"]
        return data

    def check_cost(self, usage: dict[str, Any], model: str, provider: str) -> None:
        """``cost`` is the tokens times the model's prices on the provider."""
        prompt_price, completion_price = price(model, provider)
        prompt_cost = usage["prompt_tokens"] * prompt_price
        completion_cost = usage["completion_tokens"] * completion_price
        self.assertAlmostEqual(usage["cost"], prompt_cost + completion_cost, delta=1e-11)
        details = usage["cost_details"]
        self.assertAlmostEqual(details["upstream_inference_prompt_cost"], prompt_cost, delta=1e-11)
        self.assertAlmostEqual(
            details["upstream_inference_completions_cost"], completion_cost, delta=1e-11
        )
        self.assertEqual(usage["total_tokens"], usage["prompt_tokens"] + usage["completion_tokens"])


# ---------------------------------------------------------------------------
# 1. Routes: every /api/v1 endpoint over the shared simulation


class RouteTests(RouterTestCase):
    def test_chat(self) -> None:
        body = self.answer(chat())
        validate("CreateChatCompletionResponse", body)
        self.assertEqual(body["object"], "chat.completion")
        [choice] = body["choices"]
        self.assertTrue(choice["message"]["content"])
        self.assertEqual(
            body["usage"]["completion_tokens"], tokens.count_text(choice["message"]["content"])
        )
        self.assertEqual(body["usage"]["prompt_tokens"], PROMPT_TOKENS)

    def test_chat_stream(self) -> None:
        _, chunks = self.stream(chat(n=2))
        for chunk in chunks:
            validate(CHAT_CHUNK, chunk)
            self.assertEqual(chunk["object"], "chat.completion.chunk")
        usage = chunks[-1]["usage"]
        sent = [tokens.count_text(stream_text(chunks, i)) for i in (0, 1)]
        self.assertEqual(usage["completion_tokens"], sum(sent))
        self.assertTrue(all(sent))

    def test_completions(self) -> None:
        body = self.answer(completion(echo=True), "completions")
        validate("CreateCompletionResponse", body)
        self.assertEqual(body["object"], "text_completion")
        self.assertTrue(body["choices"][0]["text"].startswith("Once upon a time"))

    def test_completions_stream(self) -> None:
        _, chunks = self.stream(completion(), "completions")
        *events, last = chunks
        for chunk in events:
            validate(TEXT_CHUNK, chunk)
            self.assertEqual(chunk["object"], "text_completion")
        text = stream_text(events)
        self.assertEqual(last["usage"]["completion_tokens"], tokens.count_text(text))

    def test_chat_models_serve_completions_too(self) -> None:
        # OpenRouter converts between the two; the OpenAI endpoints keep refusing.
        self.use(models=(ModelSpec(GPT, "openai", endpoints=frozenset({"chat"})),))
        self.assertTrue(self.answer(completion(), "completions")["choices"][0]["text"])
        response = self.client.post("/v1/completions", completion())
        self.assertEqual(response.status, 404)

    def test_models(self) -> None:
        response = self.get("models", headers={})
        self.assertEqual(response.status, 200)
        self.assertEqual([m["id"] for m in response.json()["data"]], [m.id for m in MODELS])

    def test_model_and_endpoints(self) -> None:
        card = self.get(f"models/{LLAMA}", headers={}).json()["data"]
        self.assertEqual(card["id"], LLAMA)
        endpoints = self.get(f"models/{LLAMA}/endpoints", headers={}).json()["data"]
        self.assertEqual(endpoints["id"], LLAMA)
        self.assertEqual(
            [e["provider_name"] for e in endpoints["endpoints"]], ["DeepInfra", "Together"]
        )
        self.error(self.get("models/acme/nothing", headers={}), 404)
        self.error(self.get("models/acme/nothing/endpoints", headers={}), 404)

    def test_key_and_legacy_auth_key(self) -> None:
        for path in ("key", "auth/key"):
            data = self.get(path).json()["data"]
            self.assertEqual(data["label"], "sk-or-v1-01...def")
            self.assertEqual(data["usage"], 0.0)

    def test_credits(self) -> None:
        self.assertEqual(
            self.get("credits").json(), {"data": {"total_credits": None, "total_usage": 0.0}}
        )

    def test_unknown_path_and_method(self) -> None:
        error = self.error(self.get("nothing-here"), 404)
        self.assertEqual(error["message"], "Invalid URL (GET /api/v1/nothing-here)")
        self.error(self.get("chat/completions"), 405)

    def test_openai_endpoints_unchanged(self) -> None:
        body = self.client.post("/v1/chat/completions", chat()).json()
        self.assertTrue(body["id"].startswith("chatcmpl-"))
        self.assertNotIn("provider", body)
        error = self.client.post("/v1/chat/completions", {}).json()["error"]
        self.assertEqual(set(error), {"message", "type", "param", "code"})


class TwistedStackRouteTests(RouteTests):
    """The same routes on twisted.web's HTTP/1.1 stack."""

    http = "twisted"


# ---------------------------------------------------------------------------
# 2. What OpenRouter's responses add


class ResponseShapeTests(RouterTestCase):
    def test_ids_provider_native_finish_reason(self) -> None:
        body = self.answer(chat(n=2))
        self.assertRegex(body["id"], GEN_ID)
        self.assertEqual(body["provider"], "OpenAI")
        self.assertEqual(body["model"], GPT)
        for choice in body["choices"]:
            self.assertIn(choice["finish_reason"], ("stop", "length"))
            self.assertEqual(choice["native_finish_reason"], choice["finish_reason"])
            self.assertIsNone(choice["message"]["reasoning"])

    def test_usage_cost_and_details(self) -> None:
        usage = self.answer(chat(max_tokens=7, ignore_eos=True))["usage"]
        self.assertEqual(usage["completion_tokens"], 7)
        self.check_cost(usage, GPT, "OpenAI")
        self.assertEqual(usage["cost"], PROMPT_TOKENS * 2.5e-6 + 7 * 1e-5)
        self.assertEqual(usage["prompt_tokens_details"]["cached_tokens"], 0)
        self.assertEqual(usage["completion_tokens_details"]["reasoning_tokens"], 0)
        self.assertIs(usage["is_byok"], False)
        self.assertIsNone(usage["cost_details"]["upstream_inference_cost"])

    def test_stream_always_ends_with_usage(self) -> None:
        for options in ({}, {"stream_options": {"include_usage": False}}):
            response, chunks = self.stream(chat(**options))
            *events, last = chunks
            self.assertEqual(last["choices"], [])
            self.check_cost(last["usage"], GPT, "OpenAI")
            for chunk in events:
                self.assertNotIn("usage", chunk)
                self.assertEqual(chunk["provider"], "OpenAI")
                [choice] = chunk["choices"]
                self.assertEqual(choice["native_finish_reason"], choice["finish_reason"])
            self.assertEqual(events[-1]["choices"][0]["delta"], {})
            self.assertTrue(response.body.endswith(b"\n\ndata: [DONE]\n\n"))

    def test_text_stream_native_finish_reason(self) -> None:
        _, chunks = self.stream(completion(max_tokens=4, ignore_eos=True), "completions")
        finish = chunks[-2]["choices"][0]
        self.assertEqual(finish["finish_reason"], "length")
        self.assertEqual(finish["native_finish_reason"], "length")
        self.assertEqual(chunks[-1]["usage"]["completion_tokens"], 4)

    def test_processing_comments_while_the_first_token_is_pending(self) -> None:
        self.use(response_delay=2.5, openrouter_processing_interval=1.0)
        response, chunks = self.stream(chat(max_tokens=3))
        blocks = response.body.split(b"\n\n")
        comments = [i for i, b in enumerate(blocks) if b + b"\n\n" == COMMENT]
        first_data = next(i for i, b in enumerate(blocks) if b.startswith(b"data: "))
        # At the headers, then at 1 s and 2 s; the first token comes at 2.5 s.
        self.assertEqual(comments, [0, 1, 2])
        self.assertEqual(first_data, 3)
        self.assertEqual(len(chunks), 1 + 3 + 1 + 1)

    def test_no_comments_when_the_first_token_is_not_pending(self) -> None:
        self.use(openrouter_processing_interval=1.0)
        response, _ = self.stream(chat())
        self.assertNotIn(COMMENT, response.body)
        self.use(response_delay=2.5, openrouter_processing_interval=0.0)
        response, _ = self.stream(chat())
        self.assertNotIn(COMMENT, response.body)

    def test_comments_share_one_beat_per_model(self) -> None:
        self.use(response_delay=2.5, openrouter_processing_interval=1.0)
        pacer = self.core.models[GPT].pacer
        connections = [
            self.client.send("POST", "/api/v1/chat/completions", chat(stream=True), headers=AUTH)
            for _ in range(50)
        ]
        processing = self.router.processing(pacer)
        self.assertEqual(len(processing.waiting), 50)
        # One waiter per stream for its first token, plus ONE for all comments.
        self.assertEqual(len(pacer), 51)
        self.clock.advance(1.0)
        self.assertEqual(processing.beats, 1)
        for connection in connections:
            self.assertEqual(connection.received().count(COMMENT), 2)
        self.clock.advance(1.6)
        self.assertEqual(processing.waiting, {})
        for connection in connections:
            body = connection.response().body
            self.assertEqual(body.count(COMMENT), 3)
            self.assertIn(b'"delta":{"content":"', body)


# ---------------------------------------------------------------------------
# 3. Request extras: fallbacks, provider preferences, transforms, reasoning


class FallbackTests(RouterTestCase):
    settings: ClassVar[dict[str, Any]] = {
        "openrouter_failing_models": (FailingSpec(BROKEN, None, 502),)
    }

    def test_failing_primary_falls_back(self) -> None:
        body = self.answer(chat(BROKEN, models=[LLAMA]))
        self.assertEqual(body["model"], LLAMA)
        self.assertEqual(body["provider"], "DeepInfra")
        # Billed at the price of the model that answered.
        self.check_cost(body["usage"], LLAMA, "DeepInfra")
        record = self.record(body["id"])
        self.assertEqual(record["model"], LLAMA)
        self.assertEqual(record["total_cost"], body["usage"]["cost"])

    def test_failing_primary_without_fallback(self) -> None:
        error = self.error(self.post("chat/completions", chat(BROKEN)), 502)
        # Every provider was tried; the last one's error is the answer.
        self.assertEqual(error["metadata"]["provider_name"], "Together")

    def test_unknown_primary_falls_back(self) -> None:
        body = self.answer(chat("nobody/unknown", models=[BROKEN, GPT]))
        self.assertEqual(body["model"], GPT)
        error = self.error(self.post("chat/completions", chat("nobody/unknown")), 400)
        self.assertEqual(error["message"], "nobody/unknown is not a valid model ID")

    def test_last_error_wins(self) -> None:
        response = self.post("chat/completions", chat("nobody/unknown", models=[BROKEN]))
        self.error(response, 502)

    def test_models_without_model(self) -> None:
        body = self.answer({"models": [BROKEN, LLAMA], "messages": MESSAGES})
        self.assertEqual(body["model"], LLAMA)

    def test_streams_fall_back_too(self) -> None:
        _, chunks = self.stream(chat(BROKEN, models=[GPT]))
        self.assertEqual({c["model"] for c in chunks}, {GPT})

    def test_any_model_serves_unknown_names(self) -> None:
        self.use(any_model=True)
        body = self.answer(chat("someone/new-model"))
        self.assertEqual(body["model"], "someone/new-model")
        self.assertEqual(body["provider"], "OpenAI")


class ProviderRoutingTests(RouterTestCase):
    def provider(self, model: str = GPT, **preferences: Any) -> str:
        provider: str = self.answer(chat(model, provider=preferences))["provider"]
        return provider

    def test_default_is_the_model_first_provider(self) -> None:
        self.assertEqual(self.provider(), "OpenAI")
        self.assertEqual(self.provider(LLAMA), "DeepInfra")

    def test_order_only_ignore(self) -> None:
        self.assertEqual(self.provider(order=["Azure"]), "Azure")
        self.assertEqual(self.provider(order=["azure", "openai"]), "Azure")
        self.assertEqual(self.provider(only=["azure"]), "Azure")
        self.assertEqual(self.provider(ignore=["OpenAI"]), "Azure")
        # A provider that exists but does not serve the model is just skipped.
        self.assertEqual(self.provider(order=["Together", "Azure"]), "Azure")

    def test_sort(self) -> None:
        self.assertEqual(self.provider(sort="price"), "Azure")
        self.assertEqual(self.provider(LLAMA, sort="price"), "DeepInfra")
        self.assertEqual(self.provider(LLAMA, sort="throughput"), "Together")
        self.assertEqual(self.provider(LLAMA, sort="latency"), "Together")
        self.assertEqual(self.provider(LLAMA, sort={"by": "latency"}), "Together")

    def test_max_price(self) -> None:
        # Per million tokens: OpenAI asks 2.5 (prompt), Azure 2.0.
        self.assertEqual(self.provider(max_price={"prompt": 2.2}), "Azure")
        self.assertEqual(self.provider(max_price={"prompt": "2.5", "completion": 10}), "OpenAI")
        error = self.error(
            self.post("chat/completions", chat(provider={"max_price": {"completion": 1}})), 503
        )
        self.assertEqual(error["metadata"]["available_providers"], ["OpenAI", "Azure"])

    def test_impossible_preferences_are_503(self) -> None:
        for preferences in (
            {"only": ["Together"]},
            {"ignore": ["OpenAI", "Azure"]},
            {"only": ["Azure"], "ignore": ["Azure"]},
        ):
            self.error(self.post("chat/completions", chat(provider=preferences)), 503)

    def test_allow_fallbacks(self) -> None:
        self.use(openrouter_failing_models=(FailingSpec(GPT, "OpenAI", 429),))
        self.assertEqual(self.provider(), "Azure")
        response = self.post("chat/completions", chat(provider={"allow_fallbacks": False}))
        error = self.error(response, 429)
        self.assertEqual(error["metadata"]["provider_name"], "OpenAI")
        self.assertEqual(response.header("Retry-After"), "1")
        response = self.post(
            "chat/completions", chat(provider={"order": ["Azure"], "allow_fallbacks": False})
        )
        self.assertEqual(response.json()["provider"], "Azure")

    def test_unknown_provider_names_are_400(self) -> None:
        for key in ("order", "only", "ignore"):
            error = self.error(
                self.post("chat/completions", chat(provider={key: ["Nowhere"]})), 400
            )
            self.assertIn("Nowhere", error["message"])

    def test_preferences_are_validated(self) -> None:
        for preferences in (
            "OpenAI",
            {"order": "OpenAI"},
            {"sort": "cheapest"},
            {"allow_fallbacks": "no"},
            {"data_collection": "maybe"},
            {"quantizations": ["int3"]},
            {"max_price": {"prompt": -1}},
            {"max_price": {"prompt": "free"}},
            {"max_price": 5},
        ):
            self.error(self.post("chat/completions", chat(provider=preferences)), 400)
        accepted = {
            "require_parameters": True,
            "data_collection": "deny",
            "zdr": False,
            "quantizations": ["fp8", "bf16"],
            "max_price": {"request": "0", "image": 0},
        }
        self.assertEqual(self.provider(**accepted), "OpenAI")


class ExtrasTests(RouterTestCase):
    def test_accepted_extras_and_unknown_fields(self) -> None:
        body = self.answer(
            chat(
                transforms=["middle-out"],
                route="fallback",
                usage={"include": True},
                plugins=[{"id": "web"}],
                user="user-42",
                include_reasoning=False,
                something_new={"nested": [1, 2]},
            )
        )
        self.assertEqual(self.record(body["id"])["external_user"], "user-42")

    def test_malformed_extras(self) -> None:
        for extra in (
            {"models": "a/b"},
            {"models": [1]},
            {"transforms": "middle-out"},
            {"route": "fastest"},
            {"usage": True},
            {"plugins": [{"name": "web"}]},
            {"reasoning": "high"},
            {"reasoning": {"effort": "extreme"}},
            {"reasoning": {"max_tokens": -1}},
            {"reasoning": {"effort": "low", "max_tokens": 10}},
            {"include_reasoning": "yes"},
            {"user": 5},
        ):
            self.error(self.post("chat/completions", chat(**extra)), 400)

    def test_middle_out_compresses_a_prompt_over_the_context(self) -> None:
        long = [{"role": "user", "content": "word " * 100}]
        body = {"model": SMALL, "messages": long, "max_tokens": 10}
        error = self.error(self.post("chat/completions", body), 400)
        self.assertIn("maximum context length is 64 tokens", error["message"])
        usage = self.answer({**body, "transforms": ["middle-out"]})["usage"]
        self.assertEqual(usage["prompt_tokens"], 64 - 10)
        # A context error moves on to the next model, as any error does.
        self.assertEqual(self.answer({**body, "models": [GPT]})["model"], GPT)

    def test_reasoning_tokens_are_billed_and_delay_the_answer(self) -> None:
        # Planned as any token: a budget of at most 50, drawn around it.
        self.use(itl=0.01, tokens_mean=5.0, tokens_stddev=0.0)
        plain = self.post("chat/completions", chat(stream=True, seed=1))
        thinking = self.post(
            "chat/completions",
            chat(stream=True, seed=1, reasoning={"max_tokens": 50, "exclude": True}),
        )
        usage = sse_json(thinking.body)[-1]["usage"]
        reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
        self.assertGreater(reasoning, 20)
        self.assertLessEqual(reasoning, 50)
        self.assertEqual(usage["completion_tokens"], 5 + reasoning)
        self.check_cost(usage, GPT, "OpenAI")
        plain_record = self.record(plain.header("X-Generation-Id") or "")
        record = self.record(thinking.header("X-Generation-Id") or "")
        self.assertEqual(record["native_tokens_reasoning"], reasoning)
        self.assertEqual(record["tokens_completion"], 5 + reasoning)
        # The hidden tokens, at 10 ms each, come before the first visible one.
        self.assertEqual(record["latency"] - plain_record["latency"], 10 * reasoning)
        # So they do before a plain answer's.
        body = self.answer(chat(seed=1, reasoning={"max_tokens": 50, "exclude": True}))
        reasoning = body["usage"]["completion_tokens_details"]["reasoning_tokens"]
        self.assertEqual(
            self.record(body["id"])["latency"] - plain_record["latency"], 10 * reasoning
        )

    def test_reasoning_effort(self) -> None:
        # With max_tokens, an effort thinks for at most its share of them.
        self.use(tokens_mean=100.0)
        for extra, most in (
            ({"reasoning": {"effort": "high"}}, 80),
            ({"reasoning": {"effort": "low"}}, 20),
            ({"reasoning": {"enabled": True}}, 100),
            ({"reasoning": {"effort": "high", "enabled": False}}, 0),
            ({"include_reasoning": True}, 100),
            ({}, 0),
        ):
            usage = self.answer(chat(max_tokens=100, **extra))["usage"]
            reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
            self.assertLessEqual(reasoning, most, extra)
            self.assertEqual(reasoning > 0, most > 0, extra)
            self.assertLessEqual(usage["completion_tokens"], 100)

    def test_reasoning_is_bounded_by_the_output_limit(self) -> None:
        # Reasoning tokens are output tokens: a budget over the model's output
        # limit is refused, as max_tokens is (it once answered 200 with a
        # billion completion tokens, and an answer due in months).
        self.use(max_output_tokens=100, itl=0.02)
        for stream in (False, True):
            for path, body in (("chat/completions", chat()), ("completions", completion())):
                extra = {"reasoning": {"max_tokens": 10**9}, "stream": stream}
                error = self.error(self.post(path, {**body, **extra}), 400)
                self.assertEqual(
                    error["message"],
                    f"reasoning.max_tokens is too large: 1000000000. {GPT} supports at most 100 "
                    "completion tokens, reasoning included, whereas you provided 1000000000.",
                )
        self.error(self.post("chat/completions", chat(reasoning={"max_tokens": 101})), 400)
        # At the limit it is answered, reasoning and answer within it; a
        # max_tokens bounds both, as OpenAI's max_completion_tokens does.
        usage = self.answer(chat(reasoning={"max_tokens": 100}))["usage"]
        self.assertGreater(usage["completion_tokens_details"]["reasoning_tokens"], 0)
        self.assertLessEqual(usage["completion_tokens"], 100)
        usage = self.answer(chat(max_tokens=3, ignore_eos=True, reasoning={"max_tokens": 100}))[
            "usage"
        ]
        self.assertEqual(usage["completion_tokens_details"]["reasoning_tokens"], 3)
        self.assertEqual(usage["completion_tokens"], 3)
        # So are max_tokens and min_tokens, in OpenRouter's envelope.
        self.error(self.post("chat/completions", chat(max_tokens=101)), 400)
        error = self.error(self.post("chat/completions", chat(min_tokens=10**9)), 400)
        self.assertIn("min_tokens must be less than or equal to max_tokens=100", error["message"])

    def test_reasoning_effort_is_bounded_by_the_output_limit(self) -> None:
        # An effort's mean (2048 for high) may be above the limit.
        self.use(max_output_tokens=100, tokens_mean=1000.0)
        usage = self.answer(chat(reasoning={"effort": "high"}))["usage"]
        self.assertGreater(usage["completion_tokens_details"]["reasoning_tokens"], 0)
        self.assertLessEqual(usage["completion_tokens"], 100)

    def test_referer_and_title_are_recorded(self) -> None:
        headers = {**AUTH, "HTTP-Referer": "https://app.example", "X-Title": "Example App"}
        response = self.post("chat/completions", chat(), headers=headers)
        record = self.record(response.json()["id"])
        self.assertEqual(record["origin"], "https://app.example")
        self.assertEqual(record["http_referer"], "https://app.example")
        self.assertEqual(record["app_title"], "Example App")


# ---------------------------------------------------------------------------
# 4. Errors in OpenRouter's envelope


class ErrorTests(RouterTestCase):
    def test_400_bad_requests(self) -> None:
        response = self.client.post("/api/v1/chat/completions", body=b"{not json", headers=AUTH)
        self.assertNotIn("type", self.error(response, 400))
        self.error(self.post("chat/completions", {"model": GPT}), 400)
        self.error(self.post("chat/completions", chat(temperature=7)), 400)
        self.error(self.post("chat/completions", chat(max_tokens=10**6)), 400)

    def test_401_without_a_key(self) -> None:
        for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Basic abc"}):
            error = self.error(self.post("chat/completions", chat(), headers=headers), 401)
            self.assertEqual(error["message"], "No auth credentials found")
        for path in ("key", "credits", "generation?id=gen-1"):
            self.error(self.get(path, headers={}), 401)

    def test_402_once_the_credits_are_spent(self) -> None:
        self.use(openrouter_credit_limit=1e-4)
        body = chat(max_tokens=20, ignore_eos=True)
        first = self.answer(body)
        cost = first["usage"]["cost"]
        self.assertGreater(cost, 1e-4)
        error = self.error(self.post("chat/completions", body), 402)
        self.assertEqual(error["metadata"], {"limit": 1e-4, "usage": cost})
        self.error(self.post("chat/completions", {**body, "stream": True}), 402)
        key = self.get("key").json()["data"]
        self.assertEqual((key["limit"], key["usage"], key["limit_remaining"]), (1e-4, cost, 0.0))
        self.assertEqual(
            self.get("credits").json()["data"], {"total_credits": 1e-4, "total_usage": cost}
        )
        # Another key has its own credits.
        other = self.post(
            "chat/completions", body, headers={"Authorization": f"Bearer {OTHER_KEY}"}
        )
        self.assertEqual(other.status, 200)

    def test_upstream_failures(self) -> None:
        self.use(
            openrouter_failing_models=(
                FailingSpec(GPT, None, 403),
                FailingSpec(LLAMA, None, 408),
                FailingSpec(BROKEN, None, 503),
                FailingSpec(SMALL, None, 502),
            )
        )
        error = self.error(self.post("chat/completions", chat()), 403)
        self.assertEqual(
            error["metadata"],
            {
                "reasons": ["simulated"],
                "flagged_input": MESSAGES[-1]["content"],
                "provider_name": "Azure",  # the last provider tried
                "model_slug": GPT,
            },
        )
        error = self.error(self.post("chat/completions", chat(LLAMA)), 408)
        self.assertEqual(error["metadata"]["provider_name"], "Together")
        response = self.post("completions", completion(BROKEN))
        self.error(response, 503)
        self.assertEqual(response.header("Retry-After"), "1")
        self.error(self.post("chat/completions", chat(SMALL, stream=True)), 502)

    def test_404s(self) -> None:
        self.error(self.get("generation?id=gen-0-nothing"), 404)
        self.error(self.get("models/openai/gpt-9"), 404)
        self.error(self.get("generation"), 400)

    def test_engine_queue_timeout_uses_the_envelope(self) -> None:
        self.use(max_running=1, queue_timeout=0.5, itl=0.1)
        self.client.send("POST", "/api/v1/chat/completions", chat(stream=True), headers=AUTH)
        queued = self.client.send(
            "POST", "/api/v1/chat/completions", chat(stream=True), headers=AUTH
        )
        self.clock.advance(0.5)
        error = self.error(queued.response(), 503)
        self.assertIn("timed out", error["message"])

    def test_engine_refusals_use_the_envelope(self) -> None:
        self.use(max_running=1, max_waiting=0, itl=0.05)
        self.client.send("POST", "/api/v1/chat/completions", chat(stream=True), headers=AUTH)
        response = self.post("chat/completions", chat(stream=True))
        error = self.error(response, 429)
        self.assertIn("overloaded", error["message"])
        self.assertIsNotNone(response.header("Retry-After"))


class SharedServingTests(RouterTestCase):
    """What every endpoint shares reaches /api/v1 too: rate limits, stats, site errors."""

    def test_rate_limits_use_the_envelope(self) -> None:
        self.use(rpm=2)
        for remaining in ("1", "0"):
            response = self.post("chat/completions", chat(max_tokens=2))
            self.assertEqual(response.status, 200, response.body[:300])
            self.assertEqual(response.header("x-ratelimit-limit-requests"), "2")
            self.assertEqual(response.header("x-ratelimit-remaining-requests"), remaining)
        response = self.post("chat/completions", chat(max_tokens=2, stream=True))
        error = self.error(response, 429)
        self.assertIn("Rate limit reached", error["message"])
        self.assertEqual(response.header("Retry-After"), "30")
        # Another key has its own bucket.
        other = {"Authorization": f"Bearer {OTHER_KEY}"}
        self.assertEqual(self.post("chat/completions", chat(max_tokens=2), other).status, 200)

    def test_token_limits_charge_prompt_and_max_tokens(self) -> None:
        self.use(tpm=1000)
        response = self.post("completions", completion(max_tokens=100, prompt="one two"))
        self.assertEqual(response.status, 200, response.body[:300])
        used = 1000 - int(response.header("x-ratelimit-remaining-tokens") or "")
        self.assertGreaterEqual(used, 100)
        self.assertLess(used, 120)

    def test_stats_count_api_v1_requests(self) -> None:
        self.use(max_running=1, max_waiting=0, itl=0.01)
        self.answer(chat(max_tokens=3))
        self.stream(chat(max_tokens=3))
        self.client.send("POST", "/api/v1/chat/completions", chat(stream=True), headers=AUTH)
        self.error(self.post("chat/completions", chat(stream=True)), 429)
        stats = self.client.get("/stats").json()["models"][GPT]
        self.assertEqual(stats["requests"], 4)
        self.assertEqual(stats["completed"], 2)
        self.assertEqual(stats["rejected"], 1)
        self.assertEqual(stats["errors"], {"429": 1})
        self.assertEqual(stats["completion_tokens"]["count"], 2)
        self.assertGreater(stats["ttft_ms"]["count"], 0)

    def test_draining_uses_the_envelope(self) -> None:
        self.use(grace_period=5.0)
        self.service.stopService()
        response = self.post("chat/completions", chat(max_tokens=2))
        error = self.error(response, 503)
        self.assertEqual(response.header("Connection"), "close")
        openai_error = self.client.post("/v1/chat/completions", chat(max_tokens=2)).json()
        self.assertEqual(openai_error["error"]["message"], error["message"])
        self.assertIn("type", openai_error["error"])

    def test_body_too_large_uses_the_envelope(self) -> None:
        self.use(max_body_size=1024)
        big = chat(messages=[{"role": "user", "content": "x" * 4000}])
        for chunked in (False, True):
            response = self.client.request(
                "POST",
                "/api/v1/chat/completions",
                body=json.dumps(big).encode(),
                headers=AUTH,
                chunked=chunked,
            )
            error = self.error(response, 413)
            self.assertIn("1024", error["message"])
        self.assertEqual(self.service.site.active, 0)


class TwistedStackSharedServingTests(SharedServingTests):
    http = "twisted"


class MidStreamErrorTests(RouterTestCase):
    settings: ClassVar[dict[str, Any]] = {
        "models": (
            *MODELS,
            ModelSpec("acme/flaky", "acme", completion_price=1e-6, stream_error_rate=1.0,
                      stream_error_after=5),
            ModelSpec("acme/coin", "acme", stream_error_rate=0.5, stream_error_after=0),
        )
    }  # fmt: skip

    def test_error_event_after_n_tokens(self) -> None:
        body = chat("acme/flaky", max_tokens=30, ignore_eos=True)
        response, chunks = self.stream(body, done=False)
        self.assertNotIn("[DONE]", sse_data(response.body))
        *events, failure = chunks
        self.assertEqual(tokens.count_text(stream_text(events)), 5)
        self.assertEqual(
            failure["error"],
            {"code": "server_error", "message": "Provider disconnected unexpectedly"},
        )
        [choice] = failure["choices"]
        self.assertEqual(choice["finish_reason"], "error")
        self.assertEqual(choice["native_finish_reason"], "error")
        self.assertEqual(failure["provider"], "OpenAI")
        for event in events:
            self.assertNotIn("usage", event)
            self.assertIsNone(event["choices"][0]["finish_reason"])
        record = self.record(response.header("X-Generation-Id") or "")
        self.assertEqual(record["finish_reason"], "error")
        self.assertEqual(record["tokens_completion"], 5)
        self.assertIs(record["cancelled"], False)
        self.assertAlmostEqual(record["total_cost"], 5 * 1e-6)

    def test_error_event_for_every_open_choice(self) -> None:
        body = chat("acme/flaky", max_tokens=30, ignore_eos=True, n=3)
        _, chunks = self.stream(body, done=False)
        self.assertEqual([c["index"] for c in chunks[-1]["choices"]], [0, 1, 2])

    def test_text_stream_error(self) -> None:
        body = completion("acme/flaky", max_tokens=30, ignore_eos=True)
        _, chunks = self.stream(body, "completions", done=False)
        self.assertEqual(chunks[-1]["choices"][0]["finish_reason"], "error")
        self.assertEqual(chunks[-1]["choices"][0]["text"], "")

    def test_short_answers_finish_before_the_failure(self) -> None:
        _, chunks = self.stream(chat("acme/flaky", max_tokens=3))
        self.assertEqual(chunks[-1]["usage"]["completion_tokens"], 3)

    def test_non_streaming_error_is_a_200_body(self) -> None:
        response = self.post("chat/completions", chat("acme/flaky", max_tokens=30))
        error = self.error_body(response)
        self.assertEqual(error["code"], 502)
        record = self.record(response.header("X-Generation-Id") or "")
        self.assertEqual((record["finish_reason"], record["tokens_completion"]), ("error", 5))

    def error_body(self, response: Response) -> dict[str, Any]:
        self.assertEqual(response.status, 200)
        error: dict[str, Any] = response.json()["error"]
        return error

    def test_failures_under_the_engine(self) -> None:
        self.use(max_running=4, itl=0.01)
        body = chat("acme/flaky", max_tokens=30, ignore_eos=True)
        _, chunks = self.stream(body, done=False)
        self.assertEqual(chunks[-1]["choices"][0]["finish_reason"], "error")
        self.assertEqual(tokens.count_text(stream_text(chunks[:-1])), 5)
        connection = self.client.send("POST", "/api/v1/chat/completions", body, headers=AUTH)
        # The broken stream left the engine: this one runs alone, a token a step.
        self.assertEqual(self.core.models["acme/flaky"].engine.used, 1)
        self.clock.advance(0.035)  # tokens 1-4, at 0, 10, 20 and 30 ms
        self.assertEqual(connection.responses(), [])
        self.clock.advance(0.01)  # the fifth
        self.assertEqual(self.error_body(connection.response())["code"], 502)

    def test_failure_rate_is_seeded(self) -> None:
        outcomes = []
        for _ in range(200):
            response = self.post("chat/completions", chat("acme/coin", stream=True))
            outcomes.append(b'"finish_reason":"error"' in response.body)
        self.assertTrue(70 < sum(outcomes) < 130, sum(outcomes))
        # The same request seed, the same fate.
        fates = {
            b'"finish_reason":"error"'
            in self.post("chat/completions", chat("acme/coin", stream=True, seed=s)).body
            for s in (7, 7, 7)
        }
        self.assertEqual(len(fates), 1)
        # And the same server seed, the same sequence.
        self.use()
        again = [
            b'"finish_reason":"error"'
            in self.post("chat/completions", chat("acme/coin", stream=True)).body
            for _ in range(200)
        ]
        self.assertEqual(again, outcomes)


# ---------------------------------------------------------------------------
# 5. Generation records, keys and credits


class GenerationTests(RouterTestCase):
    settings: ClassVar[dict[str, Any]] = {"response_delay": 0.5, "itl": 0.01}

    def test_record_matches_the_response(self) -> None:
        headers = {**AUTH, "HTTP-Referer": "https://x.example"}
        response = self.post("chat/completions", chat(LLAMA, max_tokens=9), headers=headers)
        body = response.json()
        record = self.record(body["id"])
        usage = body["usage"]
        self.assertEqual(record["id"], body["id"])
        self.assertEqual(record["model"], body["model"])
        self.assertEqual(record["provider_name"], body["provider"])
        self.assertEqual(record["tokens_prompt"], usage["prompt_tokens"])
        self.assertEqual(record["tokens_completion"], usage["completion_tokens"])
        self.assertEqual(record["native_tokens_prompt"], usage["prompt_tokens"])
        self.assertEqual(record["native_tokens_completion"], usage["completion_tokens"])
        self.assertEqual(record["total_cost"], usage["cost"])
        self.assertEqual(record["usage"], usage["cost"])
        self.assertEqual(record["finish_reason"], body["choices"][0]["finish_reason"])
        self.assertEqual(record["native_finish_reason"], body["choices"][0]["finish_reason"])
        self.assertEqual(record["latency"], 500)
        self.assertEqual(record["generation_time"], 500 + 10 * (usage["completion_tokens"] - 1))
        self.assertEqual(record["created_at"], "2023-11-14T22:13:20.000000+00:00")
        self.assertEqual(record["origin"], "https://x.example")
        self.assertIs(record["streamed"], False)
        self.assertIs(record["cancelled"], False)

    def test_streamed_record(self) -> None:
        response, chunks = self.stream(completion(max_tokens=6, ignore_eos=True), "completions")
        record = self.record(response.header("X-Generation-Id") or "")
        self.assertIs(record["streamed"], True)
        self.assertEqual(record["tokens_completion"], 6)
        self.assertEqual(record["total_cost"], chunks[-1]["usage"]["cost"])
        self.assertEqual(record["finish_reason"], "length")
        self.assertEqual((record["latency"], record["generation_time"]), (500, 550))

    def test_cancelled_stream_is_billed_for_what_was_sent(self) -> None:
        connection = self.client.send(
            "POST", "/api/v1/chat/completions", chat(stream=True, max_tokens=50), headers=AUTH
        )
        self.clock.advance(0.535)  # tokens at 0.50, 0.51, 0.52, 0.53
        generation_id = connection.response().header("X-Generation-Id") or ""
        self.assertIsNone(self.router.store.get(generation_id, self.clock.seconds()))
        connection.disconnect()
        record = self.record(generation_id)
        self.assertIs(record["cancelled"], True)
        self.assertIsNone(record["finish_reason"])
        self.assertEqual(record["tokens_completion"], 4)
        self.assertAlmostEqual(record["total_cost"], PROMPT_TOKENS * 2.5e-6 + 4 * 1e-5, delta=1e-12)
        self.assertEqual(self.get("key").json()["data"]["usage"], record["total_cost"])

    def test_abandoned_request_is_billed_in_full(self) -> None:
        connection = self.client.send(
            "POST", "/api/v1/chat/completions", chat(max_tokens=8, ignore_eos=True), headers=AUTH
        )
        self.clock.advance(0.1)
        self.assertEqual(len(self.router.store), 0)
        connection.disconnect()
        self.assertEqual(len(self.router.store), 1)
        usage = self.get("key").json()["data"]["usage"]
        self.assertAlmostEqual(usage, PROMPT_TOKENS * 2.5e-6 + 8 * 1e-5, delta=1e-12)

    def test_records_belong_to_their_key(self) -> None:
        body = self.answer(chat())
        self.error(
            self.get(f"generation?id={body['id']}", {"Authorization": f"Bearer {OTHER_KEY}"}),
            404,
        )

    def test_store_size_and_ttl(self) -> None:
        self.use(openrouter_generations=2, openrouter_generation_ttl=60.0)
        ids = [self.answer(chat())["id"] for _ in range(3)]
        self.error(self.get(f"generation?id={ids[0]}"), 404)
        self.record(ids[1])
        self.record(ids[2])
        self.clock.advance(59.0)
        self.record(ids[2])
        self.clock.advance(1.0)
        self.error(self.get(f"generation?id={ids[2]}"), 404)
        self.assertEqual(len(self.router.store), 0)

    def test_usage_accumulates_per_key(self) -> None:
        costs = [self.answer(chat(m))["usage"]["cost"] for m in (GPT, LLAMA, GPT)]
        other = self.post(
            "chat/completions", chat(), headers={"Authorization": f"Bearer {OTHER_KEY}"}
        ).json()["usage"]["cost"]
        data = self.get("key").json()["data"]
        self.assertAlmostEqual(data["usage"], sum(costs), delta=1e-12)
        for period in ("usage_daily", "usage_weekly", "usage_monthly"):
            self.assertEqual(data[period], data["usage"])
        self.assertIsNone(data["limit"])
        self.assertIsNone(data["limit_remaining"])
        credits = self.get("credits", {"Authorization": f"Bearer {OTHER_KEY}"}).json()["data"]
        self.assertEqual(credits["total_usage"], other)

    def test_daily_usage_starts_over(self) -> None:
        cost = self.answer(chat())["usage"]["cost"]
        self.clock.advance(86400.0)
        data = self.get("key").json()["data"]
        self.assertEqual(data["usage"], cost)
        self.assertEqual(data["usage_daily"], 0.0)


# ---------------------------------------------------------------------------
# 6. The model catalog


class CatalogTests(RouterTestCase):
    def test_models_shape(self) -> None:
        cards = {m["id"]: m for m in self.get("models", headers={}).json()["data"]}
        card = cards[GPT]
        self.assertEqual(card["canonical_slug"], GPT)
        self.assertEqual(card["name"], "openai: gpt-4o")
        self.assertEqual(card["created"], 1715367049)
        self.assertTrue(card["description"])
        self.assertEqual(card["context_length"], 128_000)
        self.assertEqual(card["architecture"]["input_modalities"], ["text"])
        self.assertEqual(card["architecture"]["output_modalities"], ["text"])
        self.assertEqual(card["top_provider"]["context_length"], 128_000)
        self.assertEqual(card["top_provider"]["max_completion_tokens"], 4096)
        self.assertIsNone(card["per_request_limits"])
        self.assertIn("max_tokens", card["supported_parameters"])
        self.assertIn("reasoning", card["supported_parameters"])
        self.assertIn("tools", card["supported_parameters"])
        self.assertIn("response_format", card["supported_parameters"])
        self.assertEqual(cards[SMALL]["context_length"], 64)

    def test_pricing_is_decimal_strings_per_token(self) -> None:
        cards = {m["id"]: m for m in self.get("models", headers={}).json()["data"]}
        # The cheapest provider's price: Azure serves GPT at 0.8 of the list price.
        self.assertEqual(cards[GPT]["pricing"]["prompt"], "0.000002")
        self.assertEqual(cards[GPT]["pricing"]["completion"], "0.000008")
        self.assertEqual(cards[LLAMA]["pricing"]["prompt"], "0.00000002")
        self.assertEqual(cards[LLAMA]["pricing"]["completion"], "0.00000005")
        for card in cards.values():
            for value in card["pricing"].values():
                self.assertIsInstance(value, str)
                self.assertGreaterEqual(Decimal(value), 0)

    def test_endpoints_per_provider(self) -> None:
        self.use(openrouter_failing_models=(FailingSpec(GPT, "Azure", 502),))
        data = self.get(f"models/{GPT}/endpoints", headers={}).json()["data"]
        openai_, azure = data["endpoints"]
        self.assertEqual(openai_["pricing"]["prompt"], "0.0000025")
        self.assertEqual(azure["pricing"]["prompt"], "0.000002")
        self.assertEqual((openai_["tag"], azure["tag"]), ("openai", "azure"))
        self.assertEqual((openai_["uptime_last_30m"], azure["uptime_last_30m"]), (100.0, 0.0))
        self.assertEqual(azure["latency_last_30m"], {"p50": 0.3})
        self.assertEqual(azure["context_length"], 128_000)

    def test_default_models_have_list_prices(self) -> None:
        self.use(models=DEFAULT_MODELS, openrouter_providers=DEFAULT_PROVIDERS)
        cards = {m["id"]: m for m in self.get("models", headers={}).json()["data"]}
        self.assertEqual(cards["gpt-4o"]["pricing"]["prompt"], "0.0000025")
        self.assertEqual(cards["gpt-4o"]["pricing"]["completion"], "0.00001")
        self.assertEqual(cards["gpt-3.5-turbo-instruct"]["context_length"], 4096)


# ---------------------------------------------------------------------------
# Configuration


class ConfigTests(SynchronousTestCase):
    def error(self, cli: dict[str, object]) -> str:
        with self.assertRaises(ConfigError) as caught:
            load_settings(cli, {})
        return str(caught.exception)

    def test_providers(self) -> None:
        s = load_settings(
            {"openrouter_providers": "OpenAI, Deep Infra:price=0.5:latency=250:throughput=90"}, {}
        )
        self.assertEqual(
            s.openrouter.providers,
            (ProviderSpec("OpenAI"), ProviderSpec("Deep Infra", 0.5, 0.25, 90.0)),
        )
        self.assertEqual(s.openrouter.providers[1].slug, "deep-infra")
        self.assertIn(
            "openrouter_providers=OpenAI,Deep Infra:price=0.5:latency=250:throughput=90",
            __import__("mockoai.ops.config").ops.config.describe(s),
        )
        self.assertEqual(
            self.error({"openrouter_providers": "A,a"}),
            "--openrouter-providers: provider names must be unique",
        )
        self.assertEqual(
            self.error({"openrouter_providers": "A:speed=3"}),
            "--openrouter-providers: unknown provider key(s) speed",
        )

    def test_failing_models_and_limits(self) -> None:
        s = load_settings(
            {
                "openrouter_failing_models": "a/b, c/d@Azure=429",
                "openrouter_credit_limit": "2.5",
                "openrouter_processing_interval": "250",
            },
            {"MOCKOAI_OPENROUTER_GENERATIONS": "7"},
        )
        self.assertEqual(
            s.openrouter.failing_models, (FailingSpec("a/b"), FailingSpec("c/d", "Azure", 429))
        )
        self.assertEqual(s.openrouter.credit_limit, 2.5)
        self.assertEqual(s.openrouter.processing_interval, 0.25)
        self.assertEqual(s.openrouter.generations, 7)
        unlimited = load_settings({"openrouter_credit_limit": "unlimited"}, {})
        self.assertIsNone(unlimited.openrouter.credit_limit)
        self.assertEqual(
            self.error({"openrouter_failing_models": "a=500"}),
            "--openrouter-failing-models: status must be one of 403, 408, 429, 502, 503, got 500",
        )
        self.assertEqual(
            self.error({"openrouter_failing_models": "a@Nowhere"}),
            "--openrouter-failing-models: a@Nowhere=502 names provider 'Nowhere', "
            "which is not in --openrouter-providers",
        )

    def test_model_tables(self) -> None:
        directory = tempfile.mkdtemp()
        path = os.path.join(directory, "p.toml")
        self.addCleanup(lambda: (os.unlink(path), os.rmdir(directory)))
        with open(path, "w") as handle:
            handle.write(
                'openrouter_providers = ["OpenAI", {name = "Groq", price = 0.5}]\n'
                "[[models]]\n"
                'id = "x/y"\n'
                "prompt_price = 1e-6\n"
                "completion_price = 2e-6\n"
                'providers = ["Groq"]\n'
                "context_length = 8192\n"
                "stream_error_rate = 0.25\n"
                "stream_error_after = 3\n"
            )
        [spec] = load_settings({"config": path}, {}).served.models
        self.assertEqual(
            (spec.prompt_price, spec.completion_price, spec.providers, spec.context_length),
            (1e-6, 2e-6, ("Groq",), 8192),
        )
        self.assertEqual((spec.stream_error_rate, spec.stream_error_after), (0.25, 3))
        with open(path, "w") as handle:
            handle.write('[[models]]\nid = "x/y"\nproviders = ["Groq"]\n')
        self.assertEqual(
            self.error({"config": path}),
            "models: x/y names provider 'Groq', which is not in --openrouter-providers",
        )
        with open(path, "w") as handle:
            handle.write('[[models]]\nid = "x/y"\nstream_error_rate = 2\n')
        self.assertIn("stream_error_rate: must be between 0 and 1", self.error({"config": path}))


# ---------------------------------------------------------------------------
# End to end: twistd and the official SDK on /api/v1

PROFILE = f"""
articles = 64
tokens_mean = 30
tokens_stddev = 5
response_delay = 50
openrouter_processing_interval = 20
openrouter_providers = ["OpenAI", {{ name = "Azure", price = 0.8 }}]
openrouter_failing_models = "{BROKEN}"

[[models]]
id = "{GPT}"
prompt_price = 2.5e-6
completion_price = 1e-5

[[models]]
id = "{BROKEN}"

[[models]]
id = "acme/flaky"
completion_price = 1e-6
stream_error_rate = 1.0
stream_error_after = 4
"""


@needs_openai
class EndToEndTests(SynchronousTestCase):
    """``twistd -n mockoai`` as a real process, the ``openai`` SDK at ``/api/v1``."""

    def setUp(self) -> None:
        directory = tempfile.mkdtemp(prefix="mockoai-openrouter-")
        path = os.path.join(directory, "profile.toml")
        with open(path, "w") as handle:
            handle.write(PROFILE)
        self.addCleanup(lambda: (os.unlink(path), os.rmdir(directory)))
        self.server = TwistdProcess(["--config", path])
        self.addCleanup(self.server.cleanup)
        self.server.start()
        self.addCleanup(self.server.stop)
        self.client = openai.OpenAI(
            base_url=f"{self.server.base_url}/api/v1",
            api_key=KEY,
            max_retries=0,
            timeout=15,
            default_headers={"HTTP-Referer": "https://e2e.example", "X-Title": "e2e"},
        )
        self.addCleanup(self.client.close)

    def generation(self, generation_id: str) -> dict[str, Any]:
        response = self.client.get(f"/generation?id={generation_id}", cast_to=object, options={})
        data: dict[str, Any] = response["data"]  # type: ignore[index]
        return data

    def check(self, usage: Any, generation_id: str) -> None:
        expected = usage.prompt_tokens * 2.5e-6 + usage.completion_tokens * 1e-5
        self.assertAlmostEqual(usage.cost, expected, delta=1e-11)  # type: ignore[attr-defined]
        record = self.generation(generation_id)
        self.assertEqual(record["total_cost"], usage.cost)  # type: ignore[attr-defined]
        self.assertEqual(record["tokens_completion"], usage.completion_tokens)
        self.assertEqual(record["provider_name"], "OpenAI")
        self.assertEqual(record["origin"], "https://e2e.example")
        self.assertEqual(record["app_title"], "e2e")

    def test_chat(self) -> None:
        raw = self.client.chat.completions.with_raw_response.create(
            model=GPT,
            messages=MESSAGES,
            max_tokens=12,  # type: ignore[arg-type]
        )
        answer = raw.parse()
        self.assertRegex(answer.id, GEN_ID)
        self.assertEqual(raw.headers["x-generation-id"], answer.id)
        self.assertEqual(answer.model, GPT)
        self.assertEqual(answer.provider, "OpenAI")  # type: ignore[attr-defined]
        self.assertTrue(answer.choices[0].message.content)
        assert answer.usage is not None
        self.check(answer.usage, answer.id)

    def test_chat_stream(self) -> None:
        stream = self.client.chat.completions.create(
            model=GPT,
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            max_tokens=8,
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        usage = chunks[-1].usage
        assert usage is not None
        self.assertEqual(usage.completion_tokens, tokens.count_text(text))
        self.check(usage, chunks[0].id)

    def test_token_counts_over_the_output_limit(self) -> None:
        # Every token count a request sets is bounded by the model's output
        # limit (4096 here), in OpenRouter's envelope, streamed or not.
        for stream in (False, True):
            for extra in (
                {"reasoning": {"max_tokens": 10**9}},
                {"max_tokens": 10**9},
                {"min_tokens": 10**9},
            ):
                with self.assertRaises(openai.BadRequestError) as caught:
                    self.client.chat.completions.create(
                        model=GPT,
                        messages=MESSAGES,  # type: ignore[arg-type]
                        stream=stream,  # type: ignore[call-overload]
                        extra_body=extra,
                    )
                self.assertEqual(caught.exception.status_code, 400, extra)
                self.assertEqual(caught.exception.body["code"], 400, extra)  # type: ignore[index]
        answer = self.client.chat.completions.create(
            model=GPT,
            messages=MESSAGES,  # type: ignore[arg-type]
            extra_body={"reasoning": {"max_tokens": 4096}},
        )
        assert answer.usage is not None
        reasoning = answer.usage.completion_tokens_details.reasoning_tokens  # type: ignore[union-attr]
        self.assertEqual(reasoning, tokens.count_text(answer.choices[0].message.reasoning))  # type: ignore[attr-defined]
        self.assertLessEqual(answer.usage.completion_tokens, 4096)

    def test_completions(self) -> None:
        answer = self.client.completions.create(model=GPT, prompt="Lorem ipsum", max_tokens=6)
        self.assertEqual(answer.object, "text_completion")
        assert answer.usage is not None
        self.check(answer.usage, answer.id)
        chunks = list(
            self.client.completions.create(
                model=GPT, prompt="Lorem ipsum", max_tokens=6, stream=True
            )
        )
        usage = chunks[-1].usage
        assert usage is not None
        self.assertEqual(usage.completion_tokens, tokens.count_text(
            "".join(c.choices[0].text for c in chunks if c.choices)))  # fmt: skip
        self.check(usage, chunks[0].id)

    def test_fallback_and_errors(self) -> None:
        answer = self.client.chat.completions.create(
            model=BROKEN,
            messages=MESSAGES,  # type: ignore[arg-type]
            extra_body={"models": [GPT]},
        )
        self.assertEqual(answer.model, GPT)
        with self.assertRaises(openai.InternalServerError) as caught:
            self.client.chat.completions.create(model=BROKEN, messages=MESSAGES)  # type: ignore[arg-type]
        self.assertEqual(caught.exception.status_code, 502)
        self.assertEqual(caught.exception.body["code"], 502)  # type: ignore[index]

    def test_mid_stream_error_raises_in_the_sdk(self) -> None:
        stream = self.client.chat.completions.create(
            model="acme/flaky",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            max_tokens=20,
            extra_body={"ignore_eos": True},
        )
        received = []
        with self.assertRaises(openai.APIError) as caught:
            for chunk in stream:
                received.append(chunk)
        self.assertEqual(caught.exception.message, "Provider disconnected unexpectedly")
        text = "".join(c.choices[0].delta.content or "" for c in received if c.choices)
        self.assertEqual(tokens.count_text(text), 4)

    def test_processing_comments_on_the_wire(self) -> None:
        import http.client

        connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=15)
        self.addCleanup(connection.close)
        connection.request(
            "POST",
            "/api/v1/chat/completions",
            body=json.dumps(chat(stream=True, max_tokens=2)),
            headers={"Content-Type": "application/json", **AUTH},
        )
        body = connection.getresponse().read()
        self.assertTrue(body.startswith(COMMENT), body[:80])
        self.assertTrue(body.endswith(b"data: [DONE]\n\n"))
