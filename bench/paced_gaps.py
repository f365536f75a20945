"""
Paced-stream timing client: TTFT and inter-token gaps of many concurrent
SSE streams, read with one ``epoll`` loop so that the client is not what it
measures.

``sse_load.py`` (asyncio) spends ~20 us of Python per event; at 1,000
streams with a 20 ms inter-token latency that is 50,000 events/s, a whole
core, and its own lag then shows up as server jitter.  This client does the
least per read: one ``recv``, one timestamp, a byte count of the events in
the block.  Each stream is a keep-alive connection that runs streaming
requests back to back (closed loop) for the duration.

What it reports (client-measured, ms): TTFT, request written to the first
content-bearing event; gap, the time between consecutive content events of
one stream (events that arrive in the same read get a gap of 0 after the
first: that is what the client saw); plus its own CPU use, so a saturated
client is visible.  Loopback only, bounded by ``--duration``.

    python bench/paced_gaps.py --port P -c 1000 -d 15 [--json]
"""

from __future__ import annotations

import argparse
import errno
import json
import random
import select
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

sys.path.insert(0, __file__.rsplit("/", 1)[0])

from sse_load import (
    CONTENT_KEYS,
    MODELS,
    PATHS,
    build_body,
    build_request,
    check_loopback,
    raise_nofile,
)

_END = b"0\r\n\r\n"
_DONE = b"data: [DONE]"


class Stream:
    """One keep-alive connection running streaming requests back to back."""

    __slots__ = ("done", "last", "seen", "sent_at", "sock", "streams", "tail")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sent_at = 0.0
        self.last = 0.0
        self.seen = 0
        self.tail = b""
        self.done = False
        self.streams = 0


def quantiles(values: Sequence[float], scale: float = 1000.0) -> dict[str, float | None]:
    """Nearest-rank p50/p90/p99/p999/max (ms) and the mean."""
    if not values:
        return {"n": 0, "mean": None, "p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)
    n = len(ordered)

    def rank(p: float) -> float:
        return round(ordered[min(n - 1, max(0, int(p * n + 0.5) - 1))] * scale, 3)

    return {
        "n": n,
        "mean": round(sum(ordered) / n * scale, 3),
        "p50": rank(0.50),
        "p90": rank(0.90),
        "p99": rank(0.99),
        "p999": rank(0.999),
        "max": round(ordered[-1] * scale, 3),
    }


def collect(
    host: str,
    port: int,
    concurrency: int,
    request: bytes,
    key: bytes,
    warmup: float,
    duration: float,
    stagger: float = 0.0,
    seed: int = 1,
) -> dict[str, Any]:
    """
    Run ``concurrency`` closed-loop streams of ``request``; the first of each
    is sent at a random instant within ``stagger`` seconds (streams started
    together stay in lock-step for many rounds).  Returns the raw TTFTs and
    gaps (seconds) read in the ``duration`` after ``warmup``, and counts.
    """
    check_loopback(host)
    raise_nofile(concurrency + 64)
    empty = key + b'"'
    poller = select.epoll()
    streams: dict[int, Stream] = {}
    for _ in range(concurrency):
        sock = socket.create_connection((host, port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        streams[sock.fileno()] = Stream(sock)
        poller.register(sock.fileno(), select.EPOLLIN)
    ttfts: list[float] = []
    gaps: list[float] = []
    errors = 0
    clock = time.perf_counter
    started = clock()
    rng = random.Random(seed)
    pending = sorted((started + rng.uniform(0.0, stagger), fd) for fd in streams)
    pending.reverse()  # pop() takes the earliest
    warmup_until = started + warmup
    deadline = warmup_until + duration
    cpu0 = cpu_at = 0.0
    measured_events = 0
    while streams:
        now = clock()
        if now >= deadline:
            break
        if cpu_at == 0.0 and now >= warmup_until:
            cpu0, cpu_at = time.process_time(), now
        while pending and pending[-1][0] <= now:
            stream = streams.get(pending.pop()[1])
            if stream is not None:
                stream.sock.send(request)
                stream.sent_at = clock()
        wait = deadline - now
        if pending:
            wait = min(wait, max(0.0, pending[-1][0] - now))
        for fd, _ in poller.poll(min(0.05, wait)):
            stream = streams[fd]
            try:
                data = stream.sock.recv(262144)
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    continue
                data = b""
            t = clock()
            if not data:
                errors += 1
                poller.unregister(fd)
                stream.sock.close()
                del streams[fd]
                continue
            events = data.count(key) - data.count(empty)
            if events:
                if t >= warmup_until:
                    measured_events += events
                    if stream.seen == 0:
                        ttfts.append(t - stream.sent_at)
                    else:
                        gaps.append(t - stream.last)
                    if events > 1:
                        gaps.extend([0.0] * (events - 1))
                stream.seen += events
                stream.last = t
            window = stream.tail + data[-64:]
            stream.tail = window[-64:]
            if _DONE in window or stream.done:
                stream.done = True
                if stream.tail.endswith(_END):
                    stream.streams += 1
                    stream.done = False
                    stream.seen = 0
                    stream.tail = b""
                    stream.sock.send(request)
                    stream.sent_at = clock()
    elapsed = max(1e-9, clock() - (cpu_at or started))
    cpu = time.process_time() - cpu0 if cpu_at else 0.0
    completed = sum(s.streams for s in streams.values())
    for stream in streams.values():
        stream.sock.close()
    poller.close()
    return {
        "ttft": ttfts,
        "gaps": gaps,
        "streams_completed": completed,
        "errors": errors,
        "events_per_s": round(measured_events / elapsed, 1),
        "client_cpu_pct": round(100.0 * cpu / elapsed, 1),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    endpoint = args.endpoint
    body = build_body(endpoint, args.model or MODELS[endpoint], args.max_tokens, True)
    request = build_request("POST", args.host, args.port, PATHS[endpoint], body)
    raw = collect(
        args.host,
        args.port,
        args.concurrency,
        request,
        CONTENT_KEYS[endpoint],
        args.warmup,
        args.duration,
        args.stagger,
    )
    return {
        "concurrency": args.concurrency,
        "duration_s": round(args.duration, 3),
        "streams_completed": raw["streams_completed"],
        "errors": raw["errors"],
        "events_per_s": raw["events_per_s"],
        "ttft_ms": quantiles(raw["ttft"]),
        "gap_ms": quantiles(raw["gaps"]),
        "client_cpu_pct": raw["client_cpu_pct"],
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="loopback address of the server")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--endpoint", choices=sorted(PATHS), default="chat")
    p.add_argument("--model", help="model name (default: gpt-4o / gpt-3.5-turbo-instruct)")
    p.add_argument("--max-tokens", type=int, default=64, help="max_tokens of each request")
    p.add_argument("-c", "--concurrency", type=int, default=1000, help="concurrent streams")
    p.add_argument("-d", "--duration", type=float, default=15.0, help="seconds measured")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    p.add_argument("--stagger", type=float, default=1.0, help="spread of the first sends, s")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        t, g = result["ttft_ms"], result["gap_ms"]
        print(
            f"c={result['concurrency']} streams={result['streams_completed']} "
            f"errors={result['errors']} events/s={result['events_per_s']} "
            f"client cpu={result['client_cpu_pct']}%\n"
            f"  ttft ms p50={t['p50']} p90={t['p90']} p99={t['p99']} max={t['max']}\n"
            f"  gap  ms p50={g['p50']} p90={g['p90']} p99={g['p99']} p999={g.get('p999')} "
            f"max={g['max']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
