"""
End to end: ``twistd -n mockoai`` as a real process on a loopback port,
driven by the official ``openai`` SDK (sync and async) and raw HTTP.

Every test starts its own server (about half a second with a small corpus)
and stops it with SIGTERM, checking that it exits with status 0.  Every
body and every stream event is validated against OpenAI's schemas.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import platform
import re
import signal
import socket
import statistics
import struct
import tempfile
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from twisted.trial.unittest import SynchronousTestCase

from mockoai.sim import tokens
from tests.optional import needs_openai, openai
from tests.spec import validate
from tests.support import (
    REPO_ROOT,
    TwistdProcess,
    build_request,
    free_port,
    parse_responses,
    run_twistd,
    sse_data,
    sse_json,
    validate_event,
    wait_for_port,
)

SLASH_MODEL = "meta-llama/Llama-3.1-8B-Instruct"
MESSAGES = [{"role": "user", "content": "Say something in Latin."}]
PROMPT = "Lorem ipsum"
#: The smallest chat request (one token), for warming a fresh server up.
CHAT_1 = {"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 1}
REQUEST_ID = re.compile(r"^req_[0-9a-f]{32}$")
CHAT_CHUNK = "CreateChatCompletionStreamResponse"
TEXT_CHUNK = "CreateCompletionStreamResponse"
SMALL = ["--articles", "64", "--tokens-mean", "30", "--tokens-stddev", "5"]

#: A profile with per-model endpoints, as OpenAI has them, and a model id with a slash.
PROFILE = f"""
articles = 64
tokens_mean = 30
tokens_stddev = 5

[[models]]
id = "gpt-4o"
owned_by = "system"
created = 1715367049
endpoints = ["chat"]

[[models]]
id = "gpt-3.5-turbo-instruct"
owned_by = "system"
created = 1692901427
endpoints = ["completions"]

[[models]]
id = "{SLASH_MODEL}"
"""


class ServerTestCase(SynchronousTestCase):
    """Starts ``twistd -n mockoai ARGS`` for each test; SIGTERM and exit 0 after it."""

    args: ClassVar[Sequence[str]] = SMALL

    def setUp(self) -> None:
        self.server = self.start(self.server_args())

    def server_args(self) -> list[str]:
        return list(self.args)

    def start(self, args: Sequence[str]) -> TwistdProcess:
        server = TwistdProcess(args)
        self.addCleanup(server.cleanup)
        server.start()
        self.addCleanup(server.stop)
        return server

    @property
    def port(self) -> int:
        return self.server.port

    def sdk(self) -> openai.OpenAI:
        client = openai.OpenAI(
            base_url=f"{self.server.base_url}/v1", api_key="x", max_retries=0, timeout=15
        )
        self.addCleanup(client.close)
        return client

    def http(self) -> http.client.HTTPConnection:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        self.addCleanup(connection.close)
        return connection

    def exchange(
        self,
        connection: http.client.HTTPConnection,
        method: str,
        path: str,
        body: object = None,
    ) -> tuple[http.client.HTTPResponse, bytes]:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        data = response.read()
        self.assertRegex(response.getheader("x-request-id") or "", REQUEST_ID)
        return response, data


# ---------------------------------------------------------------------------
# The official SDK


@needs_openai
class SDKTests(ServerTestCase):
    def server_args(self) -> list[str]:
        directory = tempfile.mkdtemp(prefix="mockoai-profile-")
        self.addCleanup(lambda: (os.unlink(path), os.rmdir(directory)))
        path = os.path.join(directory, "models.toml")
        with open(path, "w") as handle:
            handle.write(PROFILE)
        return ["--config", path]

    def test_chat(self) -> None:
        client = self.sdk()
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=MESSAGES, max_tokens=12, extra_body={"ignore_eos": True}
        )
        validate("CreateChatCompletionResponse", raw.http_response.json())
        self.assertRegex(raw.headers["x-request-id"], REQUEST_ID)
        self.assertTrue(raw.headers["openai-processing-ms"].isdigit())
        completion = raw.parse()
        self.assertEqual(completion._request_id, raw.headers["x-request-id"])
        self.assertEqual(completion.model, "gpt-4o")
        [choice] = completion.choices
        self.assertEqual(choice.finish_reason, "length")
        self.assertEqual(choice.message.role, "assistant")
        content = choice.message.content or ""
        usage = completion.usage
        assert usage is not None
        self.assertEqual(usage.completion_tokens, 12)
        self.assertEqual(tokens.count_text(content), 12)
        self.assertEqual(usage.prompt_tokens, tokens.count_messages(MESSAGES))
        self.assertEqual(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens)

    def test_chat_stream(self) -> None:
        client = self.sdk()
        stream = client.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            max_completion_tokens=15,
            n=2,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        chunks = list(stream)
        for chunk in chunks:
            validate_event(CHAT_CHUNK, chunk.to_dict())
        *content, last = chunks
        # The usage chunk, parsed by the SDK.
        self.assertEqual(last.choices, [])
        assert last.usage is not None
        self.assertEqual(last.usage.completion_tokens, 30)
        self.assertEqual(
            last.usage.total_tokens, last.usage.prompt_tokens + last.usage.completion_tokens
        )
        self.assertTrue(all(c.usage is None for c in content))
        self.assertEqual(len({c.id for c in chunks}), 1)
        for index in (0, 1):
            deltas = [c.choices[0] for c in content if c.choices[0].index == index]
            self.assertEqual(deltas[0].delta.role, "assistant")
            self.assertEqual(deltas[-1].finish_reason, "length")
            text = "".join(d.delta.content or "" for d in deltas)
            self.assertEqual(tokens.count_text(text), 15)

    def test_completions(self) -> None:
        client = self.sdk()
        raw = client.completions.with_raw_response.create(
            model="gpt-3.5-turbo-instruct", prompt=PROMPT, max_tokens=7, echo=True
        )
        validate("CreateCompletionResponse", raw.http_response.json())
        completion = raw.parse()
        text = completion.choices[0].text
        self.assertTrue(text.startswith(PROMPT))
        assert completion.usage is not None
        self.assertEqual(completion.usage.prompt_tokens, tokens.count_text(PROMPT))
        self.assertEqual(completion.usage.completion_tokens, tokens.count_text(text[len(PROMPT) :]))

        stream = client.completions.create(
            model=SLASH_MODEL,
            prompt=[PROMPT, "Dolor sit amet"],
            max_tokens=9,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        chunks = list(stream)
        for chunk in chunks:
            validate_event(TEXT_CHUNK, chunk.to_dict())
        *content, last = chunks
        self.assertEqual(last.choices, [])
        assert last.usage is not None
        self.assertEqual(last.usage.completion_tokens, 18)
        self.assertEqual(content[0].model, SLASH_MODEL)
        for index in (0, 1):
            pieces = [c.choices[0] for c in content if c.choices[0].index == index]
            self.assertEqual(pieces[-1].finish_reason, "length")
            self.assertEqual(tokens.count_text("".join(p.text for p in pieces)), 9)

    def test_models(self) -> None:
        client = self.sdk()
        raw = client.models.with_raw_response.list()
        validate("ListModelsResponse", raw.http_response.json())
        ids = [model.id for model in raw.parse()]
        self.assertEqual(ids, ["gpt-4o", "gpt-3.5-turbo-instruct", SLASH_MODEL])
        for model_id in ids:
            raw_model = client.models.with_raw_response.retrieve(model_id)
            validate("Model", raw_model.http_response.json())
            model = raw_model.parse()
            self.assertEqual(model.id, model_id)
        self.assertEqual(client.models.retrieve(SLASH_MODEL).owned_by, "meta-llama")
        self.assertEqual(client.models.retrieve("gpt-4o").created, 1715367049)

    def test_errors(self) -> None:
        client = self.sdk()
        with self.assertRaises(openai.NotFoundError) as caught:
            client.chat.completions.create(model="gpt-99", messages=MESSAGES)
        error = caught.exception
        self.assertEqual(error.status_code, 404)
        self.assertEqual(error.code, "model_not_found")
        self.assertRegex(error.request_id or "", REQUEST_ID)
        validate("Error", error.body)

        with self.assertRaises(openai.NotFoundError) as caught:
            client.completions.create(model="gpt-4o", prompt=PROMPT)
        self.assertEqual(caught.exception.param, "model")

        with self.assertRaises(openai.NotFoundError) as caught:
            client.models.retrieve("no/such-model")
        self.assertEqual(caught.exception.code, "model_not_found")

        with self.assertRaises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES, n=0)
        self.assertEqual(caught.exception.status_code, 400)
        self.assertEqual(caught.exception.code, "integer_below_min_value")
        self.assertEqual(caught.exception.param, "n")
        validate("Error", caught.exception.body)

        with self.assertRaises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="gpt-4o", messages=[])
        self.assertEqual(caught.exception.code, "empty_array")

    def test_async_client(self) -> None:
        async def main() -> tuple[Any, ...]:
            async with openai.AsyncOpenAI(
                base_url=f"{self.server.base_url}/v1", api_key="x", max_retries=0, timeout=15
            ) as client:

                async def streamed() -> list[Any]:
                    stream = await client.chat.completions.create(
                        model="gpt-4o",
                        messages=MESSAGES,
                        stream=True,
                        stream_options={"include_usage": True},
                    )
                    return [chunk async for chunk in stream]

                async def missing() -> BaseException:
                    try:
                        await client.models.retrieve("nope")
                    except openai.NotFoundError as e:
                        return e
                    raise AssertionError("no NotFoundError")

                return await asyncio.gather(
                    client.chat.completions.create(model="gpt-4o", messages=MESSAGES),
                    streamed(),
                    client.completions.create(model="gpt-3.5-turbo-instruct", prompt=PROMPT),
                    client.models.list(),
                    missing(),
                )

        chat, chunks, text, models, missing = asyncio.run(main())
        validate("CreateChatCompletionResponse", chat.to_dict())
        self.assertEqual(
            chat.usage.completion_tokens, tokens.count_text(chat.choices[0].message.content)
        )
        for chunk in chunks:
            validate_event(CHAT_CHUNK, chunk.to_dict())
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        self.assertEqual(chunks[-1].usage.completion_tokens, tokens.count_text(streamed))
        validate("CreateCompletionResponse", text.to_dict())
        self.assertEqual([m.id for m in models.data][-1], SLASH_MODEL)
        self.assertEqual(missing.code, "model_not_found")


# ---------------------------------------------------------------------------
# Raw HTTP/1.1


class RawHTTPTests(ServerTestCase):
    args = [*SMALL, "--itl", "20", "--response-delay", "100"]

    def test_keep_alive(self) -> None:
        connection = self.http()
        connection.connect()
        local = connection.sock.getsockname()
        _, data = self.exchange(connection, "GET", "/v1/models")
        validate("ListModelsResponse", json.loads(data))
        response, data = self.exchange(
            connection,
            "POST",
            "/v1/chat/completions",
            {"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 3, "ignore_eos": True},
        )
        # the server's own clock: 100 + 2 x 20 ms, and a little real-time slack
        self.assertTrue(140 <= int(response.getheader("openai-processing-ms") or 0) < 200)
        body = json.loads(data)
        validate("CreateChatCompletionResponse", body)
        self.assertEqual(body["usage"]["completion_tokens"], 3)
        response, data = self.exchange(connection, "GET", "/health")
        self.assertEqual(json.loads(data), {"status": "ok"})
        response, data = self.exchange(
            connection,
            "POST",
            "/v1/completions",
            {"model": "gpt-3.5-turbo-instruct", "prompt": PROMPT, "max_tokens": 3, "stream": True},
        )
        self.assertEqual(response.getheader("Content-Type"), "text/event-stream; charset=utf-8")
        for chunk in sse_json(data):
            validate_event(TEXT_CHUNK, chunk)
        response, data = self.exchange(connection, "GET", "/v1/nope")
        self.assertEqual(response.status, 404)
        validate("ErrorResponse", json.loads(data))
        response, data = self.exchange(connection, "PUT", "/v1/models")
        self.assertEqual(response.status, 405)
        self.assertEqual(response.getheader("Allow"), "GET")
        validate("ErrorResponse", json.loads(data))
        # All on the one connection.
        self.assertEqual(connection.sock.getsockname(), local)

    def test_paced_stream(self) -> None:
        connection = self.http()
        connection.connect()
        # Warm up: a fresh server's first request pays lazy imports and, under PyPy, cold
        # (unjitted) code: 40-60 ms there on a busy machine, against 3 ms after it.
        self.exchange(connection, "POST", "/v1/chat/completions", {**CHAT_1, "stream": True})
        body = json.dumps(
            {
                "model": "gpt-4o",
                "messages": MESSAGES,
                "max_tokens": 12,
                "ignore_eos": True,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
        ).encode()
        started = time.perf_counter()
        connection.request("POST", "/v1/chat/completions", body=body)
        response = connection.getresponse()
        headers_at = time.perf_counter() - started
        # Headers go out at once, before the first token.
        self.assertLess(headers_at, 0.09)
        self.assertEqual(response.status, 200)
        arrivals: list[tuple[float, str]] = []
        raw = b""
        while True:
            line = response.readline()
            if not line:
                break
            raw += line
            if line.startswith(b"data: "):
                arrivals.append((time.perf_counter() - started, line[6:].strip().decode()))
        chunks = sse_json(raw)
        for chunk in chunks:
            validate_event(CHAT_CHUNK, chunk)
        self.assertEqual(chunks[-1]["usage"]["completion_tokens"], 12)
        # The first event no earlier than the response delay.
        self.assertGreaterEqual(arrivals[0][0], 0.100)
        times = [at for at, data in arrivals if '"content":"' in data and '"role"' not in data]
        self.assertEqual(len(times), 12)
        for i, at in enumerate(times):
            # Never early (token i is due at 100 + 20 i ms), never very late.
            self.assertGreaterEqual(at, 0.100 + 0.020 * i - 0.001, f"token {i} early")
            self.assertLess(at, 0.100 + 0.020 * i + 0.060, f"token {i} late")
        gaps = [b - a for a, b in zip(times, times[1:])]
        self.assertTrue(all(0.005 <= gap <= 0.060 for gap in gaps), gaps)
        self.assertTrue(0.015 <= statistics.median(gaps) <= 0.030, gaps)

    def test_oversized_body_refused_before_it_is_sent(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n{"
            )
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        [response] = parse_responses(data, closed=True)
        self.assertEqual(response.status, 413)
        self.assertEqual(response.header("Connection"), "close")
        self.assertRegex(response.header("x-request-id") or "", REQUEST_ID)
        validate("ErrorResponse", response.json())
        self.assertEqual(response.json()["error"]["code"], "request_too_large")


# ---------------------------------------------------------------------------
# Lifecycle: startup, shutdown, options, profiles, daemon mode


def read_until_closed(sock: socket.socket, data: bytes = b"", timeout: float = 15) -> bytes:
    sock.settimeout(timeout)
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def read_to_end(sock: socket.socket, data: bytes = b"", timeout: float = 15) -> tuple[bytes, bool]:
    """Everything until the server closes, and whether it reset the connection."""
    sock.settimeout(timeout)
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, False
        data += chunk


def stream_request(max_tokens: int, kind: str = "openai") -> bytes:
    """A chat stream (``openrouter``: at /api/v1), or a completions one."""
    body: dict[str, Any] = {
        "model": "gpt-4o",
        "messages": MESSAGES,
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": True,
    }
    path, headers = "/v1/chat/completions", None
    if kind == "completions":
        del body["messages"]
        body["prompt"] = PROMPT
        path = "/v1/completions"
    elif kind == "openrouter":
        path, headers = "/api/v1/chat/completions", {"Authorization": "Bearer sk-e2e"}
    return build_request("POST", path, json.dumps(body).encode(), headers)


def _cpu_seconds(server: TwistdProcess) -> float:
    """The CPU time (user and system) the server process has used so far."""
    assert server.process is not None
    with open(f"/proc/{server.process.pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class LifecycleTests(SynchronousTestCase):
    def start(self, args: Sequence[str]) -> TwistdProcess:
        server = TwistdProcess(args)
        self.addCleanup(server.cleanup)
        server.start()
        return server

    def stop(self, server: TwistdProcess, within: float) -> float:
        """SIGTERM and wait; returns how long the exit took (status must be 0)."""
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        code = server.wait(within + 5)
        took = time.monotonic() - started
        self.assertEqual(code, 0, server.stdout + server.stderr)
        self.assertLess(took, within)
        return took

    def test_startup_log(self) -> None:
        # The default corpus (4096 articles): the startup numbers are the real ones.
        server = self.start(["--model", "gpt-4o", "--model", SLASH_MODEL])
        out = server.wait_for_output("ready in")
        self.assertIn(f"listening on tcp:{server.port}:interface=127.0.0.1", out)
        self.assertIn(f"models: gpt-4o, {SLASH_MODEL}", out)
        corpus = re.search(
            r"corpus: (\d+) articles, (\d+) tokens, ([\d.]+) MB, built in ([\d.]+) s", out
        )
        assert corpus is not None, out
        self.assertEqual(corpus.group(1), "4096")
        self.assertGreater(int(corpus.group(2)), 1_000_000)
        self.assertLess(float(corpus.group(4)), 3)
        config = re.search(r"config: (.*)", out)
        assert config is not None, out
        self.assertIn(f"listen=tcp:{server.port}:interface=127.0.0.1", config.group(1))
        self.assertIn(f"models=gpt-4o,{SLASH_MODEL}", config.group(1))
        self.assertIn("itl=0ms", config.group(1))
        ready = re.search(r"ready in ([\d.]+) s, RSS ([\d.]+) MB", out)
        assert ready is not None, out
        # Under 3 s of work to be ready: its CPU time, which is its wall time when it
        # has a core to itself, not the time it waited for one on a loaded machine
        # (4.2 s seen); it has been idle since "ready".
        self.assertLess(_cpu_seconds(server), 3)
        self.assertLess(float(ready.group(1)), 30)
        # < 100 MB is CPython's promise. PyPy's interpreter alone holds ~50 MB (CPython's
        # 13) and the same imports ~125 MB: it is ready at ~165 MB (README, Performance).
        pypy = platform.python_implementation() == "PyPy"
        self.assertLess(float(ready.group(2)), 200 if pypy else 100)
        self.assertGreater(float(ready.group(2)), 1)
        self.stop(server, within=5)
        self.assertIn("stopped", server.stdout)
        self.assertEqual(server.stderr, "")

    def test_sigterm_drains_in_flight_streams(self) -> None:
        server = self.start([*SMALL, "--itl", "50"])
        port = server.port
        with (
            socket.create_connection(("127.0.0.1", port), timeout=15) as short,
            socket.create_connection(("127.0.0.1", port), timeout=15) as long,
        ):
            # A short stream with a health check pipelined behind it, and a longer stream.
            short.sendall(stream_request(8) + build_request("GET", "/health"))
            long.sendall(stream_request(20))
            # Headers go out on admission, the first event after its TTFT.
            first = long.recv(65536)
            while b"data: " not in first:
                more = long.recv(65536)
                self.assertTrue(more, "closed before the first event")
                first += more
            started = time.monotonic()
            server.signal(signal.SIGTERM)
            # The listener closes at once ...
            deadline = time.monotonic() + 2
            refused = False
            while time.monotonic() < deadline and not refused:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    time.sleep(0.02)
                except ConnectionRefusedError:
                    refused = True
            self.assertTrue(refused, "still accepting connections while draining")
            short_data = read_until_closed(short)
            long_data = read_until_closed(long, first)
        code = server.wait(15)
        took = time.monotonic() - started
        self.assertEqual(code, 0, server.stdout + server.stderr)
        self.assertLess(took, 5)  # the grace period is 10 s; the stream needs ~1 s
        # ... the streams in flight finish completely ...
        stream, health = parse_responses(short_data, closed=True)
        [long_stream] = parse_responses(long_data, closed=True)
        for response, expected in ((stream, 8), (long_stream, 20)):
            self.assertTrue(response.complete)
            chunks = sse_json(response.body)
            for chunk in chunks:
                validate_event(CHAT_CHUNK, chunk)
            text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
            self.assertEqual(tokens.count_text(text), expected)
            self.assertEqual(chunks[-1]["choices"][0]["finish_reason"], "length")
        # ... and a request that arrives meanwhile hears that we are draining.
        self.assertEqual(health.status, 503)
        self.assertEqual(health.json(), {"status": "draining"})
        self.assertEqual(health.header("Connection"), "close")
        self.assertIn("draining 2 in-flight request(s)", server.stdout)

    def end_streams_at_grace(self, stack: str) -> None:
        """
        Streams still running when the grace period is over end on their
        dialect's error event, the response's end and a FIN: a client can
        tell "the server shut down" from "the network broke" (all of them
        got a reset before).  The request log says why each was cut.
        """
        log = ["--request-log", "requests.jsonl"]
        server = self.start([*SMALL, "--itl", "50", "--grace-period", "1", "--http", stack, *log])
        kinds = ["openai"] * 40 + ["completions"] * 10 + ["openrouter"] * 10
        socks = []
        for kind in kinds:
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=15)
            self.addCleanup(sock.close)
            sock.sendall(stream_request(2000, kind))  # 100 s of tokens
            socks.append(sock)
        firsts = []
        for sock in socks:
            data = b""
            while b"data: " not in data:
                more = sock.recv(65536)
                self.assertTrue(more, "closed before the first event")
                data += more
            firsts.append(data)
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        for kind, sock, first in zip(kinds, socks, firsts):
            data, reset = read_to_end(sock, first)
            self.assertFalse(reset, f"{kind}: a reset, not a clean close")
            [response] = parse_responses(data, closed=True)
            self.assertEqual(response.status, 200)
            self.assertTrue(response.complete, f"{kind}: the chunked body did not end")
            events = sse_data(response.body)
            self.assertNotIn("[DONE]", events)
            last = json.loads(events[-1])
            self.assertTrue(len(events) > 2, kind)
            if kind == "openrouter":
                self.assertEqual(
                    last["error"],
                    {
                        "code": "server_error",
                        "message": "The server is shutting down and is not accepting new requests.",
                    },
                )
                self.assertEqual(last["choices"][0]["finish_reason"], "error")
            else:
                self.assertEqual(last["error"]["code"], "server_shutting_down", kind)
                self.assertEqual(last["error"]["type"], "server_error", kind)
        closed_after = time.monotonic() - started
        self.assertEqual(server.wait(10), 0, server.stdout + server.stderr)
        self.assertGreater(closed_after, 0.9)
        self.assertLess(closed_after, 4)
        self.assertIn(f"grace period over: ending {len(kinds)} stream(s)", server.stdout)
        self.assertNotIn("closing", server.stdout.split("grace period over", 1)[1])
        with open(os.path.join(server.cwd, "requests.jsonl")) as log:
            lines = [json.loads(line) for line in log]
        self.assertEqual(len(lines), len(kinds))
        for line in lines:
            self.assertEqual(
                (line["status"], line["finish_reason"], line["error"]),
                (200, "cancelled", "server_shutting_down"),
            )
            self.assertGreater(line["completion_tokens"], 0)

    def test_grace_period_ends_streams_on_the_shutdown_error_lean(self) -> None:
        self.end_streams_at_grace("lean")

    def test_grace_period_ends_streams_on_the_shutdown_error_twisted(self) -> None:
        self.end_streams_at_grace("twisted")

    def leave_mid_stream(self, stack: str) -> None:
        """
        Clients that close (FIN, then a reset) in the middle of streams: no
        error in the log -- twisted.web's logged a critical "Producer was not
        unregistered" for each, as the transport stopped the stream before
        the request heard the connection was gone -- and each is counted.
        """
        server = self.start([*SMALL, "--itl", "20", "--http", stack])
        for reset in (False, True, False, True):
            with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
                sock.sendall(stream_request(500))  # 10 s of tokens
                data = b""
                while b"data: " not in data:
                    more = sock.recv(65536)
                    self.assertTrue(more, "closed before the first event")
                    data += more
                if reset:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        deadline = time.monotonic() + 5
        counted = ""
        while time.monotonic() < deadline and 'status="200"} 4.0' not in counted:
            time.sleep(0.05)
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            connection.request("GET", "/metrics")
            counted = connection.getresponse().read().decode()
            connection.close()
        self.assertIn(
            'mockoai_requests_total{endpoint="/v1/chat/completions",model="gpt-4o",'
            'status="200"} 4.0',
            counted,
        )
        self.stop(server, within=5)
        out = server.stdout + server.stderr
        for word in ("Producer was not unregistered", "critical", "Traceback", "Unhandled"):
            self.assertNotIn(word, out, stack)

    def test_clients_leaving_mid_stream_lean(self) -> None:
        self.leave_mid_stream("lean")

    def test_clients_leaving_mid_stream_twisted(self) -> None:
        self.leave_mid_stream("twisted")

    def test_invalid_option_value(self) -> None:
        result = run_twistd(["-n", "--pidfile=", "mockoai", "--itl", "abc"])
        self.assertNotEqual(result.returncode, 0)
        lines = result.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertTrue(lines[0].startswith("mockoai: error: --itl"), lines[0])
        self.assertIn("abc", lines[0])

    def test_latency_profile(self) -> None:
        profile = os.path.join(REPO_ROOT, "etc", "profiles", "latency.toml")
        if not os.path.exists(profile):
            self.skipTest("no etc/profiles/latency.toml")
        server = self.start(["--config", profile, "--articles", "64"])
        out = server.wait_for_output("ready in")
        self.assertIn(f"config: config={profile} ", out)
        self.assertIn("response_delay=400ms", out)
        self.assertIn("itl=16ms", out)
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=15)
        self.addCleanup(connection.close)
        body = {"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 3, "ignore_eos": True}
        started = time.perf_counter()
        connection.request("POST", "/v1/chat/completions", body=json.dumps(body))
        response = connection.getresponse()
        data = response.read()
        took = time.perf_counter() - started
        validate("CreateChatCompletionResponse", json.loads(data))
        # the time the answer took on the server's clock: 400 + 2 x 16 ms and a little
        self.assertTrue(432 <= int(response.getheader("openai-processing-ms") or 0) < 500)
        self.assertGreaterEqual(took, 0.432)
        self.stop(server, within=5)

    def test_daemon(self) -> None:
        directory = tempfile.mkdtemp(prefix="mockoai-daemon-")
        pidfile = os.path.join(directory, "mockoai.pid")
        logfile = os.path.join(directory, "mockoai.log")
        port = free_port()
        result = run_twistd(
            [
                "--pidfile",
                pidfile,
                "--logfile",
                logfile,
                "mockoai",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
                *SMALL,
            ],
            cwd=directory,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        pid = 0

        def kill() -> None:
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

        self.addCleanup(kill)
        wait_for_port(port, 15)
        with open(pidfile) as handle:
            pid = int(handle.read().strip())
        os.kill(pid, 0)  # alive
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/health")
        response = connection.getresponse()
        self.assertEqual(json.loads(response.read()), {"status": "ok"})
        connection.close()
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while os.path.exists(pidfile) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertFalse(os.path.exists(pidfile), "pid file left behind")
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            self.fail("daemon still running after SIGTERM")
        pid = 0
        with open(logfile) as handle:
            log = handle.read()
        self.assertIn("ready in", log)
        self.assertIn("stopped", log)
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))
        os.rmdir(directory)
