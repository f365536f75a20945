"""
A soak under mixed hostile load: does mockoai keep serving its normal
clients, and do its memory and file descriptors come back afterwards?

It starts ``twistd -n mockoai --api-key KEY`` on a loopback port and runs,
in three phases (before, during, after):

- normal clients (all phases): ``--clients`` keep-alive connections with
  the key, alternating plain and streamed chat completions (16 tokens,
  unpaced);
- during the attack only, for ``--duration`` seconds:
  - mid-stream resets: streamed requests to a model paced at
    ``--reset-itl`` ms a token, whose connection is reset (RST,
    ``SO_LINGER`` 0) after the first bytes of the answer, ``--resets`` per
    second;
  - slow bodies: ``--slow`` connections each sending a body at one byte a
    second (they should get 408 from the body deadline), reopened;
  - keyless floods: ``--flood`` connections at a time, each announcing a
    15 MB body and sending up to 4 MB of it without a key (they should get
    401 before the body is read), reopened.

Every second it samples the server's RSS and open file descriptors; at the
end it prints a Markdown table per phase: normal requests per second and
latency, errors of any kind, what the hostile clients got, RSS and fds, and
whether the server's log has a traceback.  Loopback only; every phase and
connection is bounded in time and in count.

    python bench/soak.py [--duration 60] [--http lean|twisted] [--clients 8]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
KEY = "sk-soak-0123456789abcdef"
CHAT = json.dumps(
    {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 16}
).encode()
STREAM = json.dumps(
    {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 16,
        "stream": True,
    }
).encode()
#: What the resets ask for: a stream that lasts (64 tokens of a paced model).
SLOW_STREAM = json.dumps(
    {
        "model": "slow-stream",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 64,
        "stream": True,
    }
).encode()
#: The most connections one hostile generator opens in a run.
MAX_OPENS = 200_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def request(body: bytes, key: str | None = KEY, length: int | None = None) -> bytes:
    auth = f"Authorization: Bearer {key}\r\n".encode() if key else b""
    size = len(body) if length is None else length
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\n"
        b"%sContent-Length: %d\r\n\r\n%s" % (auth, size, body)
    )


def read_response(sock: socket.socket, buffer: bytearray) -> tuple[int, bool]:
    """Read one response (Content-Length or chunked) off ``sock``: (status, server closes)."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a response")
        buffer += chunk
    end = buffer.index(b"\r\n\r\n")
    head = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    del buffer[: end + 4]
    status = int(head[0].split(" ", 2)[1])
    fields = {
        k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])
    }
    closes = fields.get("connection", "").lower() == "close"
    if "content-length" in fields:
        size = int(fields["content-length"])
        while len(buffer) < size:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed mid-body")
            buffer += chunk
        del buffer[:size]
    else:  # chunked: up to the last chunk
        while b"\r\n0\r\n\r\n" not in buffer and not buffer.startswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed mid-stream")
            buffer += chunk
        tail = buffer.find(b"\r\n0\r\n\r\n")
        del buffer[: tail + 7 if tail >= 0 else 5]
    return status, closes


class Counts:
    """Thread-safe tallies per phase."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.phase = "before"
        self.tally: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        self.latency: dict[str, list[float]] = collections.defaultdict(list)

    def add(self, what: str, n: int = 1) -> None:
        with self.lock:
            self.tally[self.phase][what] += n

    def took(self, seconds: float) -> None:
        with self.lock:
            self.latency[self.phase].append(seconds)


def normal_client(port: int, counts: Counts, stop: threading.Event) -> None:
    sock: socket.socket | None = None
    buffer = bytearray()
    n = 0
    while not stop.is_set():
        try:
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                buffer = bytearray()
            n += 1
            started = time.monotonic()
            sock.sendall(request(STREAM if n % 2 else CHAT))
            status, closes = read_response(sock, buffer)
            counts.took(time.monotonic() - started)
            counts.add("normal 200" if status == 200 else f"normal {status}")
            if closes:
                sock.close()
                sock = None
                counts.add("normal reconnects")
        except OSError as e:
            counts.add(f"normal error {type(e).__name__}")
            if sock is not None:
                sock.close()
            sock = None
            time.sleep(0.05)
    if sock is not None:
        sock.close()


def resetter(port: int, rate: float, counts: Counts, stop: threading.Event) -> None:
    linger = struct.pack("ii", 1, 0)
    for _ in range(MAX_OPENS):
        if stop.is_set():
            return
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(request(SLOW_STREAM))
                if sock.recv(4096):
                    counts.add("resets sent")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        except OSError as e:
            counts.add(f"reset error {type(e).__name__}")
        stop.wait(1.0 / rate)


def slow_body(port: int, counts: Counts, stop: threading.Event) -> None:
    for _ in range(MAX_OPENS):
        if stop.is_set():
            return
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(request(b"{", length=1000))
                sock.settimeout(1.0)
                data = b""
                while not stop.is_set():
                    with contextlib.suppress(OSError):
                        sock.send(b" ")
                    try:
                        chunk = sock.recv(4096)
                    except socket.timeout:
                        continue
                    if not chunk:
                        break
                    data += chunk
                if data:
                    counts.add(f"slow body got {data.split(b' ', 2)[1].decode()}")
        except OSError as e:
            counts.add(f"slow body error {type(e).__name__}")


def flood(port: int, counts: Counts, stop: threading.Event) -> None:
    chunk = b"x" * 65536
    for _ in range(MAX_OPENS):
        if stop.is_set():
            return
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sent = 0
                with contextlib.suppress(OSError):
                    sock.sendall(request(b"", key=None, length=15_000_000))
                    while sent < 4_000_000 and not stop.is_set():
                        sent += sock.send(chunk)
                data = b""
                with contextlib.suppress(OSError):
                    while chunk_in := sock.recv(65536):
                        data += chunk_in
                counts.add(
                    f"flood got {data.split(b' ', 2)[1].decode()}" if data else "flood: none"
                )
                counts.add("flood MB sent", sent // 1_000_000)
        except OSError as e:
            counts.add(f"flood error {type(e).__name__}")


def group_of(pid: int) -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry.name}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[2]) == pid:
                    pids.append(int(entry.name))
    return pids


def sample(pid: int) -> tuple[float, int]:
    """RSS (MB) and open file descriptors of the server's process group."""
    rss, fds = 0.0, 0
    for member in group_of(pid):
        with contextlib.suppress(OSError):
            with open(f"/proc/{member}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1]) / 1024
            fds += len(os.listdir(f"/proc/{member}/fd"))
    return rss, fds


def run(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    argv = [*TWISTD, "-n", "--pidfile=", "mockoai", "--listen", f"tcp:{port}:interface=127.0.0.1"]
    profile = tempfile.NamedTemporaryFile("w", prefix="mockoai-soak-", suffix=".toml")  # noqa: SIM115
    profile.write(
        f'[[models]]\nid = "gpt-4o"\n\n[[models]]\nid = "slow-stream"\nitl = {args.reset_itl}\n'
    )
    profile.flush()
    argv += ["--api-key", KEY, "--http", args.http, "--articles", "256", "--config", profile.name]
    argv += args.server_args.split()
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    log = tempfile.NamedTemporaryFile(prefix="mockoai-soak-", suffix=".log")  # noqa: SIM115
    server = subprocess.Popen(argv, env=env, stdout=log, stderr=log, start_new_session=True)
    counts = Counts()
    samples: dict[str, list[tuple[float, int]]] = collections.defaultdict(list)
    threads: list[threading.Thread] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            with contextlib.suppress(OSError):
                url = f"http://127.0.0.1:{port}/health"
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        break
            time.sleep(0.2)
        samples["start"].append(sample(server.pid))
        everyone = threading.Event()
        attack = threading.Event()

        def spawn(target: Callable[..., None], *more: Any) -> None:
            thread = threading.Thread(target=target, args=(port, *more), daemon=True)
            thread.start()
            threads.append(thread)

        for _ in range(args.clients):
            spawn(normal_client, counts, everyone)

        def phase(name: str, seconds: float) -> None:
            counts.phase = name
            end = time.monotonic() + seconds
            started = time.monotonic()
            while time.monotonic() < end:
                time.sleep(1.0)
                samples[name].append(sample(server.pid))
            samples[name + " seconds"] = [(time.monotonic() - started, 0)]

        phase("before", args.calm)
        counts.phase = "during"
        attackers = len(threads)
        spawn(resetter, args.resets, counts, attack)
        for _ in range(args.slow):
            spawn(slow_body, counts, attack)
        for _ in range(args.flood):
            spawn(flood, counts, attack)
        phase("during", args.duration)
        attack.set()
        for thread in threads[attackers:]:
            thread.join(15)  # what the attackers still had in flight counts as during
        phase("after", args.calm)
        everyone.set()
        for thread in threads:
            thread.join(15)
        time.sleep(args.settle)
        samples["end"].append(sample(server.pid))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        log.seek(0)
        text = log.read().decode("utf-8", "replace")
        log.close()
        profile.close()
    return {"counts": counts, "samples": samples, "log": text}


def report(result: dict[str, Any], args: argparse.Namespace) -> str:
    counts: Counts = result["counts"]
    samples = result["samples"]
    lines = [
        f"mockoai `--http {args.http}`, {args.clients} normal clients; attack for "
        f"{args.duration:g} s: {args.resets:g} mid-stream resets/s, {args.slow} slow bodies, "
        f"{args.flood} keyless flooders (15 MB announced, up to 4 MB sent each)",
        "",
        "| phase | normal req/s | p50 / p99 ms | normal errors | hostile clients got "
        "| RSS MB (min-max) | fds (min-max) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("before", "during", "after"):
        tally = counts.tally[name]
        seconds = samples[name + " seconds"][0][0]
        ok = tally["normal 200"]
        latency = sorted(counts.latency[name])
        p50 = statistics.median(latency) * 1000 if latency else 0.0
        p99 = latency[int(len(latency) * 0.99)] * 1000 if latency else 0.0
        errors = {k: v for k, v in tally.items() if k.startswith("normal") and k != "normal 200"}
        errors.pop("normal reconnects", None)
        hostile = {k: v for k, v in tally.items() if not k.startswith("normal")}
        rss = [r for r, _ in samples[name]]
        fds = [f for _, f in samples[name]]
        lines.append(
            f"| {name} | {ok / seconds:,.0f} | {p50:.1f} / {p99:.1f} "
            f"| {_show(errors) or 'none'} | {_show(hostile) or '-'} "
            f"| {min(rss):.1f}-{max(rss):.1f} | {min(fds)}-{max(fds)} |"
        )
    start_rss, start_fds = samples["start"][0]
    end_rss, end_fds = samples["end"][0]
    reconnects = sum(counts.tally[p]["normal reconnects"] for p in counts.tally)
    bad = [w for w in ("Traceback", "Unhandled", "CRITICAL", "critical") if w in result["log"]]
    lines += [
        "",
        f"RSS {start_rss:.1f} MB at start, {end_rss:.1f} MB {args.settle:g} s after the end; "
        f"open fds {start_fds} at start, {end_fds} at the end; normal clients reconnected "
        f"{reconnects} times (--keepalive-requests); server log: "
        + (f"**{', '.join(bad)}**" if bad else "no traceback"),
    ]
    return "\n".join(lines)


def _show(tally: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v:,}" for k, v in sorted(tally.items()))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    p.add_argument("--duration", type=float, default=60.0, help="seconds of attack")
    p.add_argument("--calm", type=float, default=10.0, help="seconds before and after")
    p.add_argument("--settle", type=float, default=12.0, help="seconds before the last sample")
    p.add_argument("--http", choices=("lean", "twisted"), default="lean")
    p.add_argument("--clients", type=int, default=8, help="normal keep-alive clients")
    p.add_argument("--resets", type=float, default=20.0, help="mid-stream resets per second")
    p.add_argument("--slow", type=int, default=50, help="slow-body connections")
    p.add_argument("--flood", type=int, default=20, help="keyless flooding connections")
    p.add_argument("--reset-itl", type=float, default=20.0, help="ms a token of reset streams")
    p.add_argument("--server-args", default="", help="more server options")
    p.add_argument("--show-log", action="store_true", help="print the server's log")
    args = p.parse_args(argv)
    result = run(args)
    if args.show_log:
        print(result["log"], file=sys.stderr)
    print(report(result, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
