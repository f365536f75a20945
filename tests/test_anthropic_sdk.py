"""
Anthropic's official Python SDK, unchanged, against ``twistd -n mockoai``:
``messages.create``, the ``messages.stream`` helper (its text and tool-input
events, its final message), a tool-use loop to its end, ``count_tokens``,
the model list, each error status raising the SDK's own exception class,
its retries honouring ``retry-after``, and the OpenAI SDK using the same
server at the same time.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import jsonschema
from twisted.trial.unittest import SynchronousTestCase

from tests.optional import anthropic, needs_anthropic, needs_openai, openai
from tests.support import TwistdProcess

MODEL = "claude-sonnet-4-6"
SMALL = ["--articles", "64", "--tokens-mean", "24", "--tokens-stddev", "4"]
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city"],
    },
}
HELLO = [{"role": "user", "content": "Hello, Claude"}]


@needs_anthropic
class AnthropicSDKTestCase(SynchronousTestCase):
    """Starts ``twistd -n mockoai ARGS`` for each test."""

    def start(self, *args: str) -> TwistdProcess:
        server = TwistdProcess([*SMALL, *args])
        self.addCleanup(server.cleanup)
        server.start()
        self.addCleanup(server.stop)
        return server

    def sdk(self, server: TwistdProcess, **options: Any) -> anthropic.Anthropic:
        values = {"api_key": "sk-ant-test", "max_retries": 0, "timeout": 15, **options}
        client = anthropic.Anthropic(base_url=server.base_url, **values)
        self.addCleanup(client.close)
        return client


class SDKTests(AnthropicSDKTestCase):
    def setUp(self) -> None:
        self.server = self.start("--itl", "2")
        self.client = self.sdk(self.server)

    def test_create(self) -> None:
        message = self.client.messages.create(model=MODEL, max_tokens=64, messages=HELLO)
        self.assertIsInstance(message, anthropic.types.Message)
        self.assertEqual((message.role, message.model), ("assistant", MODEL))
        self.assertEqual(message.stop_reason, "end_turn")
        [block] = message.content
        self.assertEqual(block.type, "text")
        self.assertTrue(block.text)
        self.assertGreater(message.usage.input_tokens, 0)
        self.assertEqual(message.usage.cache_read_input_tokens, 0)
        self.assertTrue(message._request_id and message._request_id.startswith("req_"))

    def test_stream_helper(self) -> None:
        with self.client.messages.stream(
            model=MODEL, max_tokens=64, messages=HELLO, system="Be brief."
        ) as stream:
            texts = list(stream.text_stream)
            final = stream.get_final_message()
        self.assertGreater(len(texts), 1)
        self.assertEqual("".join(texts), final.content[0].text)  # type: ignore[union-attr]
        self.assertEqual(final.stop_reason, "end_turn")
        self.assertGreater(final.usage.output_tokens, 1)

    def test_stream_events_with_thinking_and_a_tool(self) -> None:
        with self.client.messages.stream(
            model=MODEL,
            max_tokens=4096,
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=[WEATHER],  # type: ignore[list-item]
            thinking={"type": "enabled", "budget_tokens": 1024},
        ) as stream:
            kinds = [event.type for event in stream]
            final = stream.get_final_message()
        self.assertIn("thinking", kinds)
        self.assertIn("signature", kinds)
        self.assertIn("input_json", kinds)
        self.assertEqual(final.stop_reason, "tool_use")
        thinking, call = final.content[0], final.content[-1]
        self.assertEqual(thinking.type, "thinking")
        self.assertTrue(thinking.signature)  # type: ignore[union-attr]
        self.assertEqual(call.type, "tool_use")
        jsonschema.validate(call.input, WEATHER["input_schema"])  # type: ignore[union-attr]

    def test_tool_loop_to_its_end(self) -> None:
        messages: list[Any] = [{"role": "user", "content": "Weather in Paris and Rome?"}]
        turns = 0
        while True:
            turns += 1
            message = self.client.messages.create(
                model=MODEL,
                max_tokens=256,
                messages=messages,
                tools=[WEATHER],  # type: ignore[list-item]
            )
            if message.stop_reason != "tool_use":
                break
            messages.append({"role": "assistant", "content": message.content})
            messages.append(
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": block.id, "content": "18C"}
                        for block in message.content
                        if block.type == "tool_use"
                    ],
                }
            )
            self.assertLess(turns, 5)
        self.assertEqual((turns, message.stop_reason), (2, "end_turn"))
        self.assertEqual(message.content[0].type, "text")

    def test_count_tokens_and_models(self) -> None:
        counted = self.client.messages.count_tokens(model=MODEL, messages=HELLO)
        created = self.client.messages.create(model=MODEL, max_tokens=8, messages=HELLO)
        self.assertEqual(counted.input_tokens, created.usage.input_tokens)
        ids = [model.id for model in self.client.models.list()]
        self.assertIn(MODEL, ids)
        self.assertNotIn("gpt-4o", ids)
        self.assertEqual(self.client.models.retrieve(MODEL).display_name, "Claude Sonnet 4.6")

    def test_errors(self) -> None:
        with self.assertRaises(anthropic.BadRequestError) as bad:
            self.client.messages.create(model=MODEL, max_tokens=0, messages=HELLO)
        self.assertEqual(bad.exception.body["error"]["type"], "invalid_request_error")  # type: ignore[index]
        self.assertTrue(bad.exception.request_id)
        with self.assertRaises(anthropic.NotFoundError):
            self.client.messages.create(model="claude-nope", max_tokens=8, messages=HELLO)
        with self.assertRaises(anthropic.NotFoundError):
            self.client.messages.create(model="gpt-4o", max_tokens=8, messages=HELLO)


class ErrorStatusTests(AnthropicSDKTestCase):
    def test_authentication(self) -> None:
        server = self.start("--api-key", "sk-ant-good")
        with self.assertRaises(anthropic.AuthenticationError):
            self.sdk(server).messages.create(model=MODEL, max_tokens=8, messages=HELLO)
        good = self.sdk(server, api_key="sk-ant-good")
        self.assertEqual(
            good.messages.create(model=MODEL, max_tokens=8, messages=HELLO).type, "message"
        )

    def test_too_large(self) -> None:
        server = self.start("--max-body-size", "4KiB")
        with self.assertRaises(anthropic.ContentTooLargeError):
            self.sdk(server).messages.create(
                model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "x" * 8192}]
            )

    def test_rate_limit_and_retry_after(self) -> None:
        """
        A 429 raises RateLimitError; with retries, the SDK waits what
        retry-after-ms says (6,000 tokens a minute refill 100 a second: a
        request 100 tokens short waits about one).
        """
        server = self.start("--tpm", "6000")
        client = self.sdk(server)
        client.messages.create(model=MODEL, max_tokens=5900, messages=HELLO)
        with self.assertRaises(anthropic.RateLimitError) as refused:
            client.messages.create(model=MODEL, max_tokens=190, messages=HELLO)
        headers = refused.exception.response.headers
        self.assertIn(headers["retry-after"], ("1", "2"))
        self.assertLess(int(headers["retry-after-ms"]), 2000)
        self.assertEqual(headers["anthropic-ratelimit-tokens-limit"], "6000")
        self.assertIn("6,000 tokens per minute", str(refused.exception))
        patient = self.sdk(server, max_retries=2)
        started = time.monotonic()
        raw = patient.messages.with_raw_response.create(model=MODEL, max_tokens=190, messages=HELLO)
        waited = time.monotonic() - started
        self.assertEqual(raw.parse().type, "message")
        self.assertEqual(raw.retries_taken, 1)
        self.assertGreater(waited, 0.5)
        self.assertLess(waited, 5)

    def test_overloaded(self) -> None:
        """A full engine queue is the SDK's OverloadedError (529)."""
        server = self.start("--max-running", "1", "--max-waiting", "0", "--itl", "50")
        client = self.sdk(server)
        done = threading.Event()

        def hold() -> None:
            with client.messages.stream(model=MODEL, max_tokens=64, messages=HELLO) as stream:
                for _ in stream.text_stream:
                    pass
            done.set()

        holder = threading.Thread(target=hold)
        holder.start()
        self.addCleanup(holder.join, 15)
        time.sleep(0.3)
        with self.assertRaises(anthropic.OverloadedError) as overloaded:
            client.messages.create(model=MODEL, max_tokens=8, messages=HELLO)
        self.assertEqual(overloaded.exception.status_code, 529)
        self.assertEqual(overloaded.exception.body["error"]["type"], "overloaded_error")  # type: ignore[index]
        holder.join(15)
        self.assertTrue(done.is_set())


@needs_openai
class BothSDKsTests(AnthropicSDKTestCase):
    def test_same_server_at_once(self) -> None:
        """A gateway's two clients, interleaved on one server: each gets its own API."""
        server = self.start("--itl", "5")

        async def main() -> tuple[list[str], list[str]]:
            claude = anthropic.AsyncAnthropic(
                base_url=server.base_url, api_key="k", max_retries=0, timeout=15
            )
            gpt = openai.AsyncOpenAI(
                base_url=f"{server.base_url}/v1", api_key="k", max_retries=0, timeout=15
            )

            async def messages() -> str:
                async with claude.messages.stream(
                    model=MODEL, max_tokens=32, messages=HELLO
                ) as stream:
                    return "".join([text async for text in stream.text_stream])

            async def chat() -> str:
                stream = await gpt.chat.completions.create(
                    model="gpt-4o",
                    max_tokens=32,
                    messages=HELLO,
                    stream=True,  # type: ignore[arg-type]
                )
                return "".join(
                    [c.choices[0].delta.content or "" async for c in stream if c.choices]
                )

            try:
                results = await asyncio.gather(
                    *[messages() for _ in range(8)], *[chat() for _ in range(8)]
                )
            finally:
                await claude.close()
                await gpt.close()
            return list(results[:8]), list(results[8:])

        texts, chats = asyncio.run(main())
        self.assertTrue(all(texts) and all(chats))
        stats = json.loads(_get(server, "/stats"))
        models = stats.get("models", stats)
        self.assertEqual(models[MODEL]["requests"], 8)
        self.assertEqual(models["gpt-4o"]["requests"], 8)


def _get(server: TwistdProcess, path: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(server.base_url + path, timeout=10) as response:
        return response.read()  # type: ignore[no-any-return]
