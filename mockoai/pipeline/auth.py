# -*- test-case-name: tests.test_auth -*-
"""
Mock API keys: which keys the server accepts, and OpenAI's exact 401 for
the rest.

Off unless keys are configured (``--api-key``, ``--api-keys-file``): then
the site holds no L{Authenticator} and a request pays one attribute test.
When on, L{Authenticator.check} runs once per request, before routing: a
key comes from ``Authorization: Bearer <key>`` or, as Azure OpenAI sends
it, ``api-key: <key>``; a missing or unknown key is answered with OpenAI's
401 (OpenRouter's under ``/api/v1/``).  A request that passes carries its
key's label as ``request.key_label`` for the request log, and its key's
own rate limits feed L{mockoai.pipeline.limits.RateLimits}.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mockoai.dialects.openrouter import errors as openrouter_errors
from mockoai.ops.config import ApiKey, AuthSettings, mask
from mockoai.pipeline import errors

INVALID_API_KEY = "invalid_api_key"

#: Monitoring endpoints, exempt from keys unless ``--auth-health``.
MONITORING = frozenset({b"/health", b"/metrics", b"/stats"})
#: OpenRouter's model catalog is public there, so it is here.
_PUBLIC_PREFIX = b"/api/v1/models/"
_PUBLIC = frozenset({b"/api/v1/models"})

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


def user_not_found() -> openrouter_errors.RouterError:
    """OpenRouter's 401 for a key it does not know."""
    return openrouter_errors.RouterError(401, "User not found.")


def presented_key(request: Any) -> bytes | None:
    """
    The key a request presents: ``Authorization: Bearer <key>`` first, then
    Azure's ``api-key`` header; ``None`` when neither carries one.
    """
    header = request.getHeader(b"authorization")
    if header is not None:
        header = header.strip()
        if header[:7].lower() == b"bearer ":
            token = header[7:].strip()
            if token:
                return token  # type: ignore[no-any-return]
    azure = request.getHeader(b"api-key")
    if azure is not None:
        azure = azure.strip()
        if azure:
            return azure  # type: ignore[no-any-return]
    return None


class Authenticator:
    """The configured keys, looked up by their bytes; built once at startup."""

    def __init__(self, keys: Iterable[ApiKey], protect_monitoring: bool = False) -> None:
        self.keys = {k.key.encode("utf-8"): k for k in keys}
        if not self.keys:
            raise ValueError("an Authenticator needs at least one key")
        self._labels = {raw: k.name for raw, k in self.keys.items()}
        self._exempt = _PUBLIC if protect_monitoring else _PUBLIC | MONITORING
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
        if path in self._exempt or path.startswith(_PUBLIC_PREFIX):
            return None
        self.refused += 1
        token = presented_key(request)
        if path.startswith(openrouter_errors.PREFIX):
            return openrouter_errors.no_credentials() if token is None else user_not_found()
        if token is None:
            return missing_key()
        return incorrect_key(token.decode("utf-8", "replace"))

    def limits(self) -> dict[str, tuple[int | None, int | None]]:
        """Per-key (rpm, tpm) for the rate limiter, for keys that set either."""
        return {
            k.key: (k.rpm, k.tpm)
            for k in self.keys.values()
            if k.rpm is not None or k.tpm is not None
        }


def from_settings(settings: AuthSettings) -> Authenticator | None:
    """The site's authenticator, or ``None`` (no keys: every request passes)."""
    keys = settings.all_keys
    if not keys:
        return None
    return Authenticator(keys, settings.health)
