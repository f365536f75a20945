"""
Benchmark driver: mockoai against a raw-Twisted baseline, in one run.

Absolute numbers on a shared 2-core machine swing by tens of percent from
one minute to the next, so every figure is also reported as a ratio to
``bench/baseline_server.py`` (the fastest a Twisted server can answer the
same requests), measured in the same run, interleaved with the server
under test.  The server is pinned to one core (``taskset -c 0``), every
load client to the other (``taskset -c 1``).

    python bench/run.py --quick            # ~3 s per measurement
    python bench/run.py                    # 10 s per measurement, wrk x3 (median)
    python bench/run.py --pypy             # also mockoai under Debian's pypy3
    python bench/run.py --peers            # also the other mock servers of peers.py

Prints a Markdown table (metric | baseline | mockoai | ratio) and writes
the same, with every raw measurement, to ``bench/results/<timestamp>.json``.
Installs nothing: it needs ``wrk`` (``apt-get install -y wrk``) and
``taskset``.  All load goes to 127.0.0.1; every step has a hard timeout;
servers are killed (by process group) on any exit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import peers  # a sibling script: other projects' mock servers, for --peers

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"

TWISTD = '{python} -c "from twisted.scripts.twistd import run; run()"'
DEFAULT_COMMANDS = {
    "baseline": "{python} {bench}/baseline_server.py --port {port} {args}",
    "mockoai": TWISTD + " -n --pidfile= mockoai --listen tcp:{port}:interface=127.0.0.1 {args}",
}
ENDPOINTS = {
    "chat": "/v1/chat/completions",
    "completions": "/v1/completions",
    "embeddings": "/v1/embeddings",
}
#: What the wrk part measures (embeddings has its own part).
GENERATIONS = ("chat", "completions")
SLO_P50_MS = 1.0
SLO_P99_MS = 10.0
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


def log(msg: str) -> None:
    """Progress goes to stderr so stdout is the report alone."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- servers ------------------------------------------------------------------


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def expand(template: str, **values: Any) -> list[str]:
    """Split a command template and fill {python} {port} {bench} {repo}; {args} splices a list."""
    out: list[str] = []
    for word in shlex.split(template):
        if word == "{args}":
            out.extend(values["args"])
        else:
            out.append(word.format(**{k: v for k, v in values.items() if k != "args"}))
    return out


def group_members(pgid: int) -> Iterator[tuple[str, list[bytes]]]:
    """(pid, the fields of /proc/PID/stat after the command name) of a process group's processes."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            # Field 5 (pgrp) is the third after the parenthesised command name.
            if int(fields[2]) == pgid:
                yield entry.name, fields
        except (OSError, ValueError, IndexError):
            continue


def group_rss_kb(pgid: int) -> int:
    """VmRSS summed over every process of a process group (the server, its workers)."""
    total = 0
    for pid, _ in group_members(pgid):
        try:
            with open(f"/proc/{pid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"VmRSS:"):
                        total += int(line.split()[1])
                        break
        except (OSError, ValueError, IndexError):
            continue
    return total


def group_cpu_seconds(pgid: int) -> float:
    """
    utime + stime of every process of a process group, with the reaped
    children of each (cutime + cstime): a worker that exits between two
    samples keeps its share.
    """
    # Fields 14-17 of /proc/PID/stat: utime, stime, cutime, cstime.
    ticks = sum(sum(int(x) for x in fields[11:15]) for _, fields in group_members(pgid))
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    """One server under test: a command template, a phase's arguments, a process."""

    name: str
    template: str
    python: str
    args: list[str]
    pin: list[str]
    env: dict[str, str]
    workdir: Path
    #: A GET answered with a 200 once the server serves.
    health: str = "/health"
    #: The parts this server takes part in (None: all); a peer serves only some.
    only: frozenset[str] | None = None
    #: Check that it answers the wrk scripts' requests before measuring them.
    probe: bool = False
    port: int = 0
    #: Why it did not start, when it did not.
    failure: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    argv: list[str] = field(default_factory=list)
    log_path: Path | None = None
    _log: IO[bytes] | None = None

    def start(self) -> None:
        """Start pinned on a free loopback port; return once GET C{health} answers."""
        self.port = free_port()
        self.argv = self.pin + expand(
            self.template,
            python=self.python,
            port=self.port,
            bench=str(BENCH),
            repo=str(REPO),
            args=self.args,
        )
        self.log_path = self.workdir / f"{self.name}-{self.port}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        log(f"start {self.name}: {shlex.join(self.argv)}")
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=self.env,
            start_new_session=True,  # its own process group: killed whole in stop()
        )
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}\n{self.tail()}")
            if health_ok(self.port, self.health):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {READY_TIMEOUT:.0f} s\n{self.tail()}")

    def tail(self, lines: int = 20) -> str:
        """The end of the server's log, to say why it did not start."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def takes(self, part: str) -> bool:
        """Whether this server is measured in a part of the run."""
        return self.only is None or part in self.only

    def cpu_seconds(self) -> float | None:
        """CPU time the server's process group has used so far."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        return group_cpu_seconds(self.proc.pid)

    def rss_mb(self) -> float | None:
        """Resident memory of the server's process group, in MiB."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        return round(group_rss_kb(self.proc.pid) / 1024.0, 1)

    def stop(self) -> None:
        """SIGTERM the process group, then SIGKILL it if it is still there."""
        proc, self.proc = self.proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log(f"{self.name} ignored SIGTERM for {STOP_TIMEOUT:.0f} s: SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # stragglers (workers) too
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None


def health_ok(port: int, path: str = "/health") -> bool:
    """True when 127.0.0.1:port answers GET C{path} with a 200."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(request.encode("ascii"))
            return sock.recv(64).startswith((b"HTTP/1.1 200", b"HTTP/1.0 200"))
    except OSError:
        return False


@contextlib.contextmanager
def running(servers: Sequence[Server]) -> Iterator[list[Server]]:
    """Start servers (skipping any that fail), and always stop them."""
    up: list[Server] = []
    try:
        for server in servers:
            try:
                server.start()
                up.append(server)
            except RuntimeError as e:
                log(f"SKIP {server.name}: {e}")
                server.failure = str(e)
                server.stop()
        yield up
    finally:
        for server in servers:
            server.stop()


class RssSampler:
    """Samples a server's RSS every 100 ms in a thread; keeps the peak."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.peak: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = self.server.rss_mb()
            if rss is not None and (self.peak is None or rss > self.peak):
                self.peak = rss
            self._stop.wait(0.1)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


# -- clients ------------------------------------------------------------------


@dataclass
class Ctx:
    """Run-wide settings the measurements share."""

    duration: float
    repeat: int
    client_pin: list[str]
    python: str
    max_tokens: int
    events: int
    raw: dict[str, dict[str, Any]]

    def record(self, server: Server, key: str, value: Any) -> None:
        """Keep every raw measurement for the JSON file."""
        self.raw.setdefault(server.name, {}).setdefault(key, []).append(value)


def run_client(
    argv: list[str], timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """A load client, pinned, bounded by a hard timeout (killed when it expires)."""
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=BENCH,
        env={**os.environ, **(env or {})},
    )


_WRK_RE = re.compile(r"^WRK_RESULT (\{.*\})$", re.M)


def wrk(
    ctx: Ctx, server: Server, endpoint: str, conns: int, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """
    One wrk run (1 thread): req/s, latency percentiles, errors, and the
    server's CPU time per request wrk completed (its process group's, read
    from /proc just before and after: unlike req/s it does not drop when
    other jobs take the server's core).
    """
    url = f"http://127.0.0.1:{server.port}{ENDPOINTS[endpoint]}"
    script = str(BENCH / "wrk" / f"{endpoint}.lua")
    argv = [*ctx.client_pin, "wrk", "-t1", f"-c{conns}", f"-d{ctx.duration:g}s"]
    argv += ["--timeout", "5s", "-s", script, url]
    env = {"BENCH_MAX_TOKENS": str(ctx.max_tokens), **(env or {})}
    cpu0 = server.cpu_seconds()
    try:
        proc = run_client(argv, ctx.duration + 30, env)
    except subprocess.TimeoutExpired:
        return {"error": "timeout"}
    cpu1 = server.cpu_seconds()
    match = _WRK_RE.search(proc.stdout)
    if proc.returncode != 0 or match is None:
        return {"error": (proc.stderr or proc.stdout)[-500:]}
    raw = json.loads(match.group(1))
    seconds = raw["duration_us"] / 1e6
    errors = sum(raw["errors"].values())
    result = {
        "rps": round((raw["requests"] - raw["errors"]["status"]) / seconds, 1),
        "p50_ms": raw["p50_us"] / 1000.0,
        "p90_ms": raw["p90_us"] / 1000.0,
        "p99_ms": raw["p99_us"] / 1000.0,
        "errors": errors,
        "raw": raw,
    }
    if cpu0 is not None and cpu1 is not None and raw["requests"]:
        result["server_cpu_s"] = round(cpu1 - cpu0, 3)
        result["server_cpu_us"] = round((cpu1 - cpu0) / raw["requests"] * 1e6, 1)
    return result


#: What a 200 to each wrk script's request must hold: its "object" and the text.
SHAPES: dict[str, tuple[str, Callable[[Any], object]]] = {
    "chat": ("chat.completion", lambda doc: doc["choices"][0]["message"]["content"]),
    "completions": ("text_completion", lambda doc: doc["choices"][0]["text"]),
}
_PROBE_RE = re.compile(r"^PROBE_STATUS (\d+)\nPROBE_BODY (\d+)\n", re.M)


def probe(ctx: Ctx, server: Server, endpoint: str) -> str | None:
    """
    None when the server answers the request of ``wrk/<endpoint>.lua`` (sent
    by wrk itself, byte for byte) with a 200 of the expected shape, else what
    it answered: a server that refuses the request is reported, not measured.
    """
    url = f"http://127.0.0.1:{server.port}{ENDPOINTS[endpoint]}"
    argv = [*ctx.client_pin, "wrk", "-t1", "-c1", "-d1s", "--timeout", "5s"]
    argv += ["-s", str(BENCH / "wrk" / "probe.lua"), url]
    env = {"BENCH_MAX_TOKENS": str(ctx.max_tokens), "BENCH_SCRIPT": f"{endpoint}.lua"}
    try:
        proc = run_client(argv, 30, env)
    except subprocess.TimeoutExpired:
        return "no answer within 30 s"
    match = _PROBE_RE.search(proc.stdout)
    if match is None:
        return "no answer: " + " ".join((proc.stderr or proc.stdout).split())[-200:]
    status, rest = int(match.group(1)), proc.stdout[match.end() :]
    body = " ".join(rest[: int(match.group(2))].split())
    if status != 200:
        return f"HTTP {status}: {body[:200]}"
    kind, text = SHAPES[endpoint]
    try:
        doc = json.JSONDecoder().raw_decode(rest)[0]
        if doc["object"] == kind and isinstance(text(doc), str):
            return None
    except (ValueError, LookupError, TypeError):
        pass
    return f"HTTP 200 but not a {kind}: {body[:200]}"


def sse_load(ctx: Ctx, server: Server, extra: list[str], duration: float) -> dict[str, Any]:
    """One sse_load.py run (streams, or --open-loop), parsed from its --json line."""
    argv = [*ctx.client_pin, ctx.python, str(BENCH / "sse_load.py"), "--port", str(server.port)]
    argv += ["-d", f"{duration:g}", "--max-tokens", str(ctx.events), "--json", *extra]
    return json_client(argv, duration + 120)


def paced_gaps(ctx: Ctx, server: Server, concurrency: int) -> dict[str, Any]:
    """One paced_gaps.py run: client-measured TTFT and inter-token gaps."""
    argv = [*ctx.client_pin, ctx.python, str(BENCH / "paced_gaps.py"), "--port", str(server.port)]
    argv += ["-c", str(concurrency), "-d", f"{ctx.duration:g}", "--warmup", "2"]
    argv += ["--max-tokens", str(ctx.events), "--json"]
    return json_client(argv, ctx.duration + 60)


def json_client(argv: list[str], timeout: float) -> dict[str, Any]:
    """Run a load client that ends with a JSON line; its parsed result, or an error."""
    try:
        proc = run_client(argv, timeout)
    except subprocess.TimeoutExpired:
        return {"error": "timeout"}
    try:
        result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": (proc.stderr or proc.stdout)[-500:]}
    return result


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    """The median over repeats: one bad run on a noisy machine does not move it."""
    values = [r[key] for r in runs if key in r]
    return round(statistics.median(values), 3) if values else None


# -- measurements ---------------------------------------------------------------


class Table:
    """Metric rows in report order: key -> (label, better, {server: value})."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[str, str | None, dict[str, Any]]] = {}

    def put(self, key: str, label: str, better: str | None, server: str, value: Any) -> None:
        """Set one server's value of a row (rows keep first-seen order)."""
        self.rows.setdefault(key, (label, better, {}))[2][server] = value


CPU_LABEL = "server CPU µs/request"


def measure_wrk(ctx: Ctx, everyone: list[Server], table: Table, notes: list[str]) -> None:
    """
    Non-streaming chat and completions at c=64 (throughput) and c=1 (latency).
    A server with ``probe`` set (a peer) is first sent each script's request
    once: if it refuses it or answers another shape, that endpoint's errors
    cell and a note say so and it is not measured there.
    """
    for endpoint in GENERATIONS:
        servers, refused = [], []
        for server in everyone:
            why = probe(ctx, server, endpoint) if server.probe else None
            if why is None:
                servers.append(server)
                continue
            refused.append(server)
            log(f"wrk {endpoint}: {server.name} refuses wrk/{endpoint}.lua's request: {why}")
            ctx.record(server, f"wrk.{endpoint}.probe", why)
            notes.append(f"- {server.name} not measured on {endpoint}: wrk/{endpoint}.lua -> {why}")
        for conns in (64, 1):
            runs: dict[str, list[dict[str, Any]]] = {s.name: [] for s in servers}
            for i in range(ctx.repeat):
                for server in servers:  # interleaved: drift hits every server alike
                    with RssSampler(server) as rss:
                        result = wrk(ctx, server, endpoint, conns)
                    result["rss_peak_mb"] = rss.peak
                    runs[server.name].append(result)
                    ctx.record(server, f"wrk.{endpoint}.c{conns}", result)
                    log(
                        f"wrk {endpoint} c={conns} #{i + 1} {server.name}: "
                        f"{result.get('rps', result.get('error'))} req/s, "
                        f"server CPU {result.get('server_cpu_us')} µs/request"
                    )
            prefix = f"{endpoint} c={conns}"
            for server in servers:
                r = runs[server.name]
                put_wrk_rows(table, f"{endpoint}.c{conns}", prefix, server.name, r)
                if endpoint == "chat" and conns == 64:
                    peaks = [x["rss_peak_mb"] for x in r if x.get("rss_peak_mb") is not None]
                    peak = max(peaks) if peaks else None
                    table.put(
                        "rss.load", "RSS under load (wrk chat c=64), MB", "lower", server.name, peak
                    )
            for server in refused:
                key = f"{endpoint}.c{conns}"
                table.put(f"{key}.errors", f"{prefix}: errors", None, server.name, "refused")


def put_wrk_rows(
    table: Table, key: str, prefix: str, server: str, runs: list[dict[str, Any]]
) -> None:
    """One server's wrk figures (medians of ``runs``): req/s, p50, p99, server CPU, errors."""
    table.put(f"{key}.rps", f"{prefix}: req/s", "higher", server, median_of(runs, "rps"))
    table.put(f"{key}.p50", f"{prefix}: p50 ms", "lower", server, median_of(runs, "p50_ms"))
    table.put(f"{key}.p99", f"{prefix}: p99 ms", "lower", server, median_of(runs, "p99_ms"))
    cpu = median_of(runs, "server_cpu_us")
    table.put(f"{key}.cpu_us", f"{prefix}: {CPU_LABEL}", "lower", server, cpu)
    errors = sum(x.get("errors", 0) + ("error" in x) for x in runs)
    table.put(f"{key}.errors", f"{prefix}: errors", None, server, errors)


def measure_embeddings(ctx: Ctx, servers: list[Server], table: Table) -> None:
    """
    ``/v1/embeddings`` with 1 and 64 inputs per request at c=64 (and 1 input at
    c=1): the baseline answers with prebuilt bodies of the same size, so the
    ratio is what making the vectors and their JSON costs.
    """
    for inputs, conns in ((1, 64), (1, 1), (64, 64)):
        runs: dict[str, list[dict[str, Any]]] = {s.name: [] for s in servers}
        for i in range(ctx.repeat):
            for server in servers:
                result = wrk(ctx, server, "embeddings", conns, {"BENCH_INPUTS": str(inputs)})
                runs[server.name].append(result)
                ctx.record(server, f"embeddings.i{inputs}.c{conns}", result)
                log(
                    f"wrk embeddings {inputs} input(s) c={conns} #{i + 1} {server.name}: "
                    f"{result.get('rps', result.get('error'))} req/s"
                )
        prefix = f"embeddings {inputs} input{'s' if inputs > 1 else ''} c={conns}"
        key = f"embeddings.i{inputs}.c{conns}"
        for server in servers:
            put_wrk_rows(table, key, prefix, server.name, runs[server.name])


def measure_streams(
    ctx: Ctx,
    servers: list[Server],
    table: Table,
    levels: list[int],
    paced: float | None,
    endpoint: str = "chat",
) -> None:
    """
    Streams at each concurrency: unpaced (events/s) or paced (gap vs ITL).
    ``endpoint`` is one of sse_load.py's: chat, or another API's streams
    (``tools``: chat whose events are a tool call's argument fragments;
    ``messages``: Anthropic's Messages API, its text deltas; ``responses``:
    OpenAI's Responses API, its output_text deltas).
    """
    kind = f"paced {paced:g} ms" if paced else "unpaced"
    if endpoint != "chat":
        kind = f"{endpoint} {kind}"
    for c in levels:
        for server in servers:
            if paced:
                # asyncio spends ~20 us per event: at 1,000 streams it would
                # measure its own lag, so paced gaps come from the epoll client.
                r = paced_gaps(ctx, server, c)
            else:
                r = sse_load(ctx, server, ["-c", str(c), "--endpoint", endpoint], ctx.duration)
            k = f"stream.{'paced' if paced else 'unpaced'}.c{c}"
            if endpoint != "chat":
                k = f"stream.{endpoint}.c{c}"
            ctx.record(server, k, r)
            log(
                f"stream {kind} c={c} {server.name}: {r.get('events_per_s', r.get('error'))} "
                f"events/s, client CPU {r.get('client_cpu_pct')} %"
            )
            p = f"stream {kind} c={c}"
            ttft, gap = r.get("ttft_ms") or {}, r.get("gap_ms") or {}
            errors = r.get("errors", 1 if "error" in r else 0)
            if paced:
                rows = [
                    ("events_s", "events/s", "higher", r.get("events_per_s")),
                    ("gap_p50", f"gap p50 ms (target {paced:g})", "lower", gap.get("p50")),
                    ("gap_p99", f"gap p99 ms (target {paced:g})", "lower", gap.get("p99")),
                    ("ttft_p99", "TTFT p99 ms", "lower", ttft.get("p99")),
                    ("errors", "errors", None, errors),
                ]
            else:
                rows = [
                    ("streams_s", "streams/s", "higher", r.get("streams_per_s")),
                    ("events_s", "events/s", "higher", r.get("events_per_s")),
                    ("tokens_s", "tokens/s", "higher", r.get("tokens_per_s")),
                    ("ttft_p50", "TTFT p50 ms", "lower", ttft.get("p50")),
                    ("ttft_p99", "TTFT p99 ms", "lower", ttft.get("p99")),
                    ("errors", "errors", None, errors),
                ]
            for suffix, label, better, value in rows:
                table.put(f"{k}.{suffix}", f"{p}: {label}", better, server.name, value)
            table.put(f"{k}.cpu", f"{p}: client CPU %", None, server.name, r.get("client_cpu_pct"))


def open_loop_passes(r: dict[str, Any]) -> bool:
    """The SLO: p50 < 1 ms, p99 < 10 ms, no errors, and the load actually served."""
    lat = r.get("latency_ms") or {}
    return (
        r.get("errors", 1) == 0
        and lat.get("p50") is not None
        and lat["p50"] < SLO_P50_MS
        and lat["p99"] < SLO_P99_MS
        and r.get("completed", 0) >= 0.9 * r.get("sent", 1)
    )


def measure_open_loop(ctx: Ctx, servers: list[Server], table: Table) -> None:
    """The highest Poisson rate of non-streaming chat keeping p50 < 1 ms and p99 < 10 ms."""
    step = min(ctx.duration, 5.0)
    for server in servers:
        tried: dict[float, dict[str, Any]] = {}

        def attempt(rate: float, server: Server = server, tried: dict[float, Any] = tried) -> bool:
            # A p99 over a few seconds is at the mercy of one hiccup of a shared
            # machine: a failed rate gets a second try before it counts as failed.
            for _ in range(2):
                argv = ["--open-loop", f"{rate:g}", "--connections", "64"]
                r = sse_load(ctx, server, argv, step)
                tried[rate] = r
                lat, lag = r.get("latency_ms") or {}, r.get("client_lag_ms") or {}
                log(
                    f"open loop {server.name} {rate:g}/s: p50 {lat.get('p50')} p99 "
                    f"{lat.get('p99')} ms, client lag p99 {lag.get('p99')} ms, "
                    f"errors {r.get('errors')}"
                )
                if open_loop_passes(r):
                    return True
            return False

        best, worst, rate = 0.0, 0.0, 500.0
        for _ in range(7):  # 500 .. 32000 req/s
            if not attempt(rate):
                worst = rate
                break
            best, rate = rate, rate * 2
        # Refine between the last pass and the first failure, to within 1/16
        # of the rate (doubling alone leaves steps of 2k above 8k/s: a server
        # sustaining 9.5k/s would be reported at 8k).
        for _ in range(4 if worst else 0):
            if worst - best <= best / 16:
                break
            mid = round((best + worst) / 2, -1)
            if attempt(mid):
                best = mid
            else:
                worst = mid
        ctx.record(server, "open_loop", {"steps": tried, "max_rate": best})
        label = f"open-loop chat: max req/s with p50 < {SLO_P50_MS:g} ms, p99 < {SLO_P99_MS:g} ms"
        table.put("open_loop.max", label, "higher", server.name, best or None)
        at = tried.get(best, {}).get("latency_ms") or {}
        table.put(
            "open_loop.p50",
            "open-loop chat: p50 ms at that rate",
            "lower",
            server.name,
            at.get("p50"),
        )
        table.put(
            "open_loop.p99",
            "open-loop chat: p99 ms at that rate",
            "lower",
            server.name,
            at.get("p99"),
        )
        lag = tried.get(best, {}).get("client_lag_ms") or {}
        table.put(
            "open_loop.lag",
            "open-loop chat: client send lag p99 ms (should be ~0)",
            None,
            server.name,
            lag.get("p99"),
        )


def measure_idle(ctx: Ctx, servers: list[Server], table: Table, count: int) -> None:
    """RSS with N idle keep-alive connections, and wrk chat c=64 beside them."""
    for server in servers:
        hold = ctx.repeat * (ctx.duration + 3) + 60
        argv = [*ctx.client_pin, ctx.python, str(BENCH / "idle_conns.py")]
        argv += ["--port", str(server.port), "-n", str(count), "--hold", f"{hold:g}", "--json"]
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=BENCH
        )
        report: dict[str, Any] = {}
        try:
            line = read_line(proc, "HELD ", count / 100.0 + 60)
            opened = int(line.split()[1]) if line else 0
            time.sleep(1.0)  # let the server settle after the connect burst
            rss = server.rss_mb()
            runs = []
            for _ in range(ctx.repeat):
                runs.append(wrk(ctx, server, "chat", 64))
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
            with contextlib.suppress(ValueError, IndexError):
                report = json.loads(out.strip().splitlines()[-1])
            if not report:
                report = {"error": err[-500:]}
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        ctx.record(server, f"idle.{count}", {"report": report, "rss_mb": rss, "wrk": runs})
        held = report.get("held_at_end")
        log(f"idle {server.name}: opened {opened}, held {held}, RSS {rss} MB")
        n = f"{count:,}"
        table.put("idle.rss", f"RSS with {n} idle connections, MB", "lower", server.name, rss)
        table.put("idle.held", f"idle connections held (of {n})", None, server.name, held)
        table.put(
            "idle.rps",
            f"chat c=64 req/s beside {n} idle connections",
            "higher",
            server.name,
            median_of(runs, "rps"),
        )
        table.put(
            "idle.cpu_us",
            f"chat c=64 beside {n} idle connections: {CPU_LABEL}",
            "lower",
            server.name,
            median_of(runs, "server_cpu_us"),
        )


def read_line(proc: subprocess.Popen[str], prefix: str, timeout: float) -> str | None:
    """The first stdout line starting with C{prefix}, or None after C{timeout} seconds."""
    found: list[str] = []

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(prefix):
                found.append(line)
                return

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    thread.join(timeout)
    return found[0] if found else None


# -- report -------------------------------------------------------------------


def fmt(value: Any) -> str:
    """Three significant figures are all a noisy machine supports."""
    if value is None:
        return "—"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def ratio(value: Any, base: Any) -> float | None:
    """Server / baseline, when both are numbers."""
    if isinstance(value, (int, float)) and isinstance(base, (int, float)) and base:
        return round(value / base, 3)
    return None


def machine() -> dict[str, Any]:
    """What the figures depend on: architecture, cores, CPU model, Python, kernel."""
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "arch": platform.machine(),
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "kernel": platform.release(),
    }


def git_head() -> dict[str, Any]:
    """The checkout's commit, read-only (no index refresh, no lock)."""
    info: dict[str, Any] = {}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = ["git", "--no-optional-locks", "-C", str(REPO)]
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        info["commit"] = head.stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        info["dirty"] = bool(dirty.stdout.strip())
    return info


def render(
    table: Table, names: list[str], header: list[str], notes: list[str]
) -> tuple[str, list[dict[str, Any]]]:
    """The Markdown report and the same rows for JSON."""
    base, others = names[0], names[1:]
    cols = ["metric", base, *others] + [f"ratio ({o}/{base})" for o in others]
    lines = [*header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    rows = []
    for key, (label, better, values) in table.rows.items():
        ratios = {o: ratio(values.get(o), values.get(base)) if better else None for o in others}
        cells = [label] + [fmt(values.get(n)) for n in names] + [fmt(ratios[o]) for o in others]
        lines.append("| " + " | ".join(cells) + " |")
        rows.append(
            {"key": key, "metric": label, "better": better, "values": values, "ratio": ratios}
        )
    lines += ["", *notes]
    return "\n".join(lines).rstrip() + "\n", rows


# -- main -----------------------------------------------------------------------


def mockoai_available(python: str, env: dict[str, str]) -> str | None:
    """None if C{python} can import mockoai and twistd lists its plugin, else why not."""
    check = (
        "import sys, mockoai, klein\n"
        "from twisted.plugin import getPlugins\n"
        "from twisted.application.service import IServiceMaker\n"
        "sys.exit(0 if any(p.tapname == 'mockoai' for p in getPlugins(IServiceMaker)) else 3)\n"
    )
    try:
        proc = subprocess.run(
            [python, "-c", check], capture_output=True, text=True, timeout=60, env=env, cwd=REPO
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    if proc.returncode == 0:
        return None
    if proc.returncode == 3:
        return "twistd does not list the mockoai plugin"
    return (proc.stderr.strip().splitlines() or ["import failed"])[-1]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options; --quick only shortens the durations."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    p.add_argument("--quick", action="store_true", help="3 s per measurement")
    p.add_argument("--repeat", type=int, default=3, help="wrk runs per figure (median)")
    p.add_argument("--pypy", action="store_true", help="also run mockoai under pypy3")
    p.add_argument("--pypy-python", default="pypy3", help="the PyPy interpreter for --pypy")
    p.add_argument("--no-mockoai", action="store_true", help="the baseline alone")
    p.add_argument(
        "--only",
        default="wrk,stream,tools,messages,responses,embeddings,paced,openloop,idle",
        help="comma list of parts: wrk, stream, tools, messages, responses, embeddings, "
        "paced, openloop, idle",
    )
    p.add_argument("--streams", default="1,64,256,1000", help="stream concurrency levels")
    p.add_argument("--itl", type=float, default=20.0, help="ms between events when paced")
    p.add_argument("--events", type=int, default=64, help="content events (tokens) per stream")
    p.add_argument("--max-tokens", type=int, default=32, help="max_tokens of wrk requests")
    p.add_argument("--idle-conns", type=int, default=10_000, help="idle connections to hold")
    p.add_argument("--server-core", type=int, default=0, help="CPU the servers are pinned to")
    p.add_argument("--client-core", type=int, default=1, help="CPU the clients are pinned to")
    p.add_argument("--baseline-cmd", default=DEFAULT_COMMANDS["baseline"], help="template")
    p.add_argument(
        "--mockoai-cmd",
        default=DEFAULT_COMMANDS["mockoai"],
        help="template: {python} {port} {args} {bench} {repo}",
    )
    p.add_argument("--mockoai-args", default="", help="extra arguments for mockoai")
    p.add_argument(
        "--peers", action="store_true", help=f"also every peer: {', '.join(peers.PEERS)}"
    )
    p.add_argument(
        "--peer",
        action="append",
        default=[],
        choices=list(peers.PEERS),
        help="also this peer (repeatable); install with bench/peers.py",
    )
    p.add_argument(
        "--peers-dir", type=Path, default=peers.DEFAULT_DIR, help="where peers.py installed them"
    )
    p.add_argument("--no-save", action="store_true", help="do not write bench/results/*.json")
    args = p.parse_args(argv)
    if args.quick:
        args.duration = 3.0
    if not 0 < args.duration <= 600:
        p.error("--duration must be in (0, 600] seconds")
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    if args.peers:
        args.peer = list(peers.PEERS)
    args.peer = list(dict.fromkeys(args.peer))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Check tools, start each phase's servers, measure, report, save."""
    args = parse_args(argv)
    command = (
        shlex.join([Path(sys.executable).name, *sys.argv]) if argv is None else shlex.join(argv)
    )
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 2
    notes: list[str] = []
    pin_server: list[str] = []
    pin_client: list[str] = []
    cores = os.cpu_count() or 1
    if shutil.which("taskset") is None:
        notes.append("- taskset not found: nothing pinned (apt-get install -y util-linux).")
    elif cores < 2:
        notes.append("- one core only: server and clients share it; expect lower ratios.")
    else:
        pin_server = ["taskset", "-c", str(args.server_core)]
        pin_client = ["taskset", "-c", str(args.client_core)]
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {args.client_core})  # the driver stays off the server core
    # Children inherit this: 10k idle connections need the fd limit raised.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, args.idle_conns + 4096)
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < args.idle_conns + 1024 and "idle" in args.only:
        notes.append(f"- RLIMIT_NOFILE is {want}: {args.idle_conns:,} idle connections may fail.")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so finally blocks run

    env = {k: v for k, v in os.environ.items() if not k.startswith("MOCKOAI_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    stream_args = [
        "--tokens-mean",
        str(args.events),
        "--tokens-stddev",
        "0",
        "--stream-tokens",
        "1",
    ]
    mock_extra = shlex.split(args.mockoai_args)
    parts = {p.strip() for p in args.only.split(",") if p.strip()}
    levels = [int(c) for c in args.streams.split(",") if c.strip()]

    candidates: list[tuple[str, str, str, list[str]]] = [
        ("baseline", args.baseline_cmd, sys.executable, ["--events", str(args.events)])
    ]
    skipped: dict[str, str] = {}
    if not args.no_mockoai:
        pythons = [("mockoai", sys.executable)]
        if args.pypy:
            pypy = shutil.which(args.pypy_python)
            if pypy is None:
                skipped["mockoai-pypy"] = f"{args.pypy_python} not found (apt-get install -y pypy3)"
            else:
                # Absolute: the server runs from another directory (a relative
                # .venv-pypy/bin/python made taskset fail with exit 127).
                pythons.append(("mockoai-pypy", os.path.abspath(pypy)))
        for name, python in pythons:
            why = None
            if args.mockoai_cmd == DEFAULT_COMMANDS["mockoai"]:
                why = mockoai_available(python, env)
            if why is None:
                candidates.append((name, args.mockoai_cmd, python, stream_args + mock_extra))
            else:
                if name == "mockoai-pypy":
                    why += (
                        " (e.g. pypy3 -m venv /tmp/pypy && /tmp/pypy/bin/pip install . ,"
                        " then --pypy-python /tmp/pypy/bin/pypy3)"
                    )
                skipped[name] = why
    # Peers: other projects' mock servers, each from its own venv, in the wrk part only.
    peer_env = {k: v for k, v in os.environ.items() if not k.startswith("MOCKOAI_")}
    peer_env["PYTHONUNBUFFERED"] = "1"
    peer_dir = args.peers_dir.resolve()
    measured_peers: dict[str, peers.Peer] = {}
    for name in args.peer:
        peer = peers.PEERS[name]
        why = peers.status(peer, peer_dir)
        if why is None and "wrk" not in parts:
            why = "peers take part in the wrk part only"
        if why is None:
            measured_peers[name] = peer
            candidates.append((name, peer.template(), str(peer.python(peer_dir)), []))
            notes.append(f"- {name} ({peer.requirement}): {peer.configured}.")
        else:
            skipped[name] = why
    for name, why in skipped.items():
        log(f"SKIP {name}: {why}")
        notes.append(f"- {name} skipped: {why}")

    workdir = Path(tempfile.mkdtemp(prefix="mockoai-bench-"))
    ctx = Ctx(
        args.duration, args.repeat, pin_client, sys.executable, args.max_tokens, args.events, {}
    )
    table = Table()
    started = datetime.now(timezone.utc)

    def servers(extra: list[str], with_peers: bool) -> list[Server]:
        out = []
        for name, template, python, base in candidates:
            peer = measured_peers.get(name)
            if peer is None:
                out.append(Server(name, template, python, base + extra, pin_server, env, workdir))
            elif with_peers:
                out.append(
                    Server(
                        name,
                        template,
                        python,
                        [],
                        pin_server,
                        peer_env,
                        workdir,
                        health=peer.health,
                        only=frozenset({"wrk"}),
                        probe=True,
                    )
                )
        return out

    names: list[str] = [c[0] for c in candidates]
    commands: dict[str, list[str]] = {}
    phases: list[tuple[list[str], Callable[[list[Server]], None]]] = []

    def plain_phase(up: list[Server]) -> None:
        time.sleep(1.0)
        for server in up:
            table.put(
                "rss.idle", "RSS idle (after start), MB", "lower", server.name, server.rss_mb()
            )

        def taking(part: str) -> list[Server]:
            return [s for s in up if s.takes(part)]

        if "wrk" in parts:
            # A warm-up first, not counted: PyPy's JIT compiles the request path in its
            # first thousands of requests, and its first run would be the one measured.
            for server in taking("wrk"):
                wrk(ctx, server, "chat", 64)
            measure_wrk(ctx, taking("wrk"), table, notes)
        if "stream" in parts:
            measure_streams(ctx, taking("stream"), table, levels, None)
        if "tools" in parts:
            # Streamed tool calls beside plain streams, at the middle level.
            measure_streams(ctx, taking("tools"), table, [64], None, "tools")
        if "messages" in parts:
            # Anthropic's Messages streams beside chat's, in the same run.
            measure_streams(ctx, taking("messages"), table, levels, None, "messages")
        if "responses" in parts:
            # The Responses API's streams beside chat's, in the same run.
            measure_streams(ctx, taking("responses"), table, levels, None, "responses")
        if "embeddings" in parts:
            measure_embeddings(ctx, taking("embeddings"), table)
        if "openloop" in parts:
            measure_open_loop(ctx, taking("openloop"), table)
        if "idle" in parts:
            measure_idle(ctx, taking("idle"), table, args.idle_conns)

    def paced_phase(up: list[Server]) -> None:
        measure_streams(ctx, up, table, levels, args.itl)

    if parts & {
        "wrk",
        "stream",
        "tools",
        "messages",
        "responses",
        "embeddings",
        "openloop",
        "idle",
    }:
        phases.append(([], plain_phase))
    if "paced" in parts:
        phases.append((["--itl", f"{args.itl:g}"], paced_phase))
    try:
        for extra, phase in phases:
            planned = servers(extra, phase is plain_phase)
            with running(planned) as up:
                for s in up:
                    commands.setdefault(s.name, s.argv)
                for s in planned:
                    if s not in up:
                        why = " ".join(str(s.failure).split())[-300:]
                        notes.append(f"- {s.name} did not start: {why}")
                if not up or up[0].name != "baseline":
                    log("the baseline did not start: no ratios possible")
                    return 1
                phase(up)
    except KeyboardInterrupt:
        log("interrupted: servers stopped")
        return 130

    m = machine()
    pinned = f"server on core {args.server_core}, clients on core {args.client_core}"
    header = [
        f"## mockoai benchmark, {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {m['arch']}, {m['nproc']} cores, {m['cpu'] or 'unknown CPU'}, {m['python']}, "
        f"Linux {m['kernel']}; {pinned if pin_server else 'not pinned'}.",
        f"Command: `{command}` ({args.duration:g} s per measurement, wrk median of {args.repeat}).",
    ]
    hot = sorted(
        {
            key
            for key, (_, _, values) in table.rows.items()
            if key.endswith(".cpu")
            and any(isinstance(v, float) and v > 90 for v in values.values())
        }
    )
    if hot:
        notes.append(
            "- client CPU > 90 % in: "
            + ", ".join(h.removesuffix(".cpu") for h in hot)
            + " — the client, not the server, may be the limit there."
        )
    report, rows = render(table, names, header, notes)
    print(report)
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / f"{started:%Y%m%dT%H%M%SZ}.json"
        doc = {
            "started": started.isoformat(),
            "command": command,
            "machine": m,
            "git": git_head(),
            "settings": vars(args),
            "servers": {n: commands.get(n) for n in names},
            "skipped": skipped,
            "peers": {
                name: {
                    "requirement": peer.requirement,
                    "configured": peer.configured,
                    "freeze": peers.freeze(peer, peer_dir),
                }
                for name, peer in measured_peers.items()
            },
            "metrics": rows,
            "notes": notes,
            "raw": ctx.raw,
            "markdown": report,
        }
        out.write_text(json.dumps(doc, indent=1, default=str) + "\n")
        log(f"wrote {out.relative_to(REPO)}")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
