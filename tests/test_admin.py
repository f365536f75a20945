"""
The admin API (L{mockoai.ops.admin}): rules, per-model settings, resets,
the journal and the verdict at runtime, the admin key, and -- with
``--workers 2``, real processes -- a change reaching every worker and the
journal merging theirs.
"""

from __future__ import annotations

import http.client
import json
import time
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from mockoai.ops.config import ApiKey
from tests.support import Client, Response, TwistdProcess, make_service

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
RULES = {"rules": [{"name": "down", "fault": "status:503:retry-after=1"}]}


class AdminTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.service = make_service(
            models=("gpt-4o",), tokens_mean=5.0, tokens_stddev=0.0, itl=0.01, rpm=2
        )
        self.client = Client(self.service)

    def call(self, method: str, path: str, document: object = None, **kwargs: Any) -> Response:
        return self.client.request(method, path, document, **kwargs)

    def chat(self) -> Response:
        return self.client.post("/v1/chat/completions", CHAT)

    def test_rules_get_and_put(self) -> None:
        self.assertEqual(self.call("GET", "/_mockoai/rules").json()["rules"], [])
        put = self.call("PUT", "/_mockoai/rules", RULES)
        self.assertEqual(put.json(), {"rules": 1, "workers": 1, "failed": 0})
        self.assertEqual(self.chat().status, 503)
        state = self.call("GET", "/_mockoai/rules").json()
        self.assertEqual(
            state["rules"],
            [
                {
                    "name": "down",
                    "fault": "status:503:retry-after=1",
                    "_counts": {"matched": 1, "applied": 1},
                }
            ],
        )
        self.assertEqual(state["source"], "admin API")
        toml = b'[[rules]]\nname = "slow"\nlatency = { ttft_ms = 5 }\n'
        put = self.call(
            "PUT", "/_mockoai/rules", body=toml, headers={"Content-Type": "application/toml"}
        )
        self.assertEqual(put.json()["rules"], 1)
        self.assertEqual(self.chat().status, 200)
        self.assertEqual(self.call("PUT", "/_mockoai/rules", {"rules": []}).json()["rules"], 0)

    def test_bad_rules_are_400s(self) -> None:
        for body, message in (
            ({"rules": [{"fault": "explode"}]}, "unknown fault 'explode'"),
            ({"rules": [{"name": "x"}]}, "rule 'x': does nothing"),
            (b"{", "is not valid JSON"),
        ):
            kwargs: dict[str, Any] = {"body": body} if isinstance(body, bytes) else {}
            response = self.call("PUT", "/_mockoai/rules", None if kwargs else body, **kwargs)
            self.assertEqual(response.status, 400, response.body)
            self.assertIn(message, response.json()["error"]["message"])
        self.assertEqual(self.call("GET", "/_mockoai/rules").json()["rules"], [])

    def test_models_at_runtime(self) -> None:
        models = self.call("GET", "/_mockoai/models").json()
        self.assertEqual(models["gpt-4o"]["itl"], "10ms")
        patched = self.call("PATCH", "/_mockoai/models/gpt-4o", {"itl": 200, "max_running": 2})
        self.assertEqual(patched.status, 200, patched.body)
        self.assertEqual((patched.json()["itl"], patched.json()["max_running"]), ("200ms", "2"))
        served = self.service.core.models["gpt-4o"]
        assert served.engine is not None
        self.assertEqual(served.engine.config.max_running, 2)
        started = self.service.clock.seconds()
        self.chat()
        self.assertGreaterEqual(self.service.clock.seconds() - started, 0.8)  # 4 gaps of 200 ms
        self.call("PATCH", "/_mockoai/models/gpt-4o", {"max_running": 0})
        self.assertIsNone(served.engine)
        bad = self.call("PATCH", "/_mockoai/models/gpt-4o", {"itl": "fast"})
        self.assertEqual(bad.status, 400)
        self.assertIn("Invalid setting for gpt-4o: itl:", bad.json()["error"]["message"])
        self.assertEqual(self.call("PATCH", "/_mockoai/models/gpt-4o", {"colour": 1}).status, 400)
        self.assertEqual(self.call("GET", "/_mockoai/models/nope").status, 404)

    def test_reset(self) -> None:
        self.call("PUT", "/_mockoai/rules", {"rules": [{"first": 1, "fault": "status:503"}]})
        self.assertEqual([self.chat().status for _ in range(3)], [503, 200, 429])
        self.assertEqual(len(self.call("GET", "/_mockoai/journal").json()["requests"]), 3)
        self.assertEqual(self.call("POST", "/_mockoai/reset").json()["reset"], True)
        self.assertEqual(self.call("GET", "/_mockoai/journal").json()["requests"], [])
        self.assertEqual(self.client.get("/stats").json()["models"], {})
        self.assertEqual(
            self.call("GET", "/_mockoai/rules").json()["rules"][0]["_counts"]["matched"], 0
        )
        # The rule's count starts again, and the rate limit's bucket is full again.
        self.assertEqual([self.chat().status for _ in range(2)], [503, 200])

    def test_journal_and_verdict(self) -> None:
        self.call("PUT", "/_mockoai/rules", RULES)
        for _ in range(2):  # --rpm 2
            self.chat()
        self.client.get("/health")
        journal = self.call("GET", "/_mockoai/journal?limit=2").json()["requests"]
        self.assertEqual(len(journal), 2)
        self.assertEqual([e["fault"] for e in journal], ["status:503:retry-after=1", None])
        self.assertEqual(journal[-1]["endpoint"], "/health")
        verdict = self.call("GET", "/_mockoai/verdict").json()
        self.assertEqual(verdict["clients"]["127.0.0.1"]["verdict"], "bad")
        plain = self.call("GET", "/_mockoai/verdict?format=text")
        self.assertEqual(plain.header("Content-Type"), "text/plain; charset=utf-8")
        self.assertIn("127.0.0.1: BAD", plain.body.decode())
        accepted = self.call("GET", "/_mockoai/verdict", headers={"Accept": "text/plain"})
        self.assertIn("request(s) judged", accepted.body.decode())
        self.assertEqual(self.call("GET", "/_mockoai/journal?limit=x").status, 400)


class AdminKeyTests(SynchronousTestCase):
    def test_off_with_keys_and_no_admin_key(self) -> None:
        service = make_service(models=("gpt-4o",), api_keys=(ApiKey("sk-user"),))
        response = Client(service).get(
            "/_mockoai/rules", headers={"Authorization": "Bearer sk-user"}
        )
        self.assertEqual(response.status, 403)
        self.assertEqual(response.json()["error"]["code"], "admin_api_off")

    def test_the_admin_key(self) -> None:
        service = make_service(
            models=("gpt-4o",), api_keys=(ApiKey("sk-user"),), admin_key="admin-secret"
        )
        client = Client(service)
        for headers in ({}, {"Authorization": "Bearer sk-user"}, {"x-mockoai-admin-key": "nope"}):
            response = client.get("/_mockoai/journal", headers=headers)
            self.assertEqual(response.status, 401, headers)
            self.assertEqual(response.json()["error"]["code"], "invalid_admin_key")
        for headers in (
            {"Authorization": "Bearer admin-secret"},
            {"x-mockoai-admin-key": "admin-secret"},
        ):
            self.assertEqual(client.get("/_mockoai/journal", headers=headers).status, 200)
        # The admin key is not an API key.
        chat = client.post(
            "/v1/chat/completions", CHAT, headers={"Authorization": "Bearer admin-secret"}
        )
        self.assertEqual(chat.status, 401)

    def test_an_admin_key_alone_is_required_too(self) -> None:
        service = make_service(models=("gpt-4o",), admin_key="admin-secret")
        self.assertEqual(Client(service).get("/_mockoai/rules").status, 401)


class WorkersTests(SynchronousTestCase):
    """``--workers 2``: one PUT reaches both; the journal merges both."""

    def request(
        self, server: TwistdProcess, method: str, path: str, body: object = None
    ) -> tuple[int, Any]:
        # A connection per request: the kernel spreads them over the workers.
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=15)
        try:
            payload = None if body is None else json.dumps(body).encode()
            connection.request(
                method, path, body=payload, headers={"Content-Type": "application/json"}
            )
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        try:
            return response.status, json.loads(data)
        except ValueError:
            return response.status, data

    def test_admin_changes_reach_every_worker(self) -> None:
        server = TwistdProcess(["--workers", "2", "--articles", "64", "--tokens-mean", "5"])
        self.addCleanup(server.cleanup)
        server.start(timeout=60)
        self.addCleanup(server.stop, 30)
        # Both workers up and reachable by each other: a scrape counts them both.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status, metrics = self.request(server, "GET", "/metrics")
            if status == 200 and b"mockoai_workers 2.0" in metrics:
                break
            time.sleep(0.2)
        status, answer = self.request(server, "PUT", "/_mockoai/rules", RULES)
        self.assertEqual((status, answer), (200, {"rules": 1, "workers": 2, "failed": 0}))
        statuses = [
            self.request(server, "POST", "/v1/chat/completions", CHAT)[0] for _ in range(16)
        ]
        self.assertEqual(statuses, [503] * 16)
        status, journal = self.request(server, "GET", "/_mockoai/journal")
        entries = [e for e in journal["requests"] if e["endpoint"] == "/v1/chat/completions"]
        self.assertEqual(len(entries), 16)
        self.assertEqual({e["worker"] for e in entries}, {0, 1})
        self.assertEqual([e["time"] for e in entries], sorted(e["time"] for e in entries))
        status, patched = self.request(server, "PATCH", "/_mockoai/models/gpt-4o", {"itl": 7})
        self.assertEqual((status, patched["workers"], patched["itl"]), (200, 2, "7ms"))
        for _ in range(4):
            self.assertEqual(
                self.request(server, "GET", "/_mockoai/models/gpt-4o")[1]["itl"], "7ms"
            )
        self.assertEqual(self.request(server, "POST", "/_mockoai/reset")[1]["workers"], 2)
        self.assertEqual(self.request(server, "GET", "/_mockoai/journal")[1]["requests"], [])
        status, cleared = self.request(server, "PUT", "/_mockoai/rules", {"rules": []})
        self.assertEqual(cleared["workers"], 2)
        statuses = [self.request(server, "POST", "/v1/chat/completions", CHAT)[0] for _ in range(8)]
        self.assertEqual(statuses, [200] * 8)
