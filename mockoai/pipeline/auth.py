# -*- test-case-name: tests.test_auth -*-
"""
Mock API keys: which keys the server accepts, and OpenAI's exact 401 for
the rest.

Off unless keys are configured (``--api-key``, ``--api-keys-file``): then
the site holds no L{Authenticator} and a request pays one attribute test.
When on, L{Authenticator.check} runs once per request, before routing
(for a request with a body, from its head, before a byte of the body is
read: L{mockoai.wire.site.MockSite.screen}): a key comes from
``Authorization: Bearer <key>`` or, as Azure OpenAI sends
it, ``api-key: <key>`` (Anthropic's clients: ``x-api-key: <key>``); a
missing or unknown key is answered with OpenAI's 401, or with the 401 of
the API whose path it is (L{KeyRefusals}, which the service takes from the
dialects: OpenRouter's under ``/api/v1/``, Anthropic's under
``/v1/messages``).  A
request that passes carries its
key's label as ``request.key_label`` for the request log, and its key's
own rate limits feed L{mockoai.pipeline.limits.RateLimits}.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from mockoai.ops.config import ApiKey, AuthSettings, mask
from mockoai.pipeline import errors

INVALID_API_KEY = "invalid_api_key"

#: Monitoring endpoints, exempt from keys unless ``--auth-health``.
MONITORING = frozenset({b"/health", b"/metrics", b"/stats", b"/_mockoai/dashboard/events"})
#: OpenRouter's model catalog is public there, so it is here.  The dashboard's
#: page is the package's static file; its numbers come from its events, above.
_PUBLIC_PREFIX = b"/api/v1/models/"
_PUBLIC = frozenset({b"/api/v1/models", b"/_mockoai/dashboard"})
#: mockoai's admin API (L{mockoai.ops.admin}), which checks its own key.
ADMIN_PATHS = (
    b"/_mockoai/rules",
    b"/_mockoai/models",
    b"/_mockoai/reset",
    b"/_mockoai/journal",
    b"/_mockoai/verdict",
)

_MISSING_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field "
    "(with blank username) if you're accessing the API from your browser and are prompted for "
    "a username and password. You can obtain an API key from "
    "https://platform.openai.com/account/api-keys."
)


def missing_key() -> errors.APIError:
    return errors.APIError(401, _MISSING_MESSAGE)


def incorrect_key(key: str) -> errors.APIError:
    return errors.APIError(
        401,
        f"Incorrect API key provided: {mask(key)}. "
        "You can find your API key at https://platform.openai.com/account/api-keys.",
        code=INVALID_API_KEY,
    )


class KeyRefusals:
    """How one API refuses a request's key: none presented, or one it does not know."""

    __slots__ = ("missing", "unknown")

    def __init__(
        self, missing: Callable[[], errors.APIError], unknown: Callable[[bytes], errors.APIError]
    ) -> None:
        self.missing = missing
        self.unknown = unknown


#: OpenAI's 401s, for every path no other API claims.
OPENAI_REFUSALS = KeyRefusals(
    missing_key, lambda key: incorrect_key(key.decode("utf-8", "replace"))
)


def presented_key(request: Any) -> bytes | None:
    """
    The key a request presents: ``Authorization: Bearer <key>`` first, then
    Azure's ``api-key`` header, then Anthropic's ``x-api-key``; ``None`` when
    none carries one.
    """
    header = request.getHeader(b"authorization")
    if header is not None:
        header = header.strip()
        if header[:7].lower() == b"bearer ":
            token = header[7:].strip()
            if token:
                return token  # type: ignore[no-any-return]
    for name in (b"api-key", b"x-api-key"):
        other = request.getHeader(name)
        if other is not None:
            other = other.strip()
            if other:
                return other  # type: ignore[no-any-return]
    return None


class Authenticator:
    """The configured keys, looked up by their bytes; built once at startup."""

    def __init__(
        self,
        keys: Iterable[ApiKey],
        protect_monitoring: bool = False,
        refusals: Sequence[tuple[bytes, KeyRefusals]] = (),
    ) -> None:
        self.keys = {k.key.encode("utf-8"): k for k in keys}
        if not self.keys:
            raise ValueError("an Authenticator needs at least one key")
        self._labels = {raw: k.name for raw, k in self.keys.items()}
        self._exempt = _PUBLIC if protect_monitoring else _PUBLIC | MONITORING
        #: The 401s of the APIs that are not OpenAI's, by path prefix (longest first).
        self._refusals = sorted(refusals, key=lambda r: -len(r[0]))
        self.refused = 0

    def check(self, request: Any) -> errors.APIError | None:
        """
        ``None`` if ``request`` may go on (``request.key_label`` is set when
        it presented a known key), else the 401 to answer it with.
        """
        label = self._labels.get(presented_key(request) or b"")
        if label is not None:
            request.key_label = label
            return None
        path = request.path
        if path in self._exempt or path.startswith(_PUBLIC_PREFIX) or path.startswith(ADMIN_PATHS):
            return None
        self.refused += 1
        token = presented_key(request)
        refusals = OPENAI_REFUSALS
        for prefix, theirs in self._refusals:
            if path.startswith(prefix):
                refusals = theirs
                break
        return refusals.missing() if token is None else refusals.unknown(token)

    def limits(self) -> dict[str, tuple[int | None, int | None]]:
        """Per-key (rpm, tpm) for the rate limiter, for keys that set either."""
        return {
            k.key: (k.rpm, k.tpm)
            for k in self.keys.values()
            if k.rpm is not None or k.tpm is not None
        }


def from_settings(
    settings: AuthSettings, refusals: Sequence[tuple[bytes, KeyRefusals]] = ()
) -> Authenticator | None:
    """The site's authenticator, or ``None`` (no keys: every request passes)."""
    keys = settings.all_keys
    if not keys:
        return None
    return Authenticator(keys, settings.health, refusals)
