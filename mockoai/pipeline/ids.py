# -*- test-case-name: tests.test_ids -*-
"""
Identifiers in OpenAI's shapes (``chatcmpl-`` + 29 characters, ``req_`` +
32 hex digits), made from a random per-process prefix and a counter: unique
across restarts and workers, and cheap enough for the hot path.
"""

from __future__ import annotations

import os
import string

_ALPHABET = string.ascii_letters + string.digits
#: Every two-digit string, so a counter's low digits cost one lookup.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_PAIR = len(_PAIRS)


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        digits.append(_ALPHABET[digit])
    return "".join(reversed(digits))


class IdMaker:
    """Makes response and request ids for one process."""

    def __init__(self, entropy: bytes | None = None) -> None:
        entropy = os.urandom(16) if entropy is None else entropy
        seed = int.from_bytes(entropy, "big")
        self._prefix = _base62(seed, 19)
        self._hex = entropy.hex()[:20]
        self._count = 0
        # The leading 8 of a completion id's 10 counter digits change every
        # 3,844 ids: keep them, and look up the last two.
        self._high = -1
        self._head = ""

    def _next(self) -> int:
        self._count += 1
        return self._count

    def completion(self) -> str:
        """29 characters after ``chatcmpl-`` / ``cmpl-``."""
        high, low = divmod(self._next(), _PAIR)
        if high != self._high:
            self._high = high
            self._head = self._prefix + _base62(high, 8)
        return self._head + _PAIRS[low]

    def tail(self, width: int = 24) -> str:
        """
        ``width`` (at least 12) unique characters: a tool call's after
        ``call_`` (24, as OpenAI's), a ``toolu_``, ``msg_`` or ``resp_`` id's.
        """
        return self._prefix[: width - 10] + _base62(self._next(), 10)

    def request(self) -> bytes:
        return b"req_%s%012x" % (self._hex.encode(), self._next())
