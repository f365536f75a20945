"""
TLS listeners and HTTP/2 by ALPN.

In memory: real TLS (pyOpenSSL, both ends) between a real h2 client
protocol and the service's own factory, on a fake clock, so the request
count, stream resets and the drain can be watched exactly.  End to end: a
real ``twistd`` with an ``ssl:`` listener, driven by httpx (HTTP/1.1 and
HTTP/2) and by nghttp2's ``h2load``.  Certificates are made at test time.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import ssl
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.test.iosim import FakeTransport, IOPump, connect
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from mockoai.ops.service import MockoaiService
from mockoai.wire.http2 import AlpnFactory, H2Channel, factory_for, is_tls
from tests.support import (
    TwistdProcess,
    free_port,
    make_service,
    parse_responses,
    run_twistd,
    sse_json,
    validate_event,
    wait_for_port,
)

CHAT = "/v1/chat/completions"


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}], **extra}


# --------------------------------------------------------------------------
# A self-signed certificate, made per test


@attrs.frozen
class CertPair:
    key_path: str
    cert_path: str

    def read(self) -> tuple[bytes, bytes]:
        return Path(self.key_path).read_bytes(), Path(self.cert_path).read_bytes()

    def server_options(self) -> Any:
        key, cert = self.read()
        return ssl.PrivateCertificate.loadPEM(key + cert).options()

    def client_options(self, protocols: Sequence[bytes]) -> Any:
        _, cert = self.read()
        return ssl.optionsForClientTLS(
            "localhost",
            trustRoot=ssl.Certificate.loadPEM(cert),
            acceptableProtocols=list(protocols),
        )

    def listen(self, port: int) -> str:
        return f"ssl:{port}:privateKey={self.key_path}:certKey={self.cert_path}:interface=127.0.0.1"


def make_cert_pair(directory: Path) -> CertPair:
    """What the README's openssl one-liner makes: EC P-256, localhost and 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return CertPair(str(key_path), str(cert_path))


class CertTestCase(SynchronousTestCase):
    """A fresh certificate in a private directory for each test: an EC key takes a millisecond."""

    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="mockoai-tls-"))
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.cert = make_cert_pair(self.directory)


# --------------------------------------------------------------------------
# In memory: TLS over iosim, an h2 client protocol


@attrs.define
class H2Response:
    status: int = 0
    headers: dict[str, str] = attrs.Factory(dict)
    body: bytes = b""
    ended: bool = False
    reset: bool = False


class H2Client(Protocol):
    """A minimal HTTP/2 client on the h2 library (what httpx uses too)."""

    def __init__(self) -> None:
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config=config)
        self.responses: dict[int, H2Response] = {}
        self.goaway = False
        self.lost: Failure | None = None

    def connectionMade(self) -> None:
        self.conn.initiate_connection()
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.transport.write(data)  # type: ignore[union-attr]

    def request(self, method: str, path: str, body: bytes = b"") -> int:
        sid = self.conn.get_next_available_stream_id()
        headers = [
            (b":method", method.encode()),
            (b":path", path.encode()),
            (b":scheme", b"https"),
            (b":authority", b"localhost"),
        ]
        if body:
            headers += [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ]
        self.conn.send_headers(sid, headers, end_stream=not body)
        if body:
            self.conn.send_data(sid, body, end_stream=True)
        self.responses[sid] = H2Response()
        self.flush()
        return sid

    def post(self, path: str, value: object) -> int:
        return self.request("POST", path, json.dumps(value).encode())

    def reset(self, sid: int) -> None:
        self.conn.reset_stream(sid)
        self.flush()

    def dataReceived(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                response = self.responses[event.stream_id]
                for name, value in event.headers:
                    if name == b":status":
                        response.status = int(value)
                    else:
                        response.headers[name.decode()] = value.decode()
            elif isinstance(event, h2.events.DataReceived):
                self.responses[event.stream_id].body += event.data
                with contextlib.suppress(h2.exceptions.StreamClosedError):
                    self.conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
            elif isinstance(event, h2.events.StreamEnded):
                self.responses[event.stream_id].ended = True
            elif isinstance(event, h2.events.StreamReset):
                self.responses[event.stream_id].reset = True
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.goaway = True
        self.flush()

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:  # noqa: B008
        self.lost = reason


class H1Client(Protocol):
    """Raw HTTP/1.1 bytes over TLS."""

    def __init__(self) -> None:
        self.data = b""

    def dataReceived(self, data: bytes) -> None:
        self.data += data


@attrs.define
class TLSConnection:
    client: Any
    client_tls: Any
    server_tls: Any
    pump: IOPump

    @property
    def negotiated(self) -> bytes | None:
        return self.client_tls.negotiatedProtocol  # type: ignore[no-any-return]

    @property
    def server_channel(self) -> Any:
        return self.server_tls.wrappedProtocol.channel


def tls_connect(
    service: MockoaiService,
    cert: CertPair,
    client: Protocol,
    protocols: Sequence[bytes] = (b"h2", b"http/1.1"),
    http2: bool = True,
) -> TLSConnection:
    """``client`` connected over real TLS to the factory an ssl: listener would get."""
    clock = service.clock
    server_factory = TLSMemoryBIOFactory(
        cert.server_options(), False, factory_for("ssl:0", service.site, http2), clock
    )
    client_factory = TLSMemoryBIOFactory(
        cert.client_options(protocols), True, Factory.forProtocol(lambda: client), clock
    )
    peer = IPv4Address("TCP", "127.0.0.1", 50000)
    host = IPv4Address("TCP", "127.0.0.1", 8443)
    server_tls = server_factory.buildProtocol(peer)
    client_tls = client_factory.buildProtocol(host)
    pump = connect(
        server_tls,
        FakeTransport(server_tls, True, host, peer),
        client_tls,
        FakeTransport(client_tls, False, peer, host),
        greet=False,
        clock=clock,
    )
    pump.flush()
    return TLSConnection(client, client_tls, server_tls, pump)


def run(service: MockoaiService, connection: TLSConnection, seconds: float, step: float) -> None:
    """Advance the fake clock in steps, moving bytes both ways after each."""
    for _ in range(round(seconds / step)):
        service.clock.advance(step)
        connection.pump.flush()


# --------------------------------------------------------------------------
# In-memory tests


class InMemoryTests(CertTestCase):
    """The service's own TLS factory, a real TLS client and a fake clock."""

    def test_alpn_factory_only_on_tls_listeners(self) -> None:
        service = make_service()
        site = service.site
        assert is_tls("ssl:8443:privateKey=k.pem") and is_tls("SSL:port=8443")
        assert not is_tls("tcp:3000") and not is_tls("unix:/tmp/sock")
        assert factory_for("tcp:3000", site) is site
        assert factory_for("ssl:8443", site, http2=False) is site
        alpn = factory_for("ssl:8443", site)
        assert isinstance(alpn, AlpnFactory)
        assert alpn.acceptableProtocols() == [b"h2", b"http/1.1"]
        # The site's own channels speak HTTP/1.1 only and must not offer h2.
        assert site.acceptableProtocols() == [b"http/1.1"]

    def test_h2_chat_and_stream_lean(self) -> None:
        self.check_h2_chat_and_stream("lean")

    def test_h2_chat_and_stream_twisted(self) -> None:
        self.check_h2_chat_and_stream("twisted")

    def check_h2_chat_and_stream(self, stack: str) -> None:
        service = make_service(http=stack, itl=0.01)
        client = H2Client()
        connection = tls_connect(service, self.cert, client)
        assert connection.negotiated == b"h2"
        assert isinstance(connection.server_channel, H2Channel)
        site = service.site
        assert site.channels == {connection.server_channel}

        plain = client.post(CHAT, chat(max_tokens=5))
        stream = client.post(
            CHAT, chat(max_tokens=5, stream=True, stream_options={"include_usage": True})
        )
        connection.pump.flush()
        assert site.active == 2
        run(service, connection, 0.2, 0.01)

        answer = client.responses[plain]
        assert answer.ended and answer.status == 200
        assert answer.headers["content-type"] == "application/json"
        assert re.fullmatch(r"req_[0-9a-f]{32}", answer.headers["x-request-id"])
        assert answer.headers["date"].endswith(" GMT")
        assert int(answer.headers["content-length"]) == len(answer.body)
        assert "connection" not in answer.headers
        body = json.loads(answer.body)
        assert body["object"] == "chat.completion" and body["usage"]["completion_tokens"] <= 5

        events = client.responses[stream]
        assert events.ended and events.status == 200
        assert events.headers["content-type"].startswith("text/event-stream")
        assert "x-request-id" in events.headers and "transfer-encoding" not in events.headers
        chunks = sse_json(events.body)
        for chunk in chunks:
            validate_event("CreateChatCompletionStreamResponse", chunk)
        assert chunks[-1]["usage"]["completion_tokens"] == len(chunks) - 3
        assert site.active == 0 and site.connections.open == 1

    def test_h2_connection_outlives_the_http11_timers(self) -> None:
        # The HTTP/1.1 channel a TLS connection starts on has idle and
        # slow-header timers; once ALPN picks h2 they must not close it.
        service = make_service(idle_timeout=30.0, header_timeout=2.0)
        client = H2Client()
        connection = tls_connect(service, self.cert, client)
        assert connection.negotiated == b"h2"
        run(service, connection, 10.0, 0.5)
        assert client.lost is None and not connection.server_tls.disconnecting
        sid = client.request("GET", "/health")
        run(service, connection, 0.02, 0.01)
        assert client.responses[sid].status == 200
        # ...while HTTP/2's own idle timeout still applies (GOAWAY, then close).
        run(service, connection, 31.0, 0.5)
        assert client.goaway and client.lost is not None
        assert not service.site.channels and service.site.connections.open == 0

    def test_http11_over_tls(self) -> None:
        service = make_service()
        client = H1Client()
        # A client offering both protocols gets HTTP/1.1 when --http2 is off.
        connection = tls_connect(service, self.cert, client, http2=False)
        assert connection.negotiated == b"http/1.1"
        body = json.dumps(chat(max_tokens=3)).encode()
        client.transport.write(  # type: ignore[union-attr]
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        connection.pump.flush()
        service.clock.advance(0)
        connection.pump.flush()
        [response] = parse_responses(client.data)
        assert response.status == 200
        assert response.json()["usage"]["completion_tokens"] <= 3
        assert response.header("x-request-id")

    def test_reset_stream_mid_sse_is_cleaned_up(self) -> None:
        service = make_service(itl=0.02)
        client = H2Client()
        connection = tls_connect(service, self.cert, client)
        site = service.site
        sid = client.post(CHAT, chat(max_tokens=1000, ignore_eos=True, stream=True))
        run(service, connection, 0.2, 0.02)
        assert site.active == 1
        received = len(client.responses[sid].body)
        assert received > 0 and not client.responses[sid].ended

        client.reset(sid)
        connection.pump.flush()
        assert site.active == 0
        assert all(len(pacer) == 0 for pacer in service.core.pacers()), "stream still paced"
        run(service, connection, 0.5, 0.05)
        assert len(client.responses[sid].body) == received
        # The connection survives the reset and serves the next request.
        again = client.request("GET", "/health")
        run(service, connection, 0.02, 0.01)
        assert client.responses[again].status == 200 and client.lost is None
        assert site.active == 0

    def test_reset_frees_the_engine_slot(self) -> None:
        service = make_service(itl=0.02, max_running=1)
        engine = service.core.models["gpt-4o"].engine
        assert engine is not None
        client = H2Client()
        connection = tls_connect(service, self.cert, client)
        first = client.post(CHAT, chat(max_tokens=1000, ignore_eos=True, stream=True))
        second = client.post(CHAT, chat(max_tokens=2, stream=True))
        run(service, connection, 0.1, 0.02)
        assert len(engine.running) == 1 and len(engine.waiting) == 1
        assert client.responses[second].status == 0, "the queued stream was answered early"
        client.reset(first)
        run(service, connection, 0.2, 0.02)
        assert client.responses[second].ended and client.responses[second].status == 200
        assert sse_json(client.responses[second].body)
        assert not engine.running and not engine.waiting and service.site.active == 0

    def test_rate_limits_apply_per_stream(self) -> None:
        service = make_service(ip_rpm=2)
        client = H2Client()
        connection = tls_connect(service, self.cert, client)
        sids = [client.post(CHAT, chat(max_tokens=1)) for _ in range(3)]
        run(service, connection, 0.02, 0.01)
        statuses = [client.responses[sid].status for sid in sids]
        assert statuses == [200, 200, 429]
        limited = client.responses[sids[2]]
        assert json.loads(limited.body)["error"]["code"] == "rate_limit_exceeded"
        assert int(limited.headers["retry-after"]) >= 1

    def test_connection_loss_releases_streams_and_cap(self) -> None:
        service = make_service(itl=0.02, max_connections=4)
        client = H2Client()
        connection = tls_connect(service, self.cert, client)
        site = service.site
        for _ in range(3):
            client.post(CHAT, chat(max_tokens=1000, ignore_eos=True, stream=True))
        run(service, connection, 0.1, 0.02)
        assert site.active == 3 and site.connections.open == 1
        connection.server_tls.transport.loseConnection()
        connection.pump.flush()
        assert site.active == 0 and site.connections.open == 0 and not site.channels

    def test_body_over_limit_is_413(self) -> None:
        service = make_service(max_body_size=1024)
        client = H2Client()
        connection = tls_connect(service, self.cert, client)
        sid = client.post(CHAT, chat(max_tokens=1, pad="x" * 4000))
        connection.pump.flush()
        response = client.responses[sid]
        assert response.status == 413 and response.ended
        assert json.loads(response.body)["error"]["code"] == "request_too_large"
        assert response.headers["x-request-id"]
        assert service.site.active == 0

    def test_drain_finishes_h2_streams_and_refuses_new_ones(self) -> None:
        service = make_service(itl=0.02, grace_period=5.0)
        client = H2Client()
        connection = tls_connect(service, self.cert, client)
        site = service.site
        sid = client.post(CHAT, chat(max_tokens=10, ignore_eos=True, stream=True))
        run(service, connection, 0.04, 0.02)
        stopped = service.stopService()
        assert site.active == 1
        late = client.post(CHAT, chat(max_tokens=1))
        connection.pump.flush()
        refused = client.responses[late]
        # 503 without HTTP/1.1's Connection header (forbidden in HTTP/2).
        assert refused.status == 503 and refused.ended and "connection" not in refused.headers
        assert json.loads(refused.body)["error"]["code"] == "server_shutting_down"
        run(service, connection, 0.4, 0.02)
        assert stopped.called
        chunks = sse_json(client.responses[sid].body)
        assert sum(c["choices"][0]["delta"].get("content") is not None for c in chunks) >= 10
        assert site.active == 0 and not site.channels
        assert client.goaway and client.lost is not None, "no GOAWAY and close after the drain"


# --------------------------------------------------------------------------
# End to end: twistd with an ssl: listener


class TwistdTLSTests(CertTestCase):
    """A real ``twistd -n mockoai`` with an ``ssl:`` listener, started by the test that needs it."""

    def start_server(self) -> str:
        """Start the server on a free port; its base URL. It is stopped after the test."""
        tls_port = free_port()
        process = TwistdProcess(
            ["--listen", self.cert.listen(tls_port), "--articles", "64", "--stream-tokens", "1-4"]
        )
        self.addCleanup(process.cleanup)
        process.start()
        self.addCleanup(process.stop)
        wait_for_port(tls_port)
        return f"https://127.0.0.1:{tls_port}"

    def test_httpx_http11_over_ssl_listener(self) -> None:
        self.check_httpx_over_ssl_listener(http2=False)

    def test_httpx_http2_over_ssl_listener(self) -> None:
        self.check_httpx_over_ssl_listener(http2=True)

    def check_httpx_over_ssl_listener(self, http2: bool) -> None:
        url = self.start_server()
        cert = self.cert
        version = "HTTP/2" if http2 else "HTTP/1.1"
        with httpx.Client(base_url=url, http2=http2, verify=cert.cert_path, timeout=10) as client:
            response = client.post(CHAT, json=chat(max_tokens=8))
            assert response.http_version == version
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/json"
            assert response.headers["x-request-id"].startswith("req_")
            assert response.headers["date"].endswith(" GMT")
            assert response.json()["usage"]["completion_tokens"] <= 8

            with client.stream("POST", CHAT, json=chat(max_tokens=20, stream=True)) as stream:
                assert stream.http_version == version
                assert stream.headers["content-type"].startswith("text/event-stream")
                assert stream.headers["x-request-id"].startswith("req_")
                body = stream.read()
            chunks = sse_json(body)
            assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")

            health = client.get("/health")
            assert health.http_version == version and health.json() == {"status": "ok"}

    def test_h2load_bounded_run(self) -> None:
        h2load = shutil.which("h2load")
        if h2load is None:
            raise SkipTest("h2load not installed (Debian package nghttp2-client)")
        url = self.start_server()
        for name, body, n in (
            ("plain", chat(max_tokens=16), 200),
            ("stream", chat(max_tokens=16, stream=True), 100),
        ):
            path = self.directory / f"{name}.json"
            path.write_text(json.dumps(body))
            result = subprocess.run(
                [
                    h2load,
                    "-n",
                    str(n),
                    "-c",
                    "4",
                    "-m",
                    "8",
                    "-d",
                    str(path),
                    "-H",
                    "content-type: application/json",
                    url + CHAT,
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            out = result.stdout
            assert result.returncode == 0, out + result.stderr
            assert "Application protocol: h2" in out, out
            assert f"requests: {n} total, {n} started, {n} done, {n} succeeded, 0 failed" in out, (
                out
            )
            assert f"status codes: {n} 2xx, 0 3xx, 0 4xx, 0 5xx" in out, out

    def test_missing_key_is_one_line_config_error(self) -> None:
        self.check_one_line_config_error(
            "ssl:0:privateKey={missing}:certKey={cert}", "No such file or directory"
        )

    def test_certificate_as_key_is_one_line_config_error(self) -> None:
        self.check_one_line_config_error(
            "ssl:0:privateKey={cert}:certKey={cert}", "not a PEM private key"
        )

    def check_one_line_config_error(self, listen: str, message: str) -> None:
        description = listen.format(missing=self.directory / "nope.pem", cert=self.cert.cert_path)
        result = run_twistd(["-n", "--pidfile=", "mockoai", "--listen", description])
        assert result.returncode != 0
        lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        assert len(lines) == 1, lines
        assert lines[0].startswith("mockoai: error: --listen: ") and message in lines[0], lines
