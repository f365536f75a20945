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

import json
import sys
from collections.abc import Iterable
from typing import Any

import attrs

from mockoai.dialects.openrouter import errors as openrouter_errors
from mockoai.pipeline import errors

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - PyPy 3.10
    import tomli as tomllib

INVALID_API_KEY = "invalid_api_key"

#: Longest key accepted in configuration: the rate limiter keys its buckets
#: by the first 128 characters of a key (L{mockoai.pipeline.limits.KEY_CHARS}).
MAX_KEY_CHARS = 128

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


def mask(key: str) -> str:
    """
    A key as OpenAI quotes it back: the first 8 and last 4 characters with
    one ``*`` per character between (``sk-5f6ce*****…acdb``); keys of 12
    characters or fewer are quoted whole, as OpenAI quotes ``dummy``.
    """
    if len(key) <= 12:
        return key
    return key[:8] + "*" * (len(key) - 12) + key[-4:]


@attrs.frozen
class ApiKey:
    """
    One accepted key.  ``label`` names it in the request log and on
    OpenRouter's ``/api/v1/key`` (default: the masked key); ``rpm`` and
    ``tpm`` replace ``--rpm``/``--tpm`` for this key (``None``: the global
    limit applies; 0: no limit).
    """

    key: str
    label: str = ""
    rpm: int | None = None
    tpm: int | None = None

    @property
    def name(self) -> str:
        return self.label or mask(self.key)

    def __str__(self) -> str:
        # What the startup log shows: never the key itself.
        limits = "".join(
            f":{kind}={value}" for kind, value in (("rpm", self.rpm), ("tpm", self.tpm)) if value
        )
        return f"{self.name}{limits}"


@attrs.frozen
class KeysFile:
    """The keys read from ``--api-keys-file`` at startup (shown as its path)."""

    path: str
    keys: tuple[ApiKey, ...] = ()

    def __str__(self) -> str:
        return f"{self.path} ({len(self.keys)} keys)"


# --- configuration: parsers for mockoai.ops.config (ValueError names the problem) ---

_ENTRY_KEYS = frozenset({"key", "label", "rpm", "tpm"})


def _limit(entry: dict[str, Any], kind: str) -> int | None:
    value = entry.get(kind)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10**12:
        raise ValueError(f"{kind} must be a whole number >= 0, got {value!r}")
    return value


def parse_key(value: object) -> ApiKey:
    """A key as a string, or a table ``{key, label, rpm, tpm}``."""
    entry: dict[str, Any] = {"key": value} if isinstance(value, str) else {}
    if isinstance(value, dict):
        unknown = set(value) - _ENTRY_KEYS
        if unknown:
            raise ValueError(f"unknown key field(s) {', '.join(sorted(map(str, unknown)))}")
        entry = value
    elif not isinstance(value, str):
        raise ValueError(f"expected a key or a table with key, label, rpm, tpm; got {value!r}")
    key = entry.get("key")
    if not isinstance(key, str) or not key:
        raise ValueError(f"a key must be a non-empty string, got {key!r}")
    if len(key) > MAX_KEY_CHARS or not all("!" <= c <= "~" for c in key):
        raise ValueError(
            f"a key must be 1-{MAX_KEY_CHARS} printable ASCII characters without spaces, "
            f"got {mask(key)!r}"
        )
    label = entry.get("label", "")
    if not isinstance(label, str):
        raise ValueError(f"label must be a string, got {label!r}")
    return ApiKey(key, label, _limit(entry, "rpm"), _limit(entry, "tpm"))


def parse_keys(value: object) -> tuple[ApiKey, ...]:
    """``--api-key`` (repeatable), ``MOCKOAI_API_KEYS=k1,k2`` or a profile's list."""
    if isinstance(value, str):
        items: list[object] = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ValueError(f"expected a list of keys, got {value!r}")
    keys = tuple(parse_key(item) for item in items)
    _unique(keys)
    return keys


def parse_keys_file(value: object) -> KeysFile:
    """
    ``--api-keys-file``: TOML (``[[keys]]`` tables) or, for a ``.json``
    name, JSON (``{"keys": [...]}`` or a bare list), read at startup.
    """
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a file name, got {value!r}")
    try:
        with open(value, "rb") as handle:
            raw = handle.read()
    except OSError as e:
        raise ValueError(f"cannot read {value}: {e.strerror}") from None
    try:
        if value.endswith(".json"):
            data: Any = json.loads(raw)
        else:
            data = tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        kind = "JSON" if value.endswith(".json") else "TOML"
        raise ValueError(f"{value} is not valid {kind}: {e}") from None
    entries = data.get("keys") if isinstance(data, dict) else data
    if isinstance(data, dict) and set(data) - {"keys"}:
        raise ValueError(f"{value}: unknown setting(s) {', '.join(sorted(set(data) - {'keys'}))}")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{value}: expected a non-empty list of keys")
    keys = []
    for n, entry in enumerate(entries, 1):
        try:
            keys.append(parse_key(entry))
        except ValueError as e:
            raise ValueError(f"{value}: key {n}: {e}") from None
    _unique(keys)
    return KeysFile(value, tuple(keys))


def _unique(keys: Iterable[ApiKey]) -> None:
    seen: set[str] = set()
    for k in keys:
        if k.key in seen:
            raise ValueError(f"key {mask(k.key)} is given twice")
        seen.add(k.key)


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


def all_keys(settings: Any) -> tuple[ApiKey, ...]:
    """The keys of ``--api-key`` and of ``--api-keys-file`` together."""
    keys: tuple[ApiKey, ...] = tuple(settings.api_keys)
    if settings.api_keys_file is not None:
        keys += settings.api_keys_file.keys
    return keys


def from_settings(settings: Any) -> Authenticator | None:
    """The site's authenticator, or ``None`` (no keys: every request passes)."""
    keys = all_keys(settings)
    if not keys:
        return None
    return Authenticator(keys, settings.auth_health)
