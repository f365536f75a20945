"""
One error writer for every stack: each error the wire answers -- a raw
refusal before any request exists, a refusal before routing, an unknown URL
-- comes in the envelope of the API its path belongs to (OpenAI's under
``/v1/``, OpenRouter's under ``/api/v1/``), on the lean and twisted.web
HTTP/1.1 stacks and on HTTP/2, with the connection left as it was.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import treq
from treq.testing import StubTreq
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest
from werkzeug.exceptions import MethodNotAllowed, NotFound

from mockoai.dialects.openrouter import errors as openrouter_errors
from mockoai.pipeline import errors
from mockoai.pipeline.errors import APIError, Envelopes, openai_envelope, write_error
from mockoai.wire import failures
from tests.optional import STACKS
from tests.support import (
    Client,
    Response,
    TwistdProcess,
    free_port,
    make_service,
    parse_responses,
    wait_for_port,
)
from tests.test_hostile import ARGS, exchange
from tests.test_tls import H2Client, chat, make_cert_pair, run, tls_connect

OPENAI = b"/v1/"
OPENROUTER = b"/api/v1/"
PREFIXES = (OPENAI, OPENROUTER)
KEY = "sk-envelopes"
AUTH = b"Authorization: Bearer " + KEY.encode() + b"\r\n"
HEAD = b"Host: t\r\n"


def check_error(
    status: int, content_type: str | None, body: bytes, expected: int, prefix: bytes
) -> dict[str, Any]:
    """An error answer of ``expected`` status in the envelope of ``prefix``'s API."""
    assert status == expected, body[:300]
    assert content_type == "application/json"
    error: dict[str, Any] = json.loads(body)["error"]
    assert isinstance(error["message"], str) and error["message"]
    if prefix == OPENROUTER:
        assert error["code"] == expected
        assert set(error) <= {"code", "message", "metadata"}, error
    else:
        assert set(error) == {"message", "type", "param", "code"}, error
    return error


def check_response(response: Response, expected: int, prefix: bytes) -> dict[str, Any]:
    assert response.complete
    assert response.header("x-request-id"), response.headers
    return check_error(
        response.status, response.header("Content-Type"), response.body, expected, prefix
    )


# --------------------------------------------------------------------------
# Units


class EnvelopesTests(SynchronousTestCase):
    def test_longest_prefix_wins(self) -> None:
        def inner(error: APIError) -> bytes:
            return b"inner"

        def outer(error: APIError) -> bytes:
            return b"outer"

        envelopes = Envelopes(prefixes=[(b"/api/", outer), (b"/api/v1/", inner)])
        self.assertIs(envelopes.for_path(b"/api/v1/chat/completions"), inner)
        self.assertIs(envelopes.for_path(b"/api/v2/x"), outer)
        self.assertIs(envelopes.for_path(b"/v1/chat/completions"), openai_envelope)
        self.assertIs(envelopes.for_path(None), openai_envelope)
        self.assertIs(envelopes.for_path(b""), openai_envelope)
        self.assertIs(Envelopes(outer).for_path(None), outer)
        self.assertEqual(envelopes.body(b"/api/v1/x", errors.server_error()), b"inner")

    def test_write_error(self) -> None:
        request = DummyRequest([b""])
        error = APIError(
            429, "slow down \u00e9", code="rate_limit_exceeded", headers=((b"Retry-After", b"7"),)
        )
        write_error(request, error, openrouter_errors.body)
        body = b"".join(request.written)
        self.assertEqual(request.responseCode, 429)
        self.assertEqual(request.finished, 1)
        headers = request.responseHeaders
        self.assertEqual(headers.getRawHeaders(b"Content-Length"), [b"%d" % len(body)])
        self.assertEqual(headers.getRawHeaders(b"Content-Type"), [b"application/json"])
        self.assertEqual(headers.getRawHeaders(b"Retry-After"), [b"7"])
        self.assertEqual(json.loads(body), {"error": {"code": 429, "message": "slow down \u00e9"}})

    def test_refusal_bytes(self) -> None:
        error = APIError(431, "too big", headers=((b"Retry-After", b"1"),))
        raw = failures.refusal(error, b"req_1", openai_envelope)
        [response] = parse_responses(raw, closed=True)
        self.assertEqual(
            (response.status, response.reason), (431, "Request Header Fields Too Large")
        )
        self.assertEqual(response.header("Connection"), "close")
        self.assertEqual(response.header("x-request-id"), "req_1")
        self.assertEqual(response.header("Retry-After"), "1")
        self.assertEqual(int(response.header("Content-Length") or -1), len(response.body))
        self.assertEqual(response.body, error.body())

    def test_failures_become_api_errors(self) -> None:
        request = DummyRequest([b"v1", b"things"])
        request.method = b"PUT"
        request.path = b"/v1/things"
        missing = failures.api_error(request, Failure(NotFound()))
        self.assertEqual((missing.status, missing.message), (404, "Invalid URL (PUT /v1/things)"))
        wrong = failures.api_error(request, Failure(MethodNotAllowed(["GET", "HEAD", "POST"])))
        self.assertEqual(wrong.status, 405)
        self.assertEqual(wrong.headers, ((b"Allow", b"GET, POST"),))
        own = errors.model_not_found("x")
        self.assertIs(failures.api_error(request, Failure(own)), own)
        bug = failures.api_error(request, Failure(ZeroDivisionError()))
        self.assertEqual((bug.status, bug.type), (500, errors.SERVER_ERROR))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(request.outcome.error, errors.SERVER_ERROR)  # type: ignore[attr-defined]


class KleinResourceTests(SynchronousTestCase):
    """Klein's own resource (embedding, tests) answers in the same envelopes."""

    def test_unknown_url_and_wrong_method(self) -> None:
        service = make_service()
        for prefix in PREFIXES:
            for method, path, status in (("GET", b"nope", 404), ("PUT", b"models", 405)):
                stub = StubTreq(service.api.app.resource())
                url = "http://mockoai.test" + (prefix + path).decode()
                pending = stub.request(method, url)
                stub.flush()
                response = self.successResultOf(pending)
                reading = treq.content(response)
                stub.flush()
                [content_type] = response.headers.getRawHeaders("Content-Type")
                body = self.successResultOf(reading)
                check_error(response.code, content_type, body, status, prefix)


# --------------------------------------------------------------------------
# HTTP/1.1 over real sockets, both stacks


def post(prefix: bytes, body: bytes, extra: bytes = AUTH) -> bytes:
    return (
        b"POST %schat/completions HTTP/1.1\r\n%s%sContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (prefix, HEAD, extra, len(body), body)
    )


def get(path: bytes, extra: bytes = AUTH, method: bytes = b"GET") -> bytes:
    return b"%s %s HTTP/1.1\r\n%s%s\r\n" % (method, path, HEAD, extra)


def chunked_too_large(prefix: bytes) -> bytes:
    head = b"POST %schat/completions HTTP/1.1\r\n%s%sTransfer-Encoding: chunked\r\n\r\n"
    return head % (prefix, HEAD, AUTH) + b"2400\r\n" + b" " * 0x2400 + b"\r\n0\r\n\r\n"


#: name -> (request for a prefix, status, refused on the raw channel (then closed))
CASES = {
    "413 by Content-Length": (lambda p: post(p, b"{" + b" " * 9000 + b"}"), 413, True),
    "413 chunked": (chunked_too_large, 413, True),
    "414": (lambda p: get(p + b"models/" + b"a" * 300), 414, True),
    "414 past the line limit": (lambda p: get(p + b"models/" + b"a" * 5000), 414, True),
    "431 fields": (
        lambda p: get(p + b"models", AUTH + b"".join(b"X-H%d: v\r\n" % i for i in range(40))),
        431,
        True,
    ),
    "431 bytes": (
        lambda p: get(p + b"models", AUTH + b"X-Big: " + b"v" * 2000 + b"\r\n"),
        431,
        True,
    ),
    "400 malformed": (lambda p: get(p + b"models", AUTH + b"NoColonHere\r\n"), 400, True),
    # Refused from its head, before its body is read: answered and closed.
    "401": (lambda p: post(p, json.dumps(chat()).encode(), b""), 401, True),
    "404": (lambda p: get(p + b"no/such/thing"), 404, False),
    "405": (lambda p: get(p + b"models", method=b"PUT"), 405, False),
}


def read_answer(sock: socket.socket, timeout: float = 5.0) -> tuple[list[Response], bool]:
    """Read until one complete answer has arrived or the server closes (then True)."""
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return parse_responses(data, closed=True), True
        if not chunk:
            return parse_responses(data, closed=True), True
        data += chunk
        responses = parse_responses(data)
        if responses and responses[-1].complete:
            return responses, False
    raise AssertionError(f"no answer within {timeout} s: {data[:300]!r}")


def read_to_close(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (the socket's timeout bounds the wait)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


class Http11Tests(SynchronousTestCase):
    def test_lean(self) -> None:
        run_table("lean")

    def test_lean_python(self) -> None:
        run_table("lean-python")

    def test_twisted(self) -> None:
        run_table("twisted")


def run_table(http: str) -> None:
    process = TwistdProcess(
        [*ARGS, "--http", http, "--api-key", KEY, "--header-timeout", "1", "--itl", "50"]
    ).start()
    try:
        for prefix in PREFIXES:
            for name, (make, status, raw) in CASES.items():
                where = f"{http} {prefix.decode()} {name}"
                if raw:
                    data, closed = exchange(process.port, make(prefix))
                    assert closed, f"{where}: not closed"
                    [response] = parse_responses(data, closed=True)
                    assert response.header("Connection") == "close", where
                else:
                    with socket.create_connection(("127.0.0.1", process.port), timeout=5) as sock:
                        sock.sendall(make(prefix))
                        [response], closed = read_answer(sock)
                        assert not closed, where
                        # Still open for the next request, as before.
                        sock.sendall(get(b"/health"))
                        [health], _ = read_answer(sock)
                        assert health.status == 200, where
                error = check_response(response, status, prefix)
                if status == 405:
                    assert response.header("Allow") == "GET", where
                if status == 401 and prefix == OPENROUTER:
                    assert error["message"] == "No auth credentials found"

        # Slow headers: 408 in the envelope of the request line read so far.
        socks = {
            p: socket.create_connection(("127.0.0.1", process.port), timeout=5) for p in PREFIXES
        }
        for prefix, sock in socks.items():
            sock.sendall(b"GET %smodels HTTP/1.1\r\nX-Slow: 1\r\n" % prefix)
        for prefix, sock in socks.items():
            with sock:
                [response] = parse_responses(read_to_close(sock), closed=True)
            assert response.header("Connection") == "close"
            check_response(response, 408, prefix)

        # The drain: a request queued behind a stream gets 503, then the close
        # (a longer stream keeps the drain going until both are answered).
        anchor = socket.create_connection(("127.0.0.1", process.port), timeout=5)
        streams = {
            p: socket.create_connection(("127.0.0.1", process.port), timeout=5) for p in PREFIXES
        }
        started = {}
        for sock, tokens in ((anchor, 30), *((s, 10) for s in streams.values())):
            body = json.dumps(chat(max_tokens=tokens, ignore_eos=True, stream=True)).encode()
            sock.sendall(post(OPENAI, body))
            started[sock] = sock.recv(65536)
            assert started[sock].startswith(b"HTTP/1.1 200")
        process.signal()
        process.wait_for_output("draining")
        for prefix, sock in streams.items():
            with sock:
                sock.sendall(get(prefix + b"models"))
                data = started[sock] + read_to_close(sock)
            streamed, refused = parse_responses(data, closed=True)
            assert streamed.status == 200 and streamed.complete
            assert refused.header("Connection") == "close"
            error = check_response(refused, 503, prefix)
            if prefix == OPENAI:
                assert error["code"] == "server_shutting_down"
        with anchor:
            [streamed] = parse_responses(started[anchor] + read_to_close(anchor), closed=True)
        assert streamed.status == 200 and streamed.complete
        assert process.wait() == 0
        assert "Traceback" not in process.stdout + process.stderr
    finally:
        process.cleanup()


class ConnectionCapTests(SynchronousTestCase):
    def test_cap_refusal_on_both_stacks(self) -> None:
        for http in STACKS:
            service = make_service(http=http, max_connections=1)
            client = Client(service)
            first = client.connect()
            refused = client.connect()
            [response] = parse_responses(refused.received(), closed=True)
            self.assertEqual(response.header("Connection"), "close")
            self.assertEqual(response.header("Retry-After"), "1")
            # Before any request: no path, so OpenAI's envelope.
            error = check_response(response, 503, OPENAI)
            self.assertEqual(error["code"], "too_many_connections")
            self.assertFalse(first.closing)


# --------------------------------------------------------------------------
# HTTP/2


class H2Tests(SynchronousTestCase):
    def setUp(self) -> None:
        directory = tempfile.mkdtemp(prefix="mockoai-envelopes-")
        self.addCleanup(shutil.rmtree, directory, True)
        self.cert = make_cert_pair(Path(directory))

    def test_envelopes_over_real_sockets(self) -> None:
        port = free_port()
        listen = ["--listen", self.cert.listen(port)]
        process = TwistdProcess([*listen, "--articles", "64", "--max-body-size", "1KiB"])
        process.args += ["--api-key", KEY]
        process.start()
        self.addCleanup(process.cleanup)
        wait_for_port(port)
        auth = {"Authorization": f"Bearer {KEY}"}
        url = f"https://127.0.0.1:{port}"
        verify = self.cert.cert_path
        with httpx.Client(base_url=url, http2=True, verify=verify, timeout=10) as client:
            for prefix in PREFIXES:
                base = prefix.decode()
                big = chat(pad="x" * 4000)
                too_large = client.post(base + "chat/completions", json=big, headers=auth)
                self.assertEqual(too_large.http_version, "HTTP/2")
                self.assertIn("x-request-id", too_large.headers)
                cases = [
                    (too_large, 413),
                    (client.post(base + "chat/completions", json=chat()), 401),
                    (client.get(base + "no/such/thing", headers=auth), 404),
                    (client.put(base + "models", headers=auth), 405),
                ]
                for response, status in cases:
                    content_type = response.headers.get("content-type")
                    error = check_error(
                        response.status_code, content_type, response.content, status, prefix
                    )
                    if status == 413 and prefix == OPENAI:
                        self.assertEqual(error["code"], "request_too_large")
            self.assertEqual(client.get("/health").status_code, 200)
        process.stop()

    def test_drain_refusal_in_each_envelope(self) -> None:
        service = make_service(itl=0.02, grace_period=5.0)
        client = H2Client()
        connection = tls_connect(service, self.cert, client)
        client.post("/v1/chat/completions", chat(max_tokens=10, ignore_eos=True, stream=True))
        run(service, connection, 0.04, 0.02)
        service.stopService()
        late = {p: client.request("GET", p.decode() + "models") for p in PREFIXES}
        connection.pump.flush()
        for prefix, sid in late.items():
            refused = client.responses[sid]
            self.assertTrue(refused.ended)
            self.assertNotIn("connection", refused.headers)
            content_type = refused.headers.get("content-type")
            check_error(refused.status, content_type, refused.body, 503, prefix)
        run(service, connection, 0.4, 0.02)
