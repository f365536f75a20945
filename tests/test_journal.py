"""
The journal (L{mockoai.ops.journal}): kept while rules or control headers
are in force (or as ``--journal`` says), bounded, each request with its
client, timings, rule, fault and ending, bodies only when asked for.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from mockoai.ops.journal import Journal, merged
from mockoai.pipeline.rules import compile_document
from tests.optional import STACKS
from tests.support import Client, make_service

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


class JournalTests(SynchronousTestCase):
    def service(self, **settings: Any) -> Any:
        return make_service(models=("gpt-4o",), tokens_mean=5.0, tokens_stddev=0.0, **settings)

    def journal(self, service: Any) -> Journal:
        journal: Journal = service.api.admin.journal
        return journal

    def test_kept_while_rules_are_in_force(self) -> None:
        service = self.service()
        client = Client(service)
        client.post("/v1/chat/completions", CHAT)
        self.assertEqual(self.journal(service).entries(), [])
        service.api.admin.control.load(
            compile_document(
                {"rules": [{"name": "down", "nth": 1, "fault": "status:503:retry-after=2"}]}
            )
        )
        client.post(
            "/v1/chat/completions", CHAT, headers={"Authorization": "Bearer sk-journal-1234"}
        )
        client.post("/v1/chat/completions", {**CHAT, "stream": True})
        client.get("/health")
        first, second, health = self.journal(service).entries()
        self.assertEqual(
            {k: first[k] for k in ("client", "endpoint", "status", "rule", "fault", "retry_after")},
            {
                "client": "key sk-...1234",
                "endpoint": "/v1/chat/completions",
                "status": 503,
                "rule": "down",
                "fault": "status:503:retry-after=2",
                "retry_after": 2.0,
            },
        )
        self.assertEqual(first["outcome"], "error")
        self.assertEqual(
            (second["client"], second["status"], second["outcome"]), ("127.0.0.1", 200, "answered")
        )
        self.assertEqual(
            (second["rule"], second["stream"], second["completion_tokens"]), (None, True, 5)
        )
        self.assertNotIn("body", second)
        self.assertTrue(second["id"].startswith("req_"))
        self.assertEqual((health["endpoint"], health["model"]), ("/health", None))

    def test_modes_size_and_bodies(self) -> None:
        service = self.service(journal="on", journal_size=2, journal_bodies=10)
        client = Client(service)
        for _ in range(3):
            client.post("/v1/chat/completions", CHAT)
        entries = self.journal(service).entries()
        self.assertEqual(len(entries), 2)
        self.assertEqual(entries[0]["body"], '{"model": ')
        off = self.service(journal="off", allow_control_headers=True)
        Client(off).post("/v1/chat/completions", CHAT)
        self.assertEqual(self.journal(off).entries(), [])
        headers = self.service(allow_control_headers=True)
        Client(headers).post("/v1/chat/completions", CHAT)
        self.assertEqual(len(self.journal(headers).entries()), 1)

    def test_both_stacks(self) -> None:
        """The lean stack's header list and twisted.web's headers read the same."""
        for http in STACKS:
            service = self.service(journal="on", allow_control_headers=True, http=http)
            headers = {"x-api-key": "sk-ant-journal-0042", "x-stainless-retry-count": "2"}
            Client(service).post("/v1/chat/completions", CHAT, headers=headers)
            Client(service).post(
                "/v1/chat/completions", CHAT, headers={**headers, "x-mockoai-fault": "empty"}
            )
            plain, faulted = self.journal(service).entries()
            for entry in (plain, faulted):
                self.assertEqual((entry["client"], entry["retry"]), ("key sk-...0042", 2), http)
            self.assertEqual((faulted["rule"], faulted["fault"]), ("header", "empty"))

    def test_merged(self) -> None:
        a = [{"time": 1.0, "id": "a1"}, {"time": 3.0, "id": "a3"}]
        b = [{"time": 2.0, "id": "b2"}]
        self.assertEqual([e["id"] for e in merged([a, b])], ["a1", "b2", "a3"])
        self.assertEqual([e["id"] for e in merged([a, b], 2)], ["b2", "a3"])
