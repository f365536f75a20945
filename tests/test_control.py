"""
Rules and control headers (L{mockoai.pipeline.control}) through the
production request path on a fake clock: every fault kind in every
dialect (its envelope, its error event, its end of stream), scripted
answers and tool calls rendered by each dialect, latency overrides,
schedules and counts on L{twisted.internet.task.Clock}, the fault counters
in /metrics and /stats, and the request log's fields.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from twisted.trial.unittest import TestCase

from mockoai.ops.config import ModelSpec, ProviderSpec
from mockoai.ops.metrics import in_flight
from mockoai.pipeline.control import Control, Seam, dialect_name, texts
from mockoai.pipeline.faults import StreamErrors
from mockoai.pipeline.generate import Pipeline
from mockoai.pipeline.rules import compile_document
from tests.support import Client, Connection, NoDelayTransport, Response, make_service, sse_blocks

GPT = "gpt-4o"
CLAUDE = "claude-sonnet-4-5"
TTFT = 0.2
ITL = 0.01
KEY = "sk-or-v1-control"
ANTHROPIC = {"anthropic-version": "2023-06-01"}
ASK = [{"role": "user", "content": "Tell me about lorem ipsum."}]
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def request_for(dialect: str, stream: bool = False, **extra: Any) -> tuple[str, dict[str, Any]]:
    """A request in ``dialect``: its path and body (30 tokens, whatever the model's mean)."""
    if dialect == "chat":
        body = {"model": GPT, "messages": ASK, "max_tokens": 30, "ignore_eos": True}
        path = "/v1/chat/completions"
    elif dialect == "completions":
        body = {"model": GPT, "prompt": "Once upon a lorem", "max_tokens": 30, "ignore_eos": True}
        path = "/v1/completions"
    elif dialect == "openrouter":
        body = {"model": GPT, "messages": ASK, "max_tokens": 30, "ignore_eos": True}
        path = "/api/v1/chat/completions"
    elif dialect == "anthropic":
        body = {"model": CLAUDE, "messages": ASK, "max_tokens": 30}
        path = "/v1/messages"
    else:
        body = {"model": GPT, "input": "Tell me about lorem ipsum.", "max_output_tokens": 30}
        path = "/v1/responses"
    body.update(stream=stream, **extra)
    return path, body


DIALECTS = ("chat", "completions", "openrouter", "anthropic", "responses")

#: How a stream that ran its course ends, in each dialect.
END_OF_STREAM = {
    "chat": "data: [DONE]",
    "completions": "data: [DONE]",
    "openrouter": "data: [DONE]",
    "anthropic": "event: message_stop",
    "responses": "event: response.completed",
}
#: Each dialect's own mid-stream error event.
ERROR_EVENT = {
    "chat": 'data: {"error":',
    "completions": 'data: {"error":',
    "openrouter": '"finish_reason":"error"',
    "anthropic": "event: error",
    "responses": "event: response.failed",
}


def blocks(body: bytes) -> list[str]:
    """The SSE events of a body, in any dialect's framing (``event:`` lines or not)."""
    return [block for block in body.decode().split("\n\n") if block.strip()]


class ResetTransport(NoDelayTransport):
    """Tells an abort (a reset) from a clean close."""


class ControlTestCase(TestCase):
    settings: dict[str, Any] = {}

    def setUp(self) -> None:
        self.service = make_service(
            models=(
                ModelSpec(GPT, "openai"),
                ModelSpec(CLAUDE, "anthropic"),
            ),
            openrouter_providers=(ProviderSpec("OpenAI"),),
            **{
                "tokens_mean": 40.0,
                "tokens_stddev": 0.0,
                "response_delay": TTFT,
                "itl": ITL,
                **self.settings,
            },
        )
        self.clock = self.service.clock
        self.api = self.service.api
        self.control: Control = self.api.admin.control

    def rules(self, *entries: dict[str, Any], seed: int = 0) -> None:
        self.control.load(compile_document({"seed": seed, "rules": list(entries)}))

    def headers(self, dialect: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {KEY}", **(extra or {})}
        if dialect == "anthropic":
            headers.update(ANTHROPIC)
        return headers

    def send(
        self,
        dialect: str,
        stream: bool = False,
        headers: dict[str, str] | None = None,
        advance: bool = True,
        **extra: Any,
    ) -> Response:
        path, body = request_for(dialect, stream, **extra)
        return Client(self.service).post(
            path, body, headers=self.headers(dialect, headers), advance=advance
        )

    def connect(
        self,
        dialect: str,
        stream: bool = False,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> Connection:
        """A request sent on a connection of its own, its transport telling resets apart."""
        path, body = request_for(dialect, stream, **extra)
        transport = ResetTransport()
        connection = Client(self.service).connect(transport)
        connection.request("POST", path, json_body=body, headers=self.headers(dialect, headers))
        return connection

    def elapse(self, seconds: float = 5.0) -> None:
        """Let ``seconds`` pass on the fake clock, in small steps."""
        for _ in range(int(seconds / 0.005)):
            self.clock.advance(0.005)


class InstallTests(ControlTestCase):
    def test_off_costs_nothing(self) -> None:
        """Neither rules nor headers: the dialects keep what they had, the journal is off."""
        self.assertFalse(self.control.active)
        dialects = {
            dialect_name(p.dialect): p.dialect.faults
            for p in vars(self.api).values()
            if isinstance(p, Pipeline)
        }
        self.assertEqual(set(dialects), {"openai", "openrouter", "anthropic"})
        for pipeline in vars(self.api).values():
            if isinstance(pipeline, Pipeline):
                faults = pipeline.dialect.faults
                self.assertTrue(faults is None or isinstance(faults, StreamErrors), faults)
        self.assertIsNone(self.service.site.observer.journal)

    def test_headers_are_ignored_unless_allowed(self) -> None:
        response = self.send("chat", headers={"x-mockoai-fault": "status:503"})
        self.assertEqual(response.status, 200)

    def test_rules_turn_it_on_and_off(self) -> None:
        self.rules({"fault": "status:503"})
        for pipeline in vars(self.api).values():
            if isinstance(pipeline, Pipeline):
                self.assertIsInstance(pipeline.dialect.faults, Seam)
        openrouter = self.api.openrouter_chat.dialect.faults
        assert isinstance(openrouter, Seam)
        self.assertIsInstance(openrouter.fallback, StreamErrors)
        self.assertIsNotNone(self.service.site.observer.journal)
        self.rules()
        self.assertIsInstance(self.api.openrouter_chat.dialect.faults, StreamErrors)
        self.assertIsNone(self.api.openai_chat.dialect.faults)
        self.assertIsNone(self.service.site.observer.journal)


class StatusTests(ControlTestCase):
    def test_status_in_every_dialect(self) -> None:
        """Each API's envelope and headers; Anthropic's 529 is its overloaded_error."""
        self.rules({"fault": "status:503:retry-after=2"})
        for dialect in DIALECTS:
            for stream in (False, True):
                response = self.send(dialect, stream)
                self.assertEqual(response.status, 503, (dialect, response.body))
                self.assertEqual(response.header("Retry-After"), "2")
                self.assertEqual(response.header("Content-Type"), "application/json")
                error = response.json()
                if dialect == "openrouter":
                    self.assertEqual(error["error"]["code"], 503)
                elif dialect == "anthropic":
                    self.assertEqual(error["type"], "error")
                    self.assertEqual(error["error"]["type"], "overloaded_error")
                    self.assertTrue(error["request_id"].startswith("req_"))
                else:
                    self.assertEqual(error["error"]["type"], "server_error")

    def test_anthropic_529_and_429(self) -> None:
        self.rules({"dialect": "anthropic", "fault": "status:529"}, {"fault": "status:429"})
        response = self.send("anthropic")
        self.assertEqual(response.status, 529)
        self.assertEqual(
            response.json()["error"], {"type": "overloaded_error", "message": "Overloaded"}
        )
        self.assertEqual(self.send("chat").json()["error"]["code"], "rate_limit_exceeded")

    def test_openai_words(self) -> None:
        self.rules({"fault": "status:404"})
        error = self.send("chat").json()["error"]
        self.assertEqual(error["code"], "model_not_found")
        self.rules({"fault": "status:401"})
        self.assertEqual(self.send("chat").json()["error"]["code"], "invalid_api_key")


class StreamEndTests(ControlTestCase):
    """How each cut ends a stream, in every dialect."""

    def events(self, connection: Connection) -> list[str]:
        return blocks(connection.response().body)

    def test_error_event(self) -> None:
        self.rules({"fault": "error-event:after=5"})
        for dialect in DIALECTS:
            connection = self.connect(dialect, stream=True)
            self.elapse(1.5)
            response = connection.response()
            self.assertEqual(response.status, 200)
            self.assertTrue(response.complete, dialect)
            self.assertIn(ERROR_EVENT[dialect], response.body.decode(), dialect)
            self.assertNotIn(END_OF_STREAM[dialect], response.body.decode(), dialect)
            self.assertFalse(connection.closing, dialect)

    def test_plain_answer_cut_by_an_error_counts_as_failed(self) -> None:
        """It counted as neither answered nor failed: in flight forever in /metrics."""
        self.rules({"fault": "error-event:after=5"})
        stats = self.api.openai_chat.stats.for_model(GPT)
        self.assertEqual(self.send("chat").status, 500)
        connection = self.connect("chat")
        connection.disconnect()  # before its error went out
        self.elapse(1.5)
        self.assertEqual((stats.requests, stats.errors, stats.cancelled), (2, {500: 1}, 1))
        self.assertEqual(in_flight(stats), 0)

    def test_truncate_is_a_clean_close_without_the_end(self) -> None:
        self.rules({"fault": "truncate:after=5"})
        for dialect in DIALECTS:
            connection = self.connect(dialect, stream=True)
            self.elapse(1.5)
            response = connection.response()
            body = response.body.decode()
            self.assertTrue(response.complete, dialect)  # the chunked body ended properly
            self.assertNotIn(END_OF_STREAM[dialect], body, dialect)
            self.assertNotIn(ERROR_EVENT[dialect], body, dialect)
            self.assertTrue(connection.closing, dialect)
            self.assertFalse(connection.transport.disconnected, dialect)  # a FIN, not a reset
            for block in self.events(connection):
                data = [line[6:] for line in block.split("\n") if line.startswith("data: ")]
                if data and not data[0].startswith(":"):
                    json.loads(data[0])  # every event sent is whole

    def test_malformed_event_then_a_clean_close(self) -> None:
        self.rules({"fault": "malformed:after=5"})
        for dialect in DIALECTS:
            connection = self.connect(dialect, stream=True)
            self.elapse(1.5)
            blocks = self.events(connection)
            last = [line[6:] for line in blocks[-1].split("\n") if line.startswith("data: ")]
            with self.assertRaises(ValueError, msg=dialect):
                json.loads(last[0])
            before = [line[6:] for line in blocks[-2].split("\n") if line.startswith("data: ")]
            json.loads(before[0])
            if dialect in ("anthropic", "responses"):
                self.assertTrue(blocks[-1].startswith("event: "), dialect)
            self.assertTrue(connection.closing, dialect)
            self.assertFalse(connection.transport.disconnected, dialect)

    def test_reset_after_tokens(self) -> None:
        self.rules({"fault": "reset:after=5"})
        for dialect in DIALECTS:
            connection = self.connect(dialect, stream=True)
            self.elapse(1.5)
            self.assertTrue(connection.transport.disconnected, dialect)
            response = connection.responses()[0]
            self.assertFalse(response.complete, dialect)
            self.assertNotIn(END_OF_STREAM[dialect], response.body.decode())

    def test_hang_after_tokens_until_the_client_leaves(self) -> None:
        self.rules({"fault": "hang:after=5"})
        connection = self.connect("chat", stream=True)
        self.elapse(1.0)
        sent = connection.received()
        self.assertIn(b"data: ", sent)
        self.elapse(30.0)
        self.assertEqual(connection.received(), sent)
        self.assertFalse(connection.closing)
        self.assertEqual(len(self.api.streams), 1)
        connection.disconnect()
        self.assertEqual(len(self.api.streams), 0)
        self.assertEqual(self.api.metrics.stats.for_model(GPT).cancelled, 1)

    def test_hang_under_the_engine_frees_its_place(self) -> None:
        self.service = make_service(
            models=(GPT,), tokens_mean=40.0, tokens_stddev=0.0, itl=ITL, max_running=1
        )
        self.clock = self.service.clock
        self.api = self.service.api
        self.control = self.api.admin.control
        self.rules({"nth": 1, "fault": "hang:after=3"})
        hung = self.connect("chat", stream=True)
        self.elapse(0.5)
        self.assertFalse(hung.closing)
        second = self.send("chat")
        self.assertEqual(second.status, 200)  # the engine's one place was free again


class SilentTests(ControlTestCase):
    def test_hang_sends_nothing(self) -> None:
        self.rules({"fault": "hang"})
        for stream in (False, True):
            connection = self.connect("chat", stream=stream)
            self.elapse(20.0)
            self.assertEqual(connection.received(), b"")
            connection.disconnect()
        self.assertEqual(self.api.metrics.stats.for_model(GPT).cancelled, 2)

    def test_reset_before_any_byte(self) -> None:
        self.rules({"fault": "reset"})
        for dialect in DIALECTS:
            connection = self.connect(dialect)
            self.assertEqual(connection.received(), b"", dialect)
            self.assertTrue(connection.transport.disconnected, dialect)

    def test_empty(self) -> None:
        self.rules({"fault": "empty"})
        for dialect in DIALECTS:
            for stream in (False, True):
                response = self.send(dialect, stream)
                self.assertEqual((response.status, response.body), (200, b""), dialect)
                self.assertEqual(response.header("Content-Length"), "0")


class PlainCutTests(ControlTestCase):
    def test_truncate(self) -> None:
        self.rules({"fault": "truncate:after=10"})
        connection = self.connect("chat")
        self.elapse(1.0)
        response = connection.responses()[0]
        length = int(response.header("Content-Length") or 0)
        self.assertFalse(response.complete)
        self.assertEqual(len(response.body), length // 2)
        self.assertTrue(connection.closing)
        self.assertFalse(connection.transport.disconnected)

    def test_malformed(self) -> None:
        self.rules({"fault": "malformed:after=10"})
        for dialect in DIALECTS:
            response = self.send(dialect)
            self.assertEqual(response.status, 200)
            self.assertTrue(response.complete)
            with self.assertRaises(ValueError, msg=dialect):
                json.loads(response.body)

    def test_reset_once_the_tokens_are_out(self) -> None:
        self.rules({"fault": "reset:after=10"})
        connection = self.connect("chat")
        self.clock.advance(TTFT + 8 * ITL)
        self.assertFalse(connection.transport.disconnected)
        self.clock.advance(2 * ITL)
        self.assertTrue(connection.transport.disconnected)
        self.assertEqual(connection.received(), b"")

    def test_error_event_is_the_errors_body(self) -> None:
        self.rules({"fault": "error-event:after=10"})
        self.assertEqual(self.send("chat").status, 500)
        self.assertEqual(self.send("anthropic").json()["error"]["type"], "api_error")
        self.assertEqual(self.send("openrouter").status, 200)


class TimingTests(ControlTestCase):
    def first_content(self, connection: Connection, marker: bytes) -> float:
        start = self.clock.seconds()
        for _ in range(100_000):
            if marker in connection.received():
                return round(self.clock.seconds() - start, 3)
            self.clock.advance(0.001)
        raise AssertionError("no content")

    def test_ttft_fault(self) -> None:
        self.rules({"fault": "ttft:ms=1500"})
        connection = self.connect("chat", stream=True)
        self.assertLess(abs(self.first_content(connection, b'"delta":{"content"') - 1.5), 0.002)

    def test_itl_spike(self) -> None:
        self.rules({"fault": "itl-spike:ms=500:every=10"})
        connection = self.connect("chat", stream=True)
        times = []
        seen = 0
        start = self.clock.seconds()
        for _ in range(3000):
            count = connection.received().count(b'"delta":{"content"')
            if count > seen:
                times += [self.clock.seconds() - start] * (count - seen)
                seen = count
            self.clock.advance(0.001)
        gaps = [round(b - a, 3) for a, b in zip(times, times[1:])]
        self.assertEqual(len(times), 30)
        self.assertEqual([i + 1 for i, g in enumerate(gaps) if g > 0.1], [10, 20])
        self.assertEqual(gaps[9], 0.5)
        self.assertEqual(gaps[0], ITL)

    def test_latency_override(self) -> None:
        self.rules({"latency": {"ttft_ms": 50, "itl_ms": 100, "tokens_per_event": 3}})
        connection = self.connect("chat", stream=True)
        # The first event carries three tokens: out at 50 ms + 2 gaps of 100 ms.
        self.assertLess(abs(self.first_content(connection, b'"delta":{"content"') - 0.25), 0.002)
        self.elapse(4.0)
        chunks = [json.loads(b[6:]) for b in sse_blocks(connection.response().body)[:-1]]
        contents = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
        self.assertEqual(len(contents), 10)  # 30 tokens, 3 per event

    def test_plain_answer_waits_for_the_timing(self) -> None:
        self.rules({"latency": {"ttft_ms": 1000, "itl_ms": 0}})
        connection = self.connect("chat")
        self.clock.advance(0.999)
        self.assertEqual(connection.received(), b"")
        self.clock.advance(0.002)
        self.assertEqual(connection.response().status, 200)


class ScriptTests(ControlTestCase):
    def test_text_in_every_dialect(self) -> None:
        self.rules({"user": "lorem", "text": "Scripted answer, word for word."})
        for dialect in DIALECTS:
            body = self.send(dialect).json()
            if dialect == "chat" or dialect == "openrouter":
                text = body["choices"][0]["message"]["content"]
            elif dialect == "completions":
                text = body["choices"][0]["text"]
            elif dialect == "anthropic":
                text = body["content"][0]["text"]
            else:
                text = body["output"][0]["content"][0]["text"]
            self.assertEqual(text, "Scripted answer, word for word.", dialect)
        stream = self.send("chat", stream=True)
        chunks = [json.loads(b[6:]) for b in sse_blocks(stream.body)[:-1]]
        text = "".join(
            c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
        )
        self.assertEqual(text, "Scripted answer, word for word.")

    def test_unmatched_requests_are_generated(self) -> None:
        self.rules({"user": "nothing like this", "text": "Scripted."})
        content = self.send("chat").json()["choices"][0]["message"]["content"]
        self.assertNotEqual(content, "Scripted.")
        self.assertEqual(self.control.matched, [0])

    def test_chunks_with_their_own_timing(self) -> None:
        self.rules(
            {
                "chunks": [
                    {"text": "One,", "delay_ms": 100},
                    {"text": " two,", "delay_ms": 400},
                    {"text": " three.", "delay_ms": 0},
                ]
            }
        )
        connection = self.connect("chat", stream=True)
        seen: list[tuple[float, str]] = []
        start = self.clock.seconds()
        for _ in range(2000):
            responses = connection.responses()
            body = responses[0].body if responses else b""
            chunks = [json.loads(b[6:]) for b in blocks(body) if b.startswith("data: {")]
            contents = [
                c["choices"][0]["delta"]["content"]
                for c in chunks
                if c["choices"] and c["choices"][0]["delta"].get("content")
            ]
            if len(contents) > len(seen):
                seen += [(round(self.clock.seconds() - start, 2), t) for t in contents[len(seen) :]]
            self.clock.advance(0.001)
        self.assertEqual(seen, [(0.1, "One,"), (0.5, " two,"), (0.5, " three.")])

    def test_tool_calls_in_every_dialect(self) -> None:
        self.rules({"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]})
        chat = self.send("chat", tools=[TOOL]).json()["choices"][0]
        self.assertEqual(chat["finish_reason"], "tool_calls")
        call = chat["message"]["tool_calls"][0]
        self.assertEqual(call["function"], {"name": "get_weather", "arguments": '{"city":"Paris"}'})
        self.assertTrue(call["id"].startswith("call_"))
        routed = self.send("openrouter", tools=[TOOL]).json()["choices"][0]
        self.assertEqual(routed["message"]["tool_calls"][0]["function"]["name"], "get_weather")
        anthropic_tool = {
            "name": "get_weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
        message = self.send("anthropic", tools=[anthropic_tool]).json()
        self.assertEqual(message["stop_reason"], "tool_use")
        use = message["content"][0]
        self.assertEqual(
            (use["type"], use["name"], use["input"]), ("tool_use", "get_weather", {"city": "Paris"})
        )
        self.assertTrue(use["id"].startswith("toolu_"))
        responses_tool = {"type": "function", "strict": False, **TOOL["function"]}
        output = self.send("responses", tools=[responses_tool]).json()["output"]
        calls = [item for item in output if item["type"] == "function_call"]
        self.assertEqual(
            (calls[0]["name"], calls[0]["arguments"]), ("get_weather", '{"city":"Paris"}')
        )
        stream = self.send("chat", stream=True, tools=[TOOL])
        chunks = [json.loads(b[6:]) for b in sse_blocks(stream.body)[:-1]]
        arguments = "".join(
            c["choices"][0]["delta"]["tool_calls"][0]["function"].get("arguments", "")
            for c in chunks
            if c["choices"] and c["choices"][0]["delta"].get("tool_calls")
        )
        self.assertEqual(json.loads(arguments), {"city": "Paris"})

    def test_json_answer(self) -> None:
        self.rules({"json": {"answer": 42, "ok": True}})
        content = self.send("chat").json()["choices"][0]["message"]["content"]
        self.assertEqual(json.loads(content), {"answer": 42, "ok": True})

    def test_max_tokens_cuts_a_script(self) -> None:
        self.rules({"text": "one two three four five six seven eight nine ten"})
        choice = self.send("chat", max_tokens=3, ignore_eos=False).json()["choices"][0]
        self.assertEqual(choice["finish_reason"], "length")
        self.assertEqual(choice["message"]["content"], "one two three")

    def test_tokens_header(self) -> None:
        self.service = make_service(models=(GPT,), allow_control_headers=True, tokens_mean=40.0)
        self.api = self.service.api
        response = self.send("chat", headers={"x-mockoai-tokens": "7"}, ignore_eos=False)
        self.assertEqual(response.json()["usage"]["completion_tokens"], 7)
        self.assertEqual(response.json()["choices"][0]["finish_reason"], "stop")


class TriggerTests(ControlTestCase):
    #: Answers out at once: a request takes no time of the clock's.
    settings = {"response_delay": 0.0, "itl": 0.0}

    def statuses(self, count: int, dialect: str = "chat", gap: float = 0.0) -> list[int]:
        out = []
        for _ in range(count):
            out.append(self.send(dialect).status)
            if gap:
                self.clock.advance(gap)
        return out

    def test_first_every_nth(self) -> None:
        self.rules({"first": 2, "fault": "status:503"})
        self.assertEqual(self.statuses(4), [503, 503, 200, 200])
        self.rules({"every": 3, "fault": "status:503"})
        self.assertEqual(self.statuses(7), [200, 200, 503, 200, 200, 503, 200])
        self.rules({"nth": 2, "fault": "status:503"})
        self.assertEqual(self.statuses(4), [200, 503, 200, 200])

    def test_counts_are_of_requests_that_match(self) -> None:
        self.rules({"dialect": "anthropic", "first": 1, "fault": "status:529"})
        self.assertEqual(self.statuses(2, "chat"), [200, 200])
        self.assertEqual(self.statuses(2, "anthropic"), [529, 200])

    def test_schedule_on_the_clock(self) -> None:
        """503 for 2 s every 10 s, counted from when the rules were loaded."""
        self.rules({"schedule": {"every": 10, "for": 2}, "fault": "status:503"})
        self.assertEqual(self.statuses(12, gap=1.0), [503, 503] + [200] * 8 + [503, 503])

    def test_window_relative_to_loading(self) -> None:
        self.clock.advance(1000)
        self.rules({"model": GPT, "window": [3, 5], "fault": "status:503"})
        self.assertEqual(self.statuses(7, gap=1.0), [200, 200, 200, 503, 503, 200, 200])

    def test_wall_clock_window(self) -> None:
        now = self.clock.seconds()
        self.rules({"clock": "wall", "window": [now + 2, now + 3], "fault": "status:503"})
        self.assertEqual(self.statuses(4, gap=1.0), [200, 200, 503, 200])

    def test_ramp_and_probability_are_seeded(self) -> None:
        ramp = {"ramp": {"from": 0, "to": 1, "over": 50}, "fault": "status:429"}
        self.rules(ramp, seed=5)
        first = self.statuses(100, gap=1.0)
        self.assertEqual(first[0], 200)
        self.assertEqual(first[50:], [429] * 50)
        early, late = first[:25].count(429), first[25:50].count(429)
        self.assertLess(early, late)
        # Loaded again with the same seed: the same fates at the same times.
        self.rules(ramp, seed=5)
        self.assertEqual(self.statuses(100, gap=1.0), first)

    def test_a_seeded_request_meets_the_same_fate(self) -> None:
        self.rules({"probability": 0.5, "fault": "status:503"})
        fates = {self.send("chat", seed=seed).status for seed in (7,) * 5}
        self.assertEqual(len(fates), 1)
        spread = [self.send("chat", seed=seed).status for seed in range(40)]
        self.assertIn(503, spread)
        self.assertIn(200, spread)

    def test_first_match_wins(self) -> None:
        self.rules(
            {"name": "a", "user": "lorem", "fault": "status:503"},
            {"name": "b", "fault": "status:429"},
        )
        self.assertEqual(self.send("chat").status, 503)
        self.assertEqual(self.send("chat", messages=[{"role": "user", "content": "x"}]).status, 429)
        self.assertEqual(self.control.applied, [1, 1])


class HeaderTests(ControlTestCase):
    settings = {"allow_control_headers": True}

    def test_header_overrides_rules(self) -> None:
        self.rules({"fault": "status:503"})
        response = self.send("chat", headers={"x-mockoai-fault": "status:429:retry-after=3"})
        self.assertEqual((response.status, response.header("Retry-After")), (429, "3"))
        self.assertEqual(self.send("chat").status, 503)

    def test_bad_headers_are_400s_in_the_dialect(self) -> None:
        response = self.send("chat", headers={"x-mockoai-fault": "explode"})
        self.assertEqual(response.status, 400)
        self.assertIn("x-mockoai-fault", response.json()["error"]["message"])
        response = self.send("anthropic", headers={"x-mockoai-ttft-ms": "soon"})
        self.assertEqual(response.status, 400)
        self.assertEqual(response.json()["error"]["type"], "invalid_request_error")
        self.assertEqual(self.send("chat", headers={"x-mockoai-tokens": "-1"}).status, 400)

    def test_ttft_itl_and_events(self) -> None:
        connection = self.connect(
            "chat",
            stream=True,
            headers={
                "x-mockoai-ttft-ms": "700",
                "x-mockoai-itl-ms": "0",
                "x-mockoai-tokens-per-event": "10",
            },
        )
        self.clock.advance(0.699)
        self.assertNotIn(b'"content":"', connection.received().split(b'"role"', 1)[-1])
        self.clock.advance(0.002)
        self.assertTrue(connection.response().complete)
        chunks = [json.loads(b[6:]) for b in sse_blocks(connection.response().body)[:-1]]
        self.assertEqual(len([c for c in chunks if c["choices"][0]["delta"].get("content")]), 3)


class CountersTests(ControlTestCase):
    def test_metrics_and_stats(self) -> None:
        self.rules(
            {"name": "down", "dialect": "anthropic", "fault": "status:529"},
            {"name": "scripted", "text": "Hi.", "latency": {"ttft_ms": 1}},
        )
        self.send("anthropic")
        self.send("anthropic")
        self.send("chat")
        metrics = Client(self.service).get("/metrics").body.decode()
        self.assertIn(
            f'mockoai_faults_total{{kind="status:529",model="{CLAUDE}",rule="down"}} 2.0', metrics
        )
        self.assertIn(
            f'mockoai_faults_total{{kind="answer",model="{GPT}",rule="scripted"}} 1.0', metrics
        )
        self.assertIn(
            f'mockoai_faults_total{{kind="latency",model="{GPT}",rule="scripted"}} 1.0', metrics
        )
        faults = Client(self.service).get("/stats").json()["faults"]
        self.assertIn({"kind": "status:529", "model": CLAUDE, "rule": "down", "count": 2}, faults)

    def test_request_log_names_the_rule_and_fault(self) -> None:
        directory = tempfile.mkdtemp(prefix="mockoai-log-")
        path = os.path.join(directory, "requests.jsonl")
        self.service = make_service(models=(GPT,), request_log=path)
        log = self.service.request_log
        assert log is not None
        self.addCleanup(lambda: (log.close(), os.unlink(path), os.rmdir(directory)))
        self.api = self.service.api
        self.control = self.api.admin.control
        self.rules({"name": "down", "fault": "status:503:retry-after=1"})
        self.send("chat")
        log.flush()
        with open(path) as handle:
            line = json.loads(handle.readline())
        self.assertEqual(
            (line["rule"], line["fault"], line["status"]), ("down", "status:503:retry-after=1", 503)
        )


class TextsTests(TestCase):
    def test_every_shape(self) -> None:
        self.assertEqual(
            texts(
                {
                    "messages": [
                        {"role": "system", "content": "Be brief."},
                        {"role": "user", "content": "first"},
                        {"role": "assistant", "content": "ok"},
                        {"role": "user", "content": [{"type": "text", "text": "last"}]},
                    ]
                }
            ),
            ("last", "Be brief."),
        )
        self.assertEqual(
            texts(
                {
                    "system": [{"type": "text", "text": "Sys"}],
                    "messages": [{"role": "user", "content": "u"}],
                }
            ),
            ("u", "Sys"),
        )
        self.assertEqual(texts({"instructions": "I", "input": "hello"}), ("hello", "I"))
        self.assertEqual(
            texts(
                {"input": [{"role": "developer", "content": "D"}, {"role": "user", "content": "q"}]}
            ),
            ("q", "D"),
        )
        self.assertEqual(texts({"prompt": ["a", "b"]}), ("b", ""))
        self.assertEqual(texts({"prompt": "p"}), ("p", ""))
        self.assertEqual(texts(None), ("", ""))
