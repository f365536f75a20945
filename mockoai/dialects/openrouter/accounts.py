# -*- test-case-name: tests.test_openrouter -*-
"""
What each API key has spent, for ``/api/v1/key``, ``/api/v1/credits`` and
the 402 a key gets once it has spent ``--openrouter-credit-limit``.

Keys are whatever ``Authorization: Bearer`` carries; each is created on
first use.  Usage is kept in total and for the current UTC day, week
(from Monday) and month, as OpenRouter reports it.  At most L{MAX_KEYS}
keys are remembered (the least recently used is forgotten first), so a
client inventing keys cannot grow the process without bound.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from mockoai.dialects.openrouter import errors
from mockoai.pipeline.media import dumps

MAX_KEYS = 4096
_DAY = 86400
_DIGITS = 12


def _periods(now: float) -> tuple[int, int, int]:
    """The UTC day, Monday-based week and month ``now`` falls in."""
    day = int(now // _DAY)
    # 1970-01-01 was a Thursday: shift by 3 so weeks start on Mondays.
    week = (day + 3) // 7
    tm = time.gmtime(now)
    return day, week, tm.tm_year * 12 + tm.tm_mon


class Account:
    """The spending of one key."""

    __slots__ = ("daily", "monthly", "periods", "requests", "usage", "weekly")

    def __init__(self, now: float) -> None:
        self.usage = 0.0
        self.daily = self.weekly = self.monthly = 0.0
        self.requests = 0
        self.periods = _periods(now)

    def roll(self, now: float) -> None:
        """Start the day's, week's or month's tally afresh when it has changed."""
        if int(now // _DAY) == self.periods[0]:
            return
        periods = _periods(now)
        if periods != self.periods:
            day, week, month = self.periods
            if periods[0] != day:
                self.daily = 0.0
            if periods[1] != week:
                self.weekly = 0.0
            if periods[2] != month:
                self.monthly = 0.0
            self.periods = periods

    def charge(self, cost: float, now: float) -> None:
        self.roll(now)
        # To the picodollar, as costs are: sums of floats drift otherwise.
        self.usage = round(self.usage + cost, _DIGITS)
        self.daily = round(self.daily + cost, _DIGITS)
        self.weekly = round(self.weekly + cost, _DIGITS)
        self.monthly = round(self.monthly + cost, _DIGITS)
        self.requests += 1


def label(key: str) -> str:
    """How OpenRouter shows a key: its start and end only."""
    return f"{key[:11]}...{key[-3:]}" if len(key) > 17 else key


class Accounts:
    """Per-key usage against an optional credit limit (USD)."""

    def __init__(self, limit: float | None) -> None:
        self.limit = limit
        self._accounts: OrderedDict[str, Account] = OrderedDict()

    def account(self, key: str, now: float) -> Account:
        accounts = self._accounts
        account = accounts.get(key)
        if account is None:
            account = accounts[key] = Account(now)
            if len(accounts) > MAX_KEYS:
                accounts.popitem(last=False)
        else:
            accounts.move_to_end(key)
        account.roll(now)
        return account

    def check(self, key: str, now: float) -> None:
        """Raise the 402 of a key that has spent its limit."""
        limit = self.limit
        if limit is not None:
            usage = self.account(key, now).usage
            if usage >= limit:
                raise errors.out_of_credits(limit, usage)

    def charge(self, key: str, cost: float, now: float) -> None:
        self.account(key, now).charge(cost, now)

    def key_body(self, key: str, now: float, name: str | None = None) -> bytes:
        """``GET /api/v1/key``; ``name`` is the key's configured label, if any."""
        account = self.account(key, now)
        limit = self.limit
        data = {
            "label": name or label(key),
            "limit": limit,
            "usage": account.usage,
            "usage_daily": account.daily,
            "usage_weekly": account.weekly,
            "usage_monthly": account.monthly,
            "byok_usage": 0.0,
            "byok_usage_daily": 0.0,
            "byok_usage_weekly": 0.0,
            "byok_usage_monthly": 0.0,
            "limit_remaining": None if limit is None else max(limit - account.usage, 0.0),
            "limit_reset": None,
            "include_byok_in_limit": False,
            "is_free_tier": False,
            "is_provisioning_key": False,
            "is_management_key": False,
            "expires_at": None,
            "rate_limit": {"requests": -1, "interval": "10s", "note": "not rate limited"},
        }
        return dumps({"data": data})

    def credits_body(self, key: str, now: float) -> bytes:
        """``GET /api/v1/credits``: ``total_credits`` is null when unlimited."""
        account = self.account(key, now)
        return dumps({"data": {"total_credits": self.limit, "total_usage": account.usage}})
