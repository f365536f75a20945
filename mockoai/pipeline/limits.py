# -*- test-case-name: tests.test_limits -*-
"""
Rate limits as OpenAI applies them, and a cap on open connections.

OpenAI's per-minute limits behave as token buckets: a bucket holds up to its
limit and refills continuously at the limit per 60 s, so a request spent at
a full 5000-RPM bucket is back after 12 ms (OpenAI then sends
``x-ratelimit-reset-requests: 12ms``).  A request costs one request and its
estimated tokens (prompt tokens + ``max_tokens``); it passes only if every
bucket it touches has room, and then spends from all of them at once, so a
refusal costs nothing.  Refusals are OpenAI's 429 with the real wait in the
message, ``Retry-After`` and ``retry-after-ms``.

Buckets are kept per API key and per client IP, in LRU order: a bucket that
is full again carries no information and is dropped, and a hard cap bounds
how many are tracked at all.  Time comes from an injected C{IReactorTime}.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from mockoai.pipeline import errors

if TYPE_CHECKING:
    from mockoai.interfaces import Clock, DelayedCall, Transport

#: Refill period of "per minute" limits.
MINUTE = 60.0

#: The key of requests without an API key.
ANONYMOUS = "anonymous"

#: Keys are truncated to this many characters: a client sending huge bearer
#: tokens must not grow the tracked state beyond the key cap's worth.
KEY_CHARS = 128

ORGANIZATION = "org-mockoai"
RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"
_LEARN_MORE = "Visit https://platform.openai.com/account/rate-limits to learn more."


def duration(seconds: float) -> str:
    """
    A duration as OpenAI writes it (Go's C{time.Duration} format at
    millisecond resolution): ``0s``, ``20ms``, ``1s``, ``41.724s``,
    ``6m0s``, ``1m30.5s``, ``1h0m0s``.  Rounded up to the millisecond, so
    waiting that long is always enough.
    """
    ms = ceil_ms(seconds)
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, frac = divmod(rest, 1000)
    secs = f"{whole}.{frac:03d}".rstrip("0") if frac else f"{whole}"
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def ceil_ms(seconds: float) -> int:
    """
    Whole milliseconds, rounded up, after rounding to the microsecond: the
    float noise of clock arithmetic (``0.3 / 0.05``) must not turn an exact
    20 s into 20.001 s.
    """
    if seconds <= 0:
        return 0
    return -(-round(seconds * 1_000_000) // 1000)


class TokenBucket:
    """
    ``capacity`` units, refilled continuously at ``capacity`` per ``period``
    seconds.  Every method takes the current time; the level is brought up
    to date first.  Amounts within a billionth of the capacity count as
    equal, so float noise never refuses what exact arithmetic would allow.
    """

    __slots__ = ("_eps", "capacity", "full_at", "level", "period", "stamp")

    def __init__(self, capacity: float, now: float, period: float = MINUTE) -> None:
        if capacity <= 0 or period <= 0:
            raise ValueError("a bucket needs a positive capacity and period")
        self.capacity = capacity
        self.period = period
        self.level = float(capacity)
        self.stamp = now
        #: When the bucket is full again (the past once it is).
        self.full_at = now
        self._eps = capacity * 1e-9

    def refill(self, now: float) -> float:
        """The level at ``now``."""
        if now > self.stamp:
            # Multiply before dividing: 10 s at 3 per 60 s is exactly 0.5.
            gained = (now - self.stamp) * self.capacity / self.period
            self.level = min(self.capacity, self.level + gained)
            self.stamp = now
        return self.level

    def remaining(self, now: float) -> int:
        """Whole units available at ``now``."""
        return max(0, math.floor(self.refill(now) + self._eps))

    def wait(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` is available (inf if it never will be)."""
        if amount > self.capacity + self._eps:
            return math.inf
        missing = amount - self.refill(now)
        if missing <= self._eps:
            return 0.0
        return missing * self.period / self.capacity

    def take(self, amount: float, now: float) -> None:
        """Spend ``amount`` (the caller checked L{wait} first)."""
        self.refill(now)
        self.level -= amount
        self._update_full_at()

    def give(self, amount: float, now: float) -> None:
        """Return ``amount`` unused units, never beyond the capacity."""
        self.refill(now)
        self.level = min(self.capacity, self.level + amount)
        self._update_full_at()

    def reset(self, now: float) -> float:
        """Seconds until the bucket is full again: OpenAI's reset headers."""
        return max(0.0, self.full_at - now)

    def full(self, now: float) -> bool:
        return now >= self.full_at

    def _update_full_at(self) -> None:
        deficit = self.capacity - self.level
        self.full_at = self.stamp + (deficit * self.period / self.capacity if deficit > 0 else 0.0)


class BucketMap:
    """
    One limit's buckets by name, least recently used first.  Full buckets
    are dropped: any bucket untouched for a whole period is full, so after a
    prune only the names active within the last period remain.  Past
    ``max_tracked`` names the least recently used bucket is forgotten even
    if it is not full (its owner gets a fresh allowance: bounded memory wins).
    """

    def __init__(self, limit: int, max_tracked: int, period: float = MINUTE) -> None:
        if limit < 1 or max_tracked < 1:
            raise ValueError("a limit and a tracking cap must be at least 1")
        self.limit = limit
        self.period = period
        self.max_tracked = max_tracked
        self.evicted = 0
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, name: object) -> bool:
        return name in self._buckets

    def get(self, name: str, now: float) -> TokenBucket:
        """The bucket of ``name``, created full if it is not tracked."""
        buckets = self._buckets
        bucket = buckets.get(name)
        if bucket is not None:
            buckets.move_to_end(name)
            return bucket
        self.prune(now)
        if len(buckets) >= self.max_tracked:
            buckets.popitem(last=False)
            self.evicted += 1
        bucket = buckets[name] = TokenBucket(self.limit, now, self.period)
        return bucket

    def peek(self, name: str) -> TokenBucket | None:
        return self._buckets.get(name)

    def clear(self) -> None:
        """Every bucket full again (the admin API's reset)."""
        self._buckets.clear()

    def prune(self, now: float) -> None:
        """Drop full buckets from the LRU end (amortised O(1) per call)."""
        buckets = self._buckets
        while buckets:
            name, bucket = next(iter(buckets.items()))
            if not bucket.full(now):
                return
            del buckets[name]


@attrs.frozen
class Quota:
    """One limit's state as the x-ratelimit headers report it."""

    limit: int
    remaining: int
    reset: float  # seconds until the bucket is full again


@attrs.frozen
class Decision:
    """
    The outcome of L{RateLimits.check}.  ``requests`` and ``tokens`` are the
    key's quotas after the request (``None`` for limits not configured);
    ``error`` is the 429 to raise when refused; ``charged`` the tokens spent,
    for L{RateLimits.credit}.
    """

    allowed: bool
    key: str
    requests: Quota | None = None
    tokens: Quota | None = None
    charged: int = 0
    retry_after: float = 0.0  # seconds; inf for a request too large ever to pass
    error: errors.APIError | None = None


#: The decision when no limit is configured: allowed, no headers.
UNLIMITED = Decision(True, ANONYMOUS)


def headers(decision: Decision) -> list[tuple[bytes, bytes]]:
    """OpenAI's x-ratelimit-* headers, for every response when limits apply."""
    out: list[tuple[bytes, bytes]] = []
    for kind, quota in ((b"requests", decision.requests), (b"tokens", decision.tokens)):
        if quota is not None:
            out += [
                (b"x-ratelimit-limit-" + kind, b"%d" % quota.limit),
                (b"x-ratelimit-remaining-" + kind, b"%d" % quota.remaining),
                (b"x-ratelimit-reset-" + kind, duration(quota.reset).encode()),
            ]
    return out


#: What makes an API's rate-limit headers of a decision (OpenAI's: L{headers}).
HeaderRenderer = Callable[[Decision], "list[tuple[bytes, bytes]]"]


def retry_headers(wait: float) -> list[tuple[bytes, bytes]]:
    """``Retry-After`` (whole seconds, up) and ``retry-after-ms`` for ``wait``."""
    ms = ceil_ms(wait)
    return [(b"Retry-After", b"%d" % -(-ms // 1000)), (b"retry-after-ms", b"%d" % ms)]


def request_key(request: Any) -> str:
    """
    The API key a request's buckets are kept under: its ``Authorization``
    (see L{key_from_authorization}), else Azure's ``api-key`` header, else
    Anthropic's ``x-api-key``.
    """
    key = key_from_authorization(request.getHeader(b"authorization"))
    if key == ANONYMOUS:
        # Azure's header, then Anthropic's.
        other = request.getHeader(b"api-key") or request.getHeader(b"x-api-key")
        if other:
            key = other.decode("latin-1").strip()[:KEY_CHARS] or ANONYMOUS
    return key


def key_from_authorization(value: bytes | str | None) -> str:
    """The API key of an ``Authorization`` header, or L{ANONYMOUS}."""
    if value is None:
        return ANONYMOUS
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    scheme, _, token = text.strip().partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else text.strip()
    return token[:KEY_CHARS] or ANONYMOUS


def client_ip(address: IAddress | None) -> str | None:
    """The host of a peer address; ``None`` for UNIX sockets and the like."""
    host = getattr(address, "host", None)
    return host if isinstance(host, str) and host else None


@attrs.frozen
class _Refusal:
    wait: float
    kind: str  # "requests" or "tokens"
    message: str
    limit: int = 0
    ip: str | None = None  # the client IP, for the per-IP limit


class RateLimited(errors.APIError):
    """
    OpenAI's 429, with what another API needs to word it its own way: the
    bucket that refused (``type``: requests or tokens), its ``limit`` per
    minute, and the client ``ip`` when it was the per-IP limit.
    """

    def __init__(
        self,
        message: str,
        kind: str,
        limit: int,
        ip: str | None,
        organization: str,
        headers: tuple[tuple[bytes, bytes], ...],
    ) -> None:
        super().__init__(429, message, type=kind, code=RATE_LIMIT_EXCEEDED, headers=headers)
        self.limit = limit
        self.ip = ip
        self.organization = organization


class RateLimits:
    """
    Requests and tokens per minute per API key, and requests per minute per
    client IP; each optional (``None`` or 0 turns it off).  ``per_key`` maps
    configured keys to their own (rpm, tpm), each replacing the global limit
    for that key (``None``: the global one applies; 0: no limit).
    """

    def __init__(
        self,
        clock: Clock,
        rpm: int | None = None,
        tpm: int | None = None,
        ip_rpm: int | None = None,
        max_tracked: int = 100_000,
        organization: str = ORGANIZATION,
        period: float = MINUTE,
        per_key: dict[str, tuple[int | None, int | None]] | None = None,
    ) -> None:
        self.clock = clock
        self.organization = organization
        self.requests = BucketMap(rpm, max_tracked, period) if rpm else None
        self.tokens = BucketMap(tpm, max_tracked, period) if tpm else None
        self.ips = BucketMap(ip_rpm, max_tracked, period) if ip_rpm else None
        #: A configured key's own (requests, tokens) maps, one bucket each.
        self.per_key: dict[str, tuple[BucketMap | None, BucketMap | None]] = {
            key[:KEY_CHARS]: (
                self.requests if key_rpm is None else _own(key_rpm, period),
                self.tokens if key_tpm is None else _own(key_tpm, period),
            )
            for key, (key_rpm, key_tpm) in (per_key or {}).items()
        }
        self.enabled = any(m is not None for m in (self.requests, self.tokens, self.ips)) or any(
            m is not None for maps in self.per_key.values() for m in maps
        )
        self.refused = 0

    def clear(self) -> None:
        """Every bucket full again (the admin API's reset)."""
        maps = [self.requests, self.tokens, self.ips]
        maps += [m for pair in self.per_key.values() for m in pair]
        for bucket_map in maps:
            if bucket_map is not None:
                bucket_map.clear()

    def _maps(self, key: str) -> tuple[BucketMap | None, BucketMap | None]:
        """The (requests, tokens) bucket maps ``key`` spends from."""
        own = self.per_key.get(key) if self.per_key else None
        return own if own is not None else (self.requests, self.tokens)

    def enforce(
        self, request: Any, tokens: int, model: str, render: HeaderRenderer | None = None
    ) -> None:
        """
        Spend ``request``'s allowance (``tokens`` estimated), setting the
        ``x-ratelimit-*`` headers (or those ``render`` makes of the decision,
        in another API's names) either way; raise the 429 of a refusal.
        """
        decision = self.check(
            request_key(request),
            client_ip(request.getClientAddress()),
            tokens,
            model=model,
        )
        for name, value in (headers if render is None else render)(decision):
            request.setHeader(name, value)
        if decision.error is not None:
            raise decision.error

    def check(self, key: str, ip: str | None, tokens: int, model: str = "") -> Decision:
        """
        Spend one request and ``tokens`` tokens for ``key`` (and one request
        for ``ip``) if every bucket has room; otherwise spend nothing and
        return the refusal (the wait of the slowest bucket: all must pass).
        """
        if not self.enabled:
            return UNLIMITED
        now = self.clock.seconds()
        key = key[:KEY_CHARS] or ANONYMOUS
        tokens = max(0, tokens)
        # "is not None": an empty BucketMap is falsy.
        request_map, token_map = self._maps(key)
        requests = request_map.get(key, now) if request_map is not None else None
        token_bucket = token_map.get(key, now) if token_map is not None else None
        by_ip = self.ips.get(ip, now) if self.ips is not None and ip is not None else None
        where = f"in organization {self.organization}"
        if model:
            where = f"for {model} {where}"

        refusals: list[_Refusal] = []
        if token_bucket is not None and tokens > token_bucket.capacity:
            limit = int(token_bucket.capacity)
            message = (
                f"Request too large {where} on tokens per min (TPM): Limit {limit}, "
                f"Requested {tokens}. The input or output tokens must be reduced in order to "
                f"run successfully. {_LEARN_MORE}"
            )
            refusal = _Refusal(math.inf, "tokens", message, limit)
            return self._refuse(key, requests, token_bucket, refusal)
        for bucket, kind, amount, scope, unit, who in (
            (requests, "requests", 1, where, "requests per min (RPM)", None),
            (token_bucket, "tokens", tokens, where, "tokens per min (TPM)", None),
            (by_ip, "requests", 1, f"for IP {ip}", "requests per min (RPM)", ip),
        ):
            if bucket is None:
                continue
            wait = bucket.wait(amount, now)
            if wait > 0:
                wait = max(wait, 0.001)  # never "try again in 0s"
                limit = int(bucket.capacity)
                used = limit - bucket.remaining(now)
                message = (
                    f"Rate limit reached {scope} on {unit}: Limit {limit}, Used {used}, "
                    f"Requested {amount}. Please try again in {duration(wait)}. {_LEARN_MORE}"
                )
                refusals.append(_Refusal(wait, kind, message, limit, who))
        if refusals:
            # The slowest bucket decides: max() keeps the first of equal waits.
            return self._refuse(key, requests, token_bucket, max(refusals, key=lambda r: r.wait))

        for bucket, amount in ((requests, 1), (token_bucket, tokens), (by_ip, 1)):
            if bucket is not None:
                bucket.take(amount, now)
        return Decision(
            True,
            key,
            _quota(requests, now),
            _quota(token_bucket, now),
            charged=tokens if token_bucket is not None else 0,
        )

    def _refuse(
        self,
        key: str,
        requests: TokenBucket | None,
        tokens: TokenBucket | None,
        refusal: _Refusal,
    ) -> Decision:
        self.refused += 1
        now = self.clock.seconds()
        decision = Decision(False, key, _quota(requests, now), _quota(tokens, now))
        extra = headers(decision)
        if math.isfinite(refusal.wait):
            extra += retry_headers(refusal.wait)
        error = RateLimited(
            refusal.message,
            refusal.kind,
            refusal.limit,
            refusal.ip,
            self.organization,
            tuple(extra),
        )
        return attrs.evolve(decision, retry_after=refusal.wait, error=error)

    def credit(self, decision: Decision, used_tokens: int) -> None:
        """
        Give back what an allowed request was charged beyond ``used_tokens``
        (its real prompt + completion tokens).  Call once per decision.
        """
        token_map = self._maps(decision.key)[1]
        if not decision.allowed or token_map is None or decision.charged <= used_tokens:
            return
        bucket = token_map.peek(decision.key)
        if bucket is not None:
            bucket.give(decision.charged - max(0, used_tokens), self.clock.seconds())

    def tracked(self) -> int:
        """Buckets currently held, all limits together."""
        maps = {id(m): m for m in (self.requests, self.tokens, self.ips) if m is not None}
        for own in self.per_key.values():
            maps.update((id(m), m) for m in own if m is not None)
        return sum(len(m) for m in maps.values())


def _own(limit: int, period: float) -> BucketMap | None:
    """A configured key's own limit: one bucket (0: no limit)."""
    return BucketMap(limit, 1, period) if limit else None


def _quota(bucket: TokenBucket | None, now: float) -> Quota | None:
    if bucket is None:
        return None
    return Quota(int(bucket.capacity), bucket.remaining(now), bucket.reset(now))


# --------------------------------------------------------------------------
# Open connections


class ConnectionCap:
    """
    Counts open connections against ``max_connections`` (0: no cap).  A
    connection that L{try_open} admitted must be L{close}d exactly once;
    a refused one is answered L{error} (by the wire, which renders it) and
    is never counted.
    """

    def __init__(self, max_connections: int) -> None:
        if max_connections < 0:
            raise ValueError("max_connections must be >= 0")
        self.max_connections = max_connections
        self.open = 0
        self.refused = 0
        #: What a connection over the cap is answered.
        self.error = errors.APIError(
            503,
            f"The server is overloaded: it already has {max_connections} open connections. "
            "Please try again later.",
            type=errors.SERVER_ERROR,
            code="too_many_connections",
            headers=((b"Retry-After", b"1"),),
        )

    def try_open(self) -> bool:
        """Count a new connection if there is room; ``False`` means refuse it."""
        if self.max_connections and self.open >= self.max_connections:
            self.refused += 1
            return False
        self.open += 1
        return True

    def close(self) -> None:
        """An admitted connection ended."""
        if self.open > 0:
            self.open -= 1


class RefusedConnection(Protocol):
    """
    The protocol of a connection over the cap: it writes the 503 and closes
    gracefully.  Closing at once would drop the request bytes already sent
    unread, and the kernel then answers with a reset that can destroy the
    503 before the client reads it; so only the write side is shut, input is
    drained, and the connection is aborted after ``linger`` seconds at most.
    """

    transport: Transport | None  # type: ignore[assignment]

    def __init__(self, response: bytes, clock: Clock, linger: float = 2.0) -> None:
        self.response = response
        self.clock = clock
        self.linger = linger
        self._timer: DelayedCall | None = None

    def connectionMade(self) -> None:
        transport: Transport = self.transport  # type: ignore[assignment]
        transport.write(self.response)
        half_close = getattr(transport, "loseWriteConnection", None)
        if half_close is None:
            transport.loseConnection()
            return
        half_close()
        self._timer = self.clock.callLater(self.linger, self._abort)

    def dataReceived(self, data: bytes) -> None:
        """Discard what the client sends; it gets the 503 whatever it asked."""

    def _abort(self) -> None:
        self._timer = None
        abort = getattr(self.transport, "abortConnection", None)
        if abort is not None:
            abort()
        elif self.transport is not None:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
