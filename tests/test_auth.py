"""
Mock API keys (``--api-key``, ``--api-keys-file``): the 401s, the headers
accepted, the exemptions, per-key rate limits and labels.

In memory on both HTTP stacks (the real site and router over a L{Clock}),
plus the configuration and one real ``twistd`` run with the official SDK.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, ClassVar

from twisted.trial.unittest import SynchronousTestCase

from mockoai.ops.config import ApiKey, ConfigError, KeysFile, describe, load_settings, mask
from mockoai.pipeline import auth
from mockoai.pipeline.auth import Authenticator
from mockoai.pipeline.limits import RateLimits
from tests.optional import needs_openai, openai
from tests.spec import validate
from tests.support import Client, Response, TwistdProcess, make_service, sse_json

KEY = "sk-proj-mock0123456789abcdefWXYZ"
OTHER = "sk-other-key-000000000000"
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 5}
MISSING = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field "
    "(with blank username) if you're accessing the API from your browser and are prompted for "
    "a username and password. You can obtain an API key from "
    "https://platform.openai.com/account/api-keys."
)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class MaskTests(SynchronousTestCase):
    """The key as OpenAI quotes it back in its 401."""

    def test_long_keys_keep_eight_and_four(self) -> None:
        # Real OpenAI messages: a 51-character legacy key and a 17-character one.
        legacy = "sk-5f6ce" + "x" * 39 + "acdb"
        self.assertEqual(mask(legacy), "sk-5f6ce" + "*" * 39 + "acdb")
        self.assertEqual(mask("sk-not-a-real-key"), "sk-not-a*****-key")
        self.assertEqual(mask("abcdefgh1wxyz"), "abcdefgh*wxyz")

    def test_short_keys_whole(self) -> None:
        for key in ("dummy", "123456", "EMPTY", "abcdefgh1234"):
            self.assertEqual(mask(key), key)

    def test_label_and_str_never_show_a_long_key(self) -> None:
        key = ApiKey(KEY, rpm=5)
        self.assertEqual(key.name, mask(KEY))
        self.assertNotIn(KEY, str(key))
        self.assertEqual(str(key), f"{mask(KEY)}:rpm=5")
        self.assertEqual(ApiKey(KEY, "ci").name, "ci")


class AuthRoutes(SynchronousTestCase):
    """The production request path with keys configured."""

    http = "lean"
    extra: ClassVar[dict[str, Any]] = {}

    def setUp(self) -> None:
        self.use()

    def use(self, **overrides: Any) -> None:
        values: dict[str, Any] = {
            "http": self.http,
            "api_keys": (ApiKey(KEY, "team-a"), ApiKey(OTHER)),
            "tokens_mean": 8.0,
            "tokens_stddev": 0.0,
            **self.extra,
            **overrides,
        }
        self.service = make_service(**values)
        self.client = Client(self.service)

    def error(self, response: Response, status: int = 401) -> dict[str, Any]:
        self.assertEqual(response.status, status, response.body)
        self.assertEqual(response.header("Content-Type"), "application/json")
        self.assertIsNotNone(response.header("x-request-id"))
        body = response.json()
        return body["error"]  # type: ignore[no-any-return]

    # --- OpenAI's 401s ---

    def test_missing_key(self) -> None:
        response = self.client.post("/v1/chat/completions", CHAT)
        error = self.error(response)
        validate("ErrorResponse", response.json())
        self.assertEqual(
            error,
            {"message": MISSING, "type": "invalid_request_error", "param": None, "code": None},
        )

    def test_wrong_key(self) -> None:
        wrong = "sk-abc" + "0" * 40 + "wxyz"
        response = self.client.post("/v1/chat/completions", CHAT, headers=bearer(wrong))
        error = self.error(response)
        validate("ErrorResponse", response.json())
        self.assertEqual(
            error,
            {
                "message": f"Incorrect API key provided: sk-abc00{'*' * 38}wxyz. "
                "You can find your API key at https://platform.openai.com/account/api-keys.",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            },
        )
        self.assertNotIn(wrong.encode(), response.body)

    def test_empty_bearer_or_other_scheme_is_missing(self) -> None:
        for headers in ({"Authorization": "Bearer "}, {"Authorization": f"Basic {KEY}"}):
            error = self.error(self.client.post("/v1/chat/completions", CHAT, headers=headers))
            self.assertIsNone(error["code"])
            self.assertEqual(error["message"], MISSING)

    def test_every_route_is_guarded(self) -> None:
        for method, path in (
            ("GET", "/v1/models"),
            ("GET", "/v1/models/gpt-4o"),
            ("POST", "/v1/completions"),
            ("GET", "/v1/nothing-here"),
        ):
            response = self.client.request(method, path, body=b"{}" if method == "POST" else None)
            self.assertEqual(self.error(response)["message"], MISSING)

    def test_refused_before_the_body_is_parsed(self) -> None:
        # A wrong key with a broken body: the 401 wins over the 400.
        response = self.client.post("/v1/chat/completions", body=b"{nope", headers=bearer("x"))
        self.assertEqual(self.error(response)["code"], "invalid_api_key")

    # --- keys accepted ---

    def test_bearer_key(self) -> None:
        response = self.client.post("/v1/chat/completions", CHAT, headers=bearer(KEY))
        self.assertEqual(response.status, 200, response.body)
        self.assertEqual(response.json()["object"], "chat.completion")

    def test_bearer_scheme_case_and_spaces(self) -> None:
        headers = {"Authorization": f"bearer   {OTHER} "}
        self.assertEqual(
            self.client.post("/v1/chat/completions", CHAT, headers=headers).status, 200
        )

    def test_azure_api_key_header(self) -> None:
        response = self.client.post("/v1/chat/completions", CHAT, headers={"api-key": OTHER})
        self.assertEqual(response.status, 200, response.body)
        wrong = self.client.post("/v1/chat/completions", CHAT, headers={"api-key": "nope"})
        self.assertEqual(
            self.error(wrong)["message"].split(".")[0], "Incorrect API key provided: nope"
        )

    def test_streams_pass(self) -> None:
        body = {**CHAT, "stream": True}
        response = self.client.post("/v1/chat/completions", body, headers=bearer(KEY))
        self.assertEqual(response.status, 200)
        chunks = sse_json(response.body)
        self.assertEqual(chunks[-1]["choices"][0]["finish_reason"], "length")

    def test_label_on_the_request(self) -> None:
        seen: list[str | None] = []
        site = self.service.site
        original = site.router.render

        def spy(request: Any) -> None:
            seen.append(request.key_label)
            original(request)

        site.router.render = spy  # type: ignore[method-assign]
        self.client.post("/v1/chat/completions", CHAT, headers=bearer(KEY))
        self.client.post("/v1/chat/completions", CHAT, headers={"api-key": OTHER})
        self.assertEqual(seen, ["team-a", mask(OTHER)])

    # --- exemptions ---

    def test_monitoring_exempt_by_default(self) -> None:
        self.assertEqual(self.client.get("/health").json(), {"status": "ok"})
        self.assertEqual(self.client.get("/stats").status, 200)
        # OpenRouter's catalog is public there.
        self.assertEqual(self.client.get("/api/v1/models").status, 200)
        self.assertEqual(self.client.get("/api/v1/models/gpt-4o").status, 200)

    def test_auth_health_guards_monitoring(self) -> None:
        self.use(auth_health=True)
        self.assertEqual(self.error(self.client.get("/health"))["message"], MISSING)
        self.error(self.client.get("/stats"))
        self.assertEqual(self.client.get("/health", headers=bearer(KEY)).status, 200)

    # --- OpenRouter mode ---

    def test_openrouter_envelope(self) -> None:
        path = "/api/v1/chat/completions"
        missing = self.client.post(path, CHAT)
        self.assertEqual(missing.status, 401)
        self.assertEqual(
            missing.json(), {"error": {"code": 401, "message": "No auth credentials found"}}
        )
        wrong = self.client.post(path, CHAT, headers=bearer("sk-or-v1-unknown"))
        self.assertEqual(wrong.json(), {"error": {"code": 401, "message": "User not found."}})
        self.assertEqual(self.client.post(path, CHAT, headers=bearer(KEY)).status, 200)

    def test_openrouter_key_reports_the_label(self) -> None:
        data = self.client.get("/api/v1/key", headers=bearer(KEY)).json()["data"]
        self.assertEqual(data["label"], "team-a")
        unlabelled = self.client.get("/api/v1/key", headers=bearer(OTHER)).json()["data"]
        self.assertEqual(unlabelled["label"], mask(OTHER))
        self.assertEqual(self.client.get("/api/v1/key", headers=bearer("x")).status, 401)

    # --- per-key limits ---

    def test_per_key_rpm(self) -> None:
        self.use(api_keys=(ApiKey(KEY, "tight", rpm=2), ApiKey(OTHER)), rpm=100)
        statuses = [
            self.client.post("/v1/chat/completions", CHAT, headers=bearer(KEY)).status
            for _ in range(3)
        ]
        self.assertEqual(statuses, [200, 200, 429])
        limited = self.client.post("/v1/chat/completions", CHAT, headers=bearer(KEY))
        self.assertEqual(limited.header("x-ratelimit-limit-requests"), "2")
        # The other key has the global limit.
        other = self.client.post("/v1/chat/completions", CHAT, headers={"api-key": OTHER})
        self.assertEqual(other.status, 200)
        self.assertEqual(other.header("x-ratelimit-limit-requests"), "100")
        self.assertEqual(other.header("x-ratelimit-remaining-requests"), "99")

    def test_per_key_tpm_without_global_limits(self) -> None:
        self.use(api_keys=(ApiKey(KEY, tpm=20), ApiKey(OTHER)))
        self.assertTrue(self.service.api.gate.limits.enabled)
        ok = self.client.post("/v1/chat/completions", CHAT, headers=bearer(KEY))
        self.assertEqual(ok.header("x-ratelimit-limit-tokens"), "20")
        big = {**CHAT, "max_tokens": 50}
        refused = self.client.post("/v1/chat/completions", big, headers=bearer(KEY))
        self.assertEqual(self.error(refused, 429)["code"], "rate_limit_exceeded")
        # No limit at all for a key without its own.
        free = self.client.post("/v1/chat/completions", big, headers=bearer(OTHER))
        self.assertEqual(free.status, 200)
        self.assertIsNone(free.header("x-ratelimit-limit-tokens"))


class TwistedStackAuthRoutes(AuthRoutes):
    """The same on twisted.web's HTTP/1.1 stack."""

    http = "twisted"


class OffTests(SynchronousTestCase):
    """Without keys, nothing changes: any or no key is accepted."""

    def test_no_authenticator(self) -> None:
        service = make_service(tokens_mean=4.0, tokens_stddev=0.0)
        self.assertIsNone(service.site.auth)
        self.assertIsNone(service.api.gate.auth)
        client = Client(service)
        for headers in ({}, bearer("anything"), {"api-key": "x"}):
            self.assertEqual(client.post("/v1/chat/completions", CHAT, headers=headers).status, 200)


class UnitTests(SynchronousTestCase):
    def test_needs_a_key(self) -> None:
        self.assertRaises(ValueError, Authenticator, [])

    def test_limits_only_for_keys_that_set_them(self) -> None:
        authenticator = Authenticator([ApiKey("a" * 20, rpm=3), ApiKey("b" * 20)])
        self.assertEqual(authenticator.limits(), {"a" * 20: (3, None)})

    def test_rate_limit_buckets_follow_either_header(self) -> None:
        from twisted.web.test.requesthelper import DummyRequest

        from mockoai.pipeline.limits import ANONYMOUS, request_key

        def key_of(headers: dict[bytes, bytes]) -> str:
            request = DummyRequest([b""])
            for name, value in headers.items():
                request.requestHeaders.setRawHeaders(name, [value])
            return request_key(request)

        self.assertEqual(key_of({b"authorization": b"Bearer sk-a"}), "sk-a")
        self.assertEqual(key_of({b"api-key": b" sk-azure "}), "sk-azure")
        both = {b"authorization": b"Bearer sk-a", b"api-key": b"sk-azure"}
        self.assertEqual(key_of(both), "sk-a")
        self.assertEqual(key_of({}), ANONYMOUS)

    def test_presented_key(self) -> None:
        from twisted.web.test.requesthelper import DummyRequest

        request = DummyRequest([b""])
        self.assertIsNone(auth.presented_key(request))
        request.requestHeaders.setRawHeaders(b"authorization", [b"BEARER  k1 "])
        self.assertEqual(auth.presented_key(request), b"k1")
        request.requestHeaders.setRawHeaders(b"authorization", [b"Token k1"])
        request.requestHeaders.setRawHeaders(b"api-key", [b"k2"])
        self.assertEqual(auth.presented_key(request), b"k2")

    def test_rate_limits_zero_means_unlimited_for_that_key(self) -> None:
        from twisted.internet.task import Clock

        limits = RateLimits(Clock(), rpm=1, per_key={"vip": (0, None)})
        for _ in range(5):
            self.assertTrue(limits.check("vip", None, 0).allowed)
        self.assertTrue(limits.check("someone", None, 0).allowed)
        self.assertFalse(limits.check("someone", None, 0).allowed)


class ConfigTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp()

    def tearDown(self) -> None:
        for name in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, name))
        os.rmdir(self.dir)

    def write(self, name: str, text: str) -> str:
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_cli_env_profile(self) -> None:
        self.assertEqual(load_settings({}, {}).auth.keys, ())
        cli = load_settings({"api_keys": ["k1-abc", "k2-def"]}, {})
        self.assertEqual([k.key for k in cli.auth.keys], ["k1-abc", "k2-def"])
        env = load_settings({}, {"MOCKOAI_API_KEYS": "e1, e2"})
        self.assertEqual([k.key for k in env.auth.keys], ["e1", "e2"])
        profile = self.write(
            "p.toml", 'api_keys = ["p1", {key = "p2", label = "two", rpm = 7}]\nauth_health = true'
        )
        settings = load_settings({"config": profile}, {})
        self.assertEqual(settings.auth.keys, (ApiKey("p1"), ApiKey("p2", "two", rpm=7)))
        self.assertTrue(settings.auth.health)

    def test_keys_file_toml(self) -> None:
        path = self.write(
            "keys.toml",
            '[[keys]]\nkey = "sk-team-a-0000000000"\nlabel = "team-a"\nrpm = 60\ntpm = 1000\n'
            '[[keys]]\nkey = "sk-team-b-0000000000"\n',
        )
        settings = load_settings({"api_keys_file": path}, {})
        assert settings.auth.keys_file is not None
        self.assertEqual(
            settings.auth.keys_file.keys,
            (ApiKey("sk-team-a-0000000000", "team-a", 60, 1000), ApiKey("sk-team-b-0000000000")),
        )
        self.assertEqual(len(settings.auth.all_keys), 2)
        # The startup log names the file and labels, never a key.
        line = describe(settings)
        self.assertIn(f"api_keys_file={path} (2 keys)", line)
        self.assertNotIn("sk-team-a-0000000000", line)

    def test_keys_file_json(self) -> None:
        entries = [{"key": "j1-0000", "label": "json"}, {"key": "j2-0000", "tpm": 5}]
        for text in (json.dumps({"keys": entries}), json.dumps(entries)):
            path = self.write("keys.json", text)
            keys = load_settings({"api_keys_file": path}, {}).auth.keys_file
            self.assertEqual(
                keys, KeysFile(path, (ApiKey("j1-0000", "json"), ApiKey("j2-0000", tpm=5)))
            )

    def test_errors(self) -> None:
        def error(cli: dict[str, Any]) -> str:
            with self.assertRaises(ConfigError) as caught:
                load_settings(cli, {})
            return str(caught.exception)

        self.assertIn(
            "--api-key: a key must be 1-128 printable ASCII", error({"api_keys": ["a b"]})
        )
        self.assertIn("is given twice", error({"api_keys": ["dup", "dup"]}))
        self.assertIn("cannot read", error({"api_keys_file": os.path.join(self.dir, "none")}))
        bad = self.write("bad.toml", "[[keys]]\nkey = 'k'\nrpm = -1\n")
        self.assertIn("key 1: rpm must be a whole number >= 0", error({"api_keys_file": bad}))
        odd = self.write("odd.toml", "[[keys]]\nkey = 'k'\nrole = 'admin'\n")
        self.assertIn("unknown key field(s) role", error({"api_keys_file": odd}))
        empty = self.write("empty.json", "[]")
        self.assertIn("expected a non-empty list of keys", error({"api_keys_file": empty}))
        broken = self.write("broken.json", "{")
        self.assertIn("is not valid JSON", error({"api_keys_file": broken}))
        both = self.write("both.toml", "[[keys]]\nkey = 'shared-key-0000000'\n")
        self.assertEqual(
            error({"api_keys": ["shared-key-0000000"], "api_keys_file": both}),
            "--api-keys-file: key shared-k******0000 is also given by --api-key",
        )


@needs_openai
class EndToEndTests(SynchronousTestCase):
    """A real ``twistd`` with keys, driven by the official SDK."""

    def setUp(self) -> None:
        self.server = TwistdProcess(
            ["--api-key", KEY, "--api-key", OTHER, "--articles", "64", "--tokens-mean", "6"]
        )
        self.addCleanup(self.server.cleanup)
        self.server.start()
        self.addCleanup(self.server.stop)

    def client(self, key: str) -> openai.OpenAI:
        client = openai.OpenAI(base_url=f"{self.server.base_url}/v1", api_key=key, max_retries=0)
        self.addCleanup(client.close)
        return client

    def test_sdk(self) -> None:
        answer = self.client(KEY).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )
        self.assertEqual(answer.object, "chat.completion")
        stream = self.client(OTHER).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], max_tokens=4, stream=True
        )
        self.assertGreaterEqual(sum(1 for _ in stream), 2)
        with self.assertRaises(openai.AuthenticationError) as caught:
            self.client("sk-wrong-0000000000000000").models.list()
        self.assertEqual(caught.exception.status_code, 401)
        self.assertEqual(caught.exception.code, "invalid_api_key")
        self.assertIn("sk-wrong*************0000", caught.exception.message)
