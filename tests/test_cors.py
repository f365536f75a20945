"""
CORS (``--cors-origin``): preflights answered before routes and keys, and
the allow/expose headers on every answer, streams and errors included.

In memory on both HTTP stacks, then in a real browser: headless Chromium
loads a page from one loopback origin that streams a chat completion from
``twistd`` on another (with an ``Authorization`` header, so the browser
sends a preflight first), and a page from an origin not allowed, whose
fetch the browser must refuse.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from typing import Any, ClassVar

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from mockoai.ops.config import ApiKey, ConfigError, load_settings
from mockoai.wire.cors import EXPOSED, Cors
from tests.support import Client, Response, TwistdProcess, make_service, sse_json

APP = "http://app.example:8080"
EVIL = "http://evil.example"
KEY = "sk-cors-test-0000000000"
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 5}


def preflight(origin: str = APP, headers: str = "authorization, content-type") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": headers,
    }


class CorsRoutes(SynchronousTestCase):
    """The production request path with CORS on."""

    http = "lean"
    extra: ClassVar[dict[str, Any]] = {}

    def setUp(self) -> None:
        self.use()

    def use(self, **overrides: Any) -> None:
        values: dict[str, Any] = {
            "http": self.http,
            "cors_origins": (APP,),
            "tokens_mean": 6.0,
            "tokens_stddev": 0.0,
            **self.extra,
            **overrides,
        }
        self.service = make_service(**values)
        self.client = Client(self.service)

    def options(self, path: str = "/v1/chat/completions", **kwargs: Any) -> Response:
        return self.client.request("OPTIONS", path, headers=preflight(**kwargs))

    def assert_exposed(self, response: Response, origin: str = APP) -> None:
        self.assertEqual(response.header("Access-Control-Allow-Origin"), origin)
        exposed = response.header("Access-Control-Expose-Headers") or ""
        names = [n.strip() for n in exposed.split(",")]
        for name in (
            "x-request-id",
            "openai-processing-ms",
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-tokens",
            "x-ratelimit-reset-requests",
            "retry-after",
        ):
            self.assertIn(name, names)

    # --- preflights ---

    def test_preflight(self) -> None:
        response = self.options()
        self.assertEqual(response.status, 204)
        self.assertEqual(response.body, b"")
        self.assertIsNone(response.header("Content-Length"))
        self.assertIsNone(response.header("Transfer-Encoding"))
        self.assertEqual(response.header("Access-Control-Allow-Origin"), APP)
        self.assertEqual(response.header("Access-Control-Allow-Methods"), "GET, POST")
        self.assertEqual(
            response.header("Access-Control-Allow-Headers"), "authorization, content-type"
        )
        self.assertEqual(response.header("Access-Control-Max-Age"), "600")
        self.assertEqual(response.header("Vary"), "Origin, Access-Control-Request-Headers")
        self.assertIsNotNone(response.header("x-request-id"))

    def test_preflight_then_request_on_one_connection(self) -> None:
        connection = self.client.connect()
        connection.request("OPTIONS", "/v1/chat/completions", headers=preflight())
        connection.request("POST", "/v1/chat/completions", json_body=CHAT, headers={"Origin": APP})
        self.client.clock.advance(1)
        first, second = connection.responses()
        self.assertEqual((first.status, second.status), (204, 200))
        self.assertFalse(connection.closing)
        self.assert_exposed(second)
        self.assertEqual(second.json()["object"], "chat.completion")

    def test_disallowed_origin_gets_no_allow_headers(self) -> None:
        response = self.options(origin=EVIL)
        self.assertEqual(response.status, 204)
        for name in (
            "Access-Control-Allow-Origin",
            "Access-Control-Allow-Methods",
            "Access-Control-Allow-Headers",
            "Access-Control-Max-Age",
        ):
            self.assertIsNone(response.header(name), name)
        self.assertIn("Origin", response.header("Vary") or "")

    def test_configured_methods_headers_max_age(self) -> None:
        self.use(
            cors_methods=("POST",),
            cors_headers=("Authorization", "Content-Type"),
            cors_max_age=7200,
        )
        response = self.options(headers="authorization, x-custom")
        self.assertEqual(response.header("Access-Control-Allow-Methods"), "POST")
        self.assertEqual(
            response.header("Access-Control-Allow-Headers"), "Authorization, Content-Type"
        )
        self.assertEqual(response.header("Access-Control-Max-Age"), "7200")
        self.assertEqual(response.header("Vary"), "Origin")

    def test_preflight_before_routes_and_keys(self) -> None:
        self.use(api_keys=(ApiKey(KEY),))
        # No Authorization on a preflight, and a path no route knows.
        self.assertEqual(self.options().status, 204)
        self.assertEqual(self.options("/v1/nowhere").status, 204)
        # The request itself still needs the key, and its 401 is readable.
        refused = self.client.post("/v1/chat/completions", CHAT, headers={"Origin": APP})
        self.assertEqual(refused.status, 401)
        self.assert_exposed(refused)
        ok = self.client.post(
            "/v1/chat/completions", CHAT, headers={"Origin": APP, "Authorization": f"Bearer {KEY}"}
        )
        self.assertEqual(ok.status, 200)

    def test_options_without_request_method_is_not_a_preflight(self) -> None:
        response = self.client.request("OPTIONS", "/v1/chat/completions", headers={"Origin": APP})
        self.assertEqual(response.status, 405)
        self.assertEqual(response.header("Access-Control-Allow-Origin"), APP)

    # --- actual requests ---

    def test_plain_answer(self) -> None:
        self.use(rpm=100)
        response = self.client.post("/v1/chat/completions", CHAT, headers={"Origin": APP})
        self.assertEqual(response.status, 200)
        self.assert_exposed(response)
        self.assertEqual(response.header("Vary"), "Origin")
        self.assertEqual(response.header("x-ratelimit-limit-requests"), "100")

    def test_stream(self) -> None:
        body = {**CHAT, "stream": True}
        response = self.client.post("/v1/chat/completions", body, headers={"Origin": APP})
        self.assertEqual(response.header("Content-Type"), "text/event-stream; charset=utf-8")
        self.assert_exposed(response)
        self.assertEqual(sse_json(response.body)[-1]["choices"][0]["finish_reason"], "length")

    def test_errors(self) -> None:
        self.use(rpm=1)
        headers = {"Origin": APP}
        not_found = self.client.get("/v1/models/nope", headers=headers)
        self.assertEqual(not_found.status, 404)
        self.assert_exposed(not_found)
        bad = self.client.post("/v1/chat/completions", body=b"{", headers=headers)
        self.assertEqual(bad.status, 400)
        self.assert_exposed(bad)
        self.client.post("/v1/chat/completions", CHAT, headers=headers)
        limited = self.client.post("/v1/chat/completions", CHAT, headers=headers)
        self.assertEqual(limited.status, 429)
        self.assert_exposed(limited)
        self.assertIsNotNone(limited.header("retry-after"))
        router = self.client.post("/api/v1/chat/completions", CHAT, headers=headers)
        self.assertEqual(router.status, 401)
        self.assert_exposed(router)

    def test_draining(self) -> None:
        self.service.site.draining = True
        response = self.client.post("/v1/chat/completions", CHAT, headers={"Origin": APP})
        self.assertEqual(response.status, 503)
        self.assert_exposed(response)

    def test_disallowed_or_no_origin(self) -> None:
        for headers in ({"Origin": EVIL}, {}):
            response = self.client.post("/v1/chat/completions", CHAT, headers=headers)
            self.assertEqual(response.status, 200)
            self.assertIsNone(response.header("Access-Control-Allow-Origin"))
            self.assertIsNone(response.header("Access-Control-Expose-Headers"))
            self.assertEqual(response.header("Vary"), "Origin")

    def test_any_origin(self) -> None:
        self.use(cors_origins=("*",))
        response = self.client.post("/v1/chat/completions", CHAT, headers={"Origin": EVIL})
        self.assert_exposed(response, "*")
        self.assertIsNone(response.header("Vary"))
        self.assertEqual(self.options(origin=EVIL).header("Access-Control-Allow-Origin"), "*")

    def test_credentials_echo_the_origin(self) -> None:
        self.use(cors_origins=("*",), cors_credentials=True)
        response = self.client.post("/v1/chat/completions", CHAT, headers={"Origin": EVIL})
        self.assert_exposed(response, EVIL)
        self.assertEqual(response.header("Access-Control-Allow-Credentials"), "true")
        self.assertEqual(response.header("Vary"), "Origin")
        pre = self.options(origin=EVIL)
        self.assertEqual(pre.header("Access-Control-Allow-Origin"), EVIL)
        self.assertEqual(pre.header("Access-Control-Allow-Credentials"), "true")


class TwistedStackCorsRoutes(CorsRoutes):
    """The same on twisted.web's HTTP/1.1 stack."""

    http = "twisted"


class OffTests(SynchronousTestCase):
    def test_off_by_default(self) -> None:
        service = make_service(tokens_mean=4.0, tokens_stddev=0.0)
        self.assertIsNone(service.site.cors)
        client = Client(service)
        response = client.post("/v1/chat/completions", CHAT, headers={"Origin": APP})
        self.assertIsNone(response.header("Access-Control-Allow-Origin"))
        self.assertIsNone(response.header("Vary"))
        preflight_response = client.request("OPTIONS", "/v1/chat/completions", headers=preflight())
        self.assertEqual(preflight_response.status, 405)


class UnitTests(SynchronousTestCase):
    def test_origins_case_insensitive(self) -> None:
        cors = Cors(["HTTP://App.Example:8080/"])
        self.assertEqual(cors.allowed(b"http://app.example:8080"), b"http://app.example:8080")
        self.assertIsNone(cors.allowed(b"http://app.example:8081"))
        self.assertRaises(ValueError, Cors, [])

    def test_exposed_names_are_lowercase_tokens(self) -> None:
        for name in EXPOSED:
            self.assertEqual(name, name.lower())

    def test_config(self) -> None:
        settings = load_settings(
            {"cors_origins": ["https://a.example", "*"], "cors_methods": "get,post,options"}, {}
        )
        self.assertEqual(settings.cors.origins, ("https://a.example", "*"))
        self.assertEqual(settings.cors.methods, ("get", "post", "options"))
        env = load_settings(
            {}, {"MOCKOAI_CORS_ORIGINS": "http://a:1, http://b:2", "MOCKOAI_CORS_MAX_AGE": "5"}
        )
        self.assertEqual((env.cors.origins, env.cors.max_age), (("http://a:1", "http://b:2"), 5))
        for cli, message in (
            ({"cors_origins": ["app.example"]}, "--cors-origin: expected an origin like"),
            ({"cors_origins": ["http://a.example/path"]}, "--cors-origin: expected an origin"),
            ({"cors_headers": "x y"}, "--cors-headers: expected HTTP method or header names"),
            ({"cors_max_age": "-1"}, "--cors-max-age: must be between 0 and 86400"),
        ):
            with self.assertRaises(ConfigError) as caught:
                load_settings(cli, {})
            self.assertIn(message, str(caught.exception))


# ---------------------------------------------------------------------------
# A real browser

_PAGE = """<!doctype html>
<html><body><pre id="result">pending</pre><script>
const params = new URLSearchParams(location.search);
const api = params.get("api");
const key = params.get("key");
async function run() {
  const result = {origin: location.origin};
  try {
    const response = await fetch(api + "/v1/chat/completions", {
      method: "POST",
      headers: {"Authorization": "Bearer " + key, "Content-Type": "application/json"},
      body: JSON.stringify({model: "gpt-4o", messages: [{role: "user", content: "Hi"}],
                            max_tokens: 12, stream: true,
                            stream_options: {include_usage: true}}),
    });
    result.status = response.status;
    result.contentType = response.headers.get("content-type");
    result.requestId = response.headers.get("x-request-id");
    result.rateLimit = response.headers.get("x-ratelimit-limit-requests");
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let text = "";
    result.reads = 0;
    for (;;) {
      const {done, value} = await reader.read();
      if (done) break;
      result.reads += 1;
      text += decoder.decode(value, {stream: true});
    }
    result.events = text.split("\\n\\n").filter(e => e.startsWith("data: ")).map(e => e.slice(6));
    const wrong = await fetch(api + "/v1/models", {headers: {"Authorization": "Bearer wrong"}});
    result.wrongStatus = wrong.status;
    result.wrongBody = await wrong.json();
  } catch (e) {
    result.error = String(e);
  }
  document.getElementById("result").textContent = JSON.stringify(result);
  await fetch("/result", {method: "POST", body: JSON.stringify(result)});
}
run();
</script></body></html>
"""


class _PageServer:
    """Serves the test page on a loopback port and collects what it posts back."""

    def __init__(self) -> None:
        owner = self
        self.result: dict[str, Any] | None = None
        self.done = threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = _PAGE.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                owner.result = json.loads(self.rfile.read(length))
                owner.done.set()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class BrowserTests(SynchronousTestCase):
    """Headless Chromium streams from another origin, and is refused from a third."""

    TIMEOUT = 45.0

    def setUp(self) -> None:
        self.chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if self.chromium is None:
            raise SkipTest("chromium is not installed (Debian package 'chromium')")
        self.allowed = _PageServer()
        self.addCleanup(self.allowed.close)
        self.refused = _PageServer()
        self.addCleanup(self.refused.close)
        self.api = TwistdProcess(
            [
                "--cors-origin", self.allowed.origin,
                "--api-key", KEY,
                "--rpm", "1000",
                "--articles", "64",
                "--itl", "5",
                "--stream-tokens", "1-2",
            ]
        )  # fmt: skip
        self.addCleanup(self.api.cleanup)
        self.api.start()
        self.addCleanup(self.api.stop)

    def browse(self, page: _PageServer) -> dict[str, Any]:
        """Open the page in headless Chromium; what it posted back."""
        url = f"{page.origin}/?api={self.api.base_url}&key={KEY}"
        profile = tempfile.mkdtemp(prefix="mockoai-chromium-")
        self.addCleanup(shutil.rmtree, profile, True)
        browser = subprocess.Popen(
            [
                self.chromium or "chromium",
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                f"--user-data-dir={profile}",
                url,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            finished = page.done.wait(self.TIMEOUT)
        finally:
            # The browser and its helpers: the process group it leads.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(browser.pid, signal.SIGKILL)
            browser.wait(10)
        self.assertTrue(finished, f"the page posted no result within {self.TIMEOUT} s")
        assert page.result is not None
        return page.result

    def test_stream_from_an_allowed_origin(self) -> None:
        result = self.browse(self.allowed)
        self.assertNotIn("error", result, result)
        self.assertEqual(result["status"], 200)
        self.assertEqual(result["contentType"], "text/event-stream; charset=utf-8")
        # Exposed headers are readable from the page.
        self.assertRegex(result["requestId"], r"^req_[0-9a-f]+$")
        self.assertEqual(result["rateLimit"], "1000")
        events = result["events"]
        self.assertEqual(events[-1], "[DONE]")
        chunks = [json.loads(e) for e in events[:-1]]
        self.assertEqual(chunks[0]["choices"][0]["delta"]["role"], "assistant")
        self.assertEqual(chunks[-1]["usage"]["completion_tokens"], 12)
        self.assertGreater(len(chunks), 3)
        # An error from the API is readable too (its CORS headers are there).
        self.assertEqual(result["wrongStatus"], 401)
        self.assertEqual(result["wrongBody"]["error"]["code"], "invalid_api_key")

    def test_disallowed_origin_is_blocked(self) -> None:
        result = self.browse(self.refused)
        self.assertIn("TypeError", result.get("error", ""), result)
        self.assertNotIn("status", result)
