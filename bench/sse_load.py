"""
Streaming (SSE) load client, and an open-loop latency client, for loopback.

wrk measures plain request/response well but cannot read an SSE stream event
by event, so streaming figures come from here: C concurrent keep-alive
connections each run streaming requests back to back for D seconds (or a
fixed number of requests), and every event is timestamped as it is read.

    python bench/sse_load.py --port P -c 64 -d 10 [--json]
    python bench/sse_load.py --port P --open-loop 5000 -d 10 [--json]

Streaming reports streams/s, events/s (every ``data:`` event, ``[DONE]``
included), tokens/s (content-bearing events, or the final chunk's
``usage.completion_tokens`` when the server sends it), TTFT (request written
to first content-bearing event) and the gap between consecutive content
events, p50/p90/p99, plus errors and the client's own CPU use (near 100 %
means the client, not the server, was the limit).

``--open-loop RATE`` sends non-streaming requests with Poisson arrivals at
RATE/s over ``--connections`` keep-alive connections and reports latency from
each request's *scheduled* arrival to its last byte, so a server that falls
behind is charged for the queue it builds (no coordinated omission).  It
also reports its own send lag (how late requests left against the
schedule): when that is large, the client or the machine, not the server,
is what missed the target.

Only raw asyncio streams and the standard library; loopback targets only;
every run is bounded by its duration plus a hard timeout.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import ipaddress
import json
import random
import re
import resource
import socket
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

SYSTEM = (
    "You are a concise technical assistant for a team that runs load tests against HTTP "
    "services. Answer in plain English, prefer short paragraphs, cite the relevant "
    "configuration keys by name, and never invent command-line flags that do not exist."
)
USER = (
    "Our gateway sits in front of an OpenAI-compatible inference server. Under 64 concurrent "
    "clients the p99 latency doubles while the median stays flat. Which queueing effects "
    "would explain that, and what should we measure first to tell them apart?"
)
PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}
MODELS = {"chat": "gpt-4o", "completions": "gpt-3.5-turbo-instruct"}
CONTENT_KEYS = {"chat": b'"content":"', "completions": b'"text":"'}
# Streamed tool calls: chat with a tool it must call (arguments paced like text).
PATHS["tools"], MODELS["tools"], CONTENT_KEYS["tools"] = PATHS["chat"], "gpt-4o", b'"arguments":"'
# Anthropic's Messages API: text_delta events, framed with event: lines, ending on message_stop.
PATHS["messages"], MODELS["messages"], CONTENT_KEYS["messages"] = (
    "/v1/messages",
    "claude-sonnet-4-6",
    b'"text":"',
)
ANTHROPIC_HEADERS = ["anthropic-version: 2023-06-01", "x-api-key: mockoai-bench"]
# OpenAI's Responses API: output_text.delta events, framed with event: lines, ending on
# response.completed (or .incomplete) with the usage inside the Response object.
PATHS["responses"], MODELS["responses"], CONTENT_KEYS["responses"] = (
    "/v1/responses",
    "gpt-4o",
    b'"delta":"',
)
#: The events that end a stream framed with event: lines (Anthropic's, the Responses API's).
_LAST_EVENTS = (b"event: message_stop", b"event: response.completed", b"event: response.incomplete")
TOOL = {
    "type": "function",
    "function": {
        "name": "search_logs",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "string"},
                "service": {"enum": ["gateway", "router", "engine"]},
                "limit": {"type": "integer", "minimum": 1, "maximum": 500},
                "terms": {"type": "array", "items": {"type": "string"}, "maxItems": 8},
            },
            "required": ["query", "service", "limit", "terms"],
        },
    },
}

# A content-bearing event has a non-empty "content" (chat), "text" (completions),
# "arguments" (a tool call's fragment) or string "delta" (the Responses API's).
_CONTENT_RE = re.compile(rb'"(?:content|text|arguments|delta)"\s*:\s*"[^"]')
_USAGE_RE = re.compile(rb'"usage"\s*:\s*\{')
CONNECT_CONCURRENCY = 48  # under the listen backlog (Twisted: 50): no SYN drops
CONNECT_TIMEOUT = 10.0


class ProtocolError(Exception):
    """The server sent something that is not the HTTP/SSE we expect."""


def build_body(endpoint: str, model: str, max_tokens: int, stream: bool) -> bytes:
    """A realistic request body: a system and a user message, or the same as a prompt."""
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "temperature": 0.7}
    if endpoint == "responses":
        body = {"model": model, "max_output_tokens": max_tokens, "temperature": 0.7}
        body["instructions"] = SYSTEM
        body["input"] = USER
        if stream:
            body["stream"] = True
        return json.dumps(body, separators=(",", ":")).encode()
    if endpoint == "messages":
        body["system"] = SYSTEM
        body["messages"] = [{"role": "user", "content": USER}]
        if stream:
            body["stream"] = True
        return json.dumps(body, separators=(",", ":")).encode()
    if endpoint == "tools":
        body["tools"] = [TOOL]
        body["tool_choice"] = "required"
    if endpoint in ("chat", "tools"):
        body["messages"] = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": USER},
        ]
    else:
        body["prompt"] = f"{SYSTEM}\n\nQuestion: {USER}\n\nAnswer:"
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body, separators=(",", ":")).encode()


def build_request(method: str, host: str, port: int, path: str, body: bytes | None) -> bytes:
    """One HTTP/1.1 keep-alive request, as bytes ready to write."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "User-Agent: mockoai-bench"]
    if path == PATHS["messages"]:
        lines += ANTHROPIC_HEADERS
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        lines.append("Accept: text/event-stream" if b'"stream":true' in body else "Accept: */*")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def check_loopback(host: str) -> None:
    """Refuse any target that is not on this machine's loopback."""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError as e:
        raise SystemExit(f"cannot resolve {host!r}: {e}") from None
    for info in infos:
        if not ipaddress.ip_address(info[4][0]).is_loopback:
            raise SystemExit(f"refusing non-loopback target {host!r} ({info[4][0]})")


def raise_nofile(needed: int) -> int:
    """Raise RLIMIT_NOFILE to at least C{needed} if the hard limit (or root) allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return soft
    want = needed if hard == resource.RLIM_INFINITY else max(needed, hard)
    for new_soft, new_hard in ((want, max(want, hard)), (min(want, hard), hard)):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, new_hard))
            return new_soft
    return soft


def percentiles(values: Sequence[float], scale: float = 1000.0) -> dict[str, float | None]:
    """Nearest-rank p50/p90/p99/max of C{values} (seconds), times C{scale} (ms)."""
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)
    n = len(ordered)

    def rank(p: float) -> float:
        return round(ordered[min(n - 1, max(0, int(p / 100.0 * n + 0.999999) - 1))] * scale, 3)

    return {"p50": rank(50), "p90": rank(90), "p99": rank(99), "max": rank(100)}


class Conn:
    """A keep-alive HTTP/1.1 connection over asyncio streams, with a read buffer."""

    __slots__ = ("buf", "expired", "reader", "t_read", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buf = b""
        self.t_read = 0.0
        self.expired = False

    @classmethod
    async def open(cls, host: str, port: int) -> Conn:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=1 << 20), CONNECT_TIMEOUT
        )
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.transport.abort()

    def arm(self, timeout: float) -> asyncio.TimerHandle:
        """
        Abort the connection unless the request is done (and the handle
        cancelled) within C{timeout}: one timer, where C{wait_for} would cost
        a task per await (and can swallow a cancel on Python 3.11).
        """
        return asyncio.get_running_loop().call_later(timeout, self._expire)

    def _expire(self) -> None:
        self.expired = True
        self.close()

    def error_kind(self, e: BaseException) -> str:
        return "io:timeout" if self.expired else f"io:{type(e).__name__}"

    async def fill(self) -> bool:
        """Append what the socket has to the buffer; False at EOF."""
        data = await self.reader.read(1 << 18)
        self.t_read = time.monotonic()
        if not data:
            return False
        self.buf = self.buf + data if self.buf else data
        return True

    async def read_head(self) -> tuple[int, dict[bytes, bytes]]:
        """Status code and lower-cased headers of the next response."""
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(self.buf) > 65536:
                raise ProtocolError("response head too large")
            if not await self.fill():
                raise ProtocolError("connection closed before response head")
        head, self.buf = self.buf[:end], self.buf[end + 4 :]
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError(f"bad status line {lines[0][:80]!r}")
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if parts[0] == b"HTTP/1.0" and headers.get(b"connection", b"").lower() != b"keep-alive":
            headers[b"connection"] = b"close"
        return int(parts[1]), headers

    async def body(self, headers: dict[bytes, bytes]) -> AsyncIterator[bytes]:
        """The response body, piece by piece as it arrives (chunked, sized, or to EOF)."""
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            while True:
                out, done = self._dechunk()
                if out:
                    yield out
                if done:
                    return
                if not await self.fill():
                    raise ProtocolError("connection closed inside a chunked body")
        elif b"content-length" in headers:
            remaining = int(headers[b"content-length"])
            while remaining > 0:
                if not self.buf and not await self.fill():
                    raise ProtocolError("connection closed inside a body")
                piece, self.buf = self.buf[:remaining], self.buf[remaining:]
                remaining -= len(piece)
                yield piece
        else:
            while True:
                if self.buf:
                    piece, self.buf = self.buf, b""
                    yield piece
                if not await self.fill():
                    return

    def _dechunk(self) -> tuple[bytes, bool]:
        """The payload of every complete chunk in the buffer, and whether the last came."""
        buf = self.buf
        pos = 0
        out: list[bytes] = []
        done = False
        while True:
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                break
            try:
                size = int(buf[pos:nl].split(b";", 1)[0], 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size {buf[pos:nl][:20]!r}") from None
            if size == 0:
                end = buf.find(b"\r\n\r\n", nl)  # optional trailers, then an empty line
                if end < 0:
                    break
                pos = end + 4
                done = True
                break
            stop = nl + 2 + size
            if len(buf) < stop + 2:
                break
            out.append(buf[nl + 2 : stop])
            pos = stop + 2
        self.buf = buf[pos:]
        return b"".join(out), done

    async def drain_body(self, headers: dict[bytes, bytes]) -> int:
        """Read and discard a body; return its size."""
        size = 0
        async for piece in self.body(headers):
            size += len(piece)
        return size


class Stats:
    """Everything measured in the window, in seconds; kept in flat arrays."""

    def __init__(self) -> None:
        self.ttft = array.array("d")
        self.gaps = array.array("d")
        self.latency = array.array("d")
        self.lag = array.array("d")
        self.streams = 0
        self.requests = 0
        self.events = 0
        self.content_events = 0
        self.tokens = 0
        self.reconnects = 0
        self.answered = 0
        self.errors: Counter[str] = Counter()
        # Checked before each request, so a worker stops at the end of the
        # window even if a cancel is lost (Python 3.11 wait_for can swallow
        # one that races with its inner task finishing).
        self.stopping = False


async def open_all(
    host: str, port: int, count: int, stats: Stats, health: bytes
) -> list[Conn | None]:
    """
    Open C{count} connections, at most CONNECT_CONCURRENCY at once, each
    proved live with one GET /health before the measured window starts.
    """
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one() -> Conn | None:
        async with gate:
            conn: Conn | None = None
            try:
                conn = await Conn.open(host, port)
                conn.writer.write(health)
                _, headers = await asyncio.wait_for(conn.read_head(), CONNECT_TIMEOUT)
                await asyncio.wait_for(conn.drain_body(headers), CONNECT_TIMEOUT)
                if headers.get(b"connection", b"").lower() == b"close":
                    conn.close()
                    conn = await Conn.open(host, port)
                return conn
            except (OSError, ProtocolError, asyncio.TimeoutError) as e:
                if conn is not None:
                    conn.close()
                stats.errors[f"connect:{type(e).__name__}"] += 1
                return None

    return list(await asyncio.gather(*(one() for _ in range(count))))


def count_content(block: bytes, key: bytes) -> int:
    """
    Events with a non-empty C{key} string (C{"content":"} for chat,
    C{"text":"} for completions).  Compact JSON, what servers send, is
    counted with two C-speed substring counts; anything else falls back to a
    regular expression.
    """
    if b'": ' not in block:
        return block.count(key) - block.count(key + b'"')
    return len(_CONTENT_RE.findall(block))


class SseCounter:
    """
    Accounts the events of one stream.  Events read together share one
    timestamp, so a block of them is counted in bulk (a few C-level scans)
    rather than event by event: the client must outrun the server.
    """

    __slots__ = ("content", "done", "first", "key", "last", "s", "t_sent")

    def __init__(self, s: Stats, t_sent: float, key: bytes = b'"content":"') -> None:
        self.s = s
        self.key = key
        self.t_sent = t_sent
        self.first = 0.0
        self.last = 0.0
        self.content = 0
        self.done = False

    def feed(self, block: bytes, t: float) -> None:
        """Count every event of C{block} (whole events, ending with a blank line), read at C{t}."""
        n = block.count(b"\n\n")
        # An error event (the Responses API's objects carry "error":null throughout).
        failed = b'"error":{' in block or b'"error": {' in block or b"response.failed" in block
        if block.count(b"data:") != n or failed:
            for event in block.split(b"\n\n")[:n]:
                self._event(event, t)
            return
        # Fast path: every event is exactly one data line.
        self.s.events += n
        done = block.find(b"[DONE]")
        if done >= 0:
            start = block.rfind(b"\n", 0, done) + 1
            if block[start : block.find(b"\n", done)] in (b"data: [DONE]", b"data:[DONE]"):
                self.done = True
        elif any(last in block for last in _LAST_EVENTS):  # framed with event: lines
            self.done = True
        k = count_content(block, self.key)
        if k:
            self._content(k, t)
        if b'"usage"' in block:
            matches = list(_USAGE_RE.finditer(block))
            if matches:
                match = matches[-1]
                start = block.rfind(b"\n\n", 0, match.start())
                end = block.find(b"\n\n", match.end())
                self._usage(block[start + 2 if start >= 0 else 0 : end][5:])

    def _content(self, k: int, t: float) -> None:
        s = self.s
        s.content_events += k
        s.tokens += k
        self.content += k
        if self.first:
            s.gaps.append(t - self.last)
        else:
            self.first = t
            s.ttft.append(t - self.t_sent)
        if k > 1:
            s.gaps.frombytes(bytes(8 * (k - 1)))  # the rest arrived in the same read: 0.0 each
        self.last = t

    def _usage(self, payload: bytes) -> None:
        data = payload.find(b"data:")  # after an event: line (Anthropic's)
        if data >= 0:
            payload = payload[data + 5 :]
        try:
            body = json.loads(payload)
            if "message" in body:
                return  # Anthropic's message_start: the count so far, not the total
            counts = body["response"]["usage"] if "response" in body else body["usage"]
            usage = int(counts.get("completion_tokens", counts.get("output_tokens")))
        except (ValueError, KeyError, TypeError):
            self.s.errors["event:bad_usage"] += 1
        else:
            self.s.tokens += usage - self.content  # usage replaces the event count
            self.content = usage

    def _event(self, event: bytes, t: float) -> None:
        """The general case: one event, any number of lines, comments, errors."""
        data = [line[5:] for line in event.split(b"\n") if line.startswith(b"data:")]
        if not data:
            return  # a comment or an event without data: not an event we count
        payload = b"\n".join(d[1:] if d.startswith(b" ") else d for d in data)
        self.s.events += 1
        if payload == b"[DONE]":
            self.done = True
            return
        if any(last in event for last in _LAST_EVENTS):
            self.done = True
        if _CONTENT_RE.search(payload) is not None:
            self._content(1, t)
        elif payload.startswith((b'{"error"', b'{"type":"error"', b'{"type":"response.failed"')):
            self.s.errors["event:error"] += 1
        if b'"usage"' in payload and _USAGE_RE.search(payload) is not None:
            self._usage(payload)


async def consume_stream(
    conn: Conn, headers: dict[bytes, bytes], t_sent: float, s: Stats, key: bytes
) -> SseCounter:
    """Read one SSE response, timestamping events as their bytes are read."""
    counter = SseCounter(s, t_sent, key)
    pending = b""
    async for piece in conn.body(headers):
        if b"\r" in piece:
            piece = piece.replace(b"\r\n", b"\n")
        pending = pending + piece if pending else piece
        cut = pending.rfind(b"\n\n")
        if cut >= 0:
            counter.feed(pending[: cut + 2], conn.t_read)
            pending = pending[cut + 2 :]
    if counter.done:
        s.streams += 1
    else:
        s.errors["stream:no_done"] += 1
    return counter


async def stream_worker(
    conn: Conn | None,
    host: str,
    port: int,
    request: bytes,
    s: Stats,
    budget: list[int] | None,
    timeout: float,
    key: bytes,
) -> None:
    """Streaming requests back to back on one keep-alive connection, reconnecting on close."""
    try:
        while not s.stopping and (budget is None or budget[0] > 0):
            if budget is not None:
                budget[0] -= 1
            try:
                if conn is None:
                    conn = await Conn.open(host, port)
                    s.reconnects += 1
                timer = conn.arm(timeout)
                t_sent = time.monotonic()
                conn.writer.write(request)
                s.requests += 1
                try:
                    status, headers = await conn.read_head()
                    if status != 200:
                        s.errors[f"http:{status}"] += 1
                        await conn.drain_body(headers)
                    else:
                        await consume_stream(conn, headers, t_sent, s, key)
                finally:
                    timer.cancel()
                if headers.get(b"connection", b"").lower() == b"close":
                    conn.close()
                    conn = None
            except (OSError, ProtocolError, ValueError) as e:
                s.errors[conn.error_kind(e) if conn else f"io:{type(e).__name__}"] += 1
                if conn is not None:
                    conn.close()
                conn = None
                await asyncio.sleep(0.01)  # a dead server must not become a hot loop
    finally:
        if conn is not None:
            conn.close()


async def run_streams(args: argparse.Namespace) -> dict[str, Any]:
    """C concurrent streams for D seconds (or N requests in all)."""
    s = Stats()
    body = build_body(args.endpoint, args.model, args.max_tokens, stream=True)
    request = build_request("POST", args.host, args.port, PATHS[args.endpoint], body)
    health = build_request("GET", args.host, args.port, "/health", None)
    key = CONTENT_KEYS[args.endpoint]
    conns = await open_all(args.host, args.port, args.concurrency, s, health)
    budget = [args.requests] if args.requests else None
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    tasks = [
        asyncio.ensure_future(
            stream_worker(c, args.host, args.port, request, s, budget, args.request_timeout, key)
        )
        for c in conns
        if c is not None
    ]
    if not tasks:
        pass
    elif budget is not None:
        await asyncio.wait(tasks)
    else:
        await asyncio.wait(tasks, timeout=args.duration)
        s.stopping = True
    # The window ends here: what is read while the workers wind down is not counted.
    elapsed = max(time.monotonic() - t0, 1e-9)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    counted = (s.streams, s.events, s.tokens, s.content_events, len(s.ttft), len(s.gaps))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    s.streams, s.events, s.tokens, s.content_events = counted[:4]
    del s.ttft[counted[4] :], s.gaps[counted[5] :]
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {
        "mode": "stream",
        "endpoint": args.endpoint,
        "concurrency": args.concurrency,
        "connected": sum(c is not None for c in conns),
        "duration_s": round(elapsed, 3),
        "requests": s.requests,
        "streams": s.streams,
        "streams_per_s": round(s.streams / elapsed, 1),
        "events": s.events,
        "events_per_s": round(s.events / elapsed, 1),
        "content_events": s.content_events,
        "tokens": s.tokens,
        "tokens_per_s": round(s.tokens / elapsed, 1),
        "ttft_ms": percentiles(s.ttft),
        "gap_ms": percentiles(s.gaps),
        "reconnects": s.reconnects,
        "errors": sum(s.errors.values()),
        "error_kinds": dict(s.errors),
        "client_cpu_pct": round(100.0 * cpu / elapsed, 1) if elapsed > 0.1 else None,
    }


async def open_loop_worker(
    conn: Conn | None,
    host: str,
    port: int,
    request: bytes,
    queue: asyncio.Queue[float],
    s: Stats,
    timeout: float,
) -> None:
    """
    Take scheduled arrivals off the queue and time each from its scheduled
    instant: time waiting for a free connection is the server's queue.
    """
    try:
        while not s.stopping:
            intended = await queue.get()
            try:
                if conn is None:
                    conn = await Conn.open(host, port)
                    s.reconnects += 1
                timer = conn.arm(timeout)
                conn.writer.write(request)
                s.requests += 1
                try:
                    status, headers = await conn.read_head()
                    await conn.drain_body(headers)
                finally:
                    timer.cancel()
                if status == 200:
                    s.latency.append(time.monotonic() - intended)
                else:
                    s.errors[f"http:{status}"] += 1
                if headers.get(b"connection", b"").lower() == b"close":
                    conn.close()
                    conn = None
            except (OSError, ProtocolError, ValueError) as e:
                s.errors[conn.error_kind(e) if conn else f"io:{type(e).__name__}"] += 1
                if conn is not None:
                    conn.close()
                conn = None
            finally:
                s.answered += 1
                queue.task_done()
    finally:
        if conn is not None:
            conn.close()


async def run_open_loop(args: argparse.Namespace) -> dict[str, Any]:
    """Poisson arrivals at RATE/s for D seconds over a fixed pool of connections."""
    s = Stats()
    body = build_body(args.endpoint, args.model, args.max_tokens, stream=False)
    request = build_request("POST", args.host, args.port, PATHS[args.endpoint], body)
    health = build_request("GET", args.host, args.port, "/health", None)
    conns = await open_all(args.host, args.port, args.connections, s, health)
    queue: asyncio.Queue[float] = asyncio.Queue()
    tasks = [
        asyncio.ensure_future(
            open_loop_worker(c, args.host, args.port, request, queue, s, args.request_timeout)
        )
        for c in conns
        if c is not None
    ]
    rng = random.Random(args.seed)
    rate = float(args.open_loop)
    sent = 0
    t0 = time.monotonic()
    deadline = t0 + args.duration
    next_t = t0
    # asyncio's timers round up to whole milliseconds; the last ~2 ms before an
    # arrival are spun with sleep(0) so arrivals leave on time (the client has
    # its own core).
    while tasks:
        now = time.monotonic()
        if now >= deadline:
            break
        while next_t <= now:
            s.lag.append(now - next_t)
            queue.put_nowait(next_t)
            sent += 1
            next_t += rng.expovariate(rate)
        wait = min(next_t, deadline) - time.monotonic()
        await asyncio.sleep(wait - 0.002 if wait > 0.003 else 0)
    elapsed = max(time.monotonic() - t0, 1e-9)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(queue.join(), args.drain_timeout)
    unfinished = sent - s.answered
    s.stopping = True
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if unfinished:
        s.errors["unfinished"] += unfinished
    completed = len(s.latency)
    return {
        "mode": "open-loop",
        "endpoint": args.endpoint,
        "offered_rate": rate,
        "connections": sum(c is not None for c in conns),
        "duration_s": round(elapsed, 3),
        "sent": sent,
        "completed": completed,
        "achieved_rate": round(completed / elapsed, 1),
        "latency_ms": percentiles(s.latency),
        "client_lag_ms": percentiles(s.lag),
        "reconnects": s.reconnects,
        "errors": sum(s.errors.values()),
        "error_kinds": dict(s.errors),
    }


def _fmt(p: dict[str, float | None]) -> str:
    return " ".join(f"{k}={v if v is not None else '-'}" for k, v in p.items())


def human(r: dict[str, Any]) -> str:
    """A short human-readable summary of one result."""
    if r["mode"] == "stream":
        return "\n".join(
            [
                f"{r['endpoint']} streams c={r['concurrency']} ({r['connected']} connected) "
                f"for {r['duration_s']} s",
                f"  streams/s {r['streams_per_s']}  events/s {r['events_per_s']}  "
                f"tokens/s {r['tokens_per_s']}",
                f"  TTFT ms  {_fmt(r['ttft_ms'])}",
                f"  gap ms   {_fmt(r['gap_ms'])}",
                f"  errors {r['errors']} {r['error_kinds'] or ''}  client CPU "
                f"{r['client_cpu_pct']} %",
            ]
        )
    return "\n".join(
        [
            f"{r['endpoint']} open loop {r['offered_rate']}/s over {r['connections']} "
            f"connections for {r['duration_s']} s",
            f"  sent {r['sent']}  completed {r['completed']}  ({r['achieved_rate']}/s)",
            f"  latency ms       {_fmt(r['latency_ms'])}",
            f"  client lag ms    {_fmt(r['client_lag_ms'])}",
            f"  errors {r['errors']} {r['error_kinds'] or ''}",
        ]
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(
        description="SSE streaming / open-loop load client (loopback only)."
    )
    p.add_argument("--host", default="127.0.0.1", help="loopback address of the server")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--endpoint", choices=sorted(PATHS), default="chat")
    p.add_argument("--model", help="model name (default: gpt-4o / gpt-3.5-turbo-instruct)")
    p.add_argument("--max-tokens", type=int, default=64, help="max_tokens of each request")
    p.add_argument("-c", "--concurrency", type=int, default=64, help="concurrent streams")
    p.add_argument("-d", "--duration", type=float, default=10.0, help="seconds to measure")
    p.add_argument("-n", "--requests", type=int, default=0, help="stop after N requests")
    p.add_argument("--open-loop", type=float, metavar="RATE", help="Poisson non-streaming load")
    p.add_argument("--connections", type=int, default=64, help="open-loop connection pool")
    p.add_argument("--seed", type=int, default=1, help="open-loop arrival seed")
    p.add_argument("--request-timeout", type=float, default=30.0, help="seconds per request")
    p.add_argument("--drain-timeout", type=float, default=2.0, help="open-loop drain seconds")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    args.model = args.model or MODELS[args.endpoint]
    if not 0 < args.duration <= 3600:
        p.error("--duration must be in (0, 3600] seconds")
    if args.concurrency < 1 or args.connections < 1:
        p.error("-c and --connections must be >= 1")
    if args.open_loop is not None and args.open_loop <= 0:
        p.error("--open-loop RATE must be > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run one measurement, bounded by a hard timeout, and print it."""
    args = parse_args(argv)
    check_loopback(args.host)
    pool = args.connections if args.open_loop else args.concurrency
    limit = raise_nofile(pool + 64)
    if limit < pool + 16:
        print(f"warning: RLIMIT_NOFILE is {limit}, below {pool + 16}", file=sys.stderr)
    run = run_open_loop(args) if args.open_loop else run_streams(args)
    hard = args.duration + 2 * CONNECT_TIMEOUT + args.drain_timeout + 30.0
    if args.requests:
        hard += args.request_timeout * max(1, args.requests // max(1, pool))
    try:
        result = asyncio.run(asyncio.wait_for(run, hard))
    except asyncio.TimeoutError:
        print(f"error: hard timeout ({hard:.0f} s) reached", file=sys.stderr)
        return 2
    print(json.dumps(result) if args.json else human(result), flush=True)
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
