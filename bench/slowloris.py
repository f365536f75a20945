"""
Slow-loris soak: N connections that trickle a request head and never finish
it, while a normal client keeps measuring the server.

    python bench/slowloris.py [-n 10000] [--duration 60] [--interval 3]
                              [--header-timeout 10] [--port P --pid PID]

Without ``--port`` it starts ``twistd -n mockoai`` on a free loopback port
(``--header-timeout`` is passed on) and stops it at the end.  The timeline:
the normal client runs alone for ``--before`` seconds, then the attack opens
N connections (at most ``--concurrency`` connecting at once), each sending
``GET / HTTP/1.1`` and then one header line every ``--interval`` seconds; a
connection the server closes is opened again, so N stay up for
``--duration`` seconds.  Then the attack stops and the client runs alone for
``--after`` seconds more.  The normal client (its own process, one
keep-alive connection, small chat completions back to back) reports p50/p99
latency, throughput and success rate per phase; the server's RSS is sampled
before, during (peak) and after.  The server's log says how many
connections its slow-header deadline shed.  Prints one JSON report.
Loopback only; bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from typing import Any

from sse_load import check_loopback, percentiles, raise_nofile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BODY = json.dumps(
    {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 16}
)
SHED = re.compile(r"closed (\d+) connection\(s\) whose request headers took over")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def normal_client(host: str, port: int, until: float, out: Any) -> None:
    """Back-to-back requests on one keep-alive connection; (time, latency, ok) each."""
    samples: list[tuple[float, float, bool]] = []
    conn: http.client.HTTPConnection | None = None
    while time.time() < until:
        started = time.time()
        ok = False
        try:
            if conn is None:
                conn = http.client.HTTPConnection(host, port, timeout=5)
            conn.request("POST", "/v1/chat/completions", BODY, {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            ok = response.status == 200
        except (OSError, http.client.HTTPException):
            if conn is not None:
                conn.close()
            conn = None
        samples.append((started, time.time() - started, ok))
        if not ok:
            time.sleep(0.01)
    out.send(samples)


class Attack:
    """N slow-loris connections kept up until ``stop``."""

    def __init__(self, host: str, port: int, n: int, interval: float, concurrency: int) -> None:
        self.host, self.port, self.n = host, port, n
        self.interval = interval
        self.gate = asyncio.Semaphore(concurrency)
        self.open = 0
        self.peak = 0
        self.counts: Counter[str] = Counter()
        self.stopping = asyncio.Event()
        self.writers: set[asyncio.StreamWriter] = set()

    async def one(self, index: int) -> None:
        while not self.stopping.is_set():
            try:
                async with self.gate:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(self.host, self.port), 10
                    )
            except (OSError, asyncio.TimeoutError):
                self.counts["connect_failed"] += 1
                await asyncio.sleep(1)
                continue
            self.counts["opened"] += 1
            self.open += 1
            self.peak = max(self.peak, self.open)
            self.writers.add(writer)
            try:
                writer.write(b"GET /health HTTP/1.1\r\nHost: slow\r\n")
                line = 0
                while not self.stopping.is_set():
                    # Stagger the trickle so the server sees a steady drip.
                    try:
                        data = await asyncio.wait_for(reader.read(4096), self.interval)
                    except asyncio.TimeoutError:
                        writer.write(b"X-Slow-%d: %d\r\n" % (line, index))
                        line += 1
                        continue
                    if not data:
                        self.counts["closed_by_server"] += 1
                        break
                    if data.startswith(b"HTTP/1.1 408"):
                        self.counts["got_408"] += 1
            except OSError:
                self.counts["reset_by_server"] += 1
            finally:
                self.open -= 1
                self.writers.discard(writer)
                writer.close()

    async def run(self, duration: float) -> None:
        tasks = [asyncio.ensure_future(self.one(i)) for i in range(self.n)]
        await asyncio.sleep(duration)
        self.stopping.set()
        for writer in list(self.writers):
            writer.close()
        await asyncio.wait(tasks, timeout=30)


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], int, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tempfile.NamedTemporaryFile(prefix="slowloris-", suffix=".log", delete=False)  # noqa: SIM115
    command = [
        sys.executable,
        "-c",
        "from twisted.scripts.twistd import run; run()",
        "-n",
        "--pidfile=",
        "mockoai",
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        "--header-timeout",
        str(args.header_timeout),
        "--http",
        args.http,
    ]
    env = {**os.environ, "PYTHONPATH": REPO}
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return server, port, log.name
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("server did not start")


def phase(samples: list[tuple[float, float, bool]], start: float, end: float) -> dict[str, Any]:
    inside = [(lat, ok) for t, lat, ok in samples if start <= t < end]
    good = [lat for lat, ok in inside if ok]
    pct = percentiles(good)
    return {
        "requests": len(inside),
        "success_rate": round(len(good) / len(inside), 4) if inside else None,
        "req_per_s": round(len(good) / (end - start), 1),
        "p50_ms": pct["p50"],
        "p99_ms": pct["p99"],
        "max_ms": pct["max"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1] if __doc__ else None)
    parser.add_argument("-n", "--connections", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=3.0, help="s between trickled lines")
    parser.add_argument("--before", type=float, default=10.0)
    parser.add_argument("--after", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--header-timeout", type=float, default=10.0)
    parser.add_argument("--http", default="lean")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int)
    parser.add_argument("--pid", type=int, help="server pid (for RSS) when --port is given")
    args = parser.parse_args()
    check_loopback(args.host)
    limit = raise_nofile(args.connections + 1024)
    if limit < args.connections + 64:
        raise SystemExit(f"RLIMIT_NOFILE is {limit}: too low for {args.connections} connections")

    server = None
    log_path = None
    if args.port is None:
        server, port, log_path = start_server(args)
        pid: int | None = server.pid
    else:
        port, pid = args.port, args.pid
    try:
        time.sleep(1.0)
        t0 = time.time()
        attack_start = t0 + args.before
        attack_end = attack_start + args.duration
        end = attack_end + args.after
        receiver, sender = multiprocessing.Pipe(duplex=False)
        client = multiprocessing.Process(
            target=normal_client, args=(args.host, port, end, sender), daemon=True
        )
        client.start()
        rss: list[tuple[float, float]] = []

        async def sample_rss() -> None:
            while time.time() < end and pid is not None:
                rss.append((time.time(), rss_mb(pid)))
                await asyncio.sleep(0.5)

        attack = Attack(args.host, port, args.connections, args.interval, args.concurrency)
        held: list[int] = []

        async def timeline() -> None:
            sampler = asyncio.ensure_future(sample_rss())
            await asyncio.sleep(max(0.0, attack_start - time.time()))

            async def watch() -> None:
                while not attack.stopping.is_set():
                    held.append(attack.open)
                    await asyncio.sleep(1)

            watcher = asyncio.ensure_future(watch())
            await attack.run(max(0.0, attack_end - time.time()))
            watcher.cancel()
            await sampler

        asyncio.run(timeline())
        samples = receiver.recv()
        client.join(10)

        def rss_in(a: float, b: float) -> list[float]:
            return [m for t, m in rss if a <= t < b]

        before_rss = rss_in(t0, attack_start)
        during_rss = rss_in(attack_start, attack_end)
        after_rss = rss_in(end - 3, end + 1)
        report: dict[str, Any] = {
            "connections": args.connections,
            "duration_s": args.duration,
            "interval_s": args.interval,
            "header_timeout_s": args.header_timeout,
            "http": args.http,
            "attack": {
                **dict(attack.counts),
                "peak_open": attack.peak,
                "median_open": sorted(held)[len(held) // 2] if held else 0,
            },
            "normal_client": {
                "before": phase(samples, t0, attack_start),
                "during": phase(samples, attack_start, attack_end),
                "after": phase(samples, attack_end + 3, end),
            },
            "server_rss_mb": {
                "before": round(before_rss[-1], 1) if before_rss else None,
                "during_peak": round(max(during_rss), 1) if during_rss else None,
                "after": round(after_rss[-1], 1) if after_rss else None,
            },
        }
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
    if log_path is not None:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        report["server_shed_by_header_timeout"] = sum(int(m) for m in SHED.findall(text))
        report["server_log_tracebacks"] = text.count("Traceback")
        os.unlink(log_path)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
