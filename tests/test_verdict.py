"""
The verdict on clients (L{mockoai.ops.verdict}) over journals written by
hand: what counts as a retry, waiting the Retry-After, backoff growth,
retries of errors that cannot succeed, storms, abandoned streams, recovery.
(The official SDK against a real server: tests/test_failure_handling.py.)
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from mockoai.ops.verdict import judge, text


class Log:
    """A journal for one client, written a request at a time."""

    def __init__(self, client: str = "key sk-...good") -> None:
        self.client = client
        self.entries: list[dict[str, Any]] = []

    def add(
        self,
        arrived: float,
        status: int,
        took: float = 0.0,
        retry_after: float | None = None,
        body: int = 1,
        stream: bool = False,
        outcome: str | None = None,
    ) -> Log:
        self.entries.append(
            {
                "time": arrived + took,
                "arrived": arrived,
                "client": self.client,
                "method": "POST",
                "endpoint": "/v1/chat/completions",
                "status": status,
                "stream": stream,
                "retry_after": retry_after,
                "body_crc": body,
                "outcome": outcome or ("error" if status >= 400 else "answered"),
            }
        )
        return self

    def verdict(self) -> dict[str, Any]:
        judged: dict[str, Any] = judge(self.entries)["clients"][self.client]
        return judged


class RetryAfterTests(SynchronousTestCase):
    def test_waiting_the_retry_after_is_good(self) -> None:
        log = Log().add(0, 503, retry_after=1).add(1.02, 503, retry_after=1).add(2.05, 200, 0.3)
        verdict = log.verdict()
        self.assertEqual(verdict["verdict"], "good", verdict)
        self.assertEqual((verdict["retries"], verdict["waited_retry_after"]), (2, 2))
        self.assertEqual(verdict["recovery_s"], [1.03])  # from the last failure to its success
        self.assertTrue(verdict["recovered"])

    def test_retrying_at_once_is_bad(self) -> None:
        log = Log("10.0.0.9")
        for n in range(4):
            log.add(n * 0.01, 503, retry_after=2)
        log.add(0.05, 200)
        verdict = log.verdict()
        self.assertEqual(verdict["verdict"], "bad")
        self.assertEqual(verdict["reasons"], ["4 retries ignored Retry-After"])
        self.assertEqual(verdict["waited_retry_after"], 0)

    def test_a_different_request_is_not_a_retry(self) -> None:
        log = Log().add(0, 503, retry_after=5).add(0.1, 200, body=2)
        verdict = log.verdict()
        self.assertEqual((verdict["verdict"], verdict["retries"]), ("good", 0))


class BackoffTests(SynchronousTestCase):
    def test_growing_waits_are_good(self) -> None:
        log = Log().add(0, 500).add(0.5, 502).add(1.5, 503).add(3.5, 200)
        verdict = log.verdict()
        self.assertEqual(verdict["verdict"], "good", verdict)
        self.assertEqual(verdict["backoff_growth"], 2.0)

    def test_steady_waits_are_bad(self) -> None:
        log = Log().add(0, 500).add(0.5, 500).add(1.0, 500).add(1.5, 200)
        verdict = log.verdict()
        self.assertEqual(verdict["verdict"], "bad")
        self.assertEqual(
            verdict["reasons"], ["waits between retries did not grow (x1.00 on average)"]
        )

    def test_no_wait_is_bad(self) -> None:
        verdict = Log().add(0, 500).add(0.01, 200).verdict()
        self.assertEqual(verdict["reasons"], ["1 retry sent at once"])

    def test_a_storm(self) -> None:
        log = Log()
        for n in range(12):
            log.add(float(n), 429, retry_after=1)
        verdict = log.verdict()
        self.assertIn("a retry storm: 11 retries of one request", verdict["reasons"])
        self.assertFalse(verdict["recovered"])


class FinalErrorTests(SynchronousTestCase):
    def test_retrying_what_cannot_succeed_is_bad(self) -> None:
        verdict = Log().add(0, 400).add(1.0, 400).add(5, 401, body=3).add(9, 401, body=3).verdict()
        self.assertEqual(verdict["verdict"], "bad")
        self.assertEqual(verdict["reasons"], ["2 retries of errors that cannot succeed (400, 401)"])
        self.assertEqual(verdict["retries_of_final_errors"], 2)

    def test_sending_it_once_is_fine(self) -> None:
        self.assertEqual(Log().add(0, 400).add(1, 200, body=2).verdict()["verdict"], "good")


class OtherTests(SynchronousTestCase):
    def test_abandoned_streams_and_clients_apart(self) -> None:
        good = Log("key sk-...good").add(0, 200, 1, stream=True, outcome="abandoned")
        bad = Log("key sk-...-bad").add(0, 503, retry_after=1).add(0.001, 503, retry_after=1)
        judged = judge(good.entries + bad.entries)
        self.assertEqual(judged["requests"], 3)
        self.assertEqual(judged["clients"]["key sk-...good"]["streams_abandoned"], 1)
        self.assertEqual(judged["clients"]["key sk-...good"]["verdict"], "good")
        self.assertEqual(judged["clients"]["key sk-...-bad"]["verdict"], "bad")
        words = text(judged)
        self.assertIn("key sk-...good: GOOD\n", words)
        self.assertIn("key sk-...-bad: BAD\n  - 1 retry ignored Retry-After\n", words)
        self.assertIn("1 stream(s) abandoned", words)
        self.assertIn("still failing at the end of the journal", words)

    def test_nothing_to_judge(self) -> None:
        self.assertEqual(judge([]), {"clients": {}, "requests": 0})
        self.assertEqual(text(judge([])), "0 request(s) judged\n")
