"""
Hold N idle keep-alive HTTP connections open against a loopback server.

What a server costs per idle connection (memory, and throughput lost to a
big socket set) only shows with many of them, so this opens N (default
10,000) connections, makes each a real HTTP/1.1 connection with one
``GET /health``, then holds them for T seconds.  Connections are opened at
most ``--concurrency`` at a time so the listen backlog never overflows.

    python bench/idle_conns.py --port P [-n 10000] [--hold 30] [--json]

Prints ``HELD <n>`` on its own line (flushed) once every connection is open,
so a driver can measure the server's RSS and run wrk beside them; at the end
(after T seconds, or on SIGTERM/SIGINT) it reports how many were opened and
how many the server still held open.  Loopback only; bounded by ``--hold``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from sse_load import Conn, ProtocolError, build_request, check_loopback, raise_nofile

CONNECT_TIMEOUT = 10.0


async def hold_one(
    host: str,
    port: int,
    request: bytes,
    gate: asyncio.Semaphore,
    opened: list[Conn],
    errors: Counter[str],
) -> None:
    """Open one connection, answer-check it, then wait for the server to close it."""
    conn: Conn | None = None
    async with gate:
        try:
            conn = await Conn.open(host, port)
            conn.writer.write(request)
            status, headers = await asyncio.wait_for(conn.read_head(), CONNECT_TIMEOUT)
            await asyncio.wait_for(conn.drain_body(headers), CONNECT_TIMEOUT)
            if status != 200:
                errors[f"http:{status}"] += 1
        except (OSError, ProtocolError, asyncio.TimeoutError, ValueError) as e:
            errors[f"connect:{type(e).__name__}"] += 1
            if conn is not None:
                conn.close()
            return
    opened.append(conn)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Open, announce, hold, count."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    request = build_request("GET", args.host, args.port, "/health", None)
    gate = asyncio.Semaphore(args.concurrency)
    opened: list[Conn] = []
    errors: Counter[str] = Counter()
    t0 = time.monotonic()
    opening: asyncio.Future[Any] = asyncio.gather(
        *(hold_one(args.host, args.port, request, gate, opened, errors) for _ in range(args.n))
    )
    stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait(
        [opening, stopped],
        timeout=args.hold,
        return_when=asyncio.FIRST_COMPLETED,
    )
    connect_s = time.monotonic() - t0
    if opening not in done:
        opening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await opening
    print(f"HELD {len(opened)}", flush=True)
    remaining = max(0.0, args.hold - connect_s) if args.hold_from_start else args.hold
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), remaining)
    # A connection the server closed has EOF (or an error) waiting in its reader.
    await asyncio.sleep(0)
    held = sum(
        1
        for c in opened
        if not c.reader.at_eof() and c.reader.exception() is None and not c.writer.is_closing()
    )
    for c in opened:
        c.close()
    return {
        "requested": args.n,
        "opened": len(opened),
        "held_at_end": held,
        "connect_s": round(connect_s, 3),
        "held_s": round(time.monotonic() - t0 - connect_s, 3),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Parse options, raise the fd limit, run bounded."""
    p = argparse.ArgumentParser(description="Hold N idle keep-alive connections (loopback only).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("-n", type=int, default=10_000, help="connections to open")
    p.add_argument("--hold", type=float, default=30.0, help="seconds to hold them")
    p.add_argument(
        "--hold-from-start", action="store_true", help="count --hold from start, not from HELD"
    )
    p.add_argument("--concurrency", type=int, default=48, help="connects in flight at once")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    args = p.parse_args(argv)
    if not 0 < args.hold <= 3600:
        p.error("--hold must be in (0, 3600] seconds")
    check_loopback(args.host)
    limit = raise_nofile(args.n + 64)
    if limit < args.n + 16:
        print(f"warning: RLIMIT_NOFILE is {limit}, below {args.n + 16}", file=sys.stderr)
    hard = args.hold + args.n / 100.0 + 60.0
    try:
        report = asyncio.run(asyncio.wait_for(run(args), hard))
    except asyncio.TimeoutError:
        print(f"error: hard timeout ({hard:.0f} s) reached", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report), flush=True)
    else:
        print(
            f"opened {report['opened']}/{report['requested']} in {report['connect_s']} s, "
            f"{report['held_at_end']} still held after {report['held_s']} s, "
            f"errors {report['errors']} {report['error_kinds'] or ''}",
            flush=True,
        )
    return 0 if report["held_at_end"] == args.n else 1


if __name__ == "__main__":
    sys.exit(main())
