"""
The raw-Twisted ceiling that every benchmark figure is divided by.

A bare L{Protocol} that parses HTTP/1.1 (keep-alive, Content-Length bodies;
httptools when installed, else a small hand parser) and answers every POST
with prebuilt bytes: a ~600-byte C{chat.completion} JSON body, or for a body
with C{"stream": true} a prebuilt chunked SSE stream of N content events.
A POST to ``/v1/embeddings`` gets a prebuilt list of as many 1,536-float
vectors as its body has inputs (counted, the one look at a body it takes),
written as mockoai writes them.  It does no per-request work beyond
parsing, so whatever mockoai costs on top of it is mockoai's own.
Machines are noisy; a ratio to this server, started in the same run on
the same core, is what stays comparable across them.

    python bench/baseline_server.py --port 8000 [--events 64] [--itl MS]

Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import re
import sys
from collections import deque
from collections.abc import Sequence
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.base import DelayedCall
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure

httptools: Any
try:
    import httptools
except ImportError:  # PyPy, or not installed: the hand parser below.
    httptools = None

reactor: Any = _reactor

_STREAM_RE = re.compile(rb'"stream"\s*:\s*true')
_CREATED = 1700000000
_ID = "chatcmpl-baseline0000000000000000000"
_TEXT = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor"
    " incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis"
)
_WORDS = _TEXT.split()


def embeddings_body(inputs: int, dimensions: int = 1536) -> bytes:
    """An embeddings list of ``inputs`` vectors, floats with 16 decimals as mockoai writes them."""
    rng = random.Random(inputs)
    vector = b"[" + b",".join(b"%.16f" % rng.uniform(-0.1, 0.1) for _ in range(dimensions)) + b"]"
    data = b",".join(
        b'{"object":"embedding","index":%d,"embedding":%s}' % (i, vector) for i in range(inputs)
    )
    return (
        b'{"object":"list","data":[%s],"model":"text-embedding-3-small",'
        b'"usage":{"prompt_tokens":%d,"total_tokens":%d}}' % (data, 30 * inputs, 30 * inputs)
    )


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def chat_completion_body(target: int = 600) -> bytes:
    """A realistic C{chat.completion} object padded with words to ~C{target} bytes."""
    words: list[str] = []
    body = b""
    while len(body) < target:
        words.append(_WORDS[len(words) % len(_WORDS)])
        body = _json(
            {
                "id": _ID,
                "object": "chat.completion",
                "created": _CREATED,
                "model": "gpt-4o",
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": " ".join(words),
                            "refusal": None,
                        },
                        "logprobs": None,
                        "finish_reason": "length",
                    }
                ],
                "usage": {
                    "prompt_tokens": 120,
                    "completion_tokens": len(words),
                    "total_tokens": 120 + len(words),
                },
                "system_fingerprint": "fp_baseline",
            }
        )
    return body


def _chunk(delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    choices = [] if usage else [choice]
    event = {
        "id": _ID,
        "object": "chat.completion.chunk",
        "created": _CREATED,
        "model": "gpt-4o",
        "system_fingerprint": "fp_baseline",
        "choices": choices,
        "usage": usage,
    }
    return b"data: " + _json(event) + b"\n\n"


def sse_events(n: int) -> list[bytes]:
    """
    The events of one chat stream, as OpenAI sends them: a role chunk, C{n}
    one-token content chunks, a finish chunk, a usage chunk, C{[DONE]}.
    """
    events = [_chunk({"role": "assistant", "content": ""})]
    events += [_chunk({"content": " " + _WORDS[i % len(_WORDS)]}) for i in range(n)]
    events.append(_chunk({}, "length"))
    events.append(
        _chunk({}, usage={"prompt_tokens": 120, "completion_tokens": n, "total_tokens": 120 + n})
    )
    events.append(b"data: [DONE]\n\n")
    return events


def _head(status: bytes, headers: Sequence[bytes], close: bool) -> bytes:
    lines = [b"HTTP/1.1 " + status, *headers]
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _plain(status: bytes, body: bytes, close: bool) -> bytes:
    headers = [b"Content-Type: application/json", b"Content-Length: %d" % len(body)]
    return _head(status, headers, close) + body


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Responses:
    """Every byte this server can send, built once at startup."""

    def __init__(self, events: int, itl_ms: float, delay_ms: float) -> None:
        self.itl = itl_ms / 1000.0
        self.delay = delay_ms / 1000.0
        self.paced = itl_ms > 0 or delay_ms > 0
        body = chat_completion_body()
        stream = sse_events(events)
        sse_headers = [
            b"Content-Type: text/event-stream; charset=utf-8",
            b"Cache-Control: no-cache",
            b"Transfer-Encoding: chunked",
        ]
        self.chat: dict[bool, bytes] = {}
        self.health: dict[bool, bytes] = {}
        self.not_found: dict[bool, bytes] = {}
        self.stream_head: dict[bool, bytes] = {}
        for close in (False, True):
            self.chat[close] = _plain(b"200 OK", body, close)
            self.health[close] = _plain(b"200 OK", b'{"status":"ok"}', close)
            self.not_found[close] = _plain(b"404 Not Found", b'{"error":"not found"}', close)
            self.stream_head[close] = _head(b"200 OK", sse_headers, close)
        # Unpaced: the whole stream is one chunk, written at once (as a server
        # with no inter-token latency would).  Paced: role chunk plus first
        # content chunk at once, then one content chunk per tick, and the
        # finish, usage and [DONE] chunks with the last content chunk.
        self.stream_burst = (_chunked(b"".join(stream)), b"0\r\n\r\n")
        self.stream_ticks = [_chunked(stream[0] + stream[1])]
        self.stream_ticks += [_chunked(e) for e in stream[2 : events + 1]]
        self.stream_ticks[-1] += _chunked(b"".join(stream[events + 1 :])) + b"0\r\n\r\n"
        self.bad_request = _plain(b"400 Bad Request", b'{"error":"bad request"}', True)
        self._embeddings: dict[tuple[int, bool], bytes] = {}

    def embeddings(self, body: bytes, close: bool) -> bytes:
        """The answer to an embeddings request of that many inputs (built on first use)."""
        inputs = body.count(b'","') + 1 if b'"input":["' in body else 1
        answer = self._embeddings.get((inputs, close))
        if answer is None:
            answer = _plain(b"200 OK", embeddings_body(inputs), close)
            self._embeddings[(inputs, close)] = answer
        return answer


class Pacer:
    """
    One reactor timer for every paced stream.

    A C{callLater} per event costs tens of microseconds of reactor work, so
    the ceiling keeps due times in a heap and arms one timer for the
    earliest; each firing serves every stream due within C{slack}.
    """

    def __init__(self, slack: float = 0.0005) -> None:
        self.slack = slack
        self._heap: list[tuple[float, int, BaselineProtocol, int]] = []
        self._seq = 0
        self._timer: DelayedCall | None = None
        self._armed_for = float("inf")
        self._firing = False

    def at(self, due: float, proto: BaselineProtocol, generation: int) -> None:
        """Call C{proto._tick()} at reactor time C{due} unless its generation moved on."""
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, proto, generation))
        if not self._firing and due < self._armed_for:
            self._arm(due)

    def _arm(self, due: float) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._armed_for = due
        self._timer = reactor.callLater(max(0.0, due - reactor.seconds()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._armed_for = float("inf")
        self._firing = True
        heap = self._heap
        try:
            now = reactor.seconds()
            limit = now + self.slack
            while heap and heap[0][0] <= limit:
                _, _, proto, generation = heapq.heappop(heap)
                if proto.generation == generation:
                    proto._tick(now)
        finally:
            self._firing = False
        if heap:
            self._arm(heap[0][0])


class BaselineProtocol(Protocol):
    """One connection: parse, answer with prebuilt bytes, keep alive."""

    responses: Responses
    pacer: Pacer

    def __init__(self) -> None:
        self._queue: deque[tuple[bytes, bytes, bytes]] = deque()
        self._buf = b""
        self.tx: Any = None
        self._streaming = False
        self._closing = False
        self._close_after = False
        self._start = 0.0
        self._sent = 0
        self.generation = 0

    # -- connection ----------------------------------------------------------

    def connectionMade(self) -> None:
        self.tx = self.transport
        self.tx.setTcpNoDelay(True)
        if httptools is not None:
            self._parser: Any = httptools.HttpRequestParser(self)
            self._url: list[bytes] = []
            self._body: list[bytes] = []

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.generation += 1  # drops this connection's pending ticks
        self._streaming = False
        self._queue.clear()

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        if httptools is not None:
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserError:
                self._fail()
        else:
            self._buf += data
            self._hand_parse()

    # -- httptools callbacks ---------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = []
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url.append(url)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        method: bytes = self._parser.get_method()
        keep_alive: bool = self._parser.should_keep_alive()
        self._request(method, b"".join(self._url), b"".join(self._body), not keep_alive)

    # -- fallback parser -------------------------------------------------------

    def _hand_parse(self) -> None:
        while not self._closing:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > 65536:
                    self._fail()
                return
            lines = self._buf[:end].split(b"\r\n")
            try:
                method, path, version = lines[0].split(b" ")
            except ValueError:
                self._fail()
                return
            length = 0
            close = version != b"HTTP/1.1"
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                value = value.strip().lower()
                if name == b"content-length":
                    if not value.isdigit():
                        self._fail()
                        return
                    length = int(value)
                elif name == b"connection":
                    close = value == b"close" or (close and value != b"keep-alive")
                elif name == b"transfer-encoding":
                    self._fail()  # chunked request bodies: not needed here
                    return
            if len(self._buf) < end + 4 + length:
                return
            body = self._buf[end + 4 : end + 4 + length]
            self._buf = self._buf[end + 4 + length :]
            self._request(method, path, body, close)

    # -- answers ---------------------------------------------------------------

    def _fail(self) -> None:
        self._closing = True
        self.tx.write(self.responses.bad_request)
        self.tx.loseConnection()

    def _request(self, method: bytes, path: bytes, body: bytes, close: bool) -> None:
        if self._streaming:  # pipelined behind a paced stream: answer in order
            self._queue.append((method, path, body))
            if close:
                self._closing = True
            return
        self._answer(method, path, body, close)

    def _answer(self, method: bytes, path: bytes, body: bytes, close: bool) -> None:
        r = self.responses
        write = self.tx.write
        if method == b"POST":
            if path.startswith(b"/v1/embeddings"):
                write(r.embeddings(body, close))
            elif _STREAM_RE.search(body) is None:
                write(r.chat[close])
            elif not r.paced:
                self.tx.writeSequence((r.stream_head[close], *r.stream_burst))
            else:
                write(r.stream_head[close])
                self._streaming = True
                self._close_after = close
                self._sent = 0
                self._start = reactor.seconds() + r.delay
                self.generation += 1
                self.pacer.at(self._start, self, self.generation)
                return
        elif path == b"/health":
            write(r.health[close])
        else:
            write(r.not_found[close])
        if close:
            self._closing = True
            self.tx.loseConnection()

    def _tick(self, now: float) -> None:
        """Write every event that is due (one write), then book the next one."""
        r = self.responses
        ticks = r.stream_ticks
        due = min(
            len(ticks),
            int((now + self.pacer.slack - self._start) / r.itl) + 1 if r.itl else len(ticks),
        )
        due = max(due, self._sent + 1)
        if due == self._sent + 1:
            self.tx.write(ticks[self._sent])
        else:
            self.tx.writeSequence(ticks[self._sent : due])
        self._sent = due
        if due < len(ticks):
            self.pacer.at(self._start + due * r.itl, self, self.generation)
            return
        self._streaming = False
        if self._close_after:
            self._closing = True
            self.tx.loseConnection()
            return
        while self._queue and not self._streaming:
            method, path, body = self._queue.popleft()
            last = self._closing and not self._queue
            self._answer(method, path, body, last)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse options, listen on 127.0.0.1, run the reactor."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--port", type=int, required=True, help="TCP port (0: any free one)")
    parser.add_argument("--events", type=int, default=64, help="content events per stream")
    parser.add_argument("--itl", type=float, default=0.0, help="ms between content events")
    parser.add_argument("--response-delay", type=float, default=0.0, help="ms to first event")
    parser.add_argument("--backlog", type=int, default=50, help="listen backlog (Twisted's)")
    parser.add_argument(
        "--parser", choices=("auto", "hand"), default="auto", help="hand: skip httptools"
    )
    args = parser.parse_args(argv)
    if args.parser == "hand":
        global httptools
        httptools = None
    if args.events < 1:
        parser.error("--events must be >= 1")

    BaselineProtocol.responses = Responses(args.events, args.itl, args.response_delay)
    BaselineProtocol.pacer = Pacer()
    factory = Factory.forProtocol(BaselineProtocol)
    factory.noisy = False
    port = reactor.listenTCP(args.port, factory, backlog=args.backlog, interface="127.0.0.1")
    parser_name = "httptools" if httptools is not None else "hand parser"
    print(
        f"baseline listening on 127.0.0.1:{port.getHost().port} ({parser_name}, "
        f"{args.events} events/stream, itl {args.itl} ms)",
        flush=True,
    )
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
