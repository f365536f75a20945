"""
``/v1/embeddings``: the vectors (L{mockoai.sim.embeddings}), the endpoint's
validation and OpenAI's errors, its time (a prefill, through the engine),
the rate limits it spends, and the official SDK's float and base64 forms.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
from twisted.trial.unittest import SynchronousTestCase

from mockoai.ops.config import (
    EMBEDDINGS,
    FAMILY_KINDS,
    OPENAI,
    ModelSpec,
    Settings,
    load_settings,
)
from mockoai.sim import embeddings
from mockoai.sim.embeddings import Embedder, floats, input_bytes, little_endian
from mockoai.sim.latency import constant
from mockoai.sim.tokens import count_text
from tests.optional import needs_openai, openai
from tests.spec import validate
from tests.support import Client, TwistdProcess, make_service

SMALL = "text-embedding-3-small"
LARGE = "text-embedding-3-large"
ADA = "text-embedding-ada-002"
#: The default models' specs, for services that serve a few of them.
SPECS = {spec.id: spec for spec in Settings().served.models}
INVALID_INPUT = (
    "'$.input' is invalid. Please check the API reference: "
    "https://platform.openai.com/docs/api-reference."
)


def vectors_of(body: dict[str, Any]) -> np.ndarray:
    """The float32 vectors of a body, float or base64, as the SDK decodes them."""
    rows = []
    for item in body["data"]:
        value = item["embedding"]
        if isinstance(value, str):
            rows.append(np.frombuffer(base64.b64decode(value), dtype="<f4"))
        else:
            rows.append(np.array(value, dtype=np.float32))
    return np.stack(rows)


class EmbedderTests(SynchronousTestCase):
    def test_unit_length_and_deterministic(self) -> None:
        texts = [input_bytes(f"text number {i}") for i in range(50)]
        first = Embedder(7).vectors(SMALL, texts, 1536)
        again = Embedder(7).vectors(SMALL, texts, 1536)
        self.assertEqual(first.shape, (50, 1536))
        self.assertEqual(first.dtype, np.float32)
        np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-6)
        self.assertTrue(np.array_equal(first, again))
        # One text's vector does not depend on the others in the request.
        alone = Embedder(7).vectors(SMALL, texts[3:4], 1536)
        self.assertTrue(np.array_equal(alone[0], first[3]))

    def test_distinct_texts_models_and_token_ids(self) -> None:
        embedder = Embedder()
        texts = [input_bytes(f"sentence {i}") for i in range(200)]
        vectors = embedder.vectors(SMALL, texts, 256)
        similarity = vectors @ vectors.T
        np.fill_diagonal(similarity, 0.0)
        self.assertLess(float(np.abs(similarity).max()), 0.9)
        self.assertEqual(len({v.tobytes() for v in vectors}), 200)
        other = embedder.vectors(LARGE, texts[:1], 256)
        self.assertFalse(np.array_equal(other[0], vectors[0]))
        ids = embedder.vectors(SMALL, [input_bytes([1, 2, 3])], 256)
        self.assertFalse(np.array_equal(ids[0], embedder.vectors(SMALL, [b"1 2 3"], 256)[0]))

    def test_shortened_is_the_prefix_renormalised(self) -> None:
        embedder = Embedder()
        full = embedder.vectors(SMALL, [b"shorten me"], 1536)[0]
        short = embedder.vectors(SMALL, [b"shorten me"], 1536, 64)[0]
        prefix = full[:64] / np.linalg.norm(full[:64])
        np.testing.assert_allclose(short, prefix, atol=1e-6)
        self.assertEqual(short.shape, (64,))

    def test_floats_read_back_exactly(self) -> None:
        vectors = Embedder().vectors(SMALL, [input_bytes(str(i)) for i in range(300)], 1536)
        rendered = floats(vectors)
        self.assertEqual(len(rendered), 300)  # past one chunk of rows
        for row, text in zip(vectors, rendered):
            self.assertTrue(np.array_equal(np.array(json.loads(text), dtype=np.float32), row))
        self.assertEqual(floats(vectors[:0]), [])
        one = np.ones((1, 1), dtype=np.float32)
        self.assertEqual(floats(one), [b"[ 1.0000000000000000]"])
        self.assertEqual(floats(-one), [b"[-1.0000000000000000]"])

    def test_little_endian(self) -> None:
        vectors = Embedder().vectors(SMALL, [b"x", b"y"], 8)
        data = little_endian(vectors)
        self.assertTrue(np.array_equal(np.frombuffer(data[1], dtype="<f4"), vectors[1]))
        self.assertEqual(len(data[0]), 32)

    def test_prefill_plan(self) -> None:
        settings = load_settings({"response_delay": "100", "prefill_per_token": "2"}, {})
        profile = settings.profile()
        from mockoai.sim.request import GenerationRequest

        wanted = GenerationRequest(EMBEDDINGS, SMALL, 50)
        plan = embeddings.prefill(wanted, profile, np.random.default_rng(0))
        self.assertEqual(plan.choices, [])
        self.assertEqual((plan.tokens, plan.completion_tokens, plan.prompt_tokens), (0, 0, 50))
        self.assertAlmostEqual(plan.ttft, 0.1 + 50 * 0.002)


class EndpointTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.service = make_service()
        self.client = Client(self.service)

    def post(self, body: object, **kwargs: Any) -> Any:
        return self.client.post("/v1/embeddings", body, **kwargs)

    def assertError(
        self, body: object, status: int, message: str, code: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        response = self.post(body)
        self.assertEqual(response.status, status, response.body)
        error: dict[str, Any] = response.json()["error"]
        validate("ErrorResponse", response.json())
        self.assertEqual(error["message"], message)
        self.assertEqual(error["code"], code)
        for name, value in fields.items():
            self.assertEqual(error[name], value)
        return error

    def test_float_body(self) -> None:
        texts = ["The food was delicious.", "The waiter was friendly, and quick."]
        response = self.post({"model": SMALL, "input": texts})
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header("Content-Type"), "application/json")
        self.assertEqual(response.header("openai-processing-ms"), "0")
        body = response.json()
        validate("CreateEmbeddingResponse", body)
        self.assertEqual(body["object"], "list")
        self.assertEqual(body["model"], SMALL)
        self.assertEqual([item["index"] for item in body["data"]], [0, 1])
        self.assertEqual({item["object"] for item in body["data"]}, {"embedding"})
        tokens = sum(count_text(t) for t in texts)
        self.assertEqual(body["usage"], {"prompt_tokens": tokens, "total_tokens": tokens})
        vectors = vectors_of(body)
        self.assertEqual(vectors.shape, (2, 1536))
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
        # The same text, alone or first in another request: the same vector.
        again = vectors_of(self.post({"model": SMALL, "input": texts[1]}).json())
        self.assertTrue(np.array_equal(again[0], vectors[1]))

    def test_base64_is_the_same_vectors(self) -> None:
        request = {"model": LARGE, "input": ["one", "two", "three"]}
        plain = self.post(request).json()
        encoded = self.post({**request, "encoding_format": "base64"}).json()
        self.assertIsInstance(encoded["data"][0]["embedding"], str)
        self.assertEqual(vectors_of(plain).shape, (3, 3072))
        self.assertTrue(np.array_equal(vectors_of(plain), vectors_of(encoded)))
        # The spec describes only the float form; the decoded one matches it.
        decoded = dict(encoded, data=[dict(d, embedding=[0.5]) for d in encoded["data"]])
        validate("CreateEmbeddingResponse", decoded)

    def test_dimensions(self) -> None:
        full = vectors_of(self.post({"model": SMALL, "input": "abc"}).json())[0]
        body = self.post({"model": SMALL, "input": "abc", "dimensions": 256}).json()
        short = vectors_of(body)[0]
        self.assertEqual(short.shape, (256,))
        np.testing.assert_allclose(short, full[:256] / np.linalg.norm(full[:256]), atol=1e-6)
        self.assertError(
            {"model": ADA, "input": "abc", "dimensions": 256},
            400,
            "This model does not support specifying dimensions.",
            param=None,
        )
        self.assertError(
            {"model": SMALL, "input": "abc", "dimensions": 2000},
            400,
            "Invalid 'dimensions': integer above maximum value. Expected a value <= 1536, "
            "but got 2000 instead.",
            "integer_above_max_value",
            param="dimensions",
        )
        self.assertError(
            {"model": SMALL, "input": "abc", "dimensions": 0},
            400,
            "Invalid 'dimensions': integer below minimum value. Expected a value >= 1, "
            "but got 0 instead.",
            "integer_below_min_value",
        )

    def test_token_ids(self) -> None:
        one = self.post({"model": SMALL, "input": [1, 2, 3, 4]}).json()
        self.assertEqual(len(one["data"]), 1)
        self.assertEqual(one["usage"]["prompt_tokens"], 4)
        many = self.post({"model": SMALL, "input": [[1, 2], [3, 4, 5]]}).json()
        self.assertEqual(len(many["data"]), 2)
        self.assertEqual(many["usage"]["prompt_tokens"], 5)
        self.assertTrue(np.array_equal(vectors_of(many)[0], vectors_of(one)[0]) is False)

    def test_invalid_inputs(self) -> None:
        for value in ("", [], [""], ["a", ""], ["a", 1], [[]], [[1], []], [1, "a"], [-1], {}, 3):
            self.assertError({"model": SMALL, "input": value}, 400, INVALID_INPUT, param=None)
        self.assertError({"model": SMALL, "input": ["x"] * 2049}, 400, INVALID_INPUT, param=None)
        self.assertEqual(self.post({"model": SMALL, "input": ["x"] * 2048}).status, 200)
        self.assertError(
            {"model": SMALL},
            400,
            "Missing required parameter: 'input'.",
            "missing_required_parameter",
        )
        self.assertError({"input": "x"}, 400, "you must provide a model parameter")
        self.assertError(
            {"model": SMALL, "input": "x", "encoding_format": "hex"},
            400,
            "Invalid value: 'hex'. Supported values are: 'float', and 'base64'.",
            "invalid_value",
            param="encoding_format",
        )
        self.assertError(
            {"model": SMALL, "input": "x", "user": 5},
            400,
            "Invalid type for 'user': expected a string, but got an integer instead.",
            "invalid_type",
        )

    def test_token_limits(self) -> None:
        self.assertError(
            {"model": SMALL, "input": ["fine", "word " * 8193]},
            400,
            "This model's maximum context length is 8192 tokens, however you requested 8193 "
            "tokens (8193 in your prompt; 0 for the completion). Please reduce your prompt; "
            "or completion length.",
        )
        self.assertEqual(self.post({"model": SMALL, "input": [[7] * 8192]}).status, 200)
        error = self.assertError(
            {"model": SMALL, "input": [[7] * 8000] * 38},
            400,
            "Requested 304000 tokens, max 300000 tokens per request",
            "max_tokens_per_request",
        )
        self.assertEqual(error["type"], "max_tokens_per_request")

    def test_models(self) -> None:
        listed = {m["id"]: m for m in self.client.get("/v1/models").json()["data"]}
        for model in (SMALL, LARGE, ADA):
            self.assertIn(model, listed)
        self.assertEqual(listed[ADA]["owned_by"], "openai-internal")
        self.assertError(
            {"model": "gpt-4o", "input": "x"},
            403,
            "You are not allowed to generate embeddings from this model",
        )
        self.assertError(
            {"model": "nope", "input": "x"},
            404,
            "The model `nope` does not exist or you do not have access to it.",
            "model_not_found",
        )
        chat = self.client.post(
            "/v1/chat/completions",
            {"model": SMALL, "messages": [{"role": "user", "content": "hi"}]},
        )
        self.assertEqual(chat.status, 404)
        self.assertEqual(chat.json()["error"]["param"], "model")

    def test_any_model_and_profiles(self) -> None:
        service = make_service(models=("mine",), any_model=True)
        body = Client(service).post("/v1/embeddings", {"model": "whatever", "input": "x"}).json()
        self.assertEqual(len(body["data"][0]["embedding"]), 1536)
        refused = Client(service).post("/v1/embeddings", {"model": "mine", "input": "x"})
        self.assertEqual(refused.status, 403)
        spec = ModelSpec(
            "acme/embed",
            endpoints=frozenset({EMBEDDINGS}),
            dimensions=384,
            context_length=512,
        )
        client = Client(make_service(models=(spec,)))
        body = client.post("/v1/embeddings", {"model": "acme/embed", "input": "x"}).json()
        self.assertEqual(len(body["data"][0]["embedding"]), 384)
        long = client.post("/v1/embeddings", {"model": "acme/embed", "input": "a " * 513})
        self.assertIn("maximum context length is 512 tokens", long.json()["error"]["message"])

    def test_profile_keys(self) -> None:
        settings = load_settings(
            {"models": [SMALL, "gpt-4o"]},
            {},
        )
        small, chat = settings.served.models
        self.assertEqual(small.endpoints, frozenset({EMBEDDINGS}))
        self.assertEqual(chat.endpoints, FAMILY_KINDS[OPENAI])
        from mockoai.ops.config import _model

        table = _model({"id": "bge", "endpoints": ["embeddings"], "dimensions": 1024})
        self.assertEqual((table.dimensions, table.custom_dimensions), (1024, True))
        ada = _model({"id": ADA, "owned_by": "me"})
        self.assertEqual((ada.endpoints, ada.custom_dimensions), (frozenset({EMBEDDINGS}), False))
        with self.assertRaises(ValueError):
            _model({"id": "x", "endpoints": ["images"]})


class TimingTests(SynchronousTestCase):
    """An embedding is a prefill: the model's time to first token for its prompt."""

    def test_paced_by_the_latency_model(self) -> None:
        service = make_service(
            models=(SPECS[SMALL],), response_delay=constant(0.1), prefill_per_token=0.001
        )
        client = Client(service)
        connection = client.send("POST", "/v1/embeddings", {"model": SMALL, "input": [[1] * 50]})
        service.clock.advance(0.148)
        self.assertEqual(connection.responses(), [])
        service.clock.advance(0.002)
        response = connection.response()
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header("openai-processing-ms"), "150")

    def test_through_the_engine(self) -> None:
        service = make_service(
            models=(SPECS[SMALL],),
            response_delay=constant(0.1),
            itl=constant(0.02),
            prefill_per_token=0.001,
            max_running=1,
            max_waiting=1,
        )
        client = Client(service)
        clock = service.clock
        body = {"model": SMALL, "input": [[1] * 100]}
        first = client.send("POST", "/v1/embeddings", body)
        second = client.send("POST", "/v1/embeddings", body)
        third = client.post("/v1/embeddings", body)
        self.assertEqual(third.status, 429)  # one running, one waiting: the queue is full
        # The first: one step, its prefill (0.1 + 100 x 1 ms).
        clock.advance(0.2)
        self.assertEqual(first.response().status, 200)
        self.assertEqual(second.responses(), [])
        clock.advance(0.2)
        self.assertEqual(second.response().status, 200)
        stats = service.api.metrics.stats.for_model(SMALL)
        self.assertEqual(stats.prompt_tokens.count, 2)

    def test_rate_limits_count_the_tokens(self) -> None:
        service = make_service(tpm=1000)
        client = Client(service)
        response = client.post("/v1/embeddings", {"model": SMALL, "input": [[1] * 300]})
        self.assertEqual(response.header("x-ratelimit-remaining-tokens"), "700")
        response = client.post("/v1/embeddings", {"model": SMALL, "input": [[1] * 800]})
        self.assertEqual(response.status, 429)
        self.assertEqual(response.json()["error"]["code"], "rate_limit_exceeded")


@needs_openai
class SDKTests(SynchronousTestCase):
    """The official SDK against ``twistd -n mockoai``: float and base64 decode alike."""

    def setUp(self) -> None:
        # A server per test: trial runs no setUpClass.
        self.server = TwistdProcess(["--articles", "64"])
        self.addCleanup(self.server.cleanup)
        self.server.start()
        self.addCleanup(self.server.stop)

    def test_float_and_base64(self) -> None:
        client = openai.OpenAI(base_url=f"{self.server.base_url}/v1", api_key="x", max_retries=0)
        self.addCleanup(client.close)
        texts = ["first text", "second text"]
        plain = client.embeddings.create(model=SMALL, input=texts, encoding_format="float")
        # The SDK asks for base64 when no format is given, and decodes it to floats.
        default = client.embeddings.create(model=SMALL, input=texts)
        encoded = client.embeddings.create(model=SMALL, input=texts, encoding_format="base64")
        self.assertEqual(plain.model, SMALL)
        self.assertEqual(plain.usage.prompt_tokens, 4)
        floats_ = np.array([d.embedding for d in plain.data], dtype=np.float32)
        decoded = np.array([d.embedding for d in default.data], dtype=np.float32)
        self.assertEqual(floats_.shape, (2, 1536))
        self.assertTrue(np.array_equal(floats_, decoded))
        raw = np.stack(
            [np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in encoded.data]
        )
        self.assertTrue(np.array_equal(floats_, raw))
        short = client.embeddings.create(model=SMALL, input="first text", dimensions=32)
        self.assertEqual(len(short.data[0].embedding), 32)
        with self.assertRaises(openai.PermissionDeniedError):
            client.embeddings.create(model="gpt-4o", input="x")
