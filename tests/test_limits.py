"""Rate limits and the connection cap, on a Clock."""

from __future__ import annotations

import json
import math
import re

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from mockoai.pipeline import limits
from mockoai.pipeline.errors import openai_envelope
from mockoai.pipeline.limits import (
    ANONYMOUS,
    UNLIMITED,
    BucketMap,
    ConnectionCap,
    Decision,
    RateLimits,
    RefusedConnection,
    TokenBucket,
    ceil_ms,
    client_ip,
    duration,
    headers,
    key_from_authorization,
)
from mockoai.wire.failures import refusal

#: A real-looking reactor time: floats there have ~0.2 us resolution.
EPOCH = 1_700_000_000.0

LEARN_MORE = "Visit https://platform.openai.com/account/rate-limits to learn more."


def parse_duration(text: str) -> float:
    """Go's duration syntax, as the headers use it, back to seconds."""
    if text.endswith("ms"):
        return int(text[:-2]) / 1000
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(\d+(?:\.\d+)?)s", text)
    assert match, text
    hours, minutes, secs = match.groups()
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(secs)


def header_map(decision: Decision) -> dict[bytes, bytes]:
    return dict(headers(decision))


def error_headers(decision: Decision) -> dict[bytes, bytes]:
    assert decision.error is not None
    return dict(decision.error.headers)


def envelope(decision: Decision) -> dict[str, object]:
    assert decision.error is not None
    body = json.loads(decision.error.body())
    error: dict[str, object] = body["error"]
    return error


class DurationTests(SynchronousTestCase):
    def test_openai_forms(self) -> None:
        for seconds, text in [
            (0, "0s"),
            (-1, "0s"),
            (0.012, "12ms"),
            (0.009, "9ms"),
            (0.0064, "7ms"),  # rounded up: waiting that long is enough
            (0.00001, "1ms"),
            (0.999, "999ms"),
            (1, "1s"),
            (20, "20s"),
            (41.724, "41.724s"),
            (1.5, "1.5s"),
            (60, "1m0s"),
            (90.5, "1m30.5s"),
            (360, "6m0s"),
            (3600, "1h0m0s"),
            (3723.25, "1h2m3.25s"),
        ]:
            self.assertEqual(duration(seconds), text, seconds)

    def test_float_noise_is_not_a_millisecond(self) -> None:
        # (0.1 + 0.2) * 200 / 3 is 20 s and an ulp: not 20.001 s.
        noisy = (0.1 + 0.2) * 200 / 3
        self.assertGreater(noisy, 20.0)
        self.assertEqual(duration(noisy), "20s")
        self.assertEqual(duration(20.0 - 1e-12), "20s")
        self.assertEqual(ceil_ms(20.000000001), 20000)
        self.assertEqual(ceil_ms(20.0001), 20001)

    @given(st.floats(min_value=0.0005, max_value=100_000, allow_nan=False))
    def test_round_trip_rounds_up_to_the_millisecond(self, seconds: float) -> None:
        back = parse_duration(duration(seconds))
        self.assertGreaterEqual(back, seconds - 1e-6)
        self.assertLess(back, seconds + 0.001 + 1e-9)


class TokenBucketTests(SynchronousTestCase):
    def test_refill_is_continuous_and_capped(self) -> None:
        bucket = TokenBucket(3, now=0.0)
        bucket.take(3, 0.0)
        self.assertEqual(bucket.refill(10.0), 0.5)
        self.assertEqual(bucket.remaining(10.0), 0)
        self.assertEqual(bucket.wait(1, 10.0), 10.0)
        self.assertEqual(bucket.reset(10.0), 50.0)
        self.assertEqual(bucket.remaining(40.0), 2)
        self.assertEqual(bucket.refill(1000.0), 3)
        self.assertTrue(bucket.full(60.0))

    def test_wait_beyond_capacity_is_infinite(self) -> None:
        bucket = TokenBucket(100, now=0.0)
        self.assertEqual(bucket.wait(101, 0.0), math.inf)
        self.assertEqual(bucket.wait(100, 0.0), 0.0)

    def test_give_never_overfills(self) -> None:
        bucket = TokenBucket(10, now=0.0)
        bucket.take(4, 0.0)
        bucket.give(100, 1.0)
        self.assertEqual(bucket.level, 10)
        self.assertTrue(bucket.full(1.0))
        self.assertEqual(bucket.reset(1.0), 0.0)

    def test_rejects_nonsense(self) -> None:
        self.assertRaises(ValueError, TokenBucket, 0, 0.0)
        self.assertRaises(ValueError, TokenBucket, 1, 0.0, period=0)


class RequestLimitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.limits = RateLimits(self.clock, rpm=3)

    def test_allowance_then_refusal_at_the_limit(self) -> None:
        resets = []
        for remaining in (2, 1, 0):
            decision = self.limits.check("sk-a", None, 0, model="gpt-4o")
            self.assertTrue(decision.allowed)
            self.assertIsNone(decision.error)
            found = header_map(decision)
            self.assertEqual(found[b"x-ratelimit-limit-requests"], b"3")
            self.assertEqual(found[b"x-ratelimit-remaining-requests"], b"%d" % remaining)
            resets.append(found[b"x-ratelimit-reset-requests"])
            self.assertNotIn(b"x-ratelimit-limit-tokens", found)
        self.assertEqual(resets, [b"20s", b"40s", b"1m0s"])

        refused = self.limits.check("sk-a", None, 0, model="gpt-4o")
        self.assertFalse(refused.allowed)
        assert refused.error is not None
        self.assertEqual(refused.error.status, 429)
        self.assertEqual(
            envelope(refused),
            {
                "message": "Rate limit reached for gpt-4o in organization org-mockoai on "
                "requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 20s. "
                + LEARN_MORE,
                "type": "requests",
                "param": None,
                "code": "rate_limit_exceeded",
            },
        )
        found = error_headers(refused)
        self.assertEqual(found[b"Retry-After"], b"20")
        self.assertEqual(found[b"retry-after-ms"], b"20000")
        self.assertEqual(found[b"x-ratelimit-remaining-requests"], b"0")
        self.assertEqual(found[b"x-ratelimit-reset-requests"], b"1m0s")
        self.assertEqual(header_map(refused)[b"x-ratelimit-remaining-requests"], b"0")
        self.assertEqual(refused.retry_after, 20.0)
        self.assertEqual(self.limits.refused, 1)

    def test_partial_refill(self) -> None:
        for _ in range(3):
            self.limits.check("sk-a", None, 0)
        self.clock.advance(10)  # half a request back
        refused = self.limits.check("sk-a", None, 0)
        self.assertIn("Used 3, Requested 1. Please try again in 10s.", envelope(refused)["message"])
        found = error_headers(refused)
        self.assertEqual(found[b"Retry-After"], b"10")
        self.assertEqual(found[b"retry-after-ms"], b"10000")
        self.assertEqual(found[b"x-ratelimit-reset-requests"], b"50s")

        self.clock.advance(7.5)  # 0.875 of a request: 2.5 s to go
        refused = self.limits.check("sk-a", None, 0)
        self.assertIn("Please try again in 2.5s.", envelope(refused)["message"])
        found = error_headers(refused)
        self.assertEqual(found[b"Retry-After"], b"3")  # whole seconds, rounded up
        self.assertEqual(found[b"retry-after-ms"], b"2500")
        self.assertEqual(found[b"x-ratelimit-reset-requests"], b"42.5s")

        self.clock.advance(2.5)
        allowed = self.limits.check("sk-a", None, 0)
        self.assertTrue(allowed.allowed)
        found = header_map(allowed)
        self.assertEqual(found[b"x-ratelimit-remaining-requests"], b"0")
        self.assertEqual(found[b"x-ratelimit-reset-requests"], b"1m0s")

        self.clock.advance(30)  # 1.5 requests back: one whole one
        found = header_map(self.limits.check("sk-a", None, 0))
        self.assertEqual(found[b"x-ratelimit-remaining-requests"], b"0")
        self.assertEqual(found[b"x-ratelimit-reset-requests"], b"50s")

    def test_a_refusal_spends_nothing(self) -> None:
        for _ in range(3):
            self.limits.check("sk-a", None, 0)
        for _ in range(50):
            self.assertFalse(self.limits.check("sk-a", None, 0).allowed)
        self.clock.advance(20)
        self.assertTrue(self.limits.check("sk-a", None, 0).allowed)

    def test_keys_are_independent(self) -> None:
        for _ in range(3):
            self.limits.check("sk-a", None, 0)
        other = self.limits.check("sk-b", None, 0)
        self.assertTrue(other.allowed)
        self.assertEqual(other.key, "sk-b")
        self.assertEqual(header_map(other)[b"x-ratelimit-remaining-requests"], b"2")
        self.assertFalse(self.limits.check("sk-a", None, 0).allowed)

    def test_empty_key_is_anonymous(self) -> None:
        self.assertEqual(self.limits.check("", None, 0).key, ANONYMOUS)

    def test_message_without_a_model(self) -> None:
        for _ in range(3):
            self.limits.check("sk-a", None, 0)
        message = envelope(self.limits.check("sk-a", None, 0))["message"]
        assert isinstance(message, str)
        self.assertTrue(message.startswith("Rate limit reached in organization org-mockoai on"))


class RealClockTimeTests(SynchronousTestCase):
    """The same exact values far from time 0, where floats are coarser."""

    def test_partial_refill_at_epoch(self) -> None:
        clock = Clock()
        clock.advance(EPOCH + 0.123)
        rate = RateLimits(clock, rpm=3, tpm=150_000)
        for _ in range(3):
            rate.check("k", None, 16)
        clock.advance(0.1)
        clock.advance(0.2)
        clock.advance(9.7)
        refused = rate.check("k", None, 16)
        found = error_headers(refused)
        self.assertEqual(found[b"retry-after-ms"], b"10000")
        self.assertEqual(found[b"Retry-After"], b"10")
        self.assertEqual(found[b"x-ratelimit-reset-requests"], b"50s")
        self.assertEqual(found[b"x-ratelimit-remaining-tokens"], b"150000")


class TokenLimitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.limits = RateLimits(self.clock, rpm=100, tpm=1000)

    def test_openai_published_example(self) -> None:
        # A 24-token request at 5000 RPM / 160000 TPM, as OpenAI answers it.
        rate = RateLimits(Clock(), rpm=5000, tpm=160_000)
        self.assertEqual(
            headers(rate.check("k", None, 24)),
            [
                (b"x-ratelimit-limit-requests", b"5000"),
                (b"x-ratelimit-remaining-requests", b"4999"),
                (b"x-ratelimit-reset-requests", b"12ms"),
                (b"x-ratelimit-limit-tokens", b"160000"),
                (b"x-ratelimit-remaining-tokens", b"159976"),
                (b"x-ratelimit-reset-tokens", b"9ms"),
            ],
        )

    def test_openai_published_refusal(self) -> None:
        rate = RateLimits(Clock(), tpm=10_000)
        rate.check("k", None, 8782)
        refused = rate.check("k", None, 8172, model="gpt-4")
        self.assertEqual(
            envelope(refused)["message"],
            "Rate limit reached for gpt-4 in organization org-mockoai on tokens per min (TPM): "
            "Limit 10000, Used 8782, Requested 8172. Please try again in 41.724s. " + LEARN_MORE,
        )
        self.assertEqual(envelope(refused)["type"], "tokens")
        found = error_headers(refused)
        self.assertEqual(found[b"retry-after-ms"], b"41724")
        self.assertEqual(found[b"Retry-After"], b"42")
        self.assertNotIn(b"x-ratelimit-limit-requests", found)

    def test_tokens_refuse_while_requests_remain(self) -> None:
        first = self.limits.check("k", None, 600)
        found = header_map(first)
        self.assertEqual(found[b"x-ratelimit-remaining-tokens"], b"400")
        self.assertEqual(found[b"x-ratelimit-reset-tokens"], b"36s")
        self.assertEqual(found[b"x-ratelimit-remaining-requests"], b"99")
        self.assertEqual(found[b"x-ratelimit-reset-requests"], b"600ms")

        refused = self.limits.check("k", None, 500)
        self.assertEqual(envelope(refused)["type"], "tokens")
        self.assertIn(
            "Limit 1000, Used 600, Requested 500. Please try again in 6s.",
            envelope(refused)["message"],
        )
        self.assertEqual(error_headers(refused)[b"Retry-After"], b"6")
        self.assertEqual(error_headers(refused)[b"retry-after-ms"], b"6000")
        # The refused request spent no request either.
        self.assertEqual(error_headers(refused)[b"x-ratelimit-remaining-requests"], b"99")

        small = self.limits.check("k", None, 400)
        self.assertTrue(small.allowed)
        self.assertEqual(header_map(small)[b"x-ratelimit-remaining-tokens"], b"0")
        self.assertEqual(header_map(small)[b"x-ratelimit-remaining-requests"], b"98")

    def test_requests_refuse_while_tokens_remain(self) -> None:
        rate = RateLimits(self.clock, rpm=1, tpm=1000)
        rate.check("k", None, 10)
        refused = rate.check("k", None, 10)
        self.assertEqual(envelope(refused)["type"], "requests")
        self.assertEqual(error_headers(refused)[b"x-ratelimit-remaining-tokens"], b"990")
        self.assertEqual(error_headers(refused)[b"retry-after-ms"], b"60000")

    def test_the_slowest_bucket_decides(self) -> None:
        rate = RateLimits(self.clock, rpm=2, tpm=1000)
        rate.check("k", None, 500)
        rate.check("k", None, 500)
        self.clock.advance(15)  # requests: 0.5 back (15 s to go); tokens: 250 back
        refused = rate.check("k", None, 750)  # tokens: 500 more, 30 s to go
        self.assertEqual(envelope(refused)["type"], "tokens")
        self.assertEqual(refused.retry_after, 30.0)
        self.assertEqual(error_headers(refused)[b"retry-after-ms"], b"30000")
        self.clock.advance(29.9)
        self.assertFalse(rate.check("k", None, 750).allowed)
        self.clock.advance(0.1)
        self.assertTrue(rate.check("k", None, 750).allowed)

    def test_request_too_large_ever_to_pass(self) -> None:
        refused = self.limits.check("k", None, 1001, model="gpt-4o")
        self.assertFalse(refused.allowed)
        self.assertEqual(
            envelope(refused),
            {
                "message": "Request too large for gpt-4o in organization org-mockoai on tokens "
                "per min (TPM): Limit 1000, Requested 1001. The input or output tokens must be "
                "reduced in order to run successfully. " + LEARN_MORE,
                "type": "tokens",
                "param": None,
                "code": "rate_limit_exceeded",
            },
        )
        found = error_headers(refused)
        self.assertNotIn(b"Retry-After", found)  # waiting would not help
        self.assertNotIn(b"retry-after-ms", found)
        self.assertEqual(found[b"x-ratelimit-remaining-tokens"], b"1000")
        self.assertEqual(refused.retry_after, math.inf)

    def test_credit_back_unused_tokens(self) -> None:
        decision = self.limits.check("k", None, 800)
        self.assertEqual(decision.charged, 800)
        self.limits.credit(decision, used_tokens=300)
        found = header_map(self.limits.check("k", None, 0))
        self.assertEqual(found[b"x-ratelimit-remaining-tokens"], b"700")
        self.assertEqual(found[b"x-ratelimit-reset-tokens"], b"18s")
        self.assertTrue(self.limits.check("k", None, 700).allowed)

    def test_credit_is_bounded(self) -> None:
        decision = self.limits.check("k", None, 100)
        self.clock.advance(60)
        self.limits.credit(decision, used_tokens=0)  # the bucket is full already
        self.assertEqual(
            header_map(self.limits.check("k", None, 0))[b"x-ratelimit-remaining-tokens"], b"1000"
        )
        used_more = self.limits.check("k", None, 100)
        self.limits.credit(used_more, used_tokens=150)  # nothing to give back
        self.assertEqual(
            header_map(self.limits.check("k", None, 0))[b"x-ratelimit-remaining-tokens"], b"900"
        )

    def test_credit_ignores_refusals(self) -> None:
        self.limits.check("k", None, 900)
        refused = self.limits.check("k", None, 900)
        self.limits.credit(refused, used_tokens=0)
        self.assertEqual(
            header_map(self.limits.check("k", None, 0))[b"x-ratelimit-remaining-tokens"], b"100"
        )

    @settings(max_examples=60, deadline=None)
    @given(
        st.lists(
            st.tuples(st.integers(0, 1200), st.floats(0, 30, allow_nan=False)),
            min_size=1,
            max_size=40,
        )
    )
    def test_retry_after_is_exactly_enough(self, steps: list[tuple[int, float]]) -> None:
        """After any history, a refused request passes after exactly its wait, not before."""
        clock = Clock()
        clock.advance(EPOCH)
        rate = RateLimits(clock, rpm=7, tpm=1000)
        for tokens, pause in steps:
            clock.advance(pause)
            refused = rate.check("k", None, tokens)
            if refused.allowed or not math.isfinite(refused.retry_after):
                continue
            wait = refused.retry_after
            self.assertGreater(wait, 0)
            if wait > 0.01:
                clock.advance(wait - 0.005)
                self.assertFalse(rate.check("k", None, tokens).allowed)
                clock.advance(0.005)
            else:
                clock.advance(wait)
            self.assertTrue(rate.check("k", None, tokens).allowed)

    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, 400), st.floats(0, 5)), min_size=1, max_size=60))
    def test_never_more_than_capacity_plus_refill(self, steps: list[tuple[int, float]]) -> None:
        clock = Clock()
        rate = RateLimits(clock, rpm=5, tpm=1000)
        granted_requests = granted_tokens = 0
        for tokens, pause in steps:
            decision = rate.check("k", None, tokens)
            if decision.allowed:
                granted_requests += 1
                granted_tokens += tokens
                assert decision.tokens is not None and decision.requests is not None
                self.assertGreaterEqual(decision.tokens.remaining, 0)
                self.assertGreaterEqual(decision.requests.remaining, 0)
            clock.advance(pause)
        elapsed = clock.seconds()
        self.assertLessEqual(granted_requests, 5 + elapsed * 5 / 60 + 1e-6)
        self.assertLessEqual(granted_tokens, 1000 + elapsed * 1000 / 60 + 1e-6)


class IPLimitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()

    def test_ip_limit_spans_keys(self) -> None:
        rate = RateLimits(self.clock, ip_rpm=2)
        self.assertTrue(rate.check("sk-a", "10.0.0.1", 0).allowed)
        self.assertTrue(rate.check("sk-b", "10.0.0.1", 0).allowed)
        refused = rate.check("sk-c", "10.0.0.1", 0)
        self.assertEqual(
            envelope(refused),
            {
                "message": "Rate limit reached for IP 10.0.0.1 on requests per min (RPM): "
                "Limit 2, Used 2, Requested 1. Please try again in 30s. " + LEARN_MORE,
                "type": "requests",
                "param": None,
                "code": "rate_limit_exceeded",
            },
        )
        self.assertEqual(error_headers(refused)[b"Retry-After"], b"30")
        self.assertEqual(error_headers(refused)[b"retry-after-ms"], b"30000")
        self.assertTrue(rate.check("sk-c", "10.0.0.2", 0).allowed)

    def test_an_ip_limit_alone_sends_no_ratelimit_headers(self) -> None:
        rate = RateLimits(self.clock, ip_rpm=2)
        self.assertEqual(headers(rate.check("sk-a", "10.0.0.1", 0)), [])

    def test_no_address_no_ip_limit(self) -> None:
        rate = RateLimits(self.clock, ip_rpm=1)
        for _ in range(5):
            self.assertTrue(rate.check("sk-a", None, 0).allowed)

    def test_key_limit_spans_ips(self) -> None:
        rate = RateLimits(self.clock, rpm=2, ip_rpm=10)
        rate.check("sk-a", "10.0.0.1", 0)
        rate.check("sk-a", "10.0.0.2", 0)
        refused = rate.check("sk-a", "10.0.0.3", 0)
        self.assertIn("organization org-mockoai on requests", envelope(refused)["message"])
        # ...and a refusal by the key spent nothing from the IP.
        for i in range(10):
            self.assertTrue(rate.check(f"sk-{i}", "10.0.0.3", 0).allowed)
        self.assertFalse(rate.check("sk-z", "10.0.0.3", 0).allowed)


class NoLimitTests(SynchronousTestCase):
    def test_nothing_configured(self) -> None:
        rate = RateLimits(Clock())
        self.assertFalse(rate.enabled)
        self.assertIs(rate.check("k", "1.2.3.4", 10**9), UNLIMITED)
        self.assertEqual(headers(UNLIMITED), [])
        self.assertEqual(rate.tracked(), 0)

    def test_zero_means_off(self) -> None:
        rate = RateLimits(Clock(), rpm=0, tpm=0, ip_rpm=5)
        self.assertTrue(rate.enabled)
        self.assertIsNone(rate.requests)
        self.assertIsNone(rate.tokens)


class MemoryTests(SynchronousTestCase):
    def test_full_buckets_are_dropped(self) -> None:
        clock = Clock()
        rate = RateLimits(clock, rpm=60, tpm=6000, ip_rpm=60)
        for i in range(100):
            rate.check(f"sk-{i}", f"10.0.{i}.1", 100)  # 1 s of refill, like the request
        self.assertEqual(rate.tracked(), 300)
        clock.advance(0.5)  # half a second: nobody is full again yet
        rate.check("sk-new", "10.9.9.9", 100)
        self.assertEqual(rate.tracked(), 303)
        clock.advance(0.5)  # one second since the first 100: their buckets are full
        rate.check("sk-newer", "10.9.9.8", 100)
        self.assertEqual(rate.tracked(), 6)
        assert rate.requests is not None
        self.assertNotIn("sk-0", rate.requests)
        self.assertIn("sk-new", rate.requests)

    def test_a_partly_drained_bucket_is_kept(self) -> None:
        buckets = BucketMap(limit=3, max_tracked=10)
        buckets.get("a", 0.0).take(3, 0.0)
        buckets.get("b", 0.0).take(1, 0.0)
        buckets.prune(59.0)
        self.assertEqual(len(buckets), 2)
        buckets.prune(60.0)
        self.assertEqual(len(buckets), 0)

    def test_cap_evicts_the_least_recently_used(self) -> None:
        clock = Clock()
        rate = RateLimits(clock, rpm=3, max_tracked=3)
        for key in ("a", "b", "c"):
            rate.check(key, None, 0)
        rate.check("a", None, 0)  # a is now the most recent
        rate.check("d", None, 0)
        assert rate.requests is not None
        self.assertEqual(len(rate.requests), 3)
        self.assertEqual(rate.requests.evicted, 1)
        self.assertNotIn("b", rate.requests)
        self.assertIn("a", rate.requests)
        # a's usage survived: two spent, one left.
        found = header_map(rate.check("a", None, 0))
        self.assertEqual(found[b"x-ratelimit-remaining-requests"], b"0")

    def test_long_keys_are_truncated(self) -> None:
        rate = RateLimits(Clock(), rpm=1)
        key = "sk-" + "x" * 10_000
        self.assertEqual(len(rate.check(key, None, 0).key), limits.KEY_CHARS)
        self.assertFalse(rate.check(key[: limits.KEY_CHARS] + "different", None, 0).allowed)

    @settings(max_examples=50, deadline=None)
    @given(
        st.lists(
            st.tuples(st.integers(0, 30), st.floats(0, 20, allow_nan=False)),
            max_size=80,
        ),
        st.integers(1, 8),
    )
    def test_bounded(self, steps: list[tuple[int, float]], cap: int) -> None:
        buckets = BucketMap(limit=2, max_tracked=cap)
        now = 0.0
        touched: dict[str, float] = {}
        for name, pause in steps:
            bucket = buckets.get(str(name), now)
            touched[str(name)] = now
            if bucket.wait(1, now) == 0:
                bucket.take(1, now)
            self.assertLessEqual(len(buckets), cap)
            now += pause
            buckets.prune(now)
            # After a prune, every bucket left was used within the last period,
            # and the least recently used one is not full.
            for tracked in buckets._buckets:
                self.assertGreater(touched[tracked], now - 60)
            if len(buckets):
                self.assertFalse(next(iter(buckets._buckets.values())).full(now))


class HelperTests(SynchronousTestCase):
    def test_key_from_authorization(self) -> None:
        self.assertEqual(key_from_authorization(b"Bearer sk-abc"), "sk-abc")
        self.assertEqual(key_from_authorization("bearer  sk-abc "), "sk-abc")
        self.assertEqual(key_from_authorization(b"sk-raw"), "sk-raw")
        self.assertEqual(key_from_authorization(None), ANONYMOUS)
        self.assertEqual(key_from_authorization(b"Bearer "), ANONYMOUS)
        self.assertEqual(key_from_authorization(b""), ANONYMOUS)
        self.assertEqual(len(key_from_authorization(b"Bearer " + b"k" * 500)), limits.KEY_CHARS)

    def test_client_ip(self) -> None:
        self.assertEqual(client_ip(IPv4Address("TCP", "192.0.2.7", 5555)), "192.0.2.7")
        self.assertIsNone(client_ip(UNIXAddress(b"/tmp/sock")))
        self.assertIsNone(client_ip(None))


class ConnectionCapTests(SynchronousTestCase):
    def test_counts_and_refuses(self) -> None:
        cap = ConnectionCap(2)
        self.assertTrue(cap.try_open())
        self.assertTrue(cap.try_open())
        self.assertFalse(cap.try_open())
        self.assertEqual((cap.open, cap.refused), (2, 1))
        cap.close()
        self.assertEqual(cap.open, 1)
        self.assertTrue(cap.try_open())
        for _ in range(5):
            cap.close()
        self.assertEqual(cap.open, 0)

    def test_zero_is_no_cap(self) -> None:
        cap = ConnectionCap(0)
        self.assertTrue(all(cap.try_open() for _ in range(1000)))
        self.assertEqual(cap.open, 1000)
        self.assertRaises(ValueError, ConnectionCap, -1)

    def test_refusal_is_a_complete_503(self) -> None:
        cap = ConnectionCap(8)
        response = refusal(cap.error, b"req_123", openai_envelope)
        head, _, body = response.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        self.assertEqual(lines[0], b"HTTP/1.1 503 Service Unavailable")
        fields = dict(line.split(b": ", 1) for line in lines[1:])
        self.assertEqual(fields[b"Connection"], b"close")
        self.assertEqual(fields[b"Content-Type"], b"application/json")
        self.assertEqual(fields[b"Retry-After"], b"1")
        self.assertEqual(fields[b"x-request-id"], b"req_123")
        self.assertEqual(int(fields[b"Content-Length"]), len(body))
        error = json.loads(body)["error"]
        self.assertEqual(error["type"], "server_error")
        self.assertEqual(error["code"], "too_many_connections")
        self.assertIsNone(error["param"])
        self.assertIn("8 open connections", error["message"])


class HalfClosingTransport(StringTransport):
    def __init__(self) -> None:
        super().__init__()
        self.write_closed = False
        self.aborted = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True

    def abortConnection(self) -> None:
        self.aborted = True


class RefusedConnectionTests(SynchronousTestCase):
    def test_half_closes_then_aborts_after_linger(self) -> None:
        clock = Clock()
        protocol = RefusedConnection(b"HTTP/1.1 503 ...", clock, linger=2.0)
        transport = HalfClosingTransport()
        protocol.makeConnection(transport)
        self.assertEqual(transport.value(), b"HTTP/1.1 503 ...")
        self.assertTrue(transport.write_closed)
        protocol.dataReceived(b"POST /v1/chat/completions HTTP/1.1\r\n")
        self.assertEqual(transport.value(), b"HTTP/1.1 503 ...")  # nothing more written
        clock.advance(1.9)
        self.assertFalse(transport.aborted)
        clock.advance(0.1)
        self.assertTrue(transport.aborted)

    def test_peer_close_cancels_the_timer(self) -> None:
        clock = Clock()
        protocol = RefusedConnection(b"x", clock)
        protocol.makeConnection(HalfClosingTransport())
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        protocol.connectionLost()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_without_half_close_it_just_closes(self) -> None:
        clock = Clock()
        transport = StringTransport()
        RefusedConnection(b"x", clock).makeConnection(transport)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(clock.getDelayedCalls(), [])
