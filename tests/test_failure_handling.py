"""
Faults over real sockets, seen from the client's side: a real server
(``twistd -n mockoai``), the official SDKs (openai, anthropic) and raw
HTTP.  Each fault kind in each dialect: the SDK raises the exception class
it raises for that failure of the real provider (a status in its envelope,
a reset connection, a timeout, a stream that breaks, ends early or sends
an event that does not parse), retries it as it would, and the verdict
tells a client that waits its Retry-After from one that does not.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import socket
import time
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mockoai.testing import MockoaiServer
from mockoai.testing.deferred import start_server
from tests.optional import anthropic, needs_anthropic, needs_openai, openai
from tests.support import REPO_ROOT

GPT = "gpt-4o"
CLAUDE = "claude-sonnet-4-5"
ASK = [{"role": "user", "content": "Tell me about lorem ipsum."}]
SETTINGS: dict[str, Any] = {
    "articles": 64,
    "tokens_mean": 20,
    "tokens_stddev": 0,
    "itl_ms": 5,
    "models": [GPT, CLAUDE],
    "allow_control_headers": True,
}


#: A hang is waited out for a second, not the five every other answer may take.
HURRY: dict[str, dict[str, Any]] = {"hang": {"timeout": 1.0}}


def fault(spec: str) -> dict[str, str]:
    return {"x-mockoai-fault": spec}


class ServerTestCase(SynchronousTestCase):
    """A server per test (trial runs no setUpClass), with control headers allowed."""

    settings: dict[str, Any] = SETTINGS

    def setUp(self) -> None:
        self.server = MockoaiServer(self.settings).start()
        self.addCleanup(self.server.stop)

    def openai(self, **options: Any) -> Any:
        options = {"max_retries": 0, "timeout": 5.0, **options}
        return self.server.openai_client(**options)

    def anthropic(self, **options: Any) -> Any:
        client = anthropic.Anthropic(
            base_url=self.server.url,
            api_key="mockoai",
            **{"max_retries": 0, "timeout": 5.0, **options},
        )
        self.addCleanup(client.close)
        return client

    def attempts(self, since: int = 0) -> list[dict[str, Any]]:
        """The generation requests the journal holds (after the first ``since``)."""
        entries = [e for e in self.server.journal() if e["endpoint"] != "/health"]
        return entries[since:]


@needs_openai
class OpenAISDKTests(ServerTestCase):
    def chat(self, client: Any, spec: str, **extra: Any) -> Any:
        return client.chat.completions.create(
            model=GPT, messages=ASK, extra_headers=fault(spec), **extra
        )

    def drain(self, stream: Any) -> list[Any]:
        return [chunk for chunk in stream]

    def test_every_fault_kind(self) -> None:
        client = self.openai()
        for spec, error in (
            ("status:429", openai.RateLimitError),
            ("status:503", openai.InternalServerError),
            ("status:529", openai.InternalServerError),
            ("status:500", openai.InternalServerError),
            ("status:400", openai.BadRequestError),
            ("status:401", openai.AuthenticationError),
            ("status:404", openai.NotFoundError),
            ("hang", openai.APITimeoutError),
            ("hang:after=3", openai.APITimeoutError),
            ("reset", openai.APIConnectionError),
            ("reset:after=3", openai.APIConnectionError),
            ("truncate:after=3", openai.APIConnectionError),  # a body shorter than its length
            ("error-event:after=3", openai.InternalServerError),  # the error, once cut
            ("malformed:after=3", json.JSONDecodeError),
            ("empty", json.JSONDecodeError),
        ):
            with self.assertRaises(error, msg=spec):
                self.chat(client, spec, **HURRY.get(spec.split(":")[0], {}))
        limited = self.assertRaises(
            openai.RateLimitError, self.chat, client, "status:429:retry-after=3"
        )
        self.assertEqual(limited.response.headers["retry-after"], "3")
        self.assertEqual(limited.code, "rate_limit_exceeded")

    def test_streams_end_as_specified(self) -> None:
        client = self.openai()
        # An error event: the SDK raises it, after the chunks before it.
        stream = self.chat(client, "error-event:after=3", stream=True)
        chunks: list[Any] = []
        with self.assertRaises(openai.APIError) as caught:
            for chunk in stream:
                chunks.append(chunk)
        self.assertEqual(len(chunks), 4)  # the role chunk and three tokens
        self.assertIn("The server had an error", str(caught.exception))
        # Truncated: a clean end, no finish reason, no error.
        chunks = self.drain(self.chat(client, "truncate:after=3", stream=True))
        self.assertEqual([c.choices[0].finish_reason for c in chunks], [None] * 4)
        # Malformed: an event that does not parse.
        with self.assertRaises(json.JSONDecodeError):
            self.drain(self.chat(client, "malformed:after=3", stream=True))
        # Reset: the connection drops under the stream.
        with self.assertRaises(openai.APIConnectionError):
            self.drain(self.chat(client, "reset:after=3", stream=True))
        # Hang: the read times out.
        with self.assertRaises(openai.APITimeoutError):
            self.drain(self.chat(client, "hang:after=3", stream=True, timeout=1.0))
        # Empty: a 200 that says nothing.
        self.assertEqual(self.drain(self.chat(client, "empty", stream=True)), [])
        # A slow first token, then the whole answer.
        started = time.monotonic()
        chunks = self.drain(self.chat(client, "ttft:ms=600", stream=True))
        self.assertGreaterEqual(time.monotonic() - started, 0.6)
        self.assertEqual(chunks[-1].choices[0].finish_reason, "stop")

    def test_retries_as_against_the_provider(self) -> None:
        """max_retries=2: a 503 three times, each after its Retry-After; a 400 once."""
        client = self.openai(max_retries=2)
        with self.assertRaises(openai.InternalServerError):
            self.chat(client, "status:503:retry-after=0.3")
        tries = self.attempts()
        self.assertEqual([t["status"] for t in tries], [503, 503, 503])
        self.assertEqual([t["retry"] for t in tries], [0, 1, 2])
        for before, after in zip(tries, tries[1:]):
            self.assertGreaterEqual(after["arrived"] - before["time"], 0.25)
        with self.assertRaises(openai.BadRequestError):
            self.chat(client, "status:400")
        self.assertEqual(len(self.attempts(3)), 1)
        with self.assertRaises(openai.APIConnectionError):
            self.chat(client, "reset")
        self.assertEqual(len(self.attempts(4)), 3)  # a dropped connection is retried too

    def test_openrouter_and_responses(self) -> None:
        router = self.server.openai_client(
            base_url=f"{self.server.url}/api/v1", max_retries=0, timeout=5.0
        )
        with self.assertRaises(openai.InternalServerError) as caught:
            router.chat.completions.create(
                model=GPT, messages=ASK, extra_headers=fault("status:503")
            )
        self.assertEqual(
            caught.exception.body, {"code": 503, "message": caught.exception.body["message"]}
        )
        stream = router.chat.completions.create(
            model=GPT, messages=ASK, stream=True, extra_headers=fault("error-event:after=3")
        )
        with self.assertRaises(openai.APIError):
            self.drain(stream)
        client = self.openai()
        with self.assertRaises(openai.RateLimitError):
            client.responses.create(model=GPT, input="Hi", extra_headers=fault("status:429"))
        events = self.drain(
            client.responses.create(
                model=GPT, input="Hi", stream=True, extra_headers=fault("error-event:after=3")
            )
        )
        self.assertEqual(events[-1].type, "response.failed")
        with self.assertRaises(openai.APIConnectionError):
            self.drain(
                client.responses.create(
                    model=GPT, input="Hi", stream=True, extra_headers=fault("reset:after=3")
                )
            )


@needs_anthropic
class AnthropicSDKTests(ServerTestCase):
    def message(self, client: Any, spec: str) -> Any:
        return client.messages.create(
            model=CLAUDE,
            max_tokens=50,
            messages=ASK,
            extra_headers=fault(spec),
            **HURRY.get(spec.split(":")[0], {}),
        )

    def stream(self, client: Any, spec: str) -> list[str]:
        with client.messages.stream(
            model=CLAUDE,
            max_tokens=50,
            messages=ASK,
            extra_headers=fault(spec),
            **HURRY.get(spec.split(":")[0], {}),
        ) as events:
            return [event.type for event in events]

    def test_every_fault_kind(self) -> None:
        client = self.anthropic()
        for spec, error in (
            ("status:529", anthropic.OverloadedError),
            ("status:503", anthropic.ServiceUnavailableError),
            ("status:429", anthropic.RateLimitError),
            ("status:500", anthropic.InternalServerError),
            ("status:400", anthropic.BadRequestError),
            ("hang", anthropic.APITimeoutError),
            ("reset", anthropic.APIConnectionError),
            ("truncate:after=3", anthropic.APIConnectionError),
            ("error-event:after=3", anthropic.InternalServerError),
            ("malformed:after=3", json.JSONDecodeError),
            ("empty", json.JSONDecodeError),
        ):
            with self.assertRaises(error, msg=spec):
                self.message(client, spec)
        overloaded = self.assertRaises(
            anthropic.OverloadedError, self.message, client, "status:529"
        )
        self.assertEqual(
            overloaded.body["error"], {"type": "overloaded_error", "message": "Overloaded"}
        )

    def test_streams_end_as_specified(self) -> None:
        client = self.anthropic()
        with self.assertRaises(anthropic.APIStatusError) as caught:
            self.stream(client, "error-event:after=3")
        self.assertEqual(caught.exception.body["error"]["type"], "api_error")
        events = self.stream(client, "truncate:after=3")
        self.assertNotIn("message_stop", events)
        self.assertIn("content_block_delta", events)
        with self.assertRaises(json.JSONDecodeError):
            self.stream(client, "malformed:after=3")
        with self.assertRaises(anthropic.APIConnectionError):
            self.stream(client, "reset:after=3")
        with self.assertRaises(anthropic.APITimeoutError):
            self.stream(client, "hang:after=3")

    def test_retries_overloaded(self) -> None:
        client = self.anthropic(max_retries=2)
        with self.assertRaises(anthropic.OverloadedError):
            self.message(client, "status:529:retry-after=0.2")
        tries = self.attempts()
        self.assertEqual([t["status"] for t in tries], [529, 529, 529])
        self.assertEqual([t["retry"] for t in tries], [0, 1, 2])


@needs_openai
class VerdictTests(ServerTestCase):
    """The official SDK earns a good verdict in a 503 window; a client that hurries, a bad one."""

    settings = {**SETTINGS, "allow_control_headers": False}

    def test_the_verdict_tells_clients_apart(self) -> None:
        import httpx

        outage = {"name": "outage", "window": [0, 1.5], "fault": "status:503:retry-after=1"}
        # A client that retries every 50 ms, whatever the Retry-After says.
        self.server.set_rules(outage)
        body = {"model": GPT, "messages": ASK, "max_tokens": 5}
        headers = {"Authorization": "Bearer sk-hasty-client"}
        with httpx.Client(base_url=self.server.base_url, timeout=5) as hasty:
            while True:
                answer = hasty.post("/chat/completions", json=body, headers=headers)
                if answer.status_code == 200:
                    break
                time.sleep(0.05)
        # The official SDK, max_retries=2, in a window that outlasts its first try.
        self.server.set_rules(outage)
        client = self.server.openai_client(api_key="sk-official-sdk", max_retries=2, timeout=5)
        completion = client.chat.completions.create(model=GPT, messages=ASK, max_tokens=5)
        self.assertEqual(completion.choices[0].finish_reason, "length")
        verdict = self.server.verdict()["clients"]
        sdk = verdict["key sk-...-sdk"]
        self.assertEqual(sdk["verdict"], "good", sdk)
        self.assertEqual((sdk["retries"], sdk["waited_retry_after"]), (2, 2))
        self.assertEqual(sdk["errors"], {"503": 2})
        self.assertTrue(sdk["recovered"])
        hasty_verdict = verdict["key sk-...ient"]
        self.assertEqual(hasty_verdict["verdict"], "bad", hasty_verdict)
        self.assertGreater(hasty_verdict["retries"], 10)
        self.assertEqual(hasty_verdict["waited_retry_after"], 0)
        self.assertIn("ignored Retry-After", hasty_verdict["reasons"][0])
        self.assertIn("a retry storm", hasty_verdict["reasons"][-1])
        words = self.server.get("/_mockoai/verdict?format=text").text
        self.assertIn("key sk-...-sdk: GOOD", words)
        self.assertIn("key sk-...ient: BAD", words)


@needs_openai
class RecipesTests(ServerTestCase):
    """The README's recipes ("Testing failure handling") run as written, against a real server."""

    #: The default models (gpt-4o-mini among them), nothing allowed beyond the defaults.
    settings = {"articles": 64, "tokens_mean": 20, "tokens_stddev": 0, "itl_ms": 5}

    def test_the_recipes(self) -> None:
        readme = os.path.join(REPO_ROOT, "README.md")
        with open(readme, encoding="utf-8") as handle:
            text = handle.read()
        section = text[text.index("## Testing failure handling") :]
        section = section[: section.index("\n## ", 1)]
        recipes = re.findall(r"```python\n(.*?)```", section, re.S)
        self.assertEqual(len(recipes), 3)
        for recipe in recipes:
            code = recipe.replace("http://127.0.0.1:3000", self.server.url)
            with contextlib.redirect_stdout(io.StringIO()) as out:
                exec(compile(code, "README.md", "exec"), {"__name__": "recipe"})
            self.assertTrue(out.getvalue() or "print(" not in code)


class ReactorServerAdminTests(TestCase):
    """The trial helper speaks the admin API too, by Deferreds, behind an admin key."""

    def test_admin_calls(self) -> Deferred[None]:
        async def go() -> None:
            server = await start_server(
                articles=64, models=[GPT], api_keys=["sk-user-0001"], admin_key="admin-0001"
            )
            try:
                answer = await server.set_rules({"name": "down", "first": 1, "fault": "status:503"})
                self.assertEqual(answer, {"rules": 1, "workers": 1, "failed": 0})
                body = {"model": GPT, "messages": ASK, "max_tokens": 3}
                user = {"Authorization": "Bearer sk-user-0001"}
                first = await server.post("/v1/chat/completions", json=body, headers=user)
                self.assertEqual(first.status, 503)
                rules = await server.rules()
                self.assertEqual(rules["rules"][0]["_counts"], {"matched": 1, "applied": 1})
                journal = await server.journal()
                self.assertEqual([(e["status"], e["rule"]) for e in journal], [(503, "down")])
                verdict = await server.verdict()
                self.assertEqual(list(verdict["clients"]), ["key sk-user-0001"])
                model = await server.set_model(GPT, itl=3)
                self.assertEqual(model["itl"], "3ms")
                self.assertEqual((await server.reset())["reset"], True)
                self.assertEqual(await server.journal(), [])
            finally:
                await server.stop()

        return Deferred.fromCoroutine(go())


class RawSocketTests(ServerTestCase):
    """Every dialect's streams over a real socket, read byte by byte as they end."""

    PATHS = {
        "/v1/chat/completions": {"model": GPT, "messages": ASK},
        "/v1/completions": {"model": GPT, "prompt": "Once upon a time"},
        "/api/v1/chat/completions": {"model": GPT, "messages": ASK},
        "/v1/messages": {"model": CLAUDE, "messages": ASK, "max_tokens": 50},
        "/v1/responses": {"model": GPT, "input": "Hi"},
    }
    #: How a stream that ran its course ends, per path.
    ENDS = {
        "/v1/chat/completions": b"data: [DONE]",
        "/v1/completions": b"data: [DONE]",
        "/api/v1/chat/completions": b"data: [DONE]",
        "/v1/messages": b"event: message_stop",
        "/v1/responses": b"event: response.completed",
    }

    def exchange(self, path: str, spec: str) -> tuple[bytes, BaseException | None, bool]:
        """The raw bytes read, the error reading raised, and whether the server closed."""
        headers = {
            "Content-Type": "application/json",
            "Authorization": "Bearer sk-or-v1-raw",
            "anthropic-version": "2023-06-01",
            **fault(spec),
        }
        body = json.dumps({**self.PATHS[path], "stream": True}).encode()
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        request = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{head}\r\n"
        ).encode() + body
        received = b""
        error: BaseException | None = None
        closed = False
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=5) as sock:
            sock.sendall(request)
            while True:
                try:
                    data = sock.recv(65536)
                except OSError as e:
                    error = e
                    break
                if not data:
                    closed = True
                    break
                received += data
        return received, error, closed

    def test_every_dialect_ends_as_specified(self) -> None:
        for path, end in self.ENDS.items():
            # A reset: what was sent arrives, then the connection is reset (RST, not FIN).
            received, error, _ = self.exchange(path, "reset:after=3")
            self.assertIsInstance(error, ConnectionResetError, path)
            self.assertNotIn(end, received, path)
            # Truncated: the chunked body ends properly, then a FIN; no end of stream.
            received, error, closed = self.exchange(path, "truncate:after=3")
            self.assertIsNone(error, path)
            self.assertTrue(closed, path)
            self.assertTrue(received.endswith(b"\r\n0\r\n\r\n"), path)
            self.assertNotIn(end, received, path)
            # Malformed: the last event's JSON does not parse, then the same clean close.
            received, error, closed = self.exchange(path, "malformed:after=3")
            self.assertTrue(closed and error is None, path)
            events = re.findall(rb"data: (.*)\n", received)
            with self.assertRaises(ValueError, msg=path):
                json.loads(events[-1])
            json.loads(events[-2])
