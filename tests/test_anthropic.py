"""
Anthropic's Messages API over the one pipeline, in memory: the Message and
its stream (framing, event order, usage, stop reasons), validation in
Anthropic's words, its error envelope and statuses (400, 401, 404, 413,
429 with ``anthropic-ratelimit-*``, 529 from a full engine, the mid-stream
``error`` event), ``count_tokens``, the model list in its shape, and the
shared counters.  Where the official SDK is installed its own types check
every body and event (``tests/test_anthropic_sdk.py`` drives the SDK
itself against a real server).
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import TestCase

from mockoai.dialects.anthropic.dialect import display_name
from mockoai.ops.config import ApiKey
from mockoai.pipeline.faults import Fault
from mockoai.sim.tokens import count_text
from tests.optional import anthropic
from tests.support import EPOCH, Client, Response, make_service
from tests.test_dialect import Once

CLAUDE = "claude-sonnet-4-5"
HEADERS = {"anthropic-version": "2023-06-01", "x-api-key": "sk-ant-test"}
HELLO = [{"role": "user", "content": "Hello, Claude"}]
USAGE_KEYS = [
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "cache_creation",
    "output_tokens",
    "service_tier",
]


def events(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    """
    The ``(event, data)`` pairs of an Anthropic stream, checking its framing:
    every event is an ``event:`` line, a ``data:`` line and a blank line,
    and the data's ``type`` names the event.
    """
    text = body.decode("utf-8")
    assert text.endswith("\n\n"), text[-80:]
    out = []
    for block in text[:-2].split("\n\n"):
        lines = block.split("\n")
        assert len(lines) == 2, block
        assert lines[0].startswith("event: ") and lines[1].startswith("data: "), block
        name, data = lines[0][len("event: ") :], json.loads(lines[1][len("data: ") :])
        assert data["type"] == name, block
        out.append((name, data))
    return out


def check_message(test: TestCase, message: dict[str, Any]) -> None:
    """The SDK's own type accepts it (where the SDK is installed), and the fields come in order."""
    test.assertEqual(
        list(message),
        ["model", "id", "type", "role", "content", "stop_reason", "stop_sequence", "usage"],
    )
    test.assertEqual(list(message["usage"]), USAGE_KEYS)
    test.assertRegex(message["id"], r"^msg_01[A-Za-z0-9]{22}$")
    if anthropic is not None:
        anthropic.types.Message.model_validate(message)


def check_events(pairs: list[tuple[str, dict[str, Any]]]) -> None:
    if anthropic is not None:
        from pydantic import TypeAdapter

        adapter: TypeAdapter[Any] = TypeAdapter(anthropic.types.RawMessageStreamEvent)
        for name, data in pairs:
            if name not in ("ping", "error"):
                adapter.validate_python(data)


class MessagesTestCase(TestCase):
    def setUp(self) -> None:
        self.use()

    def use(self, **overrides: Any) -> None:
        values: dict[str, Any] = {
            "models": (CLAUDE, "claude-haiku-4-5", "llama-3"),
            "response_delay": 0.25,
            "itl": 0.01,
            "tokens_mean": 12.0,
            "tokens_stddev": 0.0,
            **overrides,
        }
        self.service = make_service(**values)
        self.client = Client(self.service)

    def post(
        self, path: str = "/v1/messages", headers: dict[str, str] | None = None, **fields: Any
    ) -> Response:
        body = {"model": CLAUDE, "max_tokens": 64, "messages": HELLO, **fields}
        return self.client.post(path, body, headers=HEADERS if headers is None else headers)

    def count(self, **fields: Any) -> Response:
        """``/v1/messages/count_tokens``, whose body has no ``max_tokens``."""
        body = {"model": CLAUDE, "messages": HELLO, **fields}
        return self.client.post("/v1/messages/count_tokens", body, headers=HEADERS)

    def error(self, response: Response, status: int, kind: str) -> str:
        """The message of an error answer in Anthropic's envelope (with the request id)."""
        self.assertEqual(response.status, status, response.body)
        body = response.json()
        self.assertEqual(list(body), ["type", "error", "request_id"], body)
        self.assertEqual(body["type"], "error")
        self.assertEqual(body["error"]["type"], kind)
        self.assertEqual(body["request_id"], response.header("request-id"))
        return str(body["error"]["message"])


class MessageTests(MessagesTestCase):
    def test_message(self) -> None:
        response = self.post()
        self.assertEqual(response.status, 200, response.body)
        self.assertEqual(response.header("Content-Type"), "application/json")
        self.assertEqual(response.header("request-id"), response.header("x-request-id"))
        message = response.json()
        check_message(self, message)
        self.assertEqual(message["model"], CLAUDE)
        self.assertEqual((message["type"], message["role"]), ("message", "assistant"))
        [block] = message["content"]
        self.assertEqual(list(block), ["type", "text"])
        self.assertEqual(count_text(block["text"]), 12)
        self.assertEqual((message["stop_reason"], message["stop_sequence"]), ("end_turn", None))
        self.assertEqual(message["usage"]["output_tokens"], 12)
        self.assertEqual(
            message["usage"]["cache_creation"],
            {
                "ephemeral_5m_input_tokens": 0,
                "ephemeral_1h_input_tokens": 0,
            },
        )
        # Paced like chat: the first token after the delay, then one per ITL.
        self.assertAlmostEqual(self.client.clock.seconds(), EPOCH + 0.25 + 11 * 0.01, delta=1e-3)

    def test_input_tokens(self) -> None:
        """The prompt as count_tokens counts it: system and messages, blocks or strings."""
        system = [{"type": "text", "text": "You are terse."}]
        content = [{"type": "text", "text": "Hello, Claude"}]
        messages = [{"role": "user", "content": content}]
        usage = self.post(system=system, messages=messages).json()["usage"]
        counted = self.count(system="You are terse.")
        self.assertEqual(counted.status, 200, counted.body)
        self.assertEqual(counted.json(), {"input_tokens": usage["input_tokens"]})

    def test_max_tokens(self) -> None:
        message = self.post(max_tokens=5).json()
        self.assertEqual(message["stop_reason"], "max_tokens")
        self.assertEqual(message["usage"]["output_tokens"], 5)

    def test_stop_sequence(self) -> None:
        """A stop sequence cuts the text before it, and is named."""
        seen = set()
        for _ in range(20):
            message = self.post(stop_sequences=["e", "zzz"]).json()
            check_message(self, message)
            seen.add(message["stop_reason"])
            if message["stop_reason"] == "stop_sequence":
                self.assertEqual(message["stop_sequence"], "e")
                text = "".join(b["text"] for b in message["content"])
                self.assertNotIn("e", text)
            else:
                self.assertIsNone(message["stop_sequence"])
        self.assertIn("stop_sequence", seen)

    def test_prefill_and_structured_content(self) -> None:
        """Blocks of every kind a user sends are taken, and an assistant turn last continues it."""
        image = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
        document = {"type": "text", "media_type": "text/plain", "data": "Lorem ipsum."}
        messages = [
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": image},
                    {"type": "document", "source": document},
                    {"type": "text", "text": "Describe both."},
                ],
            },
            {"role": "assistant", "content": "Both are"},
        ]
        response = self.post(
            messages=messages,
            system="Be brief.",
            temperature=0.5,
            top_p=0.9,
            top_k=40,
            metadata={"user_id": "u-1"},
        )
        self.assertEqual(response.status, 200, response.body)
        self.assertGreater(response.json()["usage"]["input_tokens"], 1600)

    def test_models(self) -> None:
        """Anthropic's shape with its version header (the models it serves), OpenAI's without."""
        listed = self.client.get("/v1/models", headers=HEADERS)
        self.assertEqual(listed.status, 200, listed.body)
        page = listed.json()
        self.assertEqual(list(page), ["data", "has_more", "first_id", "last_id"])
        self.assertEqual([m["id"] for m in page["data"]], [CLAUDE, "claude-haiku-4-5", "llama-3"])
        self.assertEqual(page["data"][0]["display_name"], "Claude Sonnet 4.5")
        self.assertEqual((page["has_more"], page["first_id"]), (False, CLAUDE))
        if anthropic is not None:
            for info in page["data"]:
                anthropic.types.ModelInfo.model_validate(info)
        first = self.client.get("/v1/models?limit=1", headers=HEADERS).json()
        self.assertEqual(([m["id"] for m in first["data"]], first["has_more"]), ([CLAUDE], True))
        after = self.client.get(f"/v1/models?limit=5&after_id={CLAUDE}", headers=HEADERS).json()
        self.assertEqual(after["first_id"], "claude-haiku-4-5")
        card = self.client.get(f"/v1/models/{CLAUDE}", headers=HEADERS)
        self.assertEqual(card.json()["id"], CLAUDE)
        missing = self.client.get("/v1/models/claude-nope", headers=HEADERS)
        self.assertEqual(self.error(missing, 404, "not_found_error"), "model: claude-nope")
        openai = self.client.get("/v1/models").json()
        self.assertEqual(openai["object"], "list")

    def test_display_names(self) -> None:
        self.assertEqual(display_name("claude-opus-4-6"), "Claude Opus 4.6")
        self.assertEqual(display_name("claude-haiku-4-5-20251001"), "Claude Haiku 4.5")
        self.assertEqual(display_name("claude-opus-5"), "Claude Opus 5")
        self.assertEqual(display_name("llama-3"), "llama-3")

    def test_counted_like_the_others(self) -> None:
        """The model's stats and the per-endpoint counts see Messages requests."""
        self.post()
        self.post(stream=True)
        self.post(model="claude-nope")
        stats = json.loads(self.client.get("/stats").body)
        model = stats["models"][CLAUDE] if "models" in stats else stats[CLAUDE]
        self.assertEqual(model["requests"], 2)
        metrics = self.client.get("/metrics").body.decode()
        self.assertIn('endpoint="/v1/messages"', metrics)


class StreamTests(MessagesTestCase):
    def test_stream(self) -> None:
        response = self.post(stream=True)
        self.assertEqual(response.status, 200, response.body)
        self.assertEqual(response.header("Content-Type"), "text/event-stream; charset=utf-8")
        self.assertEqual(response.header("request-id"), response.header("x-request-id"))
        pairs = events(response.body)
        check_events(pairs)
        names = [name for name, _ in pairs]
        self.assertEqual(names[:3], ["message_start", "content_block_start", "ping"], names)
        self.assertEqual(names[-3:], ["content_block_stop", "message_delta", "message_stop"])
        self.assertEqual(set(names[3:-3]), {"content_block_delta"})
        start = pairs[0][1]["message"]
        self.assertEqual(start["content"], [])
        self.assertIsNone(start["stop_reason"])
        self.assertEqual(list(start["usage"]), USAGE_KEYS)
        self.assertEqual(pairs[1][1]["content_block"], {"type": "text", "text": ""})
        self.assertEqual(pairs[2][1], {"type": "ping"})
        self.assertIn(b'data: {"type": "ping"}', response.body)
        text = "".join(d["delta"]["text"] for n, d in pairs if n == "content_block_delta")
        self.assertEqual(count_text(text), 12)
        delta = pairs[-2][1]
        self.assertEqual(delta["delta"], {"stop_reason": "end_turn", "stop_sequence": None})
        self.assertEqual(delta["usage"]["output_tokens"], 12)
        self.assertEqual(delta["usage"]["input_tokens"], start["usage"]["input_tokens"])

    def test_paced(self) -> None:
        """The first delta waits for the first token; the rest follow the ITL."""
        connection = self.client.send(
            "POST",
            "/v1/messages",
            {
                "model": CLAUDE,
                "max_tokens": 64,
                "messages": HELLO,
                "stream": True,
            },
            headers=HEADERS,
        )
        self.client.clock.advance(0.2)
        self.assertNotIn(b"content_block_delta", connection.received())
        self.client.clock.advance(0.06)
        self.assertIn(b"content_block_delta", connection.received())
        self.assertNotIn(b"message_stop", connection.received())
        for _ in range(20):
            self.client.clock.advance(0.01)
        self.assertIn(b"message_stop", connection.received())

    def test_stop_reasons_streamed(self) -> None:
        pairs = events(self.post(stream=True, max_tokens=3).body)
        self.assertEqual(pairs[-2][1]["delta"]["stop_reason"], "max_tokens")
        self.assertEqual(pairs[-2][1]["usage"]["output_tokens"], 3)

    def test_broken_stream_ends_on_an_error_event(self) -> None:
        dialect = self.service.api.anthropic_messages.dialect
        dialect.faults = Once(Fault(after=3))
        pairs = events(self.post(stream=True).body)
        name, data = pairs[-1]
        self.assertEqual(name, "error")
        self.assertEqual(data["error"]["type"], "api_error")
        self.assertNotIn("message_stop", [n for n, _ in pairs])
        dialect.faults = Once(Fault(after=3))
        self.error(self.post(), 500, "api_error")


class ErrorTests(MessagesTestCase):
    def test_validation(self) -> None:
        cases: list[tuple[dict[str, Any], str]] = [
            ({"max_tokens": None}, "max_tokens: Field required"),
            ({"max_tokens": "5"}, "max_tokens: Input should be a valid integer"),
            ({"max_tokens": 0}, "max_tokens: Input should be greater than or equal to 1"),
            ({"model": None}, "model: Field required"),
            ({"messages": []}, "messages: at least one message is required"),
            ({"tool_choise": 1}, "tool_choise: Extra inputs are not permitted"),
            ({"n": 2}, "n: Extra inputs are not permitted"),
            (
                {"messages": [{"role": "system", "content": "x"}]},
                "messages.0.role: Input should be 'user' or 'assistant'",
            ),
            (
                {"messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]},
                "messages: text content blocks must be non-empty",
            ),
            (
                {"messages": [{"role": "user", "content": [{"type": "video"}]}]},
                "messages.0.content.0: Input tag 'video' found using 'type' does not match any "
                "of the expected tags: 'text', 'image', 'document', 'search_result', 'thinking', "
                "'redacted_thinking', 'tool_use', 'tool_result', 'server_tool_use', "
                "'web_search_tool_result'",
            ),
            ({"temperature": 1.5}, "temperature: Input should be less than or equal to 1"),
            ({"top_k": -1}, "top_k: Input should be greater than or equal to 0"),
            ({"metadata": {"user": "x"}}, "metadata.user: Extra inputs are not permitted"),
            ({"stop_sequences": "x"}, "stop_sequences: Input should be a valid list"),
            (
                {"tool_choice": {"type": "auto"}},
                "tool_choice: tool_choice may only be specified while providing tools.",
            ),
            (
                {"tools": [{"name": "get_weather"}]},
                "tools.0.custom.input_schema: Field required",
            ),
            (
                {"thinking": {"type": "enabled", "budget_tokens": 512}},
                "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024",
            ),
            (
                {"max_tokens": 2000, "thinking": {"type": "enabled", "budget_tokens": 2000}},
                "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our "
                "documentation at https://docs.claude.com/en/docs/build-with-claude/"
                "extended-thinking#max-tokens-and-context-window-size",
            ),
            (
                {
                    "max_tokens": 3000,
                    "thinking": {"type": "enabled", "budget_tokens": 2000},
                    "temperature": 0.5,
                },
                "`temperature` may only be set to 1 when thinking is enabled. Please consult our "
                "documentation at https://docs.claude.com/en/docs/build-with-claude/"
                "extended-thinking#important-considerations-when-using-extended-thinking",
            ),
            (
                {"max_tokens": 100_000},
                f"max_tokens: 100000 > 4096, which is the maximum allowed "
                f"number of output tokens for {CLAUDE}",
            ),
        ]
        for fields, message in cases:
            body = {"model": CLAUDE, "max_tokens": 64, "messages": HELLO, **fields}
            body = {k: v for k, v in body.items() if v is not None}
            response = self.client.post("/v1/messages", body, headers=HEADERS)
            self.assertEqual(self.error(response, 400, "invalid_request_error"), message, fields)

    def test_tool_results_answer_tool_calls(self) -> None:
        tools = [{"name": "get_weather", "input_schema": {"type": "object"}}]
        call = {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {}}
        result = {"type": "tool_result", "tool_use_id": "toolu_01", "content": "sunny"}
        ask = {"role": "user", "content": "Weather?"}
        ok = self.post(
            tools=tools,
            messages=[
                ask,
                {"role": "assistant", "content": [call]},
                {"role": "user", "content": [result]},
            ],
        )
        self.assertEqual(ok.status, 200, ok.body)
        unanswered = self.post(
            tools=tools,
            messages=[
                ask,
                {"role": "assistant", "content": [call]},
                {"role": "user", "content": "and?"},
            ],
        )
        self.assertEqual(
            self.error(unanswered, 400, "invalid_request_error"),
            "messages.1: `tool_use` ids were found without `tool_result` blocks immediately "
            "after: toolu_01. Each `tool_use` block must have a corresponding `tool_result` "
            "block in the next message.",
        )
        orphan = self.post(tools=tools, messages=[{"role": "user", "content": [result]}])
        self.assertIn(
            "messages.0.content.0: unexpected `tool_use_id` found in `tool_result` blocks: "
            "toolu_01.",
            self.error(orphan, 400, "invalid_request_error"),
        )

    def test_headers_and_body(self) -> None:
        missing = self.post(headers={"x-api-key": "k"})
        self.assertEqual(
            self.error(missing, 400, "invalid_request_error"),
            "anthropic-version: header is required",
        )
        garbage = self.client.post("/v1/messages", body=b"{nope", headers=HEADERS)
        self.assertEqual(self.error(garbage, 400, "invalid_request_error"), "Invalid JSON body")

    def test_model_not_found(self) -> None:
        self.assertEqual(
            self.error(self.post(model="claude-nope"), 404, "not_found_error"),
            "model: claude-nope",
        )

    def test_keys(self) -> None:
        """With keys configured: x-api-key or a bearer token; Anthropic's 401 otherwise."""
        self.use(api_keys=(ApiKey("sk-ant-good"),))
        self.assertEqual(self.post(headers={**HEADERS, "x-api-key": "sk-ant-good"}).status, 200)
        bearer = {"anthropic-version": "2023-06-01", "Authorization": "Bearer sk-ant-good"}
        self.assertEqual(self.post(headers=bearer).status, 200)
        wrong = self.post(headers={**HEADERS, "x-api-key": "sk-ant-bad"})
        self.assertEqual(wrong.status, 401)
        self.assertEqual(
            wrong.json()["error"], {"type": "authentication_error", "message": "invalid x-api-key"}
        )
        none = self.post(headers={"anthropic-version": "2023-06-01"})
        self.assertEqual(none.json()["error"]["message"], "x-api-key header is required")
        # Refused from its head, before routing: the request id under Anthropic's name too.
        for refused in (wrong, none):
            self.assertTrue(refused.header("x-request-id"))
            self.assertEqual(refused.header("request-id"), refused.header("x-request-id"))

    def test_too_large(self) -> None:
        self.use(max_body_size=2048)
        big = self.post(messages=[{"role": "user", "content": "x" * 4096}])
        self.assertEqual(big.status, 413)
        self.assertTrue(big.header("x-request-id"))
        self.assertEqual(big.header("request-id"), big.header("x-request-id"))
        self.assertEqual(
            big.json(),
            {
                "type": "error",
                "error": {
                    "type": "request_too_large",
                    "message": "Request exceeds the maximum size",
                },
            },
        )

    def test_rate_limited(self) -> None:
        """The gate's buckets, in Anthropic's headers and words; retry-after as the SDK reads it."""
        self.use(rpm=2, tpm=100_000)
        first = self.post()
        self.assertEqual(first.header("anthropic-ratelimit-requests-limit"), "2")
        self.assertEqual(first.header("anthropic-ratelimit-requests-remaining"), "1")
        self.assertEqual(first.header("anthropic-ratelimit-tokens-limit"), "100000")
        self.assertEqual(first.header("anthropic-ratelimit-requests-reset"), "2023-11-14T22:13:50Z")
        self.assertIsNone(first.header("x-ratelimit-limit-requests"))
        self.post()
        refused = self.post()
        message = self.error(refused, 429, "rate_limit_error")
        self.assertTrue(
            message.startswith(
                "This request would exceed the rate limit for your organization (org-mockoai) "
                "of 2 requests per minute."
            ),
            message,
        )
        self.assertEqual(refused.header("retry-after"), "30")
        self.assertEqual(refused.header("anthropic-ratelimit-requests-remaining"), "0")
        self.assertIsNone(refused.header("x-ratelimit-remaining-requests"))
        # An OpenAI request with the same key spends from the same bucket.
        self.use(rpm=1)
        chat = self.client.post(
            "/v1/chat/completions",
            {"model": "llama-3", "messages": HELLO},
            headers={"Authorization": "Bearer " + HEADERS["x-api-key"]},
        )
        self.assertEqual(chat.status, 200)
        self.error(self.post(), 429, "rate_limit_error")

    def test_engine_full_is_overloaded(self) -> None:
        """A full queue is Anthropic's 529, whatever status OpenAI's path would use."""
        self.use(max_running=1, max_waiting=0)
        connection = self.client.send(
            "POST",
            "/v1/messages",
            {"model": CLAUDE, "max_tokens": 64, "messages": HELLO, "stream": True},
            headers=HEADERS,
        )
        refused = self.post()
        self.assertEqual(self.error(refused, 529, "overloaded_error"), "Overloaded")
        self.assertTrue(refused.header("retry-after"))
        streamed = self.post(stream=True)
        self.error(streamed, 529, "overloaded_error")
        self.client.clock.advance(1)
        self.assertIn(b"message_stop", connection.received())
        stats = json.loads(self.client.get("/stats").body)
        model = stats["models"][CLAUDE] if "models" in stats else stats[CLAUDE]
        self.assertEqual(model["rejected"], 2)


#: A user turn: text or blocks.
_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40)
_VISIBLE = _TEXT.filter(lambda t: not t.isspace())
_BLOCKS = st.lists(
    st.builds(lambda t: {"type": "text", "text": t}, _VISIBLE), min_size=1, max_size=3
)
_TURNS = st.lists(st.one_of(_VISIBLE, _BLOCKS), min_size=1, max_size=4).map(
    lambda contents: [
        {"role": "user" if i % 2 == 0 else "assistant", "content": c}
        for i, c in enumerate(contents)
    ]
)
_OPTIONAL = st.fixed_dictionaries(
    {},
    optional={
        "system": st.one_of(_VISIBLE, _BLOCKS),
        "temperature": st.floats(0, 1),
        "top_p": st.floats(0, 1),
        "top_k": st.integers(0, 500),
        "stop_sequences": st.lists(_VISIBLE, max_size=3),
        "metadata": st.fixed_dictionaries({"user_id": _TEXT}),
        "stream": st.booleans(),
    },
)


class PropertyTests(MessagesTestCase):
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(messages=_TURNS, optional=_OPTIONAL, max_tokens=st.integers(1, 64))
    def test_valid_requests_are_answered(
        self, messages: list[dict[str, Any]], optional: dict[str, Any], max_tokens: int
    ) -> None:
        """Any valid shape is answered: a Message or a stream, never more tokens than asked."""
        response = self.post(messages=messages, max_tokens=max_tokens, **optional)
        self.assertEqual(response.status, 200, response.body)
        if optional.get("stream"):
            pairs = events(response.body)
            check_events(pairs)
            self.assertEqual(pairs[-1][0], "message_stop")
            usage = pairs[-2][1]["usage"]
        else:
            message = response.json()
            check_message(self, message)
            usage = message["usage"]
        self.assertLessEqual(usage["output_tokens"], max_tokens)
        system = {"system": optional["system"]} if "system" in optional else {}
        counted = self.count(messages=messages, **system)
        self.assertEqual(counted.json()["input_tokens"], usage["input_tokens"])

    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        field=st.sampled_from(
            [
                "model",
                "max_tokens",
                "messages",
                "system",
                "stop_sequences",
                "temperature",
                "top_p",
                "top_k",
                "metadata",
                "stream",
                "tools",
                "tool_choice",
                "thinking",
            ]
        ),
        value=st.recursive(
            st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), _TEXT),
            lambda inner: st.one_of(
                st.lists(inner, max_size=3), st.dictionaries(_TEXT, inner, max_size=3)
            ),
            max_leaves=6,
        ),
    )
    def test_any_value_is_answered_in_the_envelope(self, field: str, value: object) -> None:
        """Whatever a field holds, the answer is a 200 or Anthropic's 4xx, never a 500."""
        response = self.post(**{field: value})
        self.assertIn(response.status, (200, 400, 404), response.body)
        if response.status != 200:
            body = response.json()
            self.assertEqual(body["type"], "error")
            self.assertIn(body["error"]["type"], ("invalid_request_error", "not_found_error"))


WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
        },
        "required": ["city"],
        "additionalProperties": False,
    },
}
CLOCK = {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}


class ToolUseTests(MessagesTestCase):
    def calls(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        return [b for b in message["content"] if b["type"] == "tool_use"]

    def test_forced_tool(self) -> None:
        """A named tool is called, its input valid for its schema, whatever the seed."""
        for _ in range(10):
            message = self.post(
                tools=[WEATHER, CLOCK], tool_choice={"type": "tool", "name": "get_weather"}
            ).json()
            check_message(self, message)
            [call] = self.calls(message)
            self.assertEqual(list(call), ["type", "id", "name", "input"])
            self.assertRegex(call["id"], r"^toolu_01[A-Za-z0-9]{22}$")
            self.assertEqual(call["name"], "get_weather")
            jsonschema.validate(call["input"], WEATHER["input_schema"])
            self.assertEqual(message["stop_reason"], "tool_use")
            self.assertGreater(message["usage"]["output_tokens"], 0)

    def test_choices(self) -> None:
        any_one = self.post(
            tools=[WEATHER, CLOCK],
            tool_choice={"type": "any", "disable_parallel_tool_use": True},
        ).json()
        self.assertEqual(len(self.calls(any_one)), 1)
        none = self.post(tools=[WEATHER], tool_choice={"type": "none"}).json()
        self.assertEqual((self.calls(none), none["stop_reason"]), ([], "end_turn"))
        self.assertEqual(none["content"][0]["type"], "text")

    def test_the_loop_ends_after_a_tool_result(self) -> None:
        """``auto`` calls, and answers in text once the results are back: an agent loop ends."""
        messages: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Paris?"}]
        first = self.post(tools=[WEATHER], messages=messages).json()
        calls = self.calls(first)
        self.assertTrue(calls)
        messages += [
            {"role": "assistant", "content": first["content"]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": c["id"], "content": "18C, sunny"}
                    for c in calls
                ],
            },
        ]
        second = self.post(tools=[WEATHER], messages=messages).json()
        self.assertEqual((self.calls(second), second["stop_reason"]), ([], "end_turn"))

    def test_streamed_call(self) -> None:
        response = self.post(
            stream=True, tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather"}
        )
        pairs = events(response.body)
        check_events(pairs)
        names = [n for n, _ in pairs]
        # As Anthropic's: the input opens with an empty piece, and the ping follows it.
        self.assertEqual(
            names[:4], ["message_start", "content_block_start", "content_block_delta", "ping"]
        )
        block = pairs[1][1]["content_block"]
        self.assertEqual(
            (block["type"], block["name"], block["input"]), ("tool_use", "get_weather", {})
        )
        deltas = [d["delta"] for n, d in pairs if n == "content_block_delta"]
        self.assertEqual(deltas[0], {"type": "input_json_delta", "partial_json": ""})
        self.assertEqual({d["type"] for d in deltas}, {"input_json_delta"})
        self.assertGreater(len(deltas), 2)
        arguments = json.loads("".join(d["partial_json"] for d in deltas))
        jsonschema.validate(arguments, WEATHER["input_schema"])
        self.assertEqual(pairs[-2][1]["delta"]["stop_reason"], "tool_use")

    def test_unsatisfiable_schema(self) -> None:
        tool = {
            "name": "never",
            "input_schema": {"type": "object", "required": ["a"], "properties": {"a": False}},
        }
        message = self.error(self.post(tools=[tool]), 400, "invalid_request_error")
        self.assertTrue(message.startswith("tools.0.custom.input_schema: JSON schema is invalid."))


class ThinkingTests(MessagesTestCase):
    THINKING = {"type": "enabled", "budget_tokens": 1024}

    def test_thinking_block(self) -> None:
        message = self.post(max_tokens=2048, thinking=self.THINKING).json()
        check_message(self, message)
        thinking, text = message["content"]
        self.assertEqual(list(thinking), ["type", "thinking", "signature"])
        self.assertTrue(thinking["signature"])
        self.assertLessEqual(count_text(thinking["thinking"]), 1024)
        self.assertEqual(text["type"], "text")
        # Thinking is output: billed and counted.
        self.assertEqual(
            message["usage"]["output_tokens"],
            count_text(thinking["thinking"]) + count_text(text["text"]),
        )

    def test_thinking_streamed(self) -> None:
        pairs = events(self.post(max_tokens=2048, thinking=self.THINKING, stream=True).body)
        check_events(pairs)
        names = [n for n, _ in pairs]
        self.assertEqual(names[:3], ["message_start", "content_block_start", "ping"])
        self.assertEqual(
            pairs[1][1]["content_block"], {"type": "thinking", "thinking": "", "signature": ""}
        )
        deltas = [(d["index"], d["delta"]["type"]) for n, d in pairs if n == "content_block_delta"]
        kinds = [kind for _, kind in deltas]
        last_thought = max(i for i, k in enumerate(kinds) if k == "thinking_delta")
        self.assertEqual(kinds[last_thought + 1], "signature_delta")
        self.assertEqual(set(kinds[last_thought + 2 :]), {"text_delta"})
        self.assertEqual({i for i, k in deltas if k == "text_delta"}, {1})
        stop = names.index("content_block_stop")
        self.assertEqual(pairs[stop][1]["index"], 0)
        self.assertEqual(names[stop + 1], "content_block_start")
        self.assertEqual(pairs[stop + 1][1]["content_block"]["type"], "text")
        self.assertEqual(names.count("ping"), 1)

    def test_thinking_with_a_forced_tool_is_refused(self) -> None:
        response = self.post(
            max_tokens=2048,
            thinking=self.THINKING,
            tools=[WEATHER],
            tool_choice={"type": "any"},
        )
        self.assertEqual(
            self.error(response, 400, "invalid_request_error"),
            "Thinking may not be enabled when tool_choice forces tool use.",
        )
