"""
Logprobs: chat's ``logprobs``/``top_logprobs`` and the legacy completions'
``logprobs``, plain and streamed, against the spec's schemas (in memory, on a
L{Clock}); the values themselves (L{mockoai.sim.logprobs}); and the official
SDK reading them from a real server.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from twisted.trial.unittest import SynchronousTestCase

from mockoai.dialects.openai import logprobs as wire
from mockoai.sim import logprobs as values
from mockoai.testing import MockoaiServer
from tests.optional import needs_openai
from tests.spec import validate
from tests.support import Client, make_service, sse_json, validate_event

ASK: list[Any] = [{"role": "user", "content": "Say something."}]
BODY = "CreateChatCompletionResponse"
CHUNK = "CreateChatCompletionStreamResponse"
TEXT_BODY = "CreateCompletionResponse"
TEXT_CHUNK = "CreateCompletionStreamResponse"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


class LogprobsTestCase(SynchronousTestCase):
    """An in-memory service on a clock, and checks every logprobs object must pass."""

    def setUp(self) -> None:
        self.client = Client(make_service(tokens_mean=24, tokens_stddev=6))

    def post(self, path: str, status: int = 200, **body: Any) -> Any:
        response = self.client.post(path, body)
        self.assertEqual(response.status, status, response.body)
        if body.get("stream"):
            return sse_json(response.body)
        return json.loads(response.body)

    def chat(self, status: int = 200, **body: Any) -> Any:
        body.setdefault("model", "gpt-4o")
        body.setdefault("messages", ASK)
        return self.post("/v1/chat/completions", status, **body)

    def complete(self, status: int = 200, **body: Any) -> Any:
        body.setdefault("model", "gpt-3.5-turbo-instruct")
        body.setdefault("prompt", "Once upon a time")
        return self.post("/v1/completions", status, **body)

    def check_entry(self, entry: dict[str, Any], top: int) -> None:
        """One ``ChatCompletionTokenLogprob``: its bytes, its value, its alternatives."""
        self.assertEqual(bytes(entry["bytes"]), entry["token"].encode("utf-8"))
        self.assertLessEqual(entry["logprob"], 0)
        alternatives = entry["top_logprobs"]
        self.assertEqual(len(alternatives), top)
        if not top:
            return
        # The sampled token first, the likeliest; the rest in decreasing order.
        self.assertEqual(alternatives[0], {k: entry[k] for k in ("token", "logprob", "bytes")})
        logprobs = [a["logprob"] for a in alternatives]
        self.assertEqual(logprobs, sorted(logprobs, reverse=True))
        self.assertEqual(len(set(logprobs)), top)
        tokens = [a["token"] for a in alternatives]
        self.assertEqual(len(set(tokens)), top)
        for alternative in alternatives:
            self.assertEqual(bytes(alternative["bytes"]), alternative["token"].encode("utf-8"))
        # Probabilities, all told, no more than one.
        self.assertLessEqual(sum(math.exp(lp) for lp in logprobs), 1.0 + 1e-6)

    def check_columns(self, logprobs: dict[str, Any], top: int, offset: int = 0) -> str:
        """A completions ``logprobs`` object; the text its tokens make."""
        tokens = logprobs["tokens"]
        n = len(tokens)
        for key in ("token_logprobs", "top_logprobs", "text_offset"):
            self.assertEqual(len(logprobs[key]), n, key)
        at = offset
        for token, logprob, alternatives, start in zip(
            tokens, logprobs["token_logprobs"], logprobs["top_logprobs"], logprobs["text_offset"]
        ):
            self.assertEqual(start, at)
            at += len(token)
            if logprob is None:
                self.assertIsNone(alternatives)
                continue
            self.assertLessEqual(logprob, 0)
            # The sampled token is always there (``logprobs: 0`` too), the likeliest.
            self.assertEqual(alternatives[token], logprob)
            self.assertEqual(len(alternatives), max(top, 1))
            self.assertEqual(max(alternatives.values()), logprob)
        return "".join(tokens)


class ChatTests(LogprobsTestCase):
    """``logprobs: true`` on the chat endpoint."""

    def test_body(self) -> None:
        for top in (0, 1, 5, 20):
            body = self.chat(logprobs=True, top_logprobs=top, n=2)
            validate(BODY, body)
            total = 0
            for choice in body["choices"]:
                logprobs = choice["logprobs"]
                self.assertIsNone(logprobs["refusal"])
                content = logprobs["content"]
                self.assertEqual("".join(e["token"] for e in content), choice["message"]["content"])
                for entry in content:
                    self.check_entry(entry, top)
                total += len(content)
            self.assertEqual(total, body["usage"]["completion_tokens"])

    def test_top_logprobs_defaults_to_none(self) -> None:
        body = self.chat(logprobs=True)
        for entry in body["choices"][0]["logprobs"]["content"]:
            self.assertEqual(entry["top_logprobs"], [])

    def test_absent_or_false_means_null(self) -> None:
        for asked in ({}, {"logprobs": False}):
            self.assertIsNone(self.chat(**asked)["choices"][0]["logprobs"])
            for chunk in self.chat(stream=True, **asked):
                self.assertIsNone(chunk["choices"][0]["logprobs"])

    def test_bounds(self) -> None:
        error = self.chat(400, logprobs=True, top_logprobs=21)["error"]
        self.assertEqual(error["param"], "top_logprobs")
        error = self.chat(400, top_logprobs=2)["error"]
        self.assertEqual(
            error["message"], "Using top_logprobs requires logprobs to be set to true."
        )

    def test_seeded_values_repeat(self) -> None:
        def content(seed: int, **extra: Any) -> Any:
            body = self.chat(logprobs=True, top_logprobs=3, seed=seed, **extra)
            return body["choices"][0]["logprobs"]["content"]

        self.assertEqual(content(7), content(7))
        self.assertNotEqual(content(7), content(8))
        # A shorter answer is the same answer cut short, values and all.
        whole = content(7)
        cut = content(7, max_tokens=5)
        self.assertEqual(cut, whole[:5])

    def test_stream(self) -> None:
        chunks = self.chat(
            logprobs=True,
            top_logprobs=2,
            n=2,
            seed=11,
            stream=True,
            stream_options={"include_usage": True},
        )
        entries: dict[int, list[dict[str, Any]]] = {0: [], 1: []}
        text: dict[int, str] = {0: "", 1: ""}
        for chunk in chunks:
            validate_event(CHUNK, chunk)
            for choice in chunk["choices"]:
                delta = choice["delta"]
                if choice["finish_reason"] is not None:
                    self.assertIsNone(choice["logprobs"])
                    continue
                content = choice["logprobs"]["content"]
                # Each chunk carries the entries of its own tokens (none on the role chunk).
                self.assertEqual("".join(e["token"] for e in content), delta.get("content", ""))
                entries[choice["index"]] += content
                text[choice["index"]] += delta.get("content", "")
        self.assertEqual(
            sum(len(e) for e in entries.values()), chunks[-1]["usage"]["completion_tokens"]
        )
        body = self.chat(logprobs=True, top_logprobs=2, n=2, seed=11)
        for choice in body["choices"]:
            self.assertEqual(choice["message"]["content"], text[choice["index"]])
            self.assertEqual(choice["logprobs"]["content"], entries[choice["index"]])

    def test_a_stop_sequence_cuts_the_last_token(self) -> None:
        content = self.chat(seed=4)["choices"][0]["message"]["content"]
        # Stop in the middle of the fourth word: its token is sent in part.
        word = content.split()[3]
        stop = word[1:3]
        body = self.chat(seed=4, stop=stop, logprobs=True, top_logprobs=1)
        choice = body["choices"][0]
        tokens = [e["token"] for e in choice["logprobs"]["content"]]
        self.assertEqual("".join(tokens), choice["message"]["content"])
        self.assertEqual(len(tokens), body["usage"]["completion_tokens"])
        for entry in choice["logprobs"]["content"]:
            self.check_entry(entry, 1)


class ShapedChatTests(LogprobsTestCase):
    """Tool calls, documents and reasoning: only the content's tokens have entries."""

    def test_tool_calls(self) -> None:
        body = self.chat(tools=[WEATHER], tool_choice="required", logprobs=True, top_logprobs=2)
        validate(BODY, body)
        choice = body["choices"][0]
        self.assertIsNone(choice["message"]["content"])
        self.assertEqual(choice["logprobs"], {"content": [], "refusal": None})
        chunks = self.chat(
            tools=[WEATHER], tool_choice="required", logprobs=True, top_logprobs=2, stream=True
        )
        calls = 0
        for chunk in chunks:
            validate_event(CHUNK, chunk)
            choice = chunk["choices"][0]
            calls += "tool_calls" in choice["delta"]
            if choice["finish_reason"] is None:
                # As OpenAI's tool call chunks: an empty list, not null.
                self.assertEqual(choice["logprobs"], {"content": [], "refusal": None})
            else:
                self.assertIsNone(choice["logprobs"])
        self.assertGreater(calls, 1)

    def test_json_document(self) -> None:
        messages = [{"role": "user", "content": "Answer in JSON."}]
        for stream in (False, True):
            answer = self.chat(
                messages=messages,
                response_format={"type": "json_object"},
                logprobs=True,
                top_logprobs=3,
                stream=stream,
            )
            chunks = answer if stream else [answer]
            entries: list[dict[str, Any]] = []
            text = ""
            for chunk in chunks:
                validate_event(CHUNK, chunk) if stream else validate(BODY, chunk)
                for choice in chunk["choices"]:
                    if choice["logprobs"] is not None:
                        entries += choice["logprobs"]["content"]
                    part = choice["delta"] if stream else choice["message"]
                    text += part.get("content") or ""
            self.assertIsInstance(json.loads(text), dict)
            # Quotes and all: each token's bytes are its decoded text's.
            self.assertEqual("".join(e["token"] for e in entries), text)
            for entry in entries:
                self.check_entry(entry, 3)

    def test_visible_reasoning_has_no_entries(self) -> None:
        self.client = Client(make_service(reasoning="visible", tokens_mean=20))
        body = self.chat(logprobs=True)
        validate(BODY, body)
        choice = body["choices"][0]
        self.assertTrue(choice["message"]["reasoning_content"])
        tokens = [e["token"] for e in choice["logprobs"]["content"]]
        self.assertEqual("".join(tokens), choice["message"]["content"])
        for chunk in self.chat(logprobs=True, stream=True):
            choice = chunk["choices"][0]
            if "reasoning_content" in choice["delta"]:
                self.assertEqual(choice["logprobs"]["content"], [])


class CompletionsTests(LogprobsTestCase):
    """The legacy ``logprobs`` of ``/v1/completions``."""

    def test_body(self) -> None:
        for top in (0, 1, 5):
            body = self.complete(logprobs=top, n=2, prompt=["A tale", "Another"])
            validate(TEXT_BODY, body)
            total = 0
            prompts = ["A tale", "Another"]
            for choice in body["choices"]:
                # Offsets count from the prompt's start, as OpenAI's do.
                start = len(prompts[choice["index"] // 2])
                text = self.check_columns(choice["logprobs"], top, start)
                self.assertEqual(text, choice["text"])
                total += len(choice["logprobs"]["tokens"])
            self.assertEqual(total, body["usage"]["completion_tokens"])

    def test_stream(self) -> None:
        chunks = self.complete(logprobs=3, seed=9, stream=True)
        offset = len("Once upon a time")
        tokens: list[str] = []
        for chunk in chunks:
            validate_event(TEXT_CHUNK, chunk)
            choice = chunk["choices"][0]
            logprobs = choice["logprobs"]
            # Each chunk carries its own tokens; the finish chunk, empty arrays.
            self.assertEqual(self.check_columns(logprobs, 3, offset), choice["text"])
            offset += len(choice["text"])
            tokens += logprobs["tokens"]
        self.assertEqual(chunks[-1]["choices"][0]["logprobs"]["tokens"], [])
        body = self.complete(logprobs=3, seed=9)
        self.assertEqual(body["choices"][0]["logprobs"]["tokens"], tokens)

    def test_echo(self) -> None:
        prompt = 'He said "hi",\nthen left. '
        body = self.complete(prompt=prompt, echo=True, logprobs=2, max_tokens=6)
        choice = body["choices"][0]
        logprobs = choice["logprobs"]
        self.assertTrue(choice["text"].startswith(prompt))
        self.assertEqual(self.check_columns(logprobs, 2), choice["text"])
        # Nothing comes before the first token: no logprob, no alternatives.
        self.assertIsNone(logprobs["token_logprobs"][0])
        self.assertIsNone(logprobs["top_logprobs"][0])
        self.assertEqual(logprobs["text_offset"][0], 0)
        echoed = len(logprobs["tokens"]) - body["usage"]["completion_tokens"]
        self.assertEqual("".join(logprobs["tokens"][:echoed]), prompt)
        # The spec has no null for them (OpenAI's legacy models sent it).
        validate(TEXT_BODY, _without_leading_nulls(body))
        # A prompt's values depend on the prompt alone.
        again = self.complete(prompt=prompt, echo=True, logprobs=2, max_tokens=6)
        self.assertEqual(
            again["choices"][0]["logprobs"]["token_logprobs"][:echoed],
            logprobs["token_logprobs"][:echoed],
        )
        chunks = self.complete(prompt=prompt, echo=True, logprobs=2, max_tokens=6, stream=True)
        first = chunks[0]["choices"][0]
        self.assertEqual(first["text"], prompt)
        self.assertEqual(first["logprobs"]["token_logprobs"], logprobs["token_logprobs"][:echoed])

    def test_bounds(self) -> None:
        error = self.complete(400, logprobs=6)["error"]
        self.assertEqual(error["param"], "logprobs")


def _without_leading_nulls(body: dict[str, Any]) -> dict[str, Any]:
    body = json.loads(json.dumps(body))
    for choice in body["choices"]:
        logprobs = choice["logprobs"]
        if logprobs["token_logprobs"][:1] == [None]:
            logprobs["token_logprobs"][0] = 0.0
            logprobs["top_logprobs"][0] = {}
    return body


class ValueTests(SynchronousTestCase):
    """L{values.draw} and the renderer's per-token pieces."""

    def test_draw(self) -> None:
        m = 19
        # Every token one of the alternatives, so each must be kept out of its own.
        sampled = [i % len(values.ALTERNATIVES) for i in range(500)]
        drawn = values.draw(sampled, m, np.random.default_rng(3))
        levels = values.LEVELS
        chosen = levels[drawn.logprob]
        others = levels[drawn.other]
        self.assertTrue((chosen < 0).all())
        self.assertTrue((others[:, 0] < chosen).all())
        self.assertTrue((np.diff(others, axis=1) < 0).all())
        self.assertTrue((np.exp(chosen) + np.exp(others).sum(axis=1) <= 1 + 1e-6).all())
        for t, row in enumerate(drawn.alternative.tolist()):
            self.assertEqual(len(set(row)), m)
            self.assertNotIn(sampled[t], row)

    def test_positions_do_not_depend_on_length(self) -> None:
        long = values.draw([-1] * 50, 4, values.generator(5, 0))
        short = values.draw([-1] * 20, 4, values.generator(5, 0))
        self.assertEqual(short.logprob.tolist(), long.logprob[:20].tolist())
        self.assertEqual(short.other.tolist(), long.other[:20].tolist())
        other = values.draw([-1] * 20, 4, values.generator(5, 1))
        self.assertNotEqual(other.logprob.tolist(), short.logprob.tolist())

    def test_levels_are_short_numbers(self) -> None:
        for level in values.LEVELS[:: len(values.LEVELS) // 50].tolist():
            digits = repr(level).lstrip("-").split("e")[0].replace(".", "").strip("0")
            self.assertLessEqual(len(digits), 8, level)

    def test_escaped_tokens(self) -> None:
        tokens = [b"\\n\\nLorem", b' \\"', b" caf\xc3\xa9", b"\\u0001"]
        entries = [json.loads(e) for e in wire.chat_entries(tokens, 2, np.random.default_rng(1))]
        texts = ["\n\nLorem", ' "', " café", "\x01"]
        self.assertEqual([e["token"] for e in entries], texts)
        self.assertEqual([bytes(e["bytes"]) for e in entries], [t.encode() for t in texts])
        columns = wire.TextColumns()
        columns.add(tokens, 1, np.random.default_rng(1), 10)
        parsed = json.loads(columns.value())
        self.assertEqual(parsed["tokens"], texts)
        self.assertEqual(parsed["text_offset"], [10, 17, 19, 24])


@needs_openai
class SDKTests(SynchronousTestCase):
    """The official SDK's types read them, against a real server."""

    def test_chat_and_completions(self) -> None:
        # One server for the three (trial runs no setUpClass).
        server = MockoaiServer(articles=64, tokens_mean=20, tokens_stddev=4).start()
        self.addCleanup(server.stop)
        client = server.openai_client(max_retries=0)
        self.addCleanup(client.close)

        completion = client.chat.completions.create(
            model="gpt-4o", messages=ASK, logprobs=True, top_logprobs=3
        )
        choice = completion.choices[0]
        assert choice.logprobs is not None and choice.logprobs.content is not None
        content = choice.logprobs.content
        self.assertEqual("".join(t.token for t in content), choice.message.content)
        self.assertEqual(len(content[0].top_logprobs), 3)
        self.assertEqual(content[0].top_logprobs[0].token, content[0].token)

        stream = client.chat.completions.create(
            model="gpt-4o", messages=ASK, logprobs=True, top_logprobs=1, stream=True
        )
        tokens = []
        text = ""
        for chunk in stream:
            for part in chunk.choices:
                text += part.delta.content or ""
                if part.logprobs is not None and part.logprobs.content:
                    tokens += [t.token for t in part.logprobs.content]
        self.assertEqual("".join(tokens), text)
        self.assertTrue(text)

        legacy = client.completions.create(
            model="gpt-3.5-turbo-instruct", prompt="Once", logprobs=2, max_tokens=8
        )
        logprobs = legacy.choices[0].logprobs
        assert logprobs is not None and logprobs.tokens is not None
        self.assertEqual("".join(logprobs.tokens), legacy.choices[0].text)
        assert logprobs.top_logprobs is not None
        self.assertEqual(len(logprobs.top_logprobs[0]), 2)
