"""
Every endpoint through the production request path, in memory.

Requests go through L{mockoai.wire.site.MockSite}'s protocol (the HTTP/1.1 stack
the server would pick, and twisted.web's as well), its request handling and
the L{mockoai.wire.dispatch.Router}, over a L{twisted.internet.testing.StringTransport}
and a L{twisted.internet.task.Clock}: no sockets, no sleeps.  Every body and
every stream event is validated against OpenAI's official schemas.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

import treq
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from mockoai.ops.config import CHAT, COMPLETIONS, ModelSpec
from mockoai.ops.service import _FLUSH_TIMEOUT
from mockoai.pipeline.ids import IdMaker
from mockoai.sim import tokens
from tests.spec import validate
from tests.support import (
    EPOCH,
    Client,
    Connection,
    NoDelayTransport,
    Response,
    build_request,
    encode_json,
    make_service,
    parse_responses,
    sse_blocks,
    sse_data,
    sse_json,
    stream_text,
    validate_event,
)

CHAT_MODEL = "gpt-4o"
TEXT_MODEL = "gpt-3.5-turbo-instruct"
SLASH_MODEL = "meta-llama/Llama-3.1-8B-Instruct"
MODELS = (
    ModelSpec(CHAT_MODEL, "system", 1715367049, native=frozenset({CHAT})),
    ModelSpec(TEXT_MODEL, "system", 1692901427, native=frozenset({COMPLETIONS})),
    ModelSpec(SLASH_MODEL, "meta-llama"),
)
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Tell me about lorem ipsum, please."},
]
PROMPT = "Once upon a time, in a land far away"

JSON_TYPE = "application/json"
SSE_TYPE = "text/event-stream; charset=utf-8"
REQUEST_ID = re.compile(r"^req_[0-9a-f]{32}$")
CHAT_ID = re.compile(r"^chatcmpl-[A-Za-z0-9]{29}$")
TEXT_ID = re.compile(r"^cmpl-[A-Za-z0-9]{29}$")
CHAT_CHUNK = "CreateChatCompletionStreamResponse"
TEXT_CHUNK = "CreateCompletionStreamResponse"


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": CHAT_MODEL, "messages": MESSAGES, **extra}


def completion(**extra: Any) -> dict[str, Any]:
    return {"model": TEXT_MODEL, "prompt": PROMPT, **extra}


class RouteTestCase(TestCase):
    """A service on a fake clock and an in-memory client for every test."""

    #: HTTP/1.1 stack: "auto" is what the server uses by default.
    http = "auto"
    settings: ClassVar[dict[str, Any]] = {"tokens_mean": 40.0, "tokens_stddev": 10.0}

    def setUp(self) -> None:
        self.use()

    def use(self, **overrides: Any) -> None:
        """(Re)build the service with extra settings."""
        values = {"models": MODELS, "http": self.http, **self.settings, **overrides}
        self.service = make_service(**values)
        self.clock: Clock = self.service.clock
        self.core = self.service.core
        self.client = Client(self.service)

    # --- checks shared by every test -------------------------------------------

    def check_common(self, response: Response, status: int, content_type: str) -> None:
        self.assertTrue(response.complete, "response not complete")
        self.assertEqual(response.status, status, response.body[:500])
        self.assertEqual(response.header("Content-Type"), content_type)
        request_id = response.header("x-request-id")
        self.assertIsNotNone(request_id, "no x-request-id")
        self.assertRegex(request_id, REQUEST_ID)

    def check_json(self, response: Response, schema: str, status: int = 200) -> Any:
        self.check_common(response, status, JSON_TYPE)
        body = response.json()
        validate(schema, body)
        return body

    def check_error(
        self,
        response: Response,
        status: int,
        code: str | None = None,
        param: str | None = None,
        type: str = "invalid_request_error",
        message: str | None = None,
    ) -> dict[str, Any]:
        error: dict[str, Any] = self.check_json(response, "ErrorResponse", status)["error"]
        self.assertEqual(set(error), {"message", "type", "param", "code"})
        self.assertEqual(error["type"], type)
        self.assertEqual(error["code"], code)
        self.assertEqual(error["param"], param)
        self.assertTrue(error["message"])
        if message is not None:
            self.assertEqual(error["message"], message)
        return error

    def check_usage(self, usage: dict[str, Any], prompt: int, completion: int) -> None:
        self.assertEqual(usage["prompt_tokens"], prompt)
        self.assertEqual(usage["completion_tokens"], completion)
        self.assertEqual(usage["total_tokens"], prompt + completion)

    def chat_answer(self, **extra: Any) -> dict[str, Any]:
        response = self.client.post("/v1/chat/completions", chat(**extra))
        body: dict[str, Any] = self.check_json(response, "CreateChatCompletionResponse")
        self.assertIsNotNone(response.header("openai-processing-ms"))
        return body

    def text_answer(self, **extra: Any) -> dict[str, Any]:
        response = self.client.post("/v1/completions", completion(**extra))
        body: dict[str, Any] = self.check_json(response, "CreateCompletionResponse")
        self.assertIsNotNone(response.header("openai-processing-ms"))
        return body

    def stream(self, path: str, request: dict[str, Any], schema: str) -> list[dict[str, Any]]:
        """A complete stream: framing, headers, schema of every event, shared fields."""
        response = self.client.post(path, request)
        self.check_common(response, 200, SSE_TYPE)
        self.assertTrue(response.chunked)
        self.assertIsNone(response.header("Content-Length"))
        self.assertTrue(response.body.endswith(b"\n\ndata: [DONE]\n\n"))
        chunks = sse_json(response.body)
        self.assertTrue(chunks)
        for chunk in chunks:
            validate_event(schema, chunk)
        first = chunks[0]
        for chunk in chunks:
            for key in ("id", "object", "created", "model"):
                self.assertEqual(chunk[key], first[key], key)
            self.assertEqual(chunk.get("system_fingerprint"), first.get("system_fingerprint"))
        return chunks

    def chat_stream(self, **extra: Any) -> list[dict[str, Any]]:
        chunks = self.stream("/v1/chat/completions", chat(stream=True, **extra), CHAT_CHUNK)
        self.assertRegex(chunks[0]["id"], CHAT_ID)
        self.assertEqual(chunks[0]["object"], "chat.completion.chunk")
        return chunks

    def text_stream(self, **extra: Any) -> list[dict[str, Any]]:
        chunks = self.stream("/v1/completions", completion(stream=True, **extra), TEXT_CHUNK)
        self.assertRegex(chunks[0]["id"], TEXT_ID)
        self.assertEqual(chunks[0]["object"], "text_completion")
        return chunks

    def check_chat_choices(
        self, chunks: list[dict[str, Any]], n: int = 1, include_usage: bool = False
    ) -> tuple[list[str], list[str]]:
        """
        Per choice: the role chunk first, content chunks, a finish chunk with
        an empty delta last; with ``include_usage``, a final ``choices: []``
        chunk and ``usage: null`` on every earlier one.  Returns the texts
        and finish reasons.
        """
        if include_usage:
            *chunks, usage_chunk = chunks
            self.assertEqual(usage_chunk["choices"], [])
            self.assertIsInstance(usage_chunk["usage"], dict)
            for chunk in chunks:
                self.assertIn("usage", chunk)
                self.assertIsNone(chunk["usage"])
        per_choice: dict[int, list[dict[str, Any]]] = {}
        for chunk in chunks:
            self.assertEqual(len(chunk["choices"]), 1)
            choice = chunk["choices"][0]
            per_choice.setdefault(choice["index"], []).append(choice)
        self.assertEqual(sorted(per_choice), list(range(n)))
        texts, reasons = [], []
        for index in range(n):
            events = per_choice[index]
            opening, *middle, closing = events
            self.assertEqual(opening["delta"]["role"], "assistant")
            self.assertEqual(opening["delta"]["content"], "")
            self.assertEqual(set(opening["delta"]) - {"role", "content"}, {"refusal"})
            self.assertIsNone(opening["delta"]["refusal"])
            self.assertIsNone(opening["finish_reason"])
            for event in middle:
                self.assertEqual(set(event["delta"]), {"content"})
                self.assertTrue(event["delta"]["content"])
                self.assertIsNone(event["finish_reason"])
            self.assertEqual(closing["delta"], {})
            self.assertIn(closing["finish_reason"], ("stop", "length"))
            texts.append("".join(e["delta"]["content"] for e in middle))
            reasons.append(closing["finish_reason"])
        return texts, reasons

    def check_text_choices(
        self, chunks: list[dict[str, Any]], n: int = 1, include_usage: bool = False
    ) -> tuple[list[str], list[str]]:
        """Completions streams: text chunks, then one with ``text: ""`` and the reason."""
        if include_usage:
            *chunks, usage_chunk = chunks
            self.assertEqual(usage_chunk["choices"], [])
            self.assertIsInstance(usage_chunk["usage"], dict)
            for chunk in chunks:
                self.assertIn("usage", chunk)
                self.assertIsNone(chunk["usage"])
        per_choice: dict[int, list[dict[str, Any]]] = {}
        for chunk in chunks:
            self.assertEqual(len(chunk["choices"]), 1)
            choice = chunk["choices"][0]
            per_choice.setdefault(choice["index"], []).append(choice)
        self.assertEqual(sorted(per_choice), list(range(n)))
        texts, reasons = [], []
        for index in range(n):
            *middle, closing = per_choice[index]
            for event in middle:
                self.assertTrue(event["text"])
                self.assertIsNone(event["finish_reason"])
            self.assertEqual(closing["text"], "")
            self.assertIn(closing["finish_reason"], ("stop", "length"))
            texts.append("".join(e["text"] for e in middle))
            reasons.append(closing["finish_reason"])
        return texts, reasons


# ---------------------------------------------------------------------------
# POST /v1/chat/completions


class ChatCompletionTests(RouteTestCase):
    def test_answer(self) -> None:
        body = self.chat_answer()
        self.assertRegex(body["id"], CHAT_ID)
        self.assertEqual(body["object"], "chat.completion")
        self.assertEqual(body["model"], CHAT_MODEL)
        self.assertEqual(body["created"], int(EPOCH))
        self.assertEqual(body["system_fingerprint"], "fp_6d6f636b6f")
        [choice] = body["choices"]
        self.assertEqual(choice["index"], 0)
        self.assertEqual(choice["message"]["role"], "assistant")
        self.assertTrue(choice["message"]["content"])
        self.assertIn(choice["finish_reason"], ("stop", "length"))

    def test_usage_is_the_text_sent(self) -> None:
        body = self.chat_answer(n=3)
        sent = sum(tokens.count_text(c["message"]["content"]) for c in body["choices"])
        self.check_usage(body["usage"], tokens.count_messages(MESSAGES), sent)

    def test_prompt_tokens_grow_with_the_prompt(self) -> None:
        short = self.chat_answer()["usage"]["prompt_tokens"]
        longer = [*MESSAGES, {"role": "user", "content": "one two three four five"}]
        response = self.client.post("/v1/chat/completions", chat(messages=longer))
        body = self.check_json(response, "CreateChatCompletionResponse")
        self.assertEqual(body["usage"]["prompt_tokens"], short + 3 + 1 + 5)

    def test_n_choices_are_distinct(self) -> None:
        body = self.chat_answer(n=5)
        choices = body["choices"]
        self.assertEqual([c["index"] for c in choices], [0, 1, 2, 3, 4])
        texts = [c["message"]["content"] for c in choices]
        self.assertEqual(len(set(texts)), 5)

    def test_stop_cuts_the_text_before_a_word(self) -> None:
        full = self.chat_answer(seed=7, ignore_eos=True, max_tokens=30)
        text = full["choices"][0]["message"]["content"]
        words = text.split()
        stop = " " + words[len(words) // 2]
        expected = text[: text.index(stop)]
        body = self.chat_answer(seed=7, ignore_eos=True, max_tokens=30, stop=stop)
        [choice] = body["choices"]
        self.assertEqual(choice["message"]["content"], expected)
        self.assertNotIn(stop, choice["message"]["content"])
        self.assertEqual(choice["finish_reason"], "stop")
        self.check_usage(
            body["usage"], tokens.count_messages(MESSAGES), tokens.count_text(expected)
        )

    def test_stop_inside_a_word(self) -> None:
        full = self.chat_answer(seed=11, ignore_eos=True, max_tokens=40)
        text = full["choices"][0]["message"]["content"]
        word = max(text.split()[5:], key=len)
        stop = ["zzz-never", word[1:4]]
        expected = text[: text.index(stop[1])]
        body = self.chat_answer(seed=11, ignore_eos=True, max_tokens=40, stop=stop)
        [choice] = body["choices"]
        self.assertEqual(choice["message"]["content"], expected)
        self.assertEqual(choice["finish_reason"], "stop")
        # The partly sent word counts as a token, as re-tokenizing it does.
        self.assertEqual(body["usage"]["completion_tokens"], tokens.count_text(expected))

    def test_seed_is_reproducible(self) -> None:
        one = self.chat_answer(seed=1234, n=2)
        two = self.chat_answer(seed=1234, n=2)
        self.assertNotEqual(one["id"], two["id"])
        self.assertEqual(one["choices"], two["choices"])
        self.assertEqual(one["usage"], two["usage"])
        other = self.chat_answer(seed=4321, n=2)
        self.assertNotEqual(one["choices"], other["choices"])

    def test_ignore_eos_runs_to_max_tokens(self) -> None:
        for param in ("max_tokens", "max_completion_tokens"):
            body = self.chat_answer(ignore_eos=True, n=2, **{param: 77})
            for choice in body["choices"]:
                self.assertEqual(choice["finish_reason"], "length")
                self.assertEqual(tokens.count_text(choice["message"]["content"]), 77)
            self.assertEqual(body["usage"]["completion_tokens"], 154)

    def test_max_tokens_cuts_with_length(self) -> None:
        body = self.chat_answer(max_tokens=3, n=3)
        for choice in body["choices"]:
            self.assertEqual(choice["finish_reason"], "length")
            self.assertEqual(tokens.count_text(choice["message"]["content"]), 3)

    def test_min_tokens(self) -> None:
        body = self.chat_answer(min_tokens=90, n=4)
        for choice in body["choices"]:
            self.assertGreaterEqual(tokens.count_text(choice["message"]["content"]), 90)

    def test_any_model_echoes_the_name(self) -> None:
        self.use(any_model=True)
        body = self.chat_answer(model="acme/unreleased-model-9000")
        self.assertEqual(body["model"], "acme/unreleased-model-9000")
        listed = self.client.get("/v1/models").json()
        self.assertNotIn("acme/unreleased-model-9000", [m["id"] for m in listed["data"]])

    def test_unknown_model(self) -> None:
        response = self.client.post("/v1/chat/completions", chat(model="gpt-99"))
        self.check_error(
            response,
            404,
            code="model_not_found",
            message="The model `gpt-99` does not exist or you do not have access to it.",
        )

    def test_completions_model_on_chat(self) -> None:
        """Every model answers on both endpoints by default, as on vLLM."""
        body = self.chat_answer(model=TEXT_MODEL)
        self.assertEqual(body["model"], TEXT_MODEL)

    def test_completions_model_on_chat_strict(self) -> None:
        self.use(strict_endpoints=True)
        response = self.client.post("/v1/chat/completions", chat(model=TEXT_MODEL))
        error = self.check_error(response, 404, param="model")
        self.assertIn("v1/completions", error["message"])


class ChatStreamTests(RouteTestCase):
    def test_framing(self) -> None:
        response = self.client.post("/v1/chat/completions", chat(stream=True))
        self.check_common(response, 200, SSE_TYPE)
        self.assertEqual(response.header("Cache-Control"), "no-cache")
        text = response.body.decode()
        # Nothing but "data: ...\n\n" events, [DONE] once and last.
        self.assertRegex(text, r"\A(data: \{[^\n]*\}\n\n)+data: \[DONE\]\n\n\Z")
        self.assertEqual(sse_blocks(text)[-1], "data: [DONE]")

    def test_events(self) -> None:
        chunks = self.chat_stream()
        [text], [_reason] = self.check_chat_choices(chunks)
        self.assertTrue(text)
        for chunk in chunks:
            self.assertEqual(chunk["model"], CHAT_MODEL)
            self.assertEqual(chunk["system_fingerprint"], "fp_6d6f636b6f")
            self.assertIsNone(chunk.get("usage"))

    def test_include_usage(self) -> None:
        chunks = self.chat_stream(stream_options={"include_usage": True})
        [text], _ = self.check_chat_choices(chunks, include_usage=True)
        content_events = [
            c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")
        ]
        # One token per event by default (--stream-tokens 1).
        self.assertEqual(len(content_events), tokens.count_text(text))
        usage = chunks[-1]["usage"]
        self.check_usage(usage, tokens.count_messages(MESSAGES), tokens.count_text(text))
        validate("CompletionUsage", usage)

    def test_continuous_usage_stats(self) -> None:
        self.use(stream_tokens=(1, 4))
        chunks = self.chat_stream(
            n=2, stream_options={"include_usage": True, "continuous_usage_stats": True}
        )
        prompt = tokens.count_messages(MESSAGES)
        sent = 0
        sizes = set()
        for chunk in chunks[:-1]:
            [choice] = chunk["choices"]
            piece = tokens.count_text(choice["delta"].get("content") or "")
            sizes.add(piece)
            sent += piece
            self.check_usage(chunk["usage"], prompt, sent)
        self.assertLessEqual(max(sizes), 4)
        self.assertGreater(len(sizes - {0}), 1, "--stream-tokens 1-4 gave one size only")
        texts, _ = self.check_chat_choices(
            [{**c, "usage": None} for c in chunks[:-1]] + chunks[-1:], n=2, include_usage=True
        )
        self.assertEqual(sent, sum(tokens.count_text(t) for t in texts))
        self.check_usage(chunks[-1]["usage"], prompt, sent)

    def test_n_choices_interleave(self) -> None:
        # Paced, so the choices' events fall due at the same times and interleave.
        self.use(itl=0.01, stream_tokens=(1, 3))
        chunks = self.chat_stream(n=3, max_tokens=20, ignore_eos=True)
        texts, reasons = self.check_chat_choices(chunks, n=3)
        self.assertEqual(reasons, ["length"] * 3)
        self.assertEqual(len(set(texts)), 3)
        for text in texts:
            self.assertEqual(tokens.count_text(text), 20)
        indexes = [c["choices"][0]["index"] for c in chunks]
        self.assertNotEqual(indexes, sorted(indexes), "choices did not interleave")

    def test_ignore_eos_stream_sends_exactly_max_tokens(self) -> None:
        chunks = self.chat_stream(
            max_completion_tokens=33, ignore_eos=True, stream_options={"include_usage": True}
        )
        [text], [reason] = self.check_chat_choices(chunks, include_usage=True)
        self.assertEqual(reason, "length")
        self.assertEqual(tokens.count_text(text), 33)
        self.assertEqual(chunks[-1]["usage"]["completion_tokens"], 33)

    def test_stream_is_the_seeded_answer(self) -> None:
        plain = self.chat_answer(seed=99, n=2)
        chunks = self.chat_stream(seed=99, n=2, stream_options={"include_usage": True})
        texts, reasons = self.check_chat_choices(chunks, n=2, include_usage=True)
        self.assertEqual(texts, [c["message"]["content"] for c in plain["choices"]])
        self.assertEqual(reasons, [c["finish_reason"] for c in plain["choices"]])
        self.assertEqual(chunks[-1]["usage"], plain["usage"])

    def test_stop_in_stream(self) -> None:
        plain = self.chat_answer(seed=5, max_tokens=30, ignore_eos=True)
        text = plain["choices"][0]["message"]["content"]
        stop = " " + text.split()[10]
        chunks = self.chat_stream(
            seed=5,
            max_tokens=30,
            ignore_eos=True,
            stop=[stop],
            stream_options={"include_usage": True},
        )
        [streamed], [reason] = self.check_chat_choices(chunks, include_usage=True)
        self.assertEqual(streamed, text[: text.index(stop)])
        self.assertEqual(reason, "stop")
        self.assertEqual(chunks[-1]["usage"]["completion_tokens"], tokens.count_text(streamed))

    def test_without_obfuscation(self) -> None:
        chunks = self.chat_stream(stream_options={"include_obfuscation": False})
        self.assertTrue(all("obfuscation" not in c for c in chunks))
        padded = self.chat_stream()
        self.assertTrue(all(isinstance(c.get("obfuscation"), str) for c in padded))


# ---------------------------------------------------------------------------
# POST /v1/completions


class CompletionTests(RouteTestCase):
    def test_answer(self) -> None:
        body = self.text_answer()
        self.assertRegex(body["id"], TEXT_ID)
        self.assertEqual(body["object"], "text_completion")
        self.assertEqual(body["model"], TEXT_MODEL)
        [choice] = body["choices"]
        self.assertTrue(choice["text"])
        self.check_usage(
            body["usage"], tokens.count_text(PROMPT), tokens.count_text(choice["text"])
        )

    def test_batch_of_prompts_with_n(self) -> None:
        prompts = ["first prompt", "the second prompt here", [1, 2, 3, 4, 5, 6, 7]]
        body = self.text_answer(prompt=prompts, n=2)
        choices = body["choices"]
        self.assertEqual([c["index"] for c in choices], list(range(6)))
        self.assertEqual(len({c["text"] for c in choices}), 6)
        sent = sum(tokens.count_text(c["text"]) for c in choices)
        self.check_usage(body["usage"], 2 + 4 + 7, sent)

    def test_echo(self) -> None:
        body = self.text_answer(echo=True, max_tokens=5)
        text = body["choices"][0]["text"]
        self.assertTrue(text.startswith(PROMPT))
        self.assertEqual(tokens.count_text(text[len(PROMPT) :]), 5)

    def test_ignore_eos(self) -> None:
        body = self.text_answer(ignore_eos=True, max_tokens=64)
        [choice] = body["choices"]
        self.assertEqual(choice["finish_reason"], "length")
        self.assertEqual(tokens.count_text(choice["text"]), 64)
        self.assertEqual(body["usage"]["completion_tokens"], 64)

    def test_stream(self) -> None:
        chunks = self.text_stream(stream_options={"include_usage": True})
        [text], [reason] = self.check_text_choices(chunks, include_usage=True)
        self.assertIn(reason, ("stop", "length"))
        self.assertEqual(len(chunks) - 2, tokens.count_text(text))
        self.check_usage(chunks[-1]["usage"], tokens.count_text(PROMPT), tokens.count_text(text))

    def test_stream_n_and_seed(self) -> None:
        plain = self.text_answer(seed=3, n=2, stop="q")
        chunks = self.text_stream(seed=3, n=2, stop="q")
        texts, reasons = self.check_text_choices(chunks, n=2)
        self.assertEqual(texts, [c["text"] for c in plain["choices"]])
        self.assertEqual(reasons, [c["finish_reason"] for c in plain["choices"]])
        for text in texts:
            self.assertNotIn("q", text)

    def test_stream_continuous_usage(self) -> None:
        self.use(stream_tokens=(2, 3))
        chunks = self.text_stream(
            max_tokens=25, ignore_eos=True, stream_options={"continuous_usage_stats": True}
        )
        sent = 0
        for chunk in chunks:
            piece = tokens.count_text(chunk["choices"][0]["text"])
            self.assertLessEqual(piece, 3)
            sent += piece
            self.check_usage(chunk["usage"], tokens.count_text(PROMPT), sent)
        self.assertEqual(sent, 25)

    def test_chat_model_on_completions(self) -> None:
        """What guidellm, aiperf and inference-perf do: gpt-4o, the first listed, on both."""
        body = self.text_answer(model=CHAT_MODEL)
        self.assertEqual(body["model"], CHAT_MODEL)

    def test_chat_model_on_completions_strict(self) -> None:
        self.use(strict_endpoints=True)
        response = self.client.post("/v1/completions", completion(model=CHAT_MODEL))
        error = self.check_error(response, 404, param="model")
        self.assertEqual(
            error["message"],
            "This is a chat model and not supported in the v1/completions endpoint. "
            "Did you mean to use v1/chat/completions?",
        )

    def test_profile_endpoints_restrict_without_strict(self) -> None:
        self.use(models=(ModelSpec("chat-only", endpoints=frozenset({"chat"})),))
        response = self.client.post("/v1/completions", completion(model="chat-only"))
        self.check_error(response, 404, param="model")

    def test_unknown_model(self) -> None:
        response = self.client.post("/v1/completions", completion(model="davinci-004"))
        self.check_error(response, 404, code="model_not_found")

    def test_any_model(self) -> None:
        self.use(any_model=True)
        body = self.text_answer(model="my/weird model name")
        self.assertEqual(body["model"], "my/weird model name")


# ---------------------------------------------------------------------------
# GET /v1/models, /v1/models/{id}, /health


class ModelTests(RouteTestCase):
    def test_list(self) -> None:
        body = self.check_json(self.client.get("/v1/models"), "ListModelsResponse")
        self.assertEqual(body["object"], "list")
        self.assertEqual(
            [(m["id"], m["owned_by"], m["created"]) for m in body["data"]],
            [(m.id, m.owned_by, m.created) for m in MODELS],
        )
        for model in body["data"]:
            validate("Model", model)

    def test_retrieve(self) -> None:
        for spec in MODELS:
            body = self.check_json(self.client.get(f"/v1/models/{spec.id}"), "Model")
            self.assertEqual(
                body,
                {
                    "id": spec.id,
                    "object": "model",
                    "created": spec.created,
                    "owned_by": spec.owned_by,
                },
            )

    def test_retrieve_encoded_slash(self) -> None:
        for path in (
            "/v1/models/meta-llama%2FLlama-3.1-8B-Instruct",
            "/v1/models/meta-llama%2fLlama-3.1-8B-Instruct",
            "/v1/models/meta-llama/Llama-3.1-8B-Instruct",
        ):
            body = self.check_json(self.client.get(path), "Model")
            self.assertEqual(body["id"], SLASH_MODEL)
            self.assertEqual(body["owned_by"], "meta-llama")

    def test_slash_model_serves_both_endpoints(self) -> None:
        body = self.chat_answer(model=SLASH_MODEL)
        self.assertEqual(body["model"], SLASH_MODEL)
        body = self.text_answer(model=SLASH_MODEL)
        self.assertEqual(body["model"], SLASH_MODEL)

    def test_retrieve_unknown(self) -> None:
        for model_id in ("gpt-99", "meta-llama/Unknown", "meta-llama%2FUnknown"):
            response = self.client.get(f"/v1/models/{model_id}")
            error = self.check_error(response, 404, code="model_not_found")
            self.assertIn(model_id.replace("%2F", "/"), error["message"])

    def test_retrieve_with_any_model(self) -> None:
        self.use(any_model=True)
        body = self.check_json(self.client.get("/v1/models/org/anything"), "Model")
        self.assertEqual(body["id"], "org/anything")

    def test_health(self) -> None:
        response = self.client.get("/health")
        self.check_common(response, 200, JSON_TYPE)
        self.assertEqual(response.json(), {"status": "ok"})


# ---------------------------------------------------------------------------
# Errors


class ErrorTests(RouteTestCase):
    def post(self, path: str, body: bytes) -> Response:
        return self.client.request(
            "POST", path, body=body, headers={"Content-Type": "application/json"}
        )

    def test_invalid_json(self) -> None:
        for path in ("/v1/chat/completions", "/v1/completions"):
            for raw in (b"{", b"", b"{'model': 1}", b"\xff\xfe"):
                error = self.check_error(self.post(path, raw), 400)
                self.assertIn("could not parse the JSON body", error["message"])

    def test_not_an_object(self) -> None:
        self.check_error(self.post("/v1/chat/completions", b"[1, 2]"), 400, code="invalid_type")

    def test_missing_fields(self) -> None:
        cases = [
            ("/v1/chat/completions", {"model": CHAT_MODEL}, "messages"),
            ("/v1/completions", {"model": TEXT_MODEL}, "prompt"),
            ("/v1/chat/completions", chat(messages=[{"content": "x"}]), "messages[0].role"),
            ("/v1/chat/completions", chat(messages=[{"role": "user"}]), "messages[0].content"),
        ]
        for path, body, param in cases:
            response = self.client.post(path, body)
            self.check_error(response, 400, code="missing_required_parameter", param=param)
        response = self.client.post("/v1/chat/completions", {"messages": MESSAGES})
        self.check_error(response, 400, message="you must provide a model parameter")

    def test_wrong_types(self) -> None:
        cases = [
            (chat(messages="hello"), "messages"),
            (chat(model=4), "model"),
            (chat(max_tokens="5"), "max_tokens"),
            (chat(max_completion_tokens=5.5), "max_completion_tokens"),
            (chat(n=True), "n"),
            (chat(stream="yes"), "stream"),
            (chat(temperature="hot"), "temperature"),
            (chat(stop=5), "stop"),
            (chat(stop=["a", 1]), "stop[1]"),
            (chat(seed="x"), "seed"),
            (chat(messages=[1]), "messages[0]"),
            (chat(stream=True, stream_options=[]), "stream_options"),
        ]
        for body, param in cases:
            response = self.client.post("/v1/chat/completions", body)
            self.check_error(response, 400, code="invalid_type", param=param)
        response = self.client.post("/v1/completions", completion(prompt={"a": 1}))
        self.check_error(response, 400, code="invalid_type", param="prompt")

    def test_out_of_range(self) -> None:
        cases = [
            (chat(n=0), "n", "integer_below_min_value"),
            (chat(n=129), "n", "integer_above_max_value"),
            (chat(max_tokens=0), "max_tokens", "integer_below_min_value"),
            (chat(temperature=2.5), "temperature", "decimal_above_max_value"),
            (chat(top_p=-0.1), "top_p", "decimal_below_min_value"),
            (chat(presence_penalty=-3), "presence_penalty", "decimal_below_min_value"),
            (chat(stop=["a", "b", "c", "d", "e"]), "stop", "array_above_max_length"),
            (chat(messages=[]), "messages", "empty_array"),
            (chat(max_tokens=5000), "max_tokens", "invalid_value"),
            (chat(max_completion_tokens=5000), "max_completion_tokens", "invalid_value"),
            (chat(top_logprobs=3), "top_logprobs", "invalid_value"),
            (
                chat(messages=[{"role": "robot", "content": "x"}]),
                "messages[0].role",
                "invalid_value",
            ),
        ]
        for body, param, code in cases:
            response = self.client.post("/v1/chat/completions", body)
            self.check_error(response, 400, code=code, param=param)

    def test_stream_options_need_stream(self) -> None:
        response = self.client.post(
            "/v1/chat/completions", chat(stream_options={"include_usage": True})
        )
        self.check_error(response, 400, param="stream_options")

    def test_unknown_fields_are_tolerated(self) -> None:
        body = self.chat_answer(
            max_tokens=4, provider={"order": ["x"]}, transforms=[], chat_template_kwargs={}
        )
        self.assertEqual(body["usage"]["completion_tokens"], 4)

    def test_unknown_path(self) -> None:
        for method, path in (
            ("GET", "/v1/nope"),
            ("POST", "/v1/chat/completions/"),
            ("GET", "/"),
            ("POST", "/v2/completions"),
        ):
            response = self.client.request(method, path)
            self.check_error(response, 404, message=f"Invalid URL ({method} {path})")

    def test_wrong_method(self) -> None:
        for method, path, allowed in (
            ("GET", "/v1/chat/completions", "POST"),
            ("PUT", "/v1/completions", "POST"),
            ("POST", "/v1/models", "GET"),
            ("DELETE", "/v1/models/gpt-4o", "GET"),
            ("POST", "/health", "GET"),
        ):
            response = self.client.request(method, path)
            self.check_error(response, 405, message=f"Invalid method for URL ({method} {path})")
            self.assertEqual(response.header("Allow"), allowed)

    def test_non_utf8_path(self) -> None:
        # A percent-escape that is not UTF-8 still gets an envelope (once
        # crashed the error renderer: the surrogate could not be encoded).
        response = self.client.get("/v1/models/%ff")
        self.check_error(response, 404, code="model_not_found")

    def test_lone_surrogate_in_model_name(self) -> None:
        # Not Unicode, so no model's name: refused as a strict JSON parser
        # refuses it, naming the field (tests/test_hostile.py has every field).
        raw = b'{"model": "\\udcff", "messages": [{"role": "user", "content": "x"}]}'
        response = self.post("/v1/chat/completions", raw)
        self.check_error(response, 400, param="model", code="invalid_value")

    def test_body_too_large(self) -> None:
        self.use(max_body_size=2048)
        big = encode_json(chat(messages=[{"role": "user", "content": "x" * 4000}]))
        small = encode_json(chat(max_tokens=2))
        for chunked in (False, True):
            connection = self.client.connect()
            # Headers and the first part of the body only: refused before the rest.
            raw = build_request("POST", "/v1/chat/completions", big, chunked=chunked)
            connection.send(raw[:1500])
            if chunked:
                connection.send(raw[1500:])
            # A request behind it on the same connection is never answered.
            connection.send(build_request("POST", "/v1/chat/completions", small))
            [response] = connection.responses()
            error = self.check_error(response, 413, code="request_too_large")
            self.assertIn("2048", error["message"])
            self.assertEqual(response.header("Connection"), "close")
            self.assertTrue(connection.closing, "connection left open after 413")
        self.assertEqual(self.service.site.active, 0)

    def test_body_at_the_limit_is_read(self) -> None:
        body = encode_json(chat(max_tokens=2))
        self.use(max_body_size=1024)
        empty = body[:-1] + b', "pad": ""}'
        padded = body[:-1] + b', "pad": "' + b"x" * (1024 - len(empty)) + b'"}'
        self.assertEqual(len(padded), 1024)
        for chunked in (False, True):
            response = self.client.request(
                "POST", "/v1/chat/completions", body=padded, chunked=chunked
            )
            self.check_json(response, "CreateChatCompletionResponse")

    def test_request_ids_are_unique(self) -> None:
        seen = set()
        for method, path, body in (
            ("GET", "/v1/models", None),
            ("GET", "/health", None),
            ("POST", "/v1/chat/completions", b"{"),
            ("GET", "/nope", None),
            ("POST", "/v1/chat/completions", encode_json(chat(max_tokens=1))),
        ):
            response = self.client.request(method, path, body=body)
            seen.add(response.header("x-request-id"))
        self.assertEqual(len(seen), 5)
        self.assertNotIn(None, seen)


# ---------------------------------------------------------------------------
# The connection


class ConnectionTests(RouteTestCase):
    def test_tcp_nodelay(self) -> None:
        connection = self.client.connect()
        self.assertIsInstance(connection.transport, NoDelayTransport)
        self.assertTrue(connection.transport.nodelay)

    def test_keep_alive(self) -> None:
        connection = self.client.connect()
        for path in ("/v1/models", "/health", "/v1/models/gpt-4o", "/nope"):
            before = len(connection.responses())
            connection.request("GET", path)
            self.assertEqual(len(connection.responses()), before + 1)
        connection.request("POST", "/v1/chat/completions", json_body=chat(stream=True))
        responses = connection.responses()
        self.assertEqual([r.status for r in responses], [200, 200, 200, 404, 200])
        self.assertTrue(all(r.complete for r in responses))
        sse_json(responses[-1].body)
        self.assertFalse(connection.closing)

    def test_pipelined_requests_answer_in_order(self) -> None:
        connection = self.client.connect()
        connection.send(
            build_request("GET", "/v1/models/gpt-4o")
            + build_request("POST", "/v1/chat/completions", encode_json(chat(max_tokens=2)))
            + build_request("GET", "/health")
        )
        responses = connection.responses()
        self.assertEqual([r.status for r in responses], [200, 200, 200])
        self.assertEqual(responses[0].json()["id"], "gpt-4o")
        validate("CreateChatCompletionResponse", responses[1].json())
        self.assertEqual(responses[2].json(), {"status": "ok"})

    def test_client_connection_close(self) -> None:
        connection = self.client.connect()
        connection.request("GET", "/v1/models", headers={"Connection": "close"})
        response = connection.response()
        self.assertEqual(response.status, 200)
        self.assertTrue(connection.closing)


# ---------------------------------------------------------------------------
# Time, on a Clock


class PausingTransport(NoDelayTransport):
    """A transport whose send buffer is 'full' past ``limit`` bytes until drained."""

    limit = 4096
    paused = False
    pauses = 0

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def write(self, data: bytes) -> None:
        super().write(data)
        if not self.paused and self.producer is not None and len(self.value()) > self.limit:
            self.paused = True
            self.pauses += 1
            self.producer.pauseProducing()

    def drain(self) -> None:
        self.paused = False
        self.producer.resumeProducing()


class TimingTests(RouteTestCase):
    settings: ClassVar[dict[str, Any]] = {"response_delay": 0.2, "itl": 0.01}

    def setUp(self) -> None:
        super().setUp()
        self.t0 = self.clock.seconds()

    def at(self, ms: float) -> None:
        """Run the clock to ``ms`` milliseconds after the request."""
        target = self.t0 + ms / 1000
        self.assertGreaterEqual(target, self.clock.seconds())
        self.clock.advance(target - self.clock.seconds())

    def events(self, connection: Connection) -> list[str]:
        responses = connection.responses()
        return sse_data(responses[0].body) if responses else []

    def pacers_idle(self) -> bool:
        return all(len(pacer) == 0 for pacer in self.core.pacers())

    def test_answer_waits_for_the_last_token(self) -> None:
        for n_tokens in (1, 7):
            self.t0 = self.clock.seconds()
            connection = self.client.send(
                "POST", "/v1/chat/completions", chat(max_tokens=n_tokens, ignore_eos=True)
            )
            due = 200 + (n_tokens - 1) * 10
            self.at(due - 0.1)
            self.assertEqual(connection.received(), b"", "answered early")
            self.at(due + 0.1)
            response = connection.response()
            body = self.check_json(response, "CreateChatCompletionResponse")
            self.assertEqual(body["usage"]["completion_tokens"], n_tokens)
            self.assertEqual(response.header("openai-processing-ms"), str(due))
            self.assertTrue(self.pacers_idle())

    def test_stream_events_at_their_times(self) -> None:
        connection = self.client.send(
            "POST",
            "/v1/chat/completions",
            chat(
                stream=True, max_tokens=5, ignore_eos=True, stream_options={"include_usage": True}
            ),
        )
        # Headers go out at once, events not before they are due.
        [response] = connection.responses()
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, b"")
        # role + first token at 200 ms, a token every 10 ms, then finish, usage, [DONE].
        schedule = [(200, 2), (210, 3), (220, 4), (230, 5), (240, 9)]
        sent = 0
        for due, total in schedule:
            self.at(due - 0.1)
            self.assertEqual(len(self.events(connection)), sent, f"events before {due} ms")
            self.at(due + 0.1)
            self.assertEqual(len(self.events(connection)), total, f"events at {due} ms")
            sent = total
        chunks = sse_json(connection.response().body)
        self.check_chat_choices(chunks, include_usage=True)
        self.assertTrue(connection.response().complete)
        self.assertTrue(self.pacers_idle())
        self.assertEqual(self.service.site.active, 0)

    def test_disconnect_stops_the_stream(self) -> None:
        connection = self.client.send(
            "POST", "/v1/chat/completions", chat(stream=True, max_tokens=50, ignore_eos=True)
        )
        self.at(255)
        self.assertEqual(len(self.events(connection)), 7)  # role + 6 tokens
        self.assertEqual(self.service.site.active, 1)
        connection.disconnect()
        written = connection.received()
        self.assertTrue(self.pacers_idle(), "a waiter is left for the lost stream")
        self.assertEqual(self.service.site.active, 0)
        self.at(2000)
        self.assertEqual(connection.received(), written, "wrote after the disconnect")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_disconnect_cancels_a_waiting_answer(self) -> None:
        connection = self.client.send("POST", "/v1/chat/completions", chat(max_tokens=5))
        self.at(100)
        self.assertFalse(self.pacers_idle())
        connection.disconnect()
        self.assertTrue(self.pacers_idle())
        self.assertEqual(self.service.site.active, 0)
        self.at(1000)
        self.assertEqual(connection.received(), b"")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_paused_stream_writes_nothing_until_resumed(self) -> None:
        connection = self.client.send(
            "POST", "/v1/chat/completions", chat(stream=True, max_tokens=8, ignore_eos=True)
        )
        self.at(225)
        self.assertEqual(len(self.events(connection)), 4)  # role + 3 tokens
        producer = connection.transport.producer
        self.assertIsNotNone(producer, "the stream registered no producer")
        producer.pauseProducing()
        written = connection.received()
        self.at(400)
        self.assertEqual(connection.received(), written, "wrote while paused")
        self.assertTrue(self.pacers_idle(), "a paused stream keeps a timer")
        producer.resumeProducing()
        # Everything due meanwhile goes out at once, and the stream completes.
        chunks = sse_json(connection.response().body)
        [text], [reason] = self.check_chat_choices(chunks)
        self.assertEqual(tokens.count_text(text), 8)
        self.assertEqual(reason, "length")


class BackPressureTests(RouteTestCase):
    """An unpaced stream yields to a full transport."""

    def test_unpaced_stream_pauses(self) -> None:
        transport = PausingTransport()
        connection = self.client.connect(transport)
        connection.request(
            "POST",
            "/v1/chat/completions",
            json_body=chat(stream=True, max_tokens=2000, ignore_eos=True),
        )
        self.assertEqual(transport.pauses, 1)
        self.assertFalse(connection.response().complete)
        written = connection.received()
        self.clock.advance(10)
        self.assertEqual(connection.received(), written, "wrote while paused")
        rounds = 0
        while not connection.response().complete:
            rounds += 1
            self.assertLess(rounds, 1000)
            before = len(connection.received())
            transport.drain()
            self.assertGreater(len(connection.received()), before, "no progress on resume")
            self.clock.advance(1)
        self.assertGreater(rounds, 2)
        chunks = sse_json(connection.response().body)
        [text], _ = self.check_chat_choices(chunks)
        self.assertEqual(tokens.count_text(text), 2000)


# ---------------------------------------------------------------------------
# Draining on shutdown


class DrainTests(RouteTestCase):
    settings: ClassVar[dict[str, Any]] = {"grace_period": 5.0, "response_delay": 1.0}

    def test_health_reports_draining(self) -> None:
        self.service.stopService()
        response = self.client.get("/health")
        self.check_common(response, 503, JSON_TYPE)
        self.assertEqual(response.json(), {"status": "draining"})

    def test_new_requests_are_refused(self) -> None:
        self.service.stopService()
        for path, body in (("/v1/chat/completions", chat()), ("/v1/completions", completion())):
            connection = self.client.send("POST", path, body)
            response = connection.response()
            self.check_error(response, 503, code="server_shutting_down", type="server_error")
            self.assertEqual(response.header("Connection"), "close")
            self.assertTrue(connection.closing, "Connection: close, but the server kept it open")

    def settle(self) -> None:
        """Let closed connections report it (a reactor turn, the drain's poll)."""
        self.clock.advance(0)
        self.clock.advance(0.02)

    def test_idle_connections_close(self) -> None:
        idle = self.client.connect()
        idle.request("GET", "/health")
        self.assertFalse(idle.closing)
        stopped = self.service.stopService()
        self.assertTrue(idle.closing)
        self.assertFalse(idle.transport.disconnected, "an idle connection was aborted")
        self.settle()
        self.successResultOf(stopped)

    def test_in_flight_request_completes(self) -> None:
        connection = self.client.send("POST", "/v1/chat/completions", chat(max_tokens=1))
        self.clock.advance(0.5)
        stopped = self.service.stopService()
        self.assertNoResult(stopped)
        self.assertFalse(connection.closing)
        self.clock.advance(0.4999)
        self.assertNoResult(stopped)
        self.clock.advance(0.0002)
        self.check_json(connection.response(), "CreateChatCompletionResponse")
        self.settle()
        self.successResultOf(stopped)
        # Answered in full, so closed gracefully: what is buffered still goes out.
        self.assertTrue(connection.closing)
        self.assertFalse(connection.transport.disconnected, "aborted after a full answer")

    def test_in_flight_stream_completes(self) -> None:
        connection = self.client.send(
            "POST", "/v1/chat/completions", chat(stream=True, max_tokens=3, ignore_eos=True)
        )
        stopped = self.service.stopService()
        self.clock.advance(0.9)
        self.assertNoResult(stopped)
        self.clock.advance(0.2)
        self.settle()
        self.successResultOf(stopped)
        chunks = sse_json(connection.response().body)
        self.check_chat_choices(chunks)
        self.assertFalse(connection.transport.disconnected, "a finished stream was aborted")

    def test_a_peer_that_never_reads_is_cut_off(self) -> None:
        # No closer: this transport never reports the close (its buffer never drains).
        connection = Connection(self.service.site, NoDelayTransport())
        connection.request("GET", "/health")
        stopped = self.service.stopService()
        self.assertTrue(connection.closing)
        self.clock.advance(_FLUSH_TIMEOUT / 2)
        self.assertNoResult(stopped)
        self.assertFalse(connection.transport.disconnected)
        self.clock.advance(_FLUSH_TIMEOUT)
        self.successResultOf(stopped)
        self.assertTrue(connection.transport.disconnected)

    def test_grace_period_ends_the_rest_on_the_shutdown_error(self) -> None:
        self.use(grace_period=2.0, itl=0.1)
        connection = self.client.send(
            "POST", "/v1/chat/completions", chat(stream=True, max_tokens=1000, ignore_eos=True)
        )
        self.clock.advance(1.5)
        stopped = self.service.stopService()
        self.clock.advance(1.9)
        self.assertNoResult(stopped)
        self.assertFalse(connection.closing)
        self.clock.advance(0.2)
        # The stream ends as a fault's cut ends it: the error event, the
        # response's end, and a clean close (not an abort, not a reset).
        response = connection.response()
        self.assertTrue(response.complete)
        self.assertNotIn(b"[DONE]", response.body)
        *chunks, last = sse_data(response.body)
        self.assertTrue(chunks)
        self.assertEqual(
            json.loads(last),
            {
                "error": {
                    "message": "The server is shutting down and is not accepting new requests.",
                    "type": "server_error",
                    "param": None,
                    "code": "server_shutting_down",
                }
            },
        )
        self.assertTrue(connection.closing)
        self.assertFalse(connection.transport.disconnected, "a cut stream was aborted")
        self.settle()
        self.successResultOf(stopped)
        self.assertEqual(self.service.api.streams, set())
        self.assertTrue(all(len(p) == 0 for p in self.core.pacers()))
        written = connection.received()
        self.clock.advance(100)
        self.assertEqual(connection.received(), written)

    def test_grace_period_answers_a_queued_stream(self) -> None:
        # One stream runs; the next waits in the engine's queue, nothing sent.
        self.use(grace_period=1.0, itl=0.1, max_running=1)
        body = chat(stream=True, max_tokens=1000, ignore_eos=True)
        running = self.client.send("POST", "/v1/chat/completions", body)
        queued = self.client.send("POST", "/v1/chat/completions", body)
        self.clock.advance(0.5)
        self.assertEqual(queued.received(), b"")
        stopped = self.service.stopService()
        self.clock.advance(0.9)
        self.assertEqual(queued.received(), b"")
        self.clock.advance(0.2)
        self.assertIn(b"server_shutting_down", running.response().body)
        # Its answer is the error itself, in the envelope, with its status.
        self.check_error(queued.response(), 503, code="server_shutting_down", type="server_error")
        self.settle()
        self.successResultOf(stopped)
        for connection in (running, queued):
            self.assertFalse(connection.transport.disconnected)


# ---------------------------------------------------------------------------
# Klein's own resource answers as the Router does


class KleinResourceTests(RouteTestCase):
    """The same requests through C{api.app.resource()} (twisted.web traversal)."""

    def klein(self, method: str, path: str, body: object = None) -> tuple[int, Any, bytes]:
        stub = StubTreq(self.service.api.app.resource())
        data = None if body is None else (body if isinstance(body, bytes) else encode_json(body))
        pending = stub.request(method, "http://mockoai.test" + path, data=data)
        stub.flush()
        response = self.successResultOf(pending)
        reading = treq.content(response)
        stub.flush()
        content = self.successResultOf(reading)
        return response.code, response.headers, content

    def router(self, method: str, path: str, body: object = None) -> Response:
        raw = None if body is None else (body if isinstance(body, bytes) else encode_json(body))
        return self.client.request(method, path, body=raw)

    def test_same_answers(self) -> None:
        cases: list[tuple[str, str, object]] = [
            ("GET", "/v1/models", None),
            ("GET", "/v1/models/gpt-4o", None),
            ("GET", "/v1/models/meta-llama%2FLlama-3.1-8B-Instruct", None),
            ("GET", "/v1/models/meta-llama/Llama-3.1-8B-Instruct", None),
            ("GET", "/v1/models/nope", None),
            ("GET", "/health", None),
            ("GET", "/v1/nope", None),
            ("PUT", "/v1/models", None),
            ("POST", "/v1/chat/completions", b"{"),
            ("POST", "/v1/chat/completions", chat(n=0)),
            ("POST", "/v1/completions", completion(model="nope")),
        ]
        for method, path, body in cases:
            code, headers, content = self.klein(method, path, body)
            ours = self.router(method, path, body)
            self.assertEqual(code, ours.status, path)
            self.assertEqual(json.loads(content), ours.json(), path)
            self.assertEqual(
                headers.getRawHeaders("Content-Type"), [ours.header("Content-Type")], path
            )
            self.assertEqual(headers.getRawHeaders("Allow"), ours.header_values("Allow") or None)

    def test_same_generation(self) -> None:
        for path, body, schema in (
            ("/v1/chat/completions", chat(seed=8, n=2), "CreateChatCompletionResponse"),
            ("/v1/completions", completion(seed=8, echo=True), "CreateCompletionResponse"),
        ):
            code, _, content = self.klein("POST", path, body)
            self.assertEqual(code, 200)
            theirs = json.loads(content)
            validate(schema, theirs)
            ours = self.router("POST", path, body).json()
            del theirs["id"], ours["id"]
            self.assertEqual(theirs, ours)

    def test_same_stream(self) -> None:
        body = chat(seed=8, stream=True, stream_options={"include_usage": True})
        code, headers, content = self.klein("POST", "/v1/chat/completions", body)
        self.assertEqual(code, 200)
        self.assertEqual(headers.getRawHeaders("Content-Type"), [SSE_TYPE])
        theirs = sse_json(content)
        ours = sse_json(self.router("POST", "/v1/chat/completions", body).body)
        for chunk in theirs:
            validate(CHAT_CHUNK, chunk)
        strip = ("id", "obfuscation")
        self.assertEqual(
            [{k: v for k, v in c.items() if k not in strip} for c in theirs],
            [{k: v for k, v in c.items() if k not in strip} for c in ours],
        )
        self.assertEqual(stream_text(theirs), stream_text(ours))


class RouterHandlerTests(TestCase):
    """The Router calls each route's own function; other kinds of route still answer."""

    def test_plain_async_bindable_and_parameters(self) -> None:
        from klein import Klein
        from klein._decorators import bindable

        from mockoai.wire.dispatch import Router
        from mockoai.wire.site import MockSite

        class App:
            app = Klein()

            def __init__(self) -> None:
                self.calls: list[str] = []

            @app.route("/plain")
            def plain(self, request: Any) -> bytes:
                self.calls.append("plain")
                return b"plain"

            @app.route("/async")
            async def later(self, request: Any) -> bytes:
                self.calls.append("async")
                return b"async"

            @app.route("/bound")
            @bindable
            def bound(self, request: Any) -> bytes:  # answered through Klein's own call
                self.calls.append("bound")
                return b"bound:" + type(self).__name__.encode()

            @app.route("/items/<string:name>")
            def item(self, request: Any, name: str) -> bytes:
                return name.encode()

        instance = App()
        clock = Clock()
        site = MockSite(instance.app.resource(), Router(instance.app), clock, IdMaker(), 1024, 0)
        for path, body in (
            ("/plain", b"plain"),
            ("/async", b"async"),
            ("/bound", b"bound:App"),
            ("/items/x1", b"x1"),
        ):
            connection = Connection(site, clock=clock)
            connection.send(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode())
            clock.advance(0)
            response = connection.response()
            self.assertEqual((response.status, response.body), (200, body), path)
        self.assertEqual(instance.calls, ["plain", "async", "bound"])


# ---------------------------------------------------------------------------
# The same suite over twisted.web's HTTP/1.1 channel (--http twisted)


def _twin(case: type[RouteTestCase]) -> type[RouteTestCase]:
    name = "TwistedWeb" + case.__name__
    return type(name, (case,), {"http": "twisted", "__module__": __name__, "__qualname__": name})


TwistedWebChatCompletionTests = _twin(ChatCompletionTests)
TwistedWebChatStreamTests = _twin(ChatStreamTests)
TwistedWebCompletionTests = _twin(CompletionTests)
TwistedWebModelTests = _twin(ModelTests)
TwistedWebErrorTests = _twin(ErrorTests)
TwistedWebConnectionTests = _twin(ConnectionTests)
TwistedWebTimingTests = _twin(TimingTests)
TwistedWebBackPressureTests = _twin(BackPressureTests)
TwistedWebDrainTests = _twin(DrainTests)

# parse_responses is part of the harness tests below rely on; keep it honest.


class HarnessTests(TestCase):
    def test_parse_chunked_and_partial(self) -> None:
        raw = (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde"
        )
        first, second = parse_responses(raw)
        self.assertTrue(first.complete)
        self.assertEqual(first.body, b"ok")
        self.assertFalse(second.complete)
        self.assertEqual(second.body, b"abcde")
        [done] = parse_responses(b"HTTP/1.1 204 No\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        self.assertTrue(done.complete)

    def test_sse_framing_is_strict(self) -> None:
        self.assertEqual(
            sse_data(b": keep-alive\n\ndata: {}\n\ndata: [DONE]\n\n"), ["{}", "[DONE]"]
        )
        for bad in (b"data: {}\n", b"event: x\ndata: {}\n\n", b"data:{}\n\n"):
            self.assertRaises(AssertionError, sse_data, bad)
        self.assertRaises(AssertionError, sse_json, b"data: {}\n\n")
