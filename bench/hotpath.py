"""
What one request costs the server's own code, measured in-process.

wrk's req/s swings by tens of percent on a shared machine and mixes in the
kernel's and the client's time; this script feeds the lean HTTP/1.1 channel
of a service built exactly as ``twistd mockoai`` builds it (same options)
the same keep-alive requests wrk's scripts send, over a transport that drops
what is written, and reports CPU µs per request.  The reactor is not run:
its timed calls are run between batches (``runUntilCurrent``), so timers a
request arms are paid for as in the server.  It is the number to compare
before and after a change to the request path (``--profile`` shows where it
goes); ``run.py`` stays the end-to-end measurement.

    python bench/hotpath.py                       # chat and completions, µs/request
    python bench/hotpath.py --profile chat        # calls per request, cProfile's top functions
    python bench/hotpath.py -- --itl 0 --api-key sk-1   # extra server options after --
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from twisted.internet import reactor  # noqa: E402
from twisted.internet.address import IPv4Address  # noqa: E402

from mockoai.ops import service  # noqa: E402
from mockoai.ops.tap import Options  # noqa: E402

SYSTEM = (
    "You are a concise technical assistant for a team that runs load tests against "
    "HTTP services. Answer in plain English, prefer short paragraphs, cite the relevant "
    "configuration keys by name, and never invent command-line flags that do not exist."
)
USER = (
    "Our gateway sits in front of an OpenAI-compatible inference server. Under 64 "
    "concurrent clients the p99 latency doubles while the median stays flat. Which queueing "
    "effects would explain that, and what should we measure first to tell them apart?"
)
#: The bodies of bench/wrk/chat.lua and completions.lua.
BODIES = {
    "chat": (
        "/v1/chat/completions",
        {
            "model": "gpt-4o",
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}],
            "max_tokens": 32,
            "temperature": 0.7,
        },
    ),
    "completions": (
        "/v1/completions",
        {"model": "gpt-4o", "prompt": SYSTEM, "max_tokens": 32, "temperature": 0.7},
    ),
    # The wire and the router alone: a GET answered with prebuilt bytes.
    "health": ("/health", None),
    "stream": (
        "/v1/chat/completions",
        {
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": USER}],
            "max_tokens": 64,
            "stream": True,
        },
    ),
}


def raw_request(path: str, body: dict[str, Any] | None, extra: list[tuple[str, str]]) -> bytes:
    if body is None:
        head = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1:3000", "Accept: application/json"]
        return ("\r\n".join(head) + "\r\n\r\n").encode()
    data = json.dumps(body, separators=(",", ":")).encode()
    head = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1:3000",
        "Content-Type: application/json",
        "Accept: application/json",
        f"Content-Length: {len(data)}",
    ] + [f"{k}: {v}" for k, v in extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


class Sink:
    """A connected TCP transport that keeps only a count of what was written."""

    disconnecting = False

    def __init__(self) -> None:
        self.written = 0
        self.answers = 0
        self.producer: Any = None

    def write(self, data: bytes) -> None:
        self.written += len(data)
        self.answers += data.count(b"HTTP/1.1 200 ")

    def writeSequence(self, data: list[bytes]) -> None:
        for chunk in data:
            self.write(chunk)

    def getPeer(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 40000)

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 3000)

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def loseConnection(self) -> None:
        self.disconnecting = True

    def abortConnection(self) -> None:
        self.disconnecting = True


def build(server_args: list[str]) -> Any:
    options = Options()
    options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1", *server_args])
    top = service.build(options.settings, reactor)
    return top.site


def run_batch(site: Any, data: bytes, connections: int, requests: int) -> tuple[float, int]:
    """``requests`` requests spread over ``connections`` keep-alive connections: CPU s."""
    channels = []
    sinks = []
    for _ in range(connections):
        sink = Sink()
        channel = site.buildProtocol(sink.getPeer())
        channel.makeConnection(sink)
        channels.append(channel)
        sinks.append(sink)
    rounds = max(requests // connections, 1)
    start = time.process_time()
    for _ in range(rounds):
        for channel in channels:
            channel.dataReceived(data)
        reactor.runUntilCurrent()
    spent = time.process_time() - start
    answered = sum(s.answers for s in sinks)
    for channel in channels:
        channel.connectionLost()
    return spent, answered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kinds", nargs="*", default=["chat", "completions"], help=", ".join(BODIES))
    parser.add_argument("-n", "--requests", type=int, default=20000, help="per batch")
    parser.add_argument("-c", "--connections", type=int, default=64)
    parser.add_argument("--batches", type=int, default=7, help="the median is reported")
    parser.add_argument("--profile", action="store_true", help="cProfile one batch")
    parser.add_argument("--top", type=int, default=35)
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    extra = argv[split + 1 :]
    unknown = set(args.kinds) - set(BODIES)
    if unknown:
        parser.error(f"unknown kind {', '.join(sorted(unknown))}: not one of {', '.join(BODIES)}")
    site = build(["--tokens-mean", "64", "--tokens-stddev", "0", *extra])
    gc.collect()
    for kind in args.kinds:
        path, body = BODIES[kind]
        data = raw_request(path, body, [])
        run_batch(site, data, args.connections, args.requests // 4)  # warm up
        costs = []
        for _ in range(args.batches):
            spent, answered = run_batch(site, data, args.connections, args.requests)
            if answered < args.requests * 0.99:
                sys.exit(f"{kind}: only {answered} of {args.requests} answered 200")
            costs.append(spent / answered * 1e6)
        print(
            f"{kind}: {statistics.median(costs):.1f} µs/request "
            f"(min {min(costs):.1f}, max {max(costs):.1f}, {args.batches} x {args.requests})"
        )
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            _, answered = run_batch(site, data, args.connections, args.requests)
            profile.disable()
            out = io.StringIO()
            stats = pstats.Stats(profile, stream=out)
            # Calls per request: the load-independent figure (each costs ~0.1 µs on CPython).
            calls = stats.total_calls  # type: ignore[attr-defined]
            print(f"{kind}: {calls / answered:.0f} Python calls/request")
            if args.top:
                stats.sort_stats("tottime").print_stats(args.top)
                print(out.getvalue())


if __name__ == "__main__":
    main()
