"""
Hostile input: every malformed, oversized or slow request gets a 4xx in
OpenAI's envelope or a clean close -- never a 500, a traceback, a hang or a
leaked connection or request -- on both HTTP/1.1 stacks.

The same table of raw requests runs in memory (where the site's counters
can be read) and over real sockets against ``twistd -n mockoai``; a
hypothesis property throws arbitrary JSON at every field of both generation
endpoints (and OpenRouter's), and lone surrogates, overlong UTF-8 and NUL at
every string field of a valid request; schemathesis fuzzes the server from
OpenAI's own spec, restricted to the operations mockoai implements
(``tests/openapi/openai-operations.json``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mockoai.dialects.openai import validate
from mockoai.ops.config import load_settings
from mockoai.pipeline.errors import APIError
from mockoai.wire.guard import HeaderDeadlines, IdleSweep
from tests.optional import STACKS
from tests.support import (
    EPOCH,
    REPO_ROOT,
    Client,
    TwistdProcess,
    make_service,
    parse_responses,
    sse_json,
    validate_event,
)

#: Settings the table is written against (small limits, so cases stay small).
LIMITS = {
    "max_body_size": 8192,
    "max_messages": 8,
    "max_string_length": 100,
    "max_url_length": 256,
    "max_headers": 20,
    "max_header_bytes": 1024,
}
ARGS = [
    "--max-body-size",
    "8KiB",
    "--max-messages",
    "8",
    "--max-string-length",
    "100",
    "--max-url-length",
    "256",
    "--max-headers",
    "20",
    "--max-header-bytes",
    "1KiB",
    "--articles",
    "64",
]

CHAT = b"/v1/chat/completions"
OK_BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}


def post(body: bytes, content_type: bytes = b"application/json", path: bytes = CHAT) -> bytes:
    head = b"POST %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" % path
    if content_type:
        head += b"Content-Type: %s\r\n" % content_type
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


def chat(**fields: Any) -> bytes:
    return post(json.dumps({**OK_BODY, **fields}).encode())


def get(path: bytes = b"/health", extra: bytes = b"") -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n%s\r\n" % (path, extra)


#: name -> (raw request, expected status, expected ``param`` or ``code`` or None)
CASES: dict[str, tuple[bytes, int, str | None]] = {
    "garbage request line": (b"HELLO THERE\r\n\r\n", 400, None),
    "bare newline flood": (b"\r\n" * 3 + b"\x00\x01\x02\r\n\r\n", 400, None),
    "URL too long": (get(b"/v1/models/" + b"a" * 300), 414, "uri_too_long"),
    "too many headers": (
        get(extra=b"".join(b"X-H%d: v\r\n" % i for i in range(40))),
        431,
        "request_header_fields_too_large",
    ),
    "header bytes": (
        get(extra=b"X-Big: " + b"v" * 2000 + b"\r\n"),
        431,
        "request_header_fields_too_large",
    ),
    "NUL in a header value": (get(extra=b"X-A: a\x00b\r\n"), 400, None),
    "header without colon": (get(extra=b"NoColonHere\r\n"), 400, None),
    "body over the limit": (post(b"{" + b" " * 9000 + b"}"), 413, "request_too_large"),
    "chunked body over the limit": (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"400\r\n"
        + b" " * 1024
        + b"\r\n"
        + b"2000\r\n"
        + b" " * 8192
        + b"\r\n0\r\n\r\n",
        413,
        "request_too_large",
    ),
    "bad chunk size": (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nabc\r\n0\r\n\r\n",
        400,
        None,
    ),
    "content-length and chunked": (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        400,
        None,
    ),
    "negative content-length": (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: -5\r\n\r\n{}",
        400,
        None,
    ),
    "HTTP/2 preface on cleartext": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, None),
    "not JSON": (post(b"{not json"), 400, None),
    "NaN": (post(b'{"model":"gpt-4o","messages":[],"temperature":NaN}'), 400, None),
    "Infinity": (post(b'{"model":"gpt-4o","messages":[],"top_p":-Infinity}'), 400, None),
    "non-UTF-8 body": (post(b'{"model":"gpt-4o","messages":"\xff\xfe"}'), 400, None),
    "JSON nested too deep": (
        post(b'{"model":"gpt-4o","messages":' + b"[" * 100 + b"]" * 100 + b"}"),
        400,
        None,
    ),
    "array body": (post(b"[1, 2]"), 400, "invalid_type"),
    "wrong content type": (post(json.dumps(OK_BODY).encode(), b"text/plain"), 400, None),
    "huge integer": (post(b'{"model":"gpt-4o","messages":[],"n":' + b"9" * 5000 + b"}"), 400, None),
    "n too large": (chat(n=129), 400, "n"),
    "max_tokens too large": (chat(max_tokens=10**30), 400, "max_tokens"),
    "min_tokens over the output limit": (
        chat(max_tokens=None, min_tokens=10**9),
        400,
        "min_tokens",
    ),
    "too many messages": (chat(messages=[{"role": "user", "content": "x"}] * 9), 400, "messages"),
    "string too long": (
        chat(messages=[{"role": "user", "content": "x" * 101}]),
        400,
        "string_above_max_length",
    ),
    "text part too long": (
        chat(messages=[{"role": "user", "content": [{"type": "text", "text": "y" * 101}]}]),
        400,
        "string_above_max_length",
    ),
    "completions prompt too long": (
        post(
            json.dumps({"model": "gpt-3.5-turbo-instruct", "prompt": ["ok", "z" * 101]}).encode(),
            path=b"/v1/completions",
        ),
        400,
        "prompt[1]",
    ),
    # Strings that are not Unicode (json.dumps sends a lone surrogate as its escape).
    "lone surrogate in stop": (chat(stop="\ud800"), 400, "stop"),
    "lone surrogate in a streamed stop": (chat(stop=["a", "\udfff"], stream=True), 400, "stop[1]"),
    "lone surrogate as UTF-8 bytes in stop": (
        post(json.dumps(OK_BODY).encode()[:-1] + b', "stop": "\xed\xa0\x80"}'),
        400,
        "stop",
    ),
    "lone surrogate in an echo prompt": (
        post(
            json.dumps(
                {"model": "gpt-3.5-turbo-instruct", "prompt": "a\ud83d", "echo": True}
            ).encode(),
            path=b"/v1/completions",
        ),
        400,
        "prompt",
    ),
    "lone surrogate in model": (chat(model="\udc80"), 400, "model"),
    "lone surrogate in a message": (
        chat(messages=[{"role": "user", "content": [{"type": "text", "text": "\ud800"}]}]),
        400,
        "messages[0].content[0].text",
    ),
    "overlong UTF-8 in stop": (
        post(json.dumps(OK_BODY).encode()[:-1] + b', "stop": "\xc0\xaf"}'),
        400,
        None,
    ),
}

FORBIDDEN_LOG = ("Traceback", "Unhandled", "server_error")


def check_answer(test: Any, name: str, data: bytes, status: int, marker: str | None) -> None:
    """``data`` holds exactly one answer: ``status`` with OpenAI's envelope."""
    responses = parse_responses(data, closed=True)
    test.assertEqual(len(responses), 1, f"{name}: {data[:300]!r}")
    [response] = responses
    test.assertEqual(response.status, status, f"{name}: {data[:300]!r}")
    error = response.json()["error"]
    test.assertEqual(set(error), {"message", "type", "param", "code"}, name)
    test.assertEqual(error["type"], "invalid_request_error", name)
    test.assertIsInstance(error["message"], str)
    if marker is not None:
        test.assertIn(marker, (error["param"], error["code"]), f"{name}: {error}")
    test.assertIsNotNone(response.header("x-request-id"), name)


# --------------------------------------------------------------------------
# In memory: the site's own counters must come back to zero.


class InMemoryTableTests(SynchronousTestCase):
    def run_table(self, http: str) -> None:
        service = make_service(http=http, **LIMITS)
        client = Client(service)
        site = service.site
        for name, (raw, status, marker) in CASES.items():
            connection = client.connect()
            connection.send(raw)
            client.clock.advance(0)
            client.clock.advance(0)
            check_answer(self, name, connection.received(), status, marker)
            self.assertTrue(connection.closing, f"{name}: connection left open")
            connection.disconnect()
            self.assertEqual(site.active, 0, name)
            self.assertEqual(len(site.channels), 0, name)
            self.assertEqual(len(site.header_deadlines), 0, name)
        self.assertEqual(client.clock.getDelayedCalls(), [])

    def test_lean(self) -> None:
        self.run_table("lean")

    def test_lean_python(self) -> None:
        self.run_table("lean-python")

    def test_twisted(self) -> None:
        self.run_table("twisted")


# --------------------------------------------------------------------------
# The slow-header deadline, on a fake clock.


class Waiter:
    def __init__(self) -> None:
        self.timed_out = 0

    def header_timed_out(self) -> None:
        self.timed_out += 1


class HeaderDeadlineTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.deadlines = HeaderDeadlines(self.clock, 10.0)

    def test_overdue_closed_in_order_with_one_timer(self) -> None:
        first, second, quick = Waiter(), Waiter(), Waiter()
        self.deadlines.start(first)
        self.clock.advance(4)
        self.deadlines.start(second)
        self.deadlines.start(quick)
        self.deadlines.start(first)  # already waiting: keeps its start
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.deadlines.done(quick)
        self.clock.advance(6.5)
        self.assertEqual((first.timed_out, second.timed_out), (1, 0))
        self.clock.advance(4.5)
        self.assertEqual((first.timed_out, second.timed_out, quick.timed_out), (1, 1, 0))
        self.assertEqual(self.deadlines.shed, 2)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_timer_left_when_nothing_waits(self) -> None:
        waiter = Waiter()
        self.deadlines.start(waiter)
        self.deadlines.done(waiter)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(60)
        self.assertEqual(waiter.timed_out, 0)

    def test_abandoned_heads_trim_the_heap_once_none_wait(self) -> None:
        from mockoai.wire import guard

        trims: list[bool] = []
        self.patch(guard, "TRIM_AFTER", 3)
        self.patch(guard, "release_memory", trims.append)
        waiters = [Waiter() for _ in range(5)]
        for waiter in waiters:
            self.deadlines.start(waiter)
        self.deadlines.done(waiters[0])  # a head that completed: not churn
        for waiter in waiters[1:4]:
            self.deadlines.lost(waiter)
        self.clock.advance(2)
        self.assertEqual(trims, [])  # one still waits
        self.deadlines.lost(waiters[4])
        self.clock.advance(2)
        self.assertEqual(trims, [True])  # abandoned heads: cycles to collect
        self.deadlines.lost(waiters[4])  # gone already: nothing more
        self.clock.advance(guard.RETRIM_AFTER)
        self.assertEqual(trims, [True, True])  # and once more, when the stragglers died
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_off(self) -> None:
        deadlines = HeaderDeadlines(self.clock, 0)
        deadlines.start(Waiter())
        self.assertEqual((len(deadlines), self.clock.getDelayedCalls()), (0, []))

    def test_slow_head_gets_408_on_both_stacks(self) -> None:
        for http in STACKS:
            clock = Clock()
            clock.advance(EPOCH)
            service = make_service(clock, http=http, header_timeout=2.0)
            client = Client(service)
            slow = client.connect()
            silent = client.connect()
            fast = client.connect()
            fast.send(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
            slow.send(b"GET /health HTTP/1.1\r\n")
            for i in range(4):
                slow.send(b"X-%d: 1\r\n" % i)  # a line a second: never idle, never done
                clock.advance(1)
            clock.advance(0.6)
            [response] = parse_responses(slow.received(), closed=True)
            self.assertEqual((http, response.status), (http, 408))
            self.assertEqual(response.json()["error"]["code"], "request_timeout")
            self.assertTrue(slow.closing)
            self.assertEqual(silent.received(), b"")
            self.assertTrue(silent.closing, http)
            self.assertFalse(fast.closing, http)  # answered: only the idle timeout applies
            self.assertEqual(service.site.header_deadlines.shed, 2)


class IdleTimeoutTests(SynchronousTestCase):
    def test_idle_keep_alive_closed_after_a_request(self) -> None:
        """TimeoutMixin.setTimeout(None) used to make the lean stack forget its idle timeout."""
        for http in STACKS:
            clock = Clock()
            clock.advance(EPOCH)
            service = make_service(clock, http=http, idle_timeout=1.0, header_timeout=0)
            connection = Client(service).connect()
            connection.send(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
            clock.advance(0)
            self.assertEqual(parse_responses(connection.received())[0].status, 200)
            self.assertFalse(connection.closing)
            clock.advance(0.95)
            self.assertFalse(connection.closing, http)
            # Within a tenth of the timeout after it (the lean stack's sweep).
            clock.advance(0.15 + 1e-6)
            self.assertTrue(connection.closing, http)

    def test_the_lean_stack_keeps_no_timer_per_request(self) -> None:
        """One sweep timer for every connection, whatever they do; none once all are gone."""
        clock = Clock()
        clock.advance(EPOCH)
        service = make_service(clock, http="lean", idle_timeout=5.0, header_timeout=0)
        connections = [Client(service).connect() for _ in range(3)]
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        for _ in range(4):
            for connection in connections:
                connection.send(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
            clock.advance(0)
            self.assertEqual(len(clock.getDelayedCalls()), 1)
        for connection in connections:
            connection.disconnect()
        self.assertEqual(clock.getDelayedCalls(), [])


class IdleSweepTests(SynchronousTestCase):
    class Channel:
        def __init__(self) -> None:
            self.idle_since: float | None = None
            self.closed_at: float | None = None
            self.clock: Clock | None = None

        def timeoutConnection(self) -> None:
            assert self.clock is not None
            self.closed_at = self.clock.seconds()

    def channel(self, clock: Clock) -> IdleSweepTests.Channel:
        channel = self.Channel()
        channel.clock = clock
        return channel

    @given(
        timeout=st.floats(0.05, 100.0),
        joins=st.lists(st.floats(0.0, 30.0), min_size=1, max_size=8),
    )
    @settings(max_examples=60, deadline=None)
    def test_closed_after_the_timeout_within_a_tick(
        self, timeout: float, joins: list[float]
    ) -> None:
        clock = Clock()
        sweep = IdleSweep(clock, timeout)
        channels = []
        for at in sorted(joins):
            # Time passes as a reactor's does: in steps shorter than a tick.
            while clock.seconds() < at:
                clock.advance(min(sweep.interval / 3, at - clock.seconds()))
            channel = self.channel(clock)
            sweep.add(channel)
            channels.append((at, channel))
        clock.pump([sweep.interval / 3] * (3 * int((timeout + 31) / sweep.interval) + 6))
        for at, channel in channels:
            assert channel.closed_at is not None
            idle = channel.closed_at - at
            self.assertGreaterEqual(idle, timeout - 1e-6)
            # (A tick runs up to one of these steps late, as a reactor's timers do.)
            self.assertLessEqual(idle, timeout + sweep.interval * 4 / 3 + 1e-6)
        self.assertEqual((len(sweep), clock.getDelayedCalls()), (0, []))

    def test_a_busy_channel_is_never_closed_and_reading_counts_as_activity(self) -> None:
        clock = Clock()
        sweep = IdleSweep(clock, 1.0)
        busy, reading = self.channel(clock), self.channel(clock)
        sweep.add(busy)
        sweep.add(reading)
        busy.idle_since = None  # a request in progress: a long stream
        for _ in range(50):
            clock.advance(0.5)
            reading.idle_since = clock.seconds()  # a byte every half second
        self.assertEqual((busy.closed_at, reading.closed_at), (None, None))
        busy.idle_since = clock.seconds()  # answered
        for _ in range(5):
            clock.advance(0.25)
            reading.idle_since = clock.seconds()
        self.assertIsNotNone(busy.closed_at)
        self.assertIsNone(reading.closed_at)
        sweep.discard(reading)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_no_timeout_no_timer(self) -> None:
        clock = Clock()
        sweep = IdleSweep(clock, 0)
        sweep.add(self.channel(clock))
        self.assertEqual((len(sweep), clock.getDelayedCalls()), (0, []))


# --------------------------------------------------------------------------
# Body limits and strict JSON, unit by unit.


class StrictBodyTests(SynchronousTestCase):
    def assertRefused(self, body: bytes, max_depth: int = 64) -> APIError:
        with self.assertRaises(APIError) as cm:
            validate.parse_body(body, max_depth)
        self.assertEqual(cm.exception.status, 400)
        return cm.exception

    def test_non_finite_numbers_refused(self) -> None:
        for constant in (b"NaN", b"Infinity", b"-Infinity"):
            error = self.assertRefused(b'{"temperature": %s}' % constant)
            self.assertIn("could not parse the JSON body", error.message)

    def test_the_words_inside_strings_are_fine(self) -> None:
        body = b'{"content": "NaN and Infinity", "x": [1.5, "Infinity"]}'
        self.assertEqual(validate.parse_body(body)["content"], "NaN and Infinity")

    def test_depth(self) -> None:
        at_limit = b'{"a":' + b"[" * 7 + b"]" * 7 + b"}"
        self.assertEqual(validate.parse_body(at_limit, max_depth=8)["a"], [[[[[[[]]]]]]])
        self.assertRefused(b'{"a":' + b"[" * 8 + b"]" * 8 + b"}", max_depth=8)
        # Many brackets side by side are not depth.
        wide = b'{"a":[' + b",".join([b"[]"] * 500) + b"]}"
        self.assertEqual(len(validate.parse_body(wide, max_depth=8)["a"]), 500)
        # Brackets inside strings are not depth either.
        self.assertEqual(validate.parse_body(b'{"s":"' + b"[" * 100 + b'"}', 8)["s"], "[" * 100)

    def test_deep_but_under_ujson_limit_no_recursion_error(self) -> None:
        """count_value recursed on 999 levels (ujson takes 1,024): now a 400."""
        service = make_service()
        body = b'{"model":"gpt-4o","messages":[{"role":"user","content":"x","extra":'
        body += b"[" * 999 + b"]" * 999 + b"}]}"
        response = Client(service).post("/v1/chat/completions", body=body)
        self.assertEqual(response.status, 400)

    def test_limits(self) -> None:
        limits = validate.InputLimits(
            max_messages=2, max_string_length=5, max_prompt_chars=8, max_n=3
        )
        message = {"role": "user", "content": "abcd"}
        ok = validate.chat({"model": "m", "messages": [message, message]}, limits)
        self.assertEqual(ok.model, "m")
        cases = [
            ({"messages": [message] * 3}, "messages", "array_above_max_length"),
            ({"messages": [{"role": "user", "content": "abcdef"}]}, "messages[0].content", None),
            ({"messages": [message, message, message][:2], "n": 4}, "n", None),
        ]
        for fields, param, code in cases:
            with self.assertRaises(APIError) as cm:
                validate.chat({"model": "m", **fields}, limits)
            self.assertEqual(cm.exception.param, param)
            if code:
                self.assertEqual(cm.exception.code, code)
        with self.assertRaises(APIError) as cm:
            validate.chat(
                {"model": "m", "messages": [message, {"role": "user", "content": "abcde"}]}, limits
            )
        self.assertEqual(cm.exception.code, "context_length_exceeded")
        with self.assertRaises(APIError) as cm:
            validate.completions({"model": "m", "prompt": "abcdef"}, limits)
        self.assertEqual(
            (cm.exception.param, cm.exception.code), ("prompt", "string_above_max_length")
        )
        with self.assertRaises(APIError) as cm:
            validate.completions({"model": "m", "prompt": ["ab", "cd"], "n": 2}, limits)
        self.assertEqual(cm.exception.param, "n")

    def test_content_type(self) -> None:
        client = Client(make_service())
        body = json.dumps(OK_BODY).encode()
        for content_type, status in (
            ("application/json", 200),
            ("application/json; charset=utf-8", 200),
            ("Application/JSON", 200),
            ("text/plain", 400),
            ("application/x-www-form-urlencoded", 400),
        ):
            response = client.post(CHAT.decode(), body=body, headers={"Content-Type": content_type})
            self.assertEqual(response.status, status, content_type)
            if status == 400:
                error = response.json()["error"]
                self.assertEqual(error["code"], "unsupported_content_type")
                self.assertIn(f"'Content-Type: {content_type}'", error["message"])
        no_type = client.post(CHAT.decode(), body=body)
        self.assertEqual(no_type.status, 200)

    def test_settings(self) -> None:
        settings = load_settings(
            {"header_timeout": "3", "max_json_depth": "16", "max_header_bytes": "2KiB"},
            {"MOCKOAI_MAX_MESSAGES": "10"},
        )
        self.assertEqual(
            (
                settings.http_limits.header_timeout,
                settings.input_limits.max_json_depth,
                settings.http_limits.max_header_bytes,
                settings.input_limits.max_messages,
            ),
            (3.0, 16, 2048, 10),
        )


# --------------------------------------------------------------------------
# Property: arbitrary JSON in every field never gets a 5xx.

#: Stand-ins for bytes no str holds, swapped in once a body is encoded (see L{encode}).
OVERLONG = "\ue000"  # an overlong "/": b"\xc0\xaf"
RAW_SURROGATE = "\ue001"  # U+D800 spelled in UTF-8 bytes: b"\xed\xa0\x80"
#: What a hostile client puts in strings: lone surrogates (high, low, the
#: half of an emoji), a valid pair, NUL, overlong UTF-8, raw surrogate bytes.
HOSTILE = st.sampled_from(
    [
        "\ud800",
        "\udbff",
        "\udc00",
        "\udfff",
        "\ud83d",
        "\ud83d\ude00",
        "\x00",
        OVERLONG,
        RAW_SURROGATE,
    ]
)


def text(max_size: int) -> st.SearchStrategy[str]:
    """Any text, or text spliced with the strings hostile clients send."""
    return st.text(max_size=max_size) | st.lists(
        st.text(max_size=3) | HOSTILE, min_size=1, max_size=4
    ).map("".join)


def encode(body: object) -> bytes:
    """``body`` as JSON, lone surrogates as escapes, the stand-ins as their raw bytes."""
    raw = json.dumps(body).encode()
    return raw.replace(b"\\ue000", b"\xc0\xaf").replace(b"\\ue001", b"\xed\xa0\x80")


JSON_LEAF = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text(max_size=20)
)
JSON_VALUE = st.recursive(
    JSON_LEAF,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(strategy, JSON_VALUE)


MESSAGE = st.fixed_dictionaries(
    {},
    optional={
        "role": maybe(st.sampled_from(["user", "system", "assistant", "tool", "developer", "x"])),
        "content": maybe(
            text(max_size=40)
            | st.lists(
                st.fixed_dictionaries(
                    {"type": maybe(st.sampled_from(["text", "image_url"]))},
                    optional={"text": maybe(text(max_size=20))},
                ),
                max_size=3,
            )
        ),
        "name": maybe(text(max_size=10)),
        "tool_call_id": maybe(text(max_size=10)),
    },
)
COMMON = {
    "model": maybe(st.sampled_from(["gpt-4o", "gpt-3.5-turbo-instruct", "nope"]) | text(8)),
    "n": maybe(st.integers(min_value=-2, max_value=140)),
    "max_tokens": maybe(st.integers(min_value=-2, max_value=5000)),
    "max_completion_tokens": maybe(st.integers(min_value=-2, max_value=5000)),
    "min_tokens": maybe(st.integers(min_value=-1, max_value=50)),
    "stream": maybe(st.booleans()),
    "stream_options": maybe(
        st.fixed_dictionaries(
            {}, optional={"include_usage": maybe(st.booleans()), "include_obfuscation": JSON_VALUE}
        )
    ),
    "stop": maybe(text(max_size=5) | st.lists(text(max_size=5), max_size=6)),
    "seed": maybe(st.integers(min_value=-(2**63), max_value=2**64)),
    "temperature": maybe(st.floats(min_value=-1, max_value=3, allow_nan=False)),
    "top_p": JSON_VALUE,
    "presence_penalty": JSON_VALUE,
    "logit_bias": JSON_VALUE,
    "logprobs": JSON_VALUE,
    "top_logprobs": JSON_VALUE,
    "tools": JSON_VALUE,
    "user": maybe(text(max_size=10)),
    "ignore_eos": maybe(st.booleans()),
    "echo": maybe(st.booleans()),
    "best_of": JSON_VALUE,
    "suffix": maybe(text(max_size=10)),
}
CHAT_BODY = st.fixed_dictionaries(
    {}, optional={**COMMON, "messages": maybe(st.lists(MESSAGE, min_size=0, max_size=4))}
)
COMPLETION_BODY = st.fixed_dictionaries(
    {},
    optional={
        **COMMON,
        "prompt": maybe(
            text(max_size=30)
            | st.lists(text(max_size=10), max_size=3)
            | st.lists(st.integers(min_value=0, max_value=50000), max_size=5)
        ),
    },
)

#: OpenRouter's extras besides (routing, reasoning), under /api/v1.
ROUTER_BODY = st.fixed_dictionaries(
    {},
    optional={
        **COMMON,
        "messages": maybe(st.lists(MESSAGE, min_size=0, max_size=3)),
        "models": maybe(st.lists(st.sampled_from(["gpt-4o", "nope"]) | text(8), max_size=3)),
        "provider": maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "order": maybe(st.lists(st.sampled_from(["OpenAI", "Azure"]) | text(6))),
                    "ignore": maybe(st.lists(text(6), max_size=2)),
                    "sort": maybe(st.sampled_from(["price", "latency"]) | text(6)),
                },
            )
        ),
        "transforms": maybe(st.lists(st.just("middle-out") | text(6), max_size=2)),
        "route": maybe(st.just("fallback") | text(6)),
        "reasoning": maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "effort": maybe(st.sampled_from(["low", "high"]) | text(6)),
                    "max_tokens": maybe(st.integers(min_value=-1, max_value=10**10)),
                },
            )
        ),
        "plugins": maybe(st.lists(st.fixed_dictionaries({"id": text(6)}), max_size=2)),
    },
)


class PropertyTests(SynchronousTestCase):
    def setUp(self) -> None:
        # Small answers keep examples fast; max_output_tokens bounds max_tokens.
        self.service = make_service(tokens_mean=6, tokens_stddev=2, max_output_tokens=64)
        self.client = Client(self.service)

    def check(self, path: str, body: object, schema: str, stream_schema: str) -> None:
        response = self.client.post(path, body=encode(body))
        self.assertLess(response.status, 500, response.body[:500])
        self.assertTrue(response.complete)
        if response.status == 200:
            if response.header(
                "Content-Type",
            ).startswith("text/event-stream"):  # type: ignore[union-attr]
                for chunk in sse_json(response.body):
                    validate_event(stream_schema, chunk)
            else:
                from tests.spec import validate as validate_schema

                validate_schema(schema, response.json())
        else:
            error = response.json()["error"]
            self.assertEqual(set(error), {"message", "type", "param", "code"})
            self.assertIsInstance(error["message"], str)
        self.assertEqual(self.service.site.active, 0)

    @settings(
        max_examples=150,
        deadline=2000,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        derandomize=True,
    )
    @given(CHAT_BODY)
    def test_chat_bodies(self, body: dict[str, Any]) -> None:
        self.check(
            "/v1/chat/completions",
            body,
            "CreateChatCompletionResponse",
            "CreateChatCompletionStreamResponse",
        )

    @settings(
        max_examples=100,
        deadline=2000,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        derandomize=True,
    )
    @given(COMPLETION_BODY)
    def test_completion_bodies(self, body: dict[str, Any]) -> None:
        self.check(
            "/v1/completions", body, "CreateCompletionResponse", "CreateCompletionStreamResponse"
        )

    @settings(
        max_examples=100,
        deadline=2000,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        derandomize=True,
    )
    @given(ROUTER_BODY)
    def test_openrouter_bodies(self, body: dict[str, Any]) -> None:
        response = self.client.post(
            "/api/v1/chat/completions", body=encode(body), headers={"Authorization": "Bearer k"}
        )
        self.assertLess(response.status, 500, response.body[:500])
        self.assertTrue(response.complete)
        if response.status == 200:
            content_type = response.header("Content-Type") or ""
            if content_type.startswith("text/event-stream"):
                self.assertEqual(sse_json(response.body)[-1]["choices"], [])  # the usage chunk
            else:
                self.assertEqual(response.json()["object"], "chat.completion")
        else:
            error = response.json()["error"]
            self.assertLessEqual({"code", "message"}, set(error))
            self.assertEqual(error["code"], response.status)
        self.assertEqual(self.service.site.active, 0)


# --------------------------------------------------------------------------
# Property: a hostile string in any one string field of a valid request.

CHAT_PATH, COMPLETIONS_PATH, ROUTER_PATH = (
    "/v1/chat/completions",
    "/v1/completions",
    "/api/v1/chat/completions",
)
CHAT_OK = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
COMPLETION_OK = {"model": "gpt-3.5-turbo-instruct", "prompt": "Hi", "max_tokens": 3}


def _put(body: dict[str, Any], path: str, value: str) -> dict[str, Any]:
    """``body`` (copied) with ``value`` at ``path`` (``a.b[1].c``)."""
    body = json.loads(json.dumps(body))
    parts = path.replace("[", ".[").split(".")
    node: Any = body
    for part, after in zip(parts, [*parts[1:], None]):
        key: Any = int(part[1:-1]) if part.startswith("[") else part
        if after is None:
            node[key] = value
        else:
            node = node[key]
    return body


#: (endpoint, the valid body, the string field set): every string a request can carry.
STRING_FIELDS = [
    (CHAT_PATH, CHAT_OK, "model"),
    (CHAT_PATH, CHAT_OK, "messages[0].content"),
    (
        CHAT_PATH,
        {**CHAT_OK, "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]},
        "messages[0].content[0].text",
    ),
    (
        CHAT_PATH,
        {**CHAT_OK, "messages": [{"role": "user", "content": "x", "name": "n"}]},
        "messages[0].name",
    ),
    (CHAT_PATH, {**CHAT_OK, "stop": "x"}, "stop"),
    (CHAT_PATH, {**CHAT_OK, "stop": ["x", "y"], "stream": True}, "stop[1]"),
    (CHAT_PATH, {**CHAT_OK, "user": "u"}, "user"),
    (COMPLETIONS_PATH, COMPLETION_OK, "prompt"),
    (COMPLETIONS_PATH, {**COMPLETION_OK, "prompt": ["a", "b"], "echo": True}, "prompt[1]"),
    (COMPLETIONS_PATH, {**COMPLETION_OK, "echo": True, "stream": True}, "prompt"),
    (COMPLETIONS_PATH, {**COMPLETION_OK, "suffix": "s"}, "suffix"),
    (COMPLETIONS_PATH, {**COMPLETION_OK, "stop": "x"}, "stop"),
    (ROUTER_PATH, {**CHAT_OK, "stop": "x"}, "stop"),
    (ROUTER_PATH, {**CHAT_OK, "stop": "x", "stream": True}, "stop"),
    (ROUTER_PATH, {**CHAT_OK, "models": ["gpt-4o", "x"]}, "models[1]"),
    (ROUTER_PATH, {**CHAT_OK, "user": "u"}, "user"),
    (ROUTER_PATH, {**CHAT_OK, "provider": {"order": ["OpenAI"]}}, "provider.order[0]"),
    (ROUTER_PATH, {**CHAT_OK, "reasoning": {"effort": "low"}}, "reasoning.effort"),
]


def not_unicode(value: str) -> bool:
    """Whether ``value``, sent as L{encode} sends it, holds a lone surrogate once parsed."""
    if RAW_SURROGATE in value:
        return True
    # Escapes of a valid pair are joined by the parser, as UTF-16 joins them.
    joined = value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    return any("\ud800" <= c <= "\udfff" for c in joined)


class HostileStringTests(SynchronousTestCase):
    """
    Lone surrogates, overlong UTF-8 and NUL in each string field of a valid
    request: a string that is not Unicode is a 400 naming its field (in the
    endpoint's envelope), overlong UTF-8 is not JSON, and nothing is a 5xx.
    """

    def setUp(self) -> None:
        self.service = make_service(
            tokens_mean=6, tokens_stddev=2, max_output_tokens=64, any_model=True
        )
        self.client = Client(self.service)

    @settings(
        max_examples=300,
        deadline=2000,
        suppress_health_check=[HealthCheck.too_slow],
        derandomize=True,
    )
    @given(st.sampled_from(STRING_FIELDS), text(max_size=6))
    def test_each_string_field(self, field: tuple[str, dict[str, Any], str], value: str) -> None:
        path, body, where = field
        raw = encode(_put(body, where, value))
        response = self.client.post(path, body=raw, headers={"Authorization": "Bearer k"})
        name = f"{path} {where}={value!r}"
        self.assertLess(response.status, 500, name)
        self.assertTrue(response.complete, name)
        self.assertEqual(self.service.site.active, 0, name)
        error = response.json().get("error") if response.status != 200 else None
        if OVERLONG in value:
            assert error is not None, name
            self.assertEqual(response.status, 400, name)
            self.assertIn("could not parse the JSON body", error["message"], name)
        elif not_unicode(value):
            assert error is not None, name
            self.assertEqual(response.status, 400, name)
            self.assertIn(f"Invalid '{where}'", error["message"], name)
            self.assertIn("lone UTF-16 surrogate", error["message"], name)
            if path != ROUTER_PATH:
                self.assertEqual(error["param"], where, name)

    def test_any_model_path_that_is_not_utf8(self) -> None:
        for path in ("/v1/models/%ed%a0%80", "/v1/models/%ff", "/v1/models/a%c0%af"):
            response = self.client.get(path)
            self.assertEqual(response.status, 404, path)
            self.assertEqual(response.json()["error"]["code"], "model_not_found", path)
        # A name that is Unicode is still made up.
        self.assertEqual(self.client.get("/v1/models/caf%c3%a9").json()["id"], "café")


# --------------------------------------------------------------------------
# Real sockets against twistd, both stacks.


def exchange(port: int, data: bytes, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Send ``data``; read until the server closes (True) or ``timeout`` (False)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):  # refused mid-send: the answer may still come
            sock.sendall(data)
        received = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                return received, False
            except ConnectionResetError:
                return received, True
            if not chunk:
                return received, True
            received += chunk
        return received, False


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class RealSocketTests(SynchronousTestCase):
    def serve(self, http: str, *extra: str) -> TwistdProcess:
        process = TwistdProcess([*ARGS, "--http", http, *extra]).start()
        self.addCleanup(process.cleanup)
        return process

    def run_table(self, http: str) -> None:
        process = self.serve(http, "--header-timeout", "1", "--idle-timeout", "1")
        assert process.process is not None
        exchange(process.port, get())  # warm up (lazy imports, first connection)
        baseline = open_fds(process.process.pid)
        for name, (raw, status, marker) in CASES.items():
            data, closed = exchange(process.port, raw)
            self.assertTrue(closed, f"{name}: not closed, got {data[:200]!r}")
            check_answer(self, name, data, status, marker)

        # Slow headers: a byte at a time, never finishing, gets 408 and a close.
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", process.port), timeout=5) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\n")
            time.sleep(0.4)
            sock.sendall(b"X-Slow: 1\r\n")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
        self.assertLess(time.monotonic() - started, 3.0)
        self.assertEqual(parse_responses(data, closed=True)[0].status, 408)

        # Idle keep-alive: answered, then closed within about a second.
        with socket.create_connection(("127.0.0.1", process.port), timeout=5) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
            first = sock.recv(4096)
            started = time.monotonic()
            rest = b""
            while chunk := sock.recv(4096):
                rest += chunk
            idle = time.monotonic() - started
        self.assertTrue(first.startswith(b"HTTP/1.1 200"), first)
        self.assertEqual(rest, b"")
        self.assertLess(idle, 2.5, http)
        self.assertGreater(idle, 0.5, http)

        # Nothing leaked: every connection closed, no request left in flight.
        deadline = time.monotonic() + 5
        while open_fds(process.process.pid) > baseline and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertLessEqual(open_fds(process.process.pid), baseline)
        process.stop()
        out = process.stdout
        self.assertIn("draining 0 in-flight request(s)", out)
        for word in FORBIDDEN_LOG:
            self.assertNotIn(word, out + process.stderr)

    def test_lean(self) -> None:
        self.run_table("lean")

    def test_lean_python(self) -> None:
        self.run_table("lean-python")

    def test_twisted(self) -> None:
        self.run_table("twisted")


# --------------------------------------------------------------------------
# schemathesis, from OpenAI's spec.

OPERATIONS = REPO_ROOT + "/tests/openapi/openai-operations.json"


def _budget(examples: int, seconds: int) -> list[str]:
    """
    ``examples`` per operation within ``seconds``, where this schemathesis has
    ``--max-time``.  4.4.4, the last for Python 3.9 (CI's PyPy), has not, and
    25 took 130 s there on a loaded machine (cold JIT): so it fuzzes a fifth.
    """
    usage = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout
    if "--max-time" in usage:
        return ["--max-examples", str(examples), "--max-time", str(seconds)]
    return ["--max-examples", str(max(1, examples // 5))]


class SchemathesisTests(SynchronousTestCase):
    def fuzz(self, http: str) -> None:
        if shutil.which("schemathesis") is None:
            try:
                import schemathesis  # noqa: F401
            except ImportError:
                self.skipTest("schemathesis is not installed (pip install '.[test]')")
        process = TwistdProcess(
            ["--http", http, "--any-model", "--articles", "64", "--tokens-mean", "8"]
        ).start()
        self.addCleanup(process.cleanup)
        scratch = tempfile.mkdtemp(prefix="mockoai-schemathesis-")
        self.addCleanup(shutil.rmtree, scratch, True)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "schemathesis.cli",
                "run",
                OPERATIONS,
                "--url",
                process.base_url + "/v1",
                "--checks",
                "not_a_server_error,response_schema_conformance",
                "--phases",
                "fuzzing",
                *_budget(25, 20),
                "--seed",
                "1",
                "--workers",
                "1",
                "--suppress-health-check",
                "all",
                "--generation-database",
                "none",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=scratch,  # schemathesis keeps state in .schemathesis/ of its cwd
        )
        self.assertEqual(result.returncode, 0, result.stdout[-4000:] + result.stderr[-2000:])
        self.assertIn("4 passed", result.stdout)
        process.stop()
        for word in FORBIDDEN_LOG:
            self.assertNotIn(word, process.stdout + process.stderr)

    def test_lean(self) -> None:
        self.fuzz("lean")

    def test_twisted(self) -> None:
        self.fuzz("twisted")
