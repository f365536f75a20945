"""
Test harness: the real object graph on a fake clock, an in-memory HTTP/1.1
client that drives the production request path (L{MockSite} -> L{MockChannel}
-> L{MockRequest.process} -> L{Router}) without sockets, SSE parsing, and a
helper that runs ``twistd -n mockoai`` as a real process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from mockoai.ops.config import ModelSpec, Settings
from mockoai.ops.service import MockoaiService, build
from tests.optional import require_stack

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: A realistic wall-clock start for fake clocks (``created`` looks like a date).
EPOCH = 1_700_000_000.0

#: Settings every in-memory service gets unless overridden: a small corpus,
#: no listeners (requests arrive through L{Connection}), no idle timer.
TEST_DEFAULTS: dict[str, Any] = {"articles": 64, "listen": (), "idle_timeout": 0.0}


# --------------------------------------------------------------------------
# The object graph


def _model_spec(model: str | ModelSpec) -> ModelSpec:
    if isinstance(model, ModelSpec):
        return model
    owner = model.split("/", 1)[0] if "/" in model else "mockoai"
    return ModelSpec(model, owned_by=owner)


def make_service(clock: Clock | None = None, **overrides: Any) -> MockoaiService:
    """
    The real service tree (core, routes, router, site) for
    C{Settings.from_values(**overrides)} over ``clock`` (a fresh L{Clock} set to
    L{EPOCH} when not given).  ``models`` may be given as plain ids.
    Times are L{Settings} units: ``response_delay`` and ``itl`` in seconds.
    """
    if clock is None:
        clock = Clock()
        clock.advance(EPOCH)
    values = {**TEST_DEFAULTS, **overrides}
    require_stack(values.get("http", "auto"))
    if "models" in values:
        values["models"] = tuple(_model_spec(m) for m in values["models"])
    return build(Settings.from_values(**values), reactor=clock)


# --------------------------------------------------------------------------
# HTTP/1.1 responses parsed from raw bytes


@dataclass
class Response:
    """One HTTP response read off a transport (possibly not complete yet)."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    complete: bool
    chunked: bool = False

    def header(self, name: str) -> str | None:
        """The last value of header ``name`` (case-insensitive), or None."""
        values = self.header_values(name)
        return values[-1] if values else None

    def header_values(self, name: str) -> list[str]:
        lowered = name.lower()
        return [v for k, v in self.headers if k.lower() == lowered]

    def json(self) -> Any:
        return json.loads(self.body)

    def events(self) -> list[str]:
        """The ``data:`` payloads of an SSE body (strict framing)."""
        return sse_data(self.body)


def parse_responses(data: bytes, closed: bool = False) -> list[Response]:
    """
    Every response in ``data``, in order; the last may be incomplete.
    ``closed`` says the connection is gone (ends a body without a length).
    """
    responses: list[Response] = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            raise AssertionError(f"incomplete response head: {data[pos:]!r}")
        lines = data[pos:end].decode("latin-1").split("\r\n")
        version, status, reason = [*lines[0].split(" ", 2), ""][:3]
        if not version.startswith("HTTP/1."):
            raise AssertionError(f"not an HTTP response: {lines[0]!r}")
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        response = Response(int(status), reason, headers, b"", False)
        pos = end + 4
        encoding = response.header("Transfer-Encoding")
        length = response.header("Content-Length")
        if response.status in (204, 304) and encoding is None and length is None:
            response.complete = True  # no body, and no framing for one
        elif encoding is not None and encoding.lower() == "chunked":
            response.chunked = True
            body = []
            while True:
                line_end = data.find(b"\r\n", pos)
                if line_end < 0:
                    break
                size = int(data[pos:line_end].split(b";")[0], 16)
                if size == 0:
                    if data[line_end + 2 : line_end + 4] == b"\r\n":
                        response.complete = True
                        pos = line_end + 4
                    break
                chunk_end = line_end + 2 + size
                if len(data) < chunk_end + 2:
                    body.append(data[line_end + 2 : chunk_end])
                    pos = len(data)
                    break
                if data[chunk_end : chunk_end + 2] != b"\r\n":
                    raise AssertionError("bad chunk framing")
                body.append(data[line_end + 2 : chunk_end])
                pos = chunk_end + 2
            response.body = b"".join(body)
            if not response.complete:
                pos = len(data)
        elif length is not None:
            size = int(length)
            response.body = data[pos : pos + size]
            response.complete = len(response.body) == size
            pos += len(response.body)
        else:
            response.body = data[pos:]
            response.complete = closed
            pos = len(data)
        responses.append(response)
        if not response.complete:
            break
    return responses


def build_request(
    method: str,
    path: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    chunked: bool = False,
    chunk_size: int = 4096,
) -> bytes:
    """Raw bytes of one HTTP/1.1 request."""
    head = [f"{method} {path} HTTP/1.1", "Host: mockoai.test"]
    for name, value in (headers or {}).items():
        head.append(f"{name}: {value}")
    payload = b""
    if body is not None:
        if chunked:
            head.append("Transfer-Encoding: chunked")
            pieces = [body[i : i + chunk_size] for i in range(0, len(body), chunk_size)]
            payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        else:
            head.append(f"Content-Length: {len(body)}")
            payload = body
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload


def encode_json(value: object) -> bytes:
    return json.dumps(value).encode()


# --------------------------------------------------------------------------
# The in-memory client


class NoDelayTransport(StringTransport):
    """
    A StringTransport that records TCP_NODELAY, like a TCP transport would,
    and (given a ``closer``) reports a close the server asked for a reactor
    turn later, as a real transport does once its buffer is flushed.
    """

    nodelay = False
    closer: Callable[[], object] | None = None
    _close_reported = False

    def loseConnection(self) -> None:
        super().loseConnection()
        if self.closer is not None and not self._close_reported:
            self._close_reported = True
            self.closer()

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.nodelay = bool(enabled)

    def getTcpNoDelay(self) -> bool:
        return self.nodelay


class Connection:
    """One client connection to a site, through its real protocol."""

    _port = 40000

    def __init__(
        self, site: Any, transport: StringTransport | None = None, clock: Clock | None = None
    ) -> None:
        Connection._port += 1
        peer = IPv4Address("TCP", "127.0.0.1", Connection._port)
        host = IPv4Address("TCP", "127.0.0.1", 3000)
        if transport is None:
            transport = NoDelayTransport(hostAddress=host, peerAddress=peer)
        self.transport = transport
        if clock is not None and isinstance(transport, NoDelayTransport):
            transport.closer = lambda: clock.callLater(0, self._closed_by_server)
        self.protocol = site.buildProtocol(peer)
        self.protocol.makeConnection(self.transport)
        self.lost = False

    def _closed_by_server(self) -> None:
        if not self.lost:
            from twisted.internet.error import ConnectionDone

            self.lost = True
            self.protocol.connectionLost(Failure(ConnectionDone("closed by the server")))

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        json_body: object = None,
        headers: Mapping[str, str] | None = None,
        chunked: bool = False,
    ) -> None:
        """Send one request (the answer is read with L{responses})."""
        if json_body is not None:
            body = encode_json(json_body)
            headers = {"Content-Type": "application/json", **(headers or {})}
        self.send(build_request(method, path, body, headers, chunked))

    def received(self) -> bytes:
        return self.transport.value()

    def responses(self) -> list[Response]:
        return parse_responses(self.received(), closed=self.closing)

    def response(self) -> Response:
        """The only (or last) response received so far."""
        responses = self.responses()
        if not responses:
            raise AssertionError("no response yet")
        return responses[-1]

    @property
    def closing(self) -> bool:
        """Whether the server closed (or aborted) this connection."""
        return bool(self.transport.disconnecting)

    def disconnect(self) -> None:
        """The client goes away."""
        if not self.lost:
            from twisted.internet.error import ConnectionDone

            self.lost = True
            self.protocol.connectionLost(Failure(ConnectionDone("client went away")))


class Client:
    """Requests against one service's site, each on a new connection."""

    def __init__(self, service: MockoaiService) -> None:
        self.service = service
        self.site = service.site
        self.clock = service.clock

    def connect(self, transport: StringTransport | None = None) -> Connection:
        return Connection(self.site, transport, self.clock)

    def send(
        self,
        method: str,
        path: str,
        json_body: object = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        chunked: bool = False,
    ) -> Connection:
        """Send one request on a new connection and return the connection."""
        connection = self.connect()
        connection.request(method, path, body, json_body, headers, chunked)
        return connection

    def request(
        self,
        method: str,
        path: str,
        json_body: object = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        chunked: bool = False,
        advance: bool = True,
    ) -> Response:
        """
        One complete exchange: the response, after running the clock until
        it is complete when ``advance`` is true (bounded).
        """
        connection = self.send(method, path, json_body, body, headers, chunked)
        for _ in range(100_000):
            responses = connection.responses()
            if responses and responses[0].complete:
                return responses[0]
            if not advance or not self.clock.getDelayedCalls():
                break
            self.clock.advance(
                max(
                    0.0,
                    min(c.getTime() for c in self.clock.getDelayedCalls()) - self.clock.seconds(),
                )
            )
        responses = connection.responses()
        if not responses:
            raise AssertionError(f"no response to {method} {path}")
        return responses[0]

    def get(self, path: str, **kwargs: Any) -> Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json_body: object = None, **kwargs: Any) -> Response:
        return self.request("POST", path, json_body, **kwargs)


# --------------------------------------------------------------------------
# Server-sent events


def sse_blocks(body: bytes | str) -> list[str]:
    """
    The events of an SSE body, checking the framing OpenAI uses: each event
    is one ``data: `` line followed by a blank line; comment lines (``:``)
    are skipped.  A trailing partial event is an error.
    """
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    if not text:
        return []
    if not text.endswith("\n\n"):
        raise AssertionError(f"SSE body does not end with a blank line: {text[-80:]!r}")
    blocks = text[:-2].split("\n\n")
    events = []
    for block in blocks:
        lines = [line for line in block.split("\n") if not line.startswith(":")]
        if not lines:
            continue
        if len(lines) != 1 or not lines[0].startswith("data: "):
            raise AssertionError(f"malformed SSE event: {block!r}")
        events.append(lines[0])
    return events


def sse_data(body: bytes | str) -> list[str]:
    """The payloads (after ``data: ``) of every event."""
    return [line[len("data: ") :] for line in sse_blocks(body)]


def sse_json(body: bytes | str, require_done: bool = True) -> list[dict[str, Any]]:
    """
    The JSON chunks of a complete stream; ``[DONE]`` must be the last event
    (and appear once) when ``require_done``.
    """
    payloads = sse_data(body)
    if require_done:
        if not payloads or payloads[-1] != "[DONE]":
            raise AssertionError(f"stream does not end with [DONE]: {payloads[-1:]!r}")
        payloads = payloads[:-1]
    if "[DONE]" in payloads:
        raise AssertionError("[DONE] before the end of the stream")
    return [json.loads(p) for p in payloads]


def stream_text(chunks: Iterable[dict[str, Any]], index: int = 0) -> str:
    """The text of choice ``index`` reassembled from chat or completion chunks."""
    parts = []
    for chunk in chunks:
        for choice in chunk.get("choices", ()):
            if choice["index"] != index:
                continue
            if "delta" in choice:
                parts.append(choice["delta"].get("content") or "")
            else:
                parts.append(choice.get("text") or "")
    return "".join(parts)


def validate_event(schema: str, chunk: dict[str, Any]) -> None:
    """
    Validate one stream event against ``schema`` (see L{tests.spec}).

    Known gap in the spec: it describes ``/v1/completions`` events with the
    non-stream schema, whose ``usage`` is not nullable, while with
    ``stream_options.include_usage`` every event before the usage chunk
    carries ``usage: null`` (as chat events do, and as OpenAI documents for
    ``stream_options``).  Such an event is validated without the null.
    """
    from tests.spec import validate

    if schema == "CreateCompletionStreamResponse" and chunk.get("usage", 0) is None:
        chunk = {k: v for k, v in chunk.items() if k != "usage"}
    validate(schema, chunk)


# --------------------------------------------------------------------------
# Real processes


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, timeout: float = 15.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll until 127.0.0.1:``port`` accepts a connection (or fail)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"process exited with {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.02)
    raise AssertionError(f"nothing listening on port {port} after {timeout} s")


def clean_environ(**extra: str) -> dict[str, str]:
    """The environment for a child: this one without MOCKOAI_*, with the checkout first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOCKOAI_")}
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + path if path else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


class TwistdProcess:
    """
    ``twistd -n --pidfile= mockoai --listen tcp:PORT:interface=127.0.0.1 ARGS``
    as a child process, with stdout and stderr captured to files.
    """

    def __init__(
        self,
        args: Sequence[str] = (),
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> None:
        self.port = free_port() if port is None else port
        self.args = list(args)
        self.env = clean_environ(**(env or {}))
        self._tmp = tempfile.TemporaryDirectory(prefix="mockoai-e2e-")
        self.cwd = cwd or self._tmp.name
        self.process: subprocess.Popen[bytes] | None = None
        self._out = open(os.path.join(self._tmp.name, "stdout"), "w+b")  # noqa: SIM115
        self._err = open(os.path.join(self._tmp.name, "stderr"), "w+b")  # noqa: SIM115

    @property
    def command(self) -> list[str]:
        listen = f"tcp:{self.port}:interface=127.0.0.1"
        return [*TWISTD, "-n", "--pidfile=", "mockoai", "--listen", listen, *self.args]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> TwistdProcess:
        # Generous: on a loaded machine a twistd took over 15 s to listen (PyPy's
        # more); only a server that never listens waits it out.
        if "--http" in self.args:
            require_stack(self.args[self.args.index("--http") + 1])
        self.process = subprocess.Popen(
            self.command, cwd=self.cwd, env=self.env, stdout=self._out, stderr=self._err
        )
        try:
            wait_for_port(self.port, timeout, self.process)
        except AssertionError as e:
            self.kill()
            raise AssertionError(f"{e}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}") from None
        return self

    def _read(self, handle: Any) -> str:
        handle.flush()
        with open(handle.name, "rb") as f:
            return f.read().decode("utf-8", "replace")

    @property
    def stdout(self) -> str:
        return self._read(self._out)

    @property
    def stderr(self) -> str:
        return self._read(self._err)

    def wait_for_output(self, text: str, timeout: float = 10.0) -> str:
        """Poll stdout until it contains ``text``; return stdout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.stdout
            if text in out:
                return out
            time.sleep(0.02)
        raise AssertionError(f"{text!r} not in stdout after {timeout} s:\n{self.stdout}")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float = 15.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self, timeout: float = 15.0, expect: int | None = 0) -> int:
        """SIGTERM, wait (bounded), and check the exit status."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"twistd did not exit within {timeout} s of SIGTERM\n{self.stdout}"
            ) from None
        finally:
            self.close()
        if expect is not None and code != expect:
            raise AssertionError(
                f"twistd exited with {code}, expected {expect}\n"
                f"stdout:\n{self.stdout}\nstderr:\n{self.stderr}"
            )
        return code

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def close(self) -> None:
        self._out.flush()
        self._err.flush()

    def cleanup(self) -> None:
        self.kill()
        self._out.close()
        self._err.close()
        self._tmp.cleanup()


def run_twistd(
    args: Sequence[str], timeout: float = 30.0, cwd: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``twistd ARGS`` to completion (for option errors and daemon mode)."""
    return subprocess.run(
        [*TWISTD, *args],
        cwd=cwd,
        env=clean_environ(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


__all__ = [
    "EPOCH",
    "REPO_ROOT",
    "Client",
    "Connection",
    "NoDelayTransport",
    "Response",
    "TwistdProcess",
    "build_request",
    "clean_environ",
    "free_port",
    "make_service",
    "parse_responses",
    "run_twistd",
    "sse_blocks",
    "sse_data",
    "sse_json",
    "stream_text",
    "validate_event",
    "wait_for_port",
]
