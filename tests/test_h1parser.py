"""
The pure-Python HTTP/1.1 parser (L{mockoai.wire.h1parser}): what it hands
the lean channel, however the bytes are split over reads, and -- where
httptools is installed -- that it accepts and refuses what llhttp does,
event for event, on a corpus and on generated requests split at random.
The channel's own behaviour on it (keep-alive, pipelining, limits, the
hostile-client tables) is tested with ``--http lean-python`` beside
httptools in tests/test_hostile.py, tests/test_hostile_http.py and
tests/test_envelopes.py.
"""

from __future__ import annotations

from typing import Any
from unittest import skipIf

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mockoai.wire import h1parser
from mockoai.wire.h1parser import (
    HttpParserCallbackError,
    HttpParserError,
    HttpParserUpgrade,
)
from tests.optional import httptools

Event = Any

BODY = b'{"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}]}'
CHAT = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:3000\r\n"
    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
)
CHUNKED = (
    b"POST /v1/completions?x=1 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
    b'4;name=value\r\n{"a"\r\nA\r\n:1234567}\r\r\n0\r\nX-Trailer: t\r\n\r\n'
)
GET10 = b"GET /health HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"
#: Three requests, pipelined on one connection.
PIPELINE = b"\r\n" + CHAT + CHUNKED + GET10


class Recorder:
    """A protocol that writes down what the parser calls, in order."""

    def __init__(self, module: Any = h1parser, fail_on: str | None = None) -> None:
        self.events: list[Event] = []
        self.fail_on = fail_on
        self.parser = module.HttpRequestParser(self)

    def _call(self, name: str, *args: Any) -> None:
        self.events.append((name, *args))
        if name == self.fail_on:
            raise KeyError(name)

    def on_message_begin(self) -> None:
        self._call("begin")

    def on_url(self, url: bytes) -> None:
        self._call("url", url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._call("header", name, value)

    def on_headers_complete(self) -> None:
        p = self.parser
        version = p.get_http_version()
        self._call("head", p.get_method(), version, p.should_keep_alive(), p.should_upgrade())

    def on_body(self, body: bytes) -> None:
        self._call("body", body)

    def on_message_complete(self) -> None:
        self._call("complete")


def merged(events: list[Event]) -> list[Event]:
    """Consecutive URL or body pieces as one: how they are split is the reads'."""
    out: list[Event] = []
    for event in events:
        if out and event[0] in ("url", "body") and out[-1][0] == event[0]:
            out[-1] = (event[0], out[-1][1] + event[1])
        else:
            out.append(event)
    return out


def feed(data: bytes, cuts: list[int], module: Any = h1parser) -> tuple[list[Event], Any]:
    """Feed ``data`` cut at ``cuts``: the merged events and the outcome ("ok", an offset
    into ``data`` where an upgrade's own bytes start, or "error")."""
    recorder = Recorder(module)
    upgrade = getattr(module, "HttpParserUpgrade", HttpParserUpgrade)
    error = getattr(module, "HttpParserError", HttpParserError)
    start = 0
    for stop in [*sorted(set(cuts)), len(data)]:
        piece = data[start:stop]
        if not piece:
            continue
        try:
            recorder.parser.feed_data(piece)
        except upgrade as e:
            return merged(recorder.events), start + e.args[0]
        except error:
            return merged(recorder.events), "error"
        start = stop
    return merged(recorder.events), "ok"


class WholeAndSplitTests(SynchronousTestCase):
    def test_a_chat_request(self) -> None:
        events, outcome = feed(CHAT, [])
        self.assertEqual(outcome, "ok")
        self.assertEqual(
            events,
            [
                ("begin",),
                ("url", b"/v1/chat/completions"),
                ("header", b"Host", b"127.0.0.1:3000"),
                ("header", b"Content-Type", b"application/json"),
                ("header", b"Content-Length", b"%d" % len(BODY)),
                ("head", b"POST", "1.1", True, False),
                ("body", BODY),
                ("complete",),
            ],
        )

    def test_pipelined_chunked_and_http10(self) -> None:
        events, outcome = feed(PIPELINE, [])
        self.assertEqual(outcome, "ok")
        self.assertEqual([e[0] for e in events].count("complete"), 3)
        chunked = events[events.index(("url", b"/v1/completions?x=1")) :]
        self.assertIn(("body", b'{"a":1234567}\r'), chunked)
        self.assertIn(("header", b"X-Trailer", b"t"), chunked)  # a trailer, as llhttp passes it
        self.assertEqual(events[-2], ("head", b"GET", "1.0", True, False))

    def test_every_split_gives_the_same_events(self) -> None:
        whole = feed(PIPELINE, [])
        for cut in range(1, len(PIPELINE)):
            self.assertEqual(feed(PIPELINE, [cut]), whole, cut)

    def test_a_byte_at_a_time(self) -> None:
        self.assertEqual(feed(PIPELINE, list(range(len(PIPELINE)))), feed(PIPELINE, []))

    def test_whitespace_around_values_is_not_theirs(self) -> None:
        events, _ = feed(b"GET / HTTP/1.1\r\nHost: \t a b \t\r\nX-Empty:\r\n\r\n", [])
        self.assertIn(("header", b"Host", b"a b"), events)
        self.assertIn(("header", b"X-Empty", b""), events)


class KeepAliveTests(SynchronousTestCase):
    def head(self, version: bytes, connection: bytes | None) -> Event:
        field = b"Connection: %s\r\n" % connection if connection is not None else b""
        events, outcome = feed(b"GET / HTTP/%s\r\nHost: h\r\n%s\r\n" % (version, field), [])
        self.assertEqual(outcome, "ok")
        return next(e for e in events if e[0] == "head")[3]

    def test_table(self) -> None:
        for version, connection, keep in [
            (b"1.1", None, True),
            (b"1.1", b"close", False),
            (b"1.1", b"Upgrade, CLOSE", False),
            (b"1.1", b"closed", True),
            (b"1.0", None, False),
            (b"1.0", b"keep-alive", True),
            (b"1.0", b"keep-alive, close", False),  # (llhttp keeps it: RFC 9112 9.3 closes)
        ]:
            self.assertEqual(self.head(version, connection), keep, (version, connection))


class UpgradeTests(SynchronousTestCase):
    def test_stops_at_the_end_of_the_head(self) -> None:
        head = b"POST / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
        head += b"Content-Length: 2\r\n\r\n"
        data = head + b"{}GET /next HTTP/1.1\r\n\r\n"
        for cut in range(1, len(data)):
            events, outcome = feed(data, [cut])
            if cut > len(head):  # the body is not read: the channel reparses it
                self.assertEqual(outcome, len(head), cut)
                self.assertEqual(events[-2:], [("head", b"POST", "1.1", True, True), ("complete",)])
                self.assertNotIn("body", [e[0] for e in events])

    def test_connect_and_upgrade_without_connection_upgrade(self) -> None:
        connect = b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test\r\n\r\n"
        self.assertEqual(feed(connect + b"tunnel", [])[1], len(connect))
        # Upgrade without Connection: upgrade is an ordinary request.
        events, outcome = feed(b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\n\r\n", [])
        self.assertEqual((outcome, events[-2][4]), ("ok", False))

    def test_nothing_is_parsed_after(self) -> None:
        recorder = Recorder()
        with self.assertRaises(HttpParserUpgrade):
            recorder.parser.feed_data(b"CONNECT a:1 HTTP/1.1\r\n\r\n")
        with self.assertRaises(HttpParserError):
            recorder.parser.feed_data(b"GET / HTTP/1.1\r\n\r\n")


#: Malformed input, each refused however it is split (the channel answers 400).
MALFORMED = {
    "unknown method": b"FOO / HTTP/1.1\r\n\r\n",
    "lower-case method": b"get / HTTP/1.1\r\n\r\n",
    "HTTP/0.9": b"GET /\r\n\r\n",
    "HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "HTTP/1.2": b"GET / HTTP/1.2\r\n\r\n",
    "LF line ends": b"GET / HTTP/1.1\nHost: h\n\n",
    "bare CR": b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
    "control byte in the target": b"GET /\x01 HTTP/1.1\r\n\r\n",
    "non-ASCII target": b"GET /\xc3\xa9 HTTP/1.1\r\n\r\n",
    "relative target": b"GET abc HTTP/1.1\r\n\r\n",
    "space before the colon": b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n",
    "no colon": b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
    "non-token name": b"GET / HTTP/1.1\r\nX(: v\r\n\r\n",
    "NUL in a value": b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
    "DEL in a value": b"GET / HTTP/1.1\r\nX: a\x7fb\r\n\r\n",
    "two lengths": b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
    "negative length": b"POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
    "length overflow": b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551616\r\n\r\n",
    "length and chunked": (
        b"POST / HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "chunked not last": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
    "not chunked": b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n{}",
    "bad chunk size": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n",
    "0x chunk size": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\nab\r\n",
    "chunk overflow": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1" + b"0" * 16,
    "no CRLF after a chunk": (
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n"
    ),
    "control byte in a trailer": (
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\x01\r\n\r\n"
    ),
    "garbage after a request": b"GET / HTTP/1.1\r\n\r\nGARBAGE\r\n\r\n",
}


class MalformedTests(SynchronousTestCase):
    def test_refused_however_split(self) -> None:
        for name, data in MALFORMED.items():
            for cut in range(len(data) + 1):
                self.assertEqual(feed(data, [cut])[1], "error", f"{name} cut at {cut}")

    def test_refused_before_the_line_ends(self) -> None:
        # A request line that cannot become one is refused without waiting for its end.
        for start in (b"\x00\x01\x02" * 8, b"FOO ", b"GET /a\x01"):
            self.assertEqual(feed(start, [])[1], "error", start)

    def test_stays_refused(self) -> None:
        recorder = Recorder()
        with self.assertRaises(HttpParserError):
            recorder.parser.feed_data(b"FOO / HTTP/1.1\r\n\r\n")
        with self.assertRaises(HttpParserError):
            recorder.parser.feed_data(b"GET / HTTP/1.1\r\n\r\n")
        self.assertEqual(recorder.events, [("begin",)])

    def test_a_callback_error_is_the_context(self) -> None:
        for name in ("begin", "url", "header", "head", "body", "complete"):
            recorder = Recorder(fail_on=name)
            with self.assertRaises(HttpParserCallbackError) as raised:
                recorder.parser.feed_data(CHAT)
            self.assertIsInstance(raised.exception.__context__, KeyError, name)
            self.assertEqual(recorder.events[-1][0], name)
            with self.assertRaises(HttpParserError):
                recorder.parser.feed_data(CHAT)


class LongHeadTests(SynchronousTestCase):
    def test_a_long_target_is_passed_on_before_its_line_ends(self) -> None:
        # So the channel answers 414 without waiting for the rest (as on llhttp).
        recorder = Recorder()
        recorder.parser.feed_data(b"GET /")
        recorder.parser.feed_data(b"a" * 5000)
        self.assertEqual(
            b"".join(e[1] for e in recorder.events if e[0] == "url"), b"/" + b"a" * 5000
        )
        recorder.parser.feed_data(b"b HTTP/1.1\r\n\r\n")
        self.assertEqual(merged(recorder.events)[1], ("url", b"/" + b"a" * 5000 + b"b"))

    def test_a_trickled_field_is_held_whole(self) -> None:
        recorder = Recorder()
        for byte in b"GET / HTTP/1.1\r\nX-Long: " + b"v" * 3000 + b"\r\n\r\n":
            recorder.parser.feed_data(bytes([byte]))
        self.assertIn(("header", b"X-Long", b"v" * 3000), recorder.events)
        self.assertEqual(recorder.events[-1], ("complete",))

    def test_an_endless_chunk_line_is_refused(self) -> None:
        recorder = Recorder()
        recorder.parser.feed_data(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;")
        with self.assertRaises(HttpParserError):
            for _ in range(20):
                recorder.parser.feed_data(b"x" * 1024)


# --------------------------------------------------------------------------
# Against llhttp (httptools), where it is installed


#: Where llhttp differs and we do not: (input, what we do instead, why).
DIVERGENCES = [
    (b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", "close", "RFC 9112 9.3"),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: ,chunked\r\n\r\n", "error", "an empty coding"),
]

CORPUS = [
    CHAT,
    CHUNKED,
    GET10,
    PIPELINE,
    *MALFORMED.values(),
    b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET  /  HTTP/1.1\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET http://a.test/b?c HTTP/1.1\r\n\r\n",
    b'GET /a"<>{}|\\^` HTTP/1.1\r\n\r\n',
    b"PROPFIND / HTTP/1.1\r\nX_A.b~!: v\r\nUtf8: a\xc3\xa9\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 0002\r\n\r\n{}",
    b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n{}",
    b"HEAD / HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
    b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: CHUNKED\r\n\r\n00A\r\n0123456789\r\n0\r\n\r\n",
    b'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2;a="b c"\r\n{}\r\n0\r\n\r\n',
    b"GET / HTTP/1.1\r\nConnection: keep-alive\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\nrest",
    b"GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n",
    b"POST / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n",
    b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nxyz",
]


def llhttp(data: bytes, cuts: list[int]) -> tuple[list[Event], Any]:
    """
    httptools' events and outcome, in our parser's terms: values without
    trailing OWS, and an error for what llhttp takes and the lean channel
    then refuses from its version (HTTP/0.9, HTTP/2.0: our parser refuses it).
    """
    events, outcome = feed(data, cuts, httptools)
    events = [("header", e[1], e[2].rstrip(b" \t")) if e[0] == "header" else e for e in events]
    if any(e[0] == "head" and e[2] not in ("1.0", "1.1") for e in events):
        outcome = "error"
    return events, outcome


def agree(test: SynchronousTestCase, data: bytes, cuts: list[int]) -> None:
    ours, theirs = feed(data, cuts), llhttp(data, cuts)
    where = f"{data!r} cut at {cuts}"
    if theirs[1] == "error" or ours[1] == "error":
        # How far each got before refusing may differ (llhttp passes a field on
        # once the next line shows it is not folded); that both refuse may not.
        test.assertEqual(ours[1], theirs[1], where)
    else:
        test.assertEqual(ours, theirs, where)


@skipIf(httptools is None, "httptools is CPython-only")
class AgainstLlhttpTests(SynchronousTestCase):
    def test_divergences_are_what_they_say(self) -> None:
        for data, ours, why in DIVERGENCES:
            events, outcome = feed(data, [])
            if ours == "close":
                self.assertEqual(events[-2][3], False, why)
            else:
                self.assertEqual(outcome, ours, why)
            self.assertNotEqual(llhttp(data, []), (events, outcome), f"{why}: llhttp agrees now")

    def test_corpus_whole_and_split_everywhere(self) -> None:
        for data in CORPUS:
            agree(self, data, [])
            for cut in range(1, len(data)):
                agree(self, data, [cut])

    @settings(max_examples=300, deadline=None)
    @given(st.data())
    def test_generated_requests_split_at_random(self, data: st.DataObject) -> None:
        raw = data.draw(requests())
        cuts = data.draw(st.lists(st.integers(1, max(1, len(raw) - 1)), max_size=4))
        agree(self, raw, cuts)


_METHODS = [b"GET", b"POST", b"HEAD", b"OPTIONS", b"CONNECT", b"PATCH", b"get", b"FOO", b""]
_TARGETS = [
    b"/",
    b"/v1/chat/completions?a=b",
    b"*",
    b"http://h/x",
    b"a.test:443",
    b"/\xc3\xa9",
    b"/a\tb",
    b"",
]
_VERSIONS = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2", b"http/1.1", b"HTTP/1.1 "]
_FIELDS = [
    b"Host: h",
    b"Host:h",
    b"Content-Type: application/json",
    b"Connection: close",
    b"Connection: keep-alive",
    b"Connection: Upgrade",
    b"Upgrade: h2c",
    b"Expect: 100-continue",
    b"Content-Length: 2",
    b"Content-Length: 0",
    b"Content-Length: x",
    b"Content-Length: 2 ",
    b"Transfer-Encoding: chunked",
    b"Transfer-Encoding: gzip",
    b"Transfer-Encoding: gzip, chunked",
    b"Transfer-Encoding: chunked, gzip",
    b"Connection: keep-alive, Upgrade",
    b"X-Tab: a\tb  ",
    b"X-Empty:",
    b"X-Obs: \xff",
    b"X-Ctl: \x01",
    b"Bad Name: v",
    b" Folded: v",
    b"NoColon",
]
_BODIES = [
    b"",
    b"{}",
    b"2\r\n{}\r\n0\r\n\r\n",
    b"0\r\n\r\n",
    b"2\r\n{}\r\n0\r\nT: 1\r\n\r\n",
    b"2;x=y\r\n{}\r\n0\r\n\r\n",
    b"2\r\n{}0\r\n\r\n",
    b"g\r\n",
]


@st.composite
def requests(draw: Any) -> bytes:
    """One to three requests, mostly valid, with the pieces llhttp and we must agree on."""
    out = b""
    for _ in range(draw(st.integers(1, 3))):
        method = draw(st.sampled_from(_METHODS))
        target = draw(st.sampled_from(_TARGETS))
        version = draw(st.sampled_from(_VERSIONS))
        fields = draw(st.lists(st.sampled_from(_FIELDS), max_size=5))
        if b"Connection: close" in fields:  # (with keep-alive too: see DIVERGENCES)
            fields = [f for f in fields if not f.startswith(b"Connection: keep-alive")]
        body = draw(st.sampled_from(_BODIES))
        line = b"%s %s %s\r\n" % (method, target, version)
        out += line + b"".join(f + b"\r\n" for f in fields) + b"\r\n" + body
    return out
