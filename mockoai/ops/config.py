# -*- test-case-name: tests.test_config -*-
"""
The one typed settings object, and the only code that builds it.

L{Settings} holds frozen groups (``settings.server``, ``settings.served``,
``settings.cors``, ...).  Each setting is declared once, as a field of its
group made by L{setting}: its default, parser, help text and metavar.  The
flat registry L{FIELDS} is derived by walking the groups, and drives the
command line (``--name-with-dashes``, generated in L{mockoai.ops.tap}), the
environment (``MOCKOAI_NAME``) and profile files (``name = ...`` in TOML),
so the three can never drift apart; the external name is the field's own
unless it says otherwise (``settings.cors.origins`` is ``cors_origins``).
Precedence, lowest to highest: defaults, profile file, environment, command
line.  Every value is validated here, at startup, and a bad one stops the
process with a single line naming the option and where it came from.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import attrs

from mockoai.sim import latency
from mockoai.sim.latency import Distribution, LatencyModel

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - PyPy 3.10
    import tomli as tomllib

ENV_PREFIX = "MOCKOAI_"

CHAT = "chat"
COMPLETIONS = "completions"
#: Anthropic's ``/v1/messages``.
MESSAGES = "messages"
ENDPOINT_KINDS = frozenset({CHAT, COMPLETIONS, MESSAGES})
#: ``/v1/embeddings``: only models that say so answer it (an embedding model
#: answers nothing else), so it is not among the default ENDPOINT_KINDS.
EMBEDDINGS = "embeddings"
#: What a [[models]] table's ``endpoints`` may name.
KNOWN_KINDS = ENDPOINT_KINDS | {EMBEDDINGS}


class ConfigError(Exception):
    """A setting is invalid; the message is one line naming it."""


# --- value parsers: each takes a CLI/env string or a native TOML value ---


def _number(low: float, high: float = float("inf")) -> Callable[[object], float]:
    def parse(value: object) -> float:
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {value!r}")
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"expected a number, got {value!r}") from None
        if not (low <= number <= high) or number != number:
            raise ValueError(f"must be between {low:g} and {high:g}, got {number:g}")
        return number

    return parse


def _integer(low: int, high: int) -> Callable[[object], int]:
    def parse(value: object) -> int:
        if isinstance(value, (bool, float)):
            raise ValueError(f"expected a whole number, got {value!r}")
        try:
            number: int = int(value)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            raise ValueError(f"expected a whole number, got {value!r}") from None
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}, got {number}")
        return number

    return parse


def _milliseconds(value: object) -> float:
    return _number(0.0, 3_600_000.0)(value) / 1000.0


def _status(*allowed: int) -> Callable[[object], int]:
    def parse(value: object) -> int:
        status = _integer(100, 599)(value)
        if status not in allowed:
            raise ValueError(f"expected one of {', '.join(map(str, allowed))}, got {status}")
        return status

    return parse


_SIZE = re.compile(r"^\s*(\d+)\s*(?:([kmg])i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def _size(value: object) -> int:
    """Bytes, with an optional binary suffix: ``16M``, ``16MiB``, ``512k``."""
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    elif isinstance(value, str):
        text = value
    else:
        raise ValueError(f"expected a size like 16MiB, got {value!r}")
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"expected a size like 16MiB, got {value!r}")
    unit = (match.group(2) or "").lower()
    size = int(match.group(1)) * _SIZE_UNITS[unit]
    if not 1024 <= size <= 1024**3:
        raise ValueError(f"must be between 1KiB and 1GiB, got {size} bytes")
    return size


def _range(value: object) -> tuple[int, int]:
    """``"1-4"`` or ``"2"`` (TOML may also give ``[1, 4]`` or ``2``)."""
    if isinstance(value, list) and len(value) == 2:
        parts = [str(v) for v in value]
    elif isinstance(value, int) and not isinstance(value, bool):
        parts = [str(value)]
    elif isinstance(value, str):
        parts = value.split("-")
    else:
        raise ValueError(f"expected a range like 1-4, got {value!r}")
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"expected a range like 1-4, got {value!r}")
    low, high = int(parts[0]), int(parts[1])
    if not 1 <= low <= high <= 1024:
        raise ValueError(f"expected 1 <= low <= high <= 1024, got {value!r}")
    return (low, high)


def cores() -> int:
    """
    The CPU cores this process may run on: its affinity mask where the OS
    has one (``taskset``, a container's cpuset), else every core.
    """
    affinity = getattr(os, "sched_getaffinity", None)
    if affinity is not None:
        try:
            return len(affinity(0)) or 1
        except OSError:
            pass
    return os.cpu_count() or 1


def _workers(value: object) -> int:
    """A process count, or ``auto`` for one per core this process may use (L{cores})."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return min(cores(), 256)
    return _integer(1, 256)(value)


#: ``--max-connections auto``: resolved when the site starts (L{mockoai.wire.guard.connection_cap}).
AUTO_CONNECTIONS = -1
#: Seconds before ``--body-min-rate`` applies to a body (a connection's first
#: bytes may come slowly while its TCP window opens).
BODY_RATE_GRACE = 5.0


def _connections(value: object) -> int:
    """A connection count (0: no cap), or ``auto``: below the file-descriptor limit."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return AUTO_CONNECTIONS
    return _integer(0, 10**7)(value)


def _show_connections(value: int) -> str:
    return "auto" if value == AUTO_CONNECTIONS else str(value)


#: The HTTP/1.1 stacks (``--http``); auto is lean, on every interpreter.
HTTP_STACKS = ("auto", "lean", "lean-python", "twisted")


def _http(value: object) -> str:
    if value not in HTTP_STACKS:
        raise ValueError(f"expected auto, lean, lean-python or twisted, got {value!r}")
    return str(value)


#: How a model reasons: not at all, hidden (OpenAI's o-series and gpt-5:
#: counted and timed, never sent) or visible (vLLM reasoning models: the
#: text is sent before the answer).
REASONING_MODES = ("none", "hidden", "visible")
#: Reasoning efforts, lowest first (OpenAI's ``reasoning_effort``).
EFFORTS = ("minimal", "low", "medium", "high")


def _reasoning(value: object) -> str:
    if value not in REASONING_MODES:
        raise ValueError(f"expected one of {', '.join(REASONING_MODES)}, got {value!r}")
    return str(value)


def _efforts(value: object) -> tuple[tuple[str, int], ...]:
    """Mean reasoning tokens per effort: ``low=128,medium=512`` (or a TOML table)."""
    if isinstance(value, str):
        pairs: list[tuple[object, object]] = []
        for item in value.split(","):
            name, sep, number = item.partition("=")
            if not sep:
                raise ValueError(f"expected EFFORT=TOKENS pairs, got {value!r}")
            pairs.append((name.strip(), number.strip()))
    elif isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, tuple):
        pairs = list(value)
    else:
        raise ValueError(f"expected EFFORT=TOKENS pairs, got {value!r}")
    table = dict(DEFAULT_EFFORTS)
    for key, tokens in pairs:
        if key not in EFFORTS:
            raise ValueError(f"effort must be one of {', '.join(EFFORTS)}, got {key!r}")
        table[str(key)] = _integer(0, 1_000_000)(tokens)
    return tuple((effort, table[effort]) for effort in EFFORTS)


def _show_efforts(table: tuple[tuple[str, int], ...]) -> str:
    return ",".join(f"{name}={tokens}" for name, tokens in table)


DEFAULT_EFFORTS: tuple[tuple[str, int], ...] = (
    ("minimal", 16),
    ("low", 128),
    ("medium", 512),
    ("high", 2048),
)


def _boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
    raise ValueError(f"expected true or false, got {value!r}")


def _text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


def _strings(value: object) -> tuple[str, ...]:
    """A list: comma-separated in a string (env), or a TOML array."""
    if isinstance(value, str):
        items: list[object] = [v.strip() for v in value.split(",")]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ValueError(f"expected a list, got {value!r}")
    if not items or not all(isinstance(i, str) and i for i in items):
        raise ValueError(f"expected a non-empty list of non-empty strings, got {value!r}")
    return tuple(str(i) for i in items)


def _credit_limit(value: object) -> float | None:
    if isinstance(value, str) and value.strip().lower() in ("unlimited", "none"):
        return None
    return _number(0.0, 1e12)(value)


_NO_DELAY = latency.constant(0.0)


def _as_distribution(value: object) -> Distribution:
    """Seconds mean a constant latency (``itl=0.02`` is 20 ms), as the parsed forms do."""
    if isinstance(value, Distribution):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return latency.constant(float(value))
    raise TypeError(f"expected a Distribution or seconds, got {value!r}")


# --- how the startup log line shows a value (the default: str, lists comma-joined) ---


def _show_ms(seconds: float) -> str:
    return f"{seconds * 1000:g}ms"


def _show_latency(distribution: Distribution) -> str:
    return f"{distribution.describe()}ms"


def _show_range(bounds: tuple[int, int]) -> str:
    return f"{bounds[0]}-{bounds[1]}"


# --- API keys (mockoai.pipeline.auth checks them; they are configured here) ---

#: Longest key accepted in configuration: the rate limiter keys its buckets
#: by the first 128 characters of a key (L{mockoai.pipeline.limits.KEY_CHARS}).
MAX_KEY_CHARS = 128


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


# --- CORS (mockoai.wire.cors applies it; it is configured here) ---

#: ``*`` as the allowed origins (any) or headers: echo what the preflight
#: asks for.  (A literal ``*`` would not cover ``Authorization``, which
#: browsers require to be named.)
CORS_ANY = "*"
CORS_METHODS = ("GET", "POST")
CORS_MAX_AGE = 600

_ORIGIN_SYNTAX = re.compile(r"^[a-z][a-z0-9+.-]*://[^/?#\s*]+$")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _items(value: object) -> list[str]:
    if isinstance(value, str):
        items: list[object] = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, (list, tuple)):
        items = [v.strip() if isinstance(v, str) else v for v in value]
    else:
        raise ValueError(f"expected a list, got {value!r}")
    if not items or not all(isinstance(i, str) and i for i in items):
        raise ValueError(f"expected a non-empty list of non-empty strings, got {value!r}")
    return [str(i) for i in items]


def parse_origins(value: object) -> tuple[str, ...]:
    """Origins as browsers send them (``https://app.example:8443``), or ``*``."""
    origins = []
    for item in _items(value):
        origin = item.lower().rstrip("/")
        if origin != CORS_ANY and not _ORIGIN_SYNTAX.match(origin):
            raise ValueError(f"expected an origin like https://app.example:8443 or *, got {item!r}")
        origins.append(origin)
    return tuple(origins)


def parse_tokens(value: object) -> tuple[str, ...]:
    """Method or header names (HTTP tokens), or ``*``."""
    items = _items(value)
    for item in items:
        if not _TOKEN.match(item):
            raise ValueError(f"expected HTTP method or header names, got {item!r}")
    return tuple(items)


# --- declaring settings: each once, as a field of its group ---

_SETTING = "mockoai.setting"
_GROUP = "mockoai.group"
_TABLE_KEY = "mockoai.table_key"

_G = TypeVar("_G")


@attrs.frozen
class Field:
    """
    One setting, as the registry knows it.  ``name`` is the TOML key; the
    command-line option (``cli`` when it differs) and the environment
    variable derive from it.  ``path`` is where the value sits in
    L{Settings}: the groups, then the attribute.
    """

    name: str
    parse: Callable[[object], Any]
    help: str
    flag: bool = False
    repeatable: bool = False
    cli: str = ""
    metavar: str = ""
    show: Callable[[Any], str] | None = None
    path: tuple[str, ...] = ()

    @property
    def option(self) -> str:
        return self.cli or self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    def get(self, settings: Settings) -> Any:
        """This setting's value in ``settings``."""
        value: Any = settings
        for attr in self.path:
            value = getattr(value, attr)
        return value

    def describe(self, value: Any) -> str:
        """``value`` as the startup log line shows it."""
        if self.show is not None:
            return self.show(value)
        if isinstance(value, tuple):
            return ",".join(map(str, value))
        return str(value)


def setting(
    default: Any,
    parse: Callable[[object], Any],
    help: str,
    *,
    name: str = "",
    flag: bool = False,
    repeatable: bool = False,
    cli: str = "",
    metavar: str = "",
    show: Callable[[Any], str] | None = None,
    converter: Callable[[Any], Any] | None = None,
) -> Any:
    """
    A group's field that is a setting: its default, the parser of its raw
    (CLI, environment or TOML) values, its help text, and ``name`` when the
    external name is not the attribute's (``origins`` is ``cors_origins``).
    """
    declared = Field(name, parse, help, flag, repeatable, cli, metavar, show)
    return attrs.field(default=default, converter=converter, metadata={_SETTING: declared})


def group(cls: type[_G]) -> _G:
    """A field holding a group of settings (itself a frozen attrs class of L{setting}s)."""
    field: _G = attrs.field(factory=cls, metadata={_GROUP: cls})
    return field


#: One slot of a group: (attribute, its setting or None, its group class or None).
_Slot = tuple[str, "Field | None", "type[Any] | None"]


_LAYOUTS: dict[type[Any], tuple[_Slot, ...]] = {}


def _layout(cls: type[Any]) -> tuple[_Slot, ...]:
    """The settings and subgroups of a group class, with the settings' names resolved."""
    layout = _LAYOUTS.get(cls)
    if layout is None:
        slots: list[_Slot] = []
        for a in attrs.fields(cls):
            declared = a.metadata.get(_SETTING)
            if declared is not None:
                name = declared.name or a.name
                slots.append((a.name, attrs.evolve(declared, name=name), None))
            elif _GROUP in a.metadata:
                slots.append((a.name, None, a.metadata[_GROUP]))
        layout = _LAYOUTS[cls] = tuple(slots)
    return layout


def _fields(cls: type[Any], path: tuple[str, ...] = ()) -> Iterator[Field]:
    for attr, field, sub in _layout(cls):
        if sub is not None:
            yield from _fields(sub, (*path, attr))
        elif field is not None:
            yield attrs.evolve(field, path=(*path, attr))


def _build(cls: type[_G], values: dict[str, Any]) -> _G:
    """Group ``cls`` from flat names; the names it takes are removed from ``values``."""
    kwargs: dict[str, Any] = {}
    for attr, field, sub in _layout(cls):
        if sub is not None:
            kwargs[attr] = _build(sub, values)
        elif field is not None and field.name in values:
            kwargs[attr] = values.pop(field.name)
    return cls(**kwargs)


def _replace(instance: _G, values: Mapping[str, Any]) -> _G:
    """``instance`` with the settings named in ``values`` replaced, at any depth."""
    changes: dict[str, Any] = {}
    for attr, field, sub in _layout(type(instance)):
        if sub is not None:
            inner = getattr(instance, attr)
            replaced = _replace(inner, values)
            if replaced is not inner:
                changes[attr] = replaced
        elif field is not None and field.name in values:
            changes[attr] = values[field.name]
    return attrs.evolve(instance, **changes) if changes else instance  # type: ignore[misc]


def _table_key(default: Any, parse: Callable[[object], Any]) -> Any:
    """A field of a [[models]] table that is not a per-model setting (OpenRouter's prices...)."""
    return attrs.field(default=default, metadata={_TABLE_KEY: parse})


# --- models, providers ---

_PRICE = _number(0.0, 1.0)  # USD per token


@attrs.frozen
class ModelSpec:
    """
    One served model.  ``endpoints`` says which of chat/completions accept it
    (a profile may restrict it); ``native`` is OpenAI's own mapping, which
    only ``--strict-endpoints`` applies: real benchmark tools take the first
    listed model for both endpoints, as vLLM serves every model on both.
    An embedding model has ``endpoints = {"embeddings"}`` and its vectors'
    ``dimensions`` (which a request may lower when ``custom_dimensions``, as
    OpenAI's text-embedding-3 models allow and ada-002 does not).
    """

    id: str
    owned_by: str = "mockoai"
    created: int = 1700000000
    endpoints: frozenset[str] = ENDPOINT_KINDS
    native: frozenset[str] = ENDPOINT_KINDS
    #: Per-model values of L{PER_MODEL} settings (parsed), overriding the globals.
    overrides: tuple[tuple[str, Any], ...] = ()
    #: OpenRouter mode: USD per prompt and per completion token; the providers
    #: serving it (the first is the default; none = every configured provider);
    #: its context window; and the share of its streams that fail, after how
    #: many tokens.
    prompt_price: float = _table_key(0.0, _PRICE)
    completion_price: float = _table_key(0.0, _PRICE)
    providers: tuple[str, ...] = _table_key((), _strings)
    context_length: int = _table_key(128_000, _integer(1, 100_000_000))
    stream_error_rate: float = _table_key(0.0, _number(0.0, 1.0))
    stream_error_after: int = _table_key(0, _integer(0, 10_000_000))
    #: Embeddings: the vectors' width, and whether a request may ask for fewer.
    dimensions: int = _table_key(1536, _integer(1, 65_536))
    custom_dimensions: bool = _table_key(True, _boolean)


#: The OpenRouter-mode keys of a [[models]] table and their parsers.
_ROUTER_MODEL_KEYS: dict[str, Callable[[object], Any]] = {
    a.name: a.metadata[_TABLE_KEY] for a in attrs.fields(ModelSpec) if _TABLE_KEY in a.metadata
}

_CHAT_ONLY = frozenset({CHAT})
_EMBEDDINGS_ONLY = frozenset({EMBEDDINGS})
#: OpenAI's embedding models: served on /v1/embeddings alone, by default and
#: whenever ``--model`` names one.
_EMBEDDING_MODELS = {
    spec.id: spec
    for spec in (
        ModelSpec(
            "text-embedding-3-small", "system", 1705948997, _EMBEDDINGS_ONLY, _EMBEDDINGS_ONLY
        ),
        ModelSpec(
            "text-embedding-3-large",
            "system",
            1705953180,
            _EMBEDDINGS_ONLY,
            _EMBEDDINGS_ONLY,
            dimensions=3072,
        ),
        ModelSpec(
            "text-embedding-ada-002",
            "openai-internal",
            1671217299,
            _EMBEDDINGS_ONLY,
            _EMBEDDINGS_ONLY,
            custom_dimensions=False,
        ),
    )
}
#: OpenAI's reasoning models think before they answer, out of sight.
_HIDDEN = (("reasoning", "hidden"),)
DEFAULT_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("gpt-4o", "system", 1715367049, native=_CHAT_ONLY),
    ModelSpec("gpt-4o-mini", "system", 1721172741, native=_CHAT_ONLY),
    ModelSpec("gpt-4.1", "system", 1744316542, native=_CHAT_ONLY),
    ModelSpec("gpt-4.1-mini", "system", 1744318173, native=_CHAT_ONLY),
    ModelSpec("gpt-4.1-nano", "system", 1744321707, native=_CHAT_ONLY),
    ModelSpec("o4-mini", "system", 1744225351, native=_CHAT_ONLY, overrides=_HIDDEN),
    ModelSpec("gpt-5", "system", 1754425777, native=_CHAT_ONLY, overrides=_HIDDEN),
    ModelSpec("gpt-5-mini", "system", 1754425928, native=_CHAT_ONLY, overrides=_HIDDEN),
    ModelSpec("gpt-3.5-turbo-instruct", "system", 1692901427, native=frozenset({COMPLETIONS})),
    *_EMBEDDING_MODELS.values(),
)
#: OpenAI's list prices (USD per prompt, completion token) and context windows,
#: so OpenRouter mode reports realistic costs out of the box.
_LIST_PRICES = {
    "gpt-4o": (2.5e-6, 1e-5, 128_000),
    "gpt-4o-mini": (1.5e-7, 6e-7, 128_000),
    "gpt-4.1": (2e-6, 8e-6, 1_047_576),
    "gpt-4.1-mini": (4e-7, 1.6e-6, 1_047_576),
    "gpt-4.1-nano": (1e-7, 4e-7, 1_047_576),
    "o4-mini": (1.1e-6, 4.4e-6, 200_000),
    "gpt-5": (1.25e-6, 1e-5, 400_000),
    "gpt-5-mini": (2.5e-7, 2e-6, 400_000),
    "gpt-3.5-turbo-instruct": (1.5e-6, 2e-6, 4_096),
    # Embedding models: the context is each input's limit.
    "text-embedding-3-small": (2e-8, 0.0, 8_192),
    "text-embedding-3-large": (1.3e-7, 0.0, 8_192),
    "text-embedding-ada-002": (1e-7, 0.0, 8_192),
}


def _priced(spec: ModelSpec) -> ModelSpec:
    if spec.id not in _LIST_PRICES:
        return spec
    prompt, completion, context = _LIST_PRICES[spec.id]
    return attrs.evolve(
        spec, prompt_price=prompt, completion_price=completion, context_length=context
    )


DEFAULT_MODELS = tuple(_priced(m) for m in DEFAULT_MODELS)
_EMBEDDING_MODELS = {spec.id: spec for spec in DEFAULT_MODELS if spec.id in _EMBEDDING_MODELS}

# --- families: which APIs a model answers on ---

#: How OpenAI's model ids begin (besides o1, o3, o4...).
_OPENAI_PREFIXES = ("gpt-", "chatgpt-", "text-", "davinci", "babbage", "dall-e", "whisper", "tts-")
OPENAI = "openai"
ANTHROPIC = "anthropic"
#: The endpoints each family's models answer on by default: OpenAI's own
#: models are not served on Anthropic's API; Claude models are served on
#: every one (Anthropic serves OpenAI's chat format too).  A model of no
#: known family answers on all of them, as vLLM serves every API it has.
FAMILY_KINDS = {OPENAI: ENDPOINT_KINDS - {MESSAGES}, ANTHROPIC: ENDPOINT_KINDS}
#: What Anthropic itself serves a Claude model on (``--strict-endpoints``).
_ANTHROPIC_NATIVE = frozenset({MESSAGES, CHAT})


def family(model_id: str) -> str | None:
    """``anthropic`` (``claude-*``), ``openai`` (``gpt-*``, ``o3``...) or None, by its id."""
    name = model_id.rsplit("/", 1)[-1].lower()
    if name.startswith("claude"):
        return ANTHROPIC
    if name.startswith(_OPENAI_PREFIXES) or (name[:1] == "o" and name[1:2].isdigit()):
        return OPENAI
    return None


def _in_family(spec: ModelSpec) -> ModelSpec:
    """``spec`` answering on its family's endpoints, unless it names its own."""
    kinds = FAMILY_KINDS.get(family(spec.id) or "")
    if kinds is None or spec.endpoints != ENDPOINT_KINDS:
        return spec
    return attrs.evolve(spec, endpoints=kinds)


def _claude(model: str, created: int, max_output: int, context: int) -> ModelSpec:
    return ModelSpec(
        model,
        ANTHROPIC,
        created,
        native=_ANTHROPIC_NATIVE,
        overrides=(("max_output_tokens", max_output),),
        context_length=context,
    )


#: Anthropic's current models (the API's ids and aliases, their output limits
#: and context windows), served beside OpenAI's by default.
_CLAUDE_MODELS = {
    spec.id: spec
    for spec in (
        _claude("claude-opus-4-6", 1770249600, 128_000, 1_000_000),
        _claude("claude-sonnet-4-6", 1771286400, 64_000, 1_000_000),
        _claude("claude-haiku-4-5", 1760486400, 64_000, 200_000),
    )
}
DEFAULT_MODELS = (*map(_in_family, DEFAULT_MODELS), *_CLAUDE_MODELS.values())


def _model(value: object) -> ModelSpec:
    if isinstance(value, str):
        if not value or len(value) > 256 or any(c.isspace() for c in value):
            raise ValueError(f"invalid model id {value!r}")
        spec = _EMBEDDING_MODELS.get(value) or _CLAUDE_MODELS.get(value)
        if spec is not None:
            return spec
        owner = value.split("/", 1)[0] if "/" in value else "mockoai"
        return _in_family(ModelSpec(value, owned_by=owner))
    if isinstance(value, Mapping):
        known = {"id", "owned_by", "created", "endpoints", *PER_MODEL, *_ROUTER_MODEL_KEYS}
        unknown = set(value) - known
        if unknown:
            raise ValueError(f"unknown model key(s) {', '.join(sorted(unknown))}")
        overrides = []
        for key in PER_MODEL:
            if key in value:
                try:
                    overrides.append((key, FIELDS_BY_NAME[key].parse(value[key])))
                except ValueError as e:
                    raise ValueError(f"{key}: {e}") from None
        base = _model(value.get("id"))
        endpoints = value.get("endpoints", sorted(base.endpoints))
        kinds = frozenset(_strings(endpoints))
        if not kinds <= KNOWN_KINDS:
            raise ValueError(f"endpoints must be among {sorted(KNOWN_KINDS)}, got {endpoints!r}")
        # An id OpenAI serves embeddings under keeps that (and its dimensions).
        return attrs.evolve(
            base,
            owned_by=_text(value.get("owned_by", base.owned_by)),
            created=_integer(0, 2**40)(value.get("created", base.created)),
            endpoints=kinds,
            overrides=tuple(overrides),
            **_router_model(value),
        )
    raise ValueError(f"expected a model id or table, got {value!r}")


def _router_model(table: Mapping[str, object]) -> dict[str, Any]:
    """The OpenRouter-mode keys of a [[models]] table, parsed."""
    fields = {}
    for key, parse in _ROUTER_MODEL_KEYS.items():
        if key in table:
            try:
                fields[key] = parse(table[key])
            except ValueError as e:
                raise ValueError(f"{key}: {e}") from None
    return fields


def _models(value: object) -> tuple[ModelSpec, ...]:
    items: Iterable[object]
    if isinstance(value, str):
        items = _strings(value)
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        raise ValueError(f"expected a list of models, got {value!r}")
    models = tuple(_model(item) for item in items)
    if not models:
        raise ValueError("at least one model is needed")
    ids = [m.id for m in models]
    if len(set(ids)) != len(ids):
        raise ValueError("model ids must be unique")
    return models


def _show_models(models: tuple[ModelSpec, ...]) -> str:
    # A star marks a model with its own [[models]] overrides.
    return ",".join(m.id + ("*" if m.overrides else "") for m in models)


@attrs.frozen
class ProviderSpec:
    """
    An upstream provider OpenRouter mode routes to.  ``price`` multiplies a
    model's prices on this provider; ``latency`` (seconds) and ``throughput``
    (tokens/s) are what ``provider.sort`` ranks by and ``/endpoints`` reports.
    """

    name: str
    price: float = 1.0
    latency: float = 0.0
    throughput: float = 0.0

    @property
    def slug(self) -> str:
        return self.name.lower().replace(" ", "-")

    def __str__(self) -> str:
        parts = [self.name]
        if self.price != 1.0:
            parts.append(f"price={self.price:g}")
        if self.latency:
            parts.append(f"latency={self.latency * 1000:g}")
        if self.throughput:
            parts.append(f"throughput={self.throughput:g}")
        return ":".join(parts)


@attrs.frozen
class FailingSpec:
    """A model (on one provider, or on all) that answers with ``status`` before any token."""

    model: str
    provider: str | None = None
    status: int = 502

    def __str__(self) -> str:
        where = f"@{self.provider}" if self.provider else ""
        return f"{self.model}{where}={self.status}"


DEFAULT_PROVIDERS = (ProviderSpec("OpenAI"), ProviderSpec("Azure"))
#: Statuses a failing model may answer with (OpenRouter's upstream errors).
FAILING_STATUSES = (403, 408, 429, 502, 503)


def _provider(value: object) -> ProviderSpec:
    """``Name`` or ``Name:price=1.2:latency=300:throughput=80`` (ms), or a TOML table."""
    if isinstance(value, str):
        first, *options = [part.strip() for part in value.split(":")]
        table: dict[str, object] = {"name": first}
        for option in options:
            key, sep, number = option.partition("=")
            if not sep:
                raise ValueError(f"expected key=value after the provider name, got {option!r}")
            table[key.strip()] = number.strip()
    elif isinstance(value, Mapping):
        table = dict(value)
    else:
        raise ValueError(f"expected a provider name or table, got {value!r}")
    unknown = set(table) - {"name", "price", "latency", "throughput"}
    if unknown:
        raise ValueError(f"unknown provider key(s) {', '.join(sorted(unknown))}")
    name = table.get("name")
    if not isinstance(name, str) or not name or "," in name:
        raise ValueError(f"invalid provider name {name!r}")
    return ProviderSpec(
        str(name),
        price=_number(0.0, 1000.0)(table.get("price", 1.0)),
        latency=_milliseconds(table.get("latency", 0.0)),
        throughput=_number(0.0, 10_000_000.0)(table.get("throughput", 0.0)),
    )


def _providers(value: object) -> tuple[ProviderSpec, ...]:
    items = _strings(value) if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise ValueError(f"expected a non-empty list of providers, got {value!r}")
    providers = tuple(_provider(item) for item in items)
    slugs = [p.slug for p in providers]
    if len(set(slugs)) != len(slugs):
        raise ValueError("provider names must be unique")
    return providers


def _failing_models(value: object) -> tuple[FailingSpec, ...]:
    """``model``, ``model@Provider``, either with ``=STATUS`` (default 502)."""
    if isinstance(value, (list, tuple)) and not value:
        return ()
    failing = []
    for item in _strings(value):
        target, sep, status = item.rpartition("=")
        if not sep:
            target, status = item, "502"
        model, at, provider = target.partition("@")
        if not model or (at and not provider):
            raise ValueError(f"expected MODEL[@PROVIDER][=STATUS], got {item!r}")
        code = _integer(100, 599)(status)
        if code not in FAILING_STATUSES:
            raise ValueError(
                f"status must be one of {', '.join(map(str, FAILING_STATUSES))}, got {code}"
            )
        failing.append(FailingSpec(model, provider or None, code))
    return tuple(failing)


# --- the groups ---


@attrs.frozen
class EngineConfig:
    """
    Capacity and behaviour under load (L{mockoai.sim.engine.Engine});
    ``max_running`` 0 means no engine.
    """

    max_running: int = setting(
        0,
        _integer(0, 100_000),
        "Engine: sequences decoded together (vLLM's max-num-seqs); 0 = no engine, "
        "every request paced on its own.",
        metavar="N",
    )
    max_waiting: int = setting(
        1024, _integer(0, 1_000_000), "Engine: queued requests beyond running.", metavar="N"
    )
    queue_timeout: float = setting(
        0.0,
        _number(0, 86400),
        "Engine: seconds a request may wait queued (0 = no limit).",
        metavar="S",
    )
    reject_status: int = setting(
        429, _status(429, 503), "Engine: status when the queue is full.", metavar="CODE"
    )
    timeout_status: int = setting(
        503, _status(503, 504), "Engine: status on a queue timeout.", metavar="CODE"
    )
    batch_slowdown: float = setting(
        0.0,
        _number(0, 100),
        "Engine: k in step = itl * (1 + k * (batch - 1) / max_running).",
        metavar="K",
    )
    max_tokens_per_s: float = setting(
        0.0,
        _number(0, 10_000_000),
        "Engine: token throughput ceiling across all streams (0 = none).",
        metavar="N",
    )

    @property
    def enabled(self) -> bool:
        return self.max_running > 0


@attrs.frozen
class ModelProfile:
    """
    One model's output lengths, latency and engine.  The globals are
    ``settings.served.defaults``; a [[models]] table may set any of these
    for its model alone, and L{Settings.profile} resolves the two.
    """

    tokens_mean: float = setting(
        256.0, _number(1, 1_000_000), "Mean completion tokens per choice.", metavar="N"
    )
    tokens_stddev: float = setting(
        64.0, _number(0, 1_000_000), "Stddev of completion tokens.", metavar="N"
    )
    max_output_tokens: int = setting(
        4096,
        _integer(1, 131_072),
        "Cap on completion tokens per choice (the model's output limit).",
        metavar="N",
    )
    stream_tokens: tuple[int, int] = setting(
        (1, 1), _range, "Tokens per SSE event, a range like 1-4.", metavar="A-B", show=_show_range
    )
    response_delay: Distribution = setting(
        _NO_DELAY,
        latency.parse,
        "Time to first token in ms, or a distribution: normal:200:20, lognormal:MEAN:SD, "
        "uniform:LO:HI, p50=180,p99=400 (non-streaming waits the same total).",
        metavar="MS|DIST",
        show=_show_latency,
        converter=_as_distribution,
    )
    itl: Distribution = setting(
        _NO_DELAY,
        latency.parse,
        "Inter-token latency in ms, or a distribution.",
        metavar="MS|DIST",
        show=_show_latency,
        converter=_as_distribution,
    )
    prefill_per_token: float = setting(  # seconds per prompt token (configured in ms)
        0.0,
        _milliseconds,
        "Extra time to first token per prompt token, in ms (prefill cost).",
        metavar="MS",
        show=_show_ms,
    )
    tool_call_rate: float = setting(
        1.0,
        _number(0.0, 1.0),
        "Share of tool_choice=auto requests that call a tool (a tool result last: never).",
        metavar="P",
    )
    reasoning: str = setting(
        "none",
        _reasoning,
        "How the model reasons: none, hidden (counted and timed, as OpenAI's o-series) "
        "or visible (sent before the answer, as vLLM reasoning models).",
        metavar="MODE",
    )
    reasoning_tokens: tuple[tuple[str, int], ...] = setting(
        DEFAULT_EFFORTS,
        _efforts,
        "Mean reasoning tokens per effort (minimal,low,medium,high), e.g. low=128,high=2048.",
        metavar="EFFORT=N,...",
        show=_show_efforts,
    )
    engine: EngineConfig = group(EngineConfig)
    #: Built once: every request's plan reads it.
    latency: LatencyModel = attrs.field(
        init=False,
        eq=False,
        repr=False,
        default=attrs.Factory(
            lambda p: LatencyModel(p.response_delay, p.itl, p.prefill_per_token), takes_self=True
        ),
    )


@attrs.frozen
class ModelSettings:
    """The served models, and the profile every one starts from."""

    models: tuple[ModelSpec, ...] = setting(
        DEFAULT_MODELS,
        _models,
        "Model id to serve (repeatable; replaces the default OpenAI list).",
        repeatable=True,
        cli="model",
        metavar="ID",
        show=_show_models,
    )
    any_model: bool = setting(False, _boolean, "Accept any model name and echo it back.", flag=True)
    strict_endpoints: bool = setting(
        False,
        _boolean,
        "OpenAI's endpoint mapping: a chat model on /v1/completions (or the reverse) is a "
        "404. Off by default: every model answers on both, as on vLLM.",
        flag=True,
    )
    defaults: ModelProfile = group(ModelProfile)


@attrs.frozen
class AnswerSettings:
    """What answers are made of: the generated corpus, and the fingerprint they carry."""

    articles: int = setting(
        4096, _integer(16, 65536), "Lorem-ipsum articles generated at startup.", metavar="N"
    )
    corpus_seed: int = setting(
        0, _integer(0, 2**32 - 1), "Seed of the generated corpus.", metavar="N"
    )
    system_fingerprint: str = setting(
        "fp_6d6f636b6f", _text, "system_fingerprint sent in responses.", metavar="FP"
    )


@attrs.frozen
class ServerSettings:
    """Where and how the server listens, and its connections' budgets."""

    listen: tuple[str, ...] = setting(
        ("tcp:3000",),
        _strings,
        "Endpoint to listen on, as a Twisted endpoint string (repeatable): "
        "tcp:3000:interface=127.0.0.1, unix:/run/mockoai.sock, ssl:8443:privateKey=..., "
        "systemd:domain=INET:index=0. Default tcp:3000.",
        repeatable=True,
        metavar="ENDPOINT",
    )
    workers: int = setting(
        1,
        _workers,
        "Serving processes sharing the TCP ports (SO_REUSEPORT); 'auto' = one per core "
        "this process may run on (its CPU affinity: taskset, a container's cpuset).",
        metavar="N",
    )
    http: str = setting(
        "auto",
        _http,
        "HTTP/1.1 stack: lean (parsed by httptools, or where it is not installed, as on "
        "PyPy, by mockoai's own pure-Python parser), lean-python (always that parser), "
        "twisted (twisted.web); auto = lean.",
        metavar="STACK",
    )
    http2: bool = setting(
        True,
        _boolean,
        "Offer HTTP/2 (ALPN h2) on ssl: listeners; off = HTTP/1.1 only.",
        metavar="on|off",
    )
    lean_poll: bool = setting(
        True,
        _boolean,
        "Step Twisted's epoll reactor with mockoai's own poll step: no logging context "
        "per ready socket, and the answers to one poll's reads sent after the last read "
        "(a third less CPU per request under load); off = Twisted's step.",
        metavar="on|off",
    )
    max_connections: int = setting(
        AUTO_CONNECTIONS,
        _connections,
        "Open connections per process beyond which new ones get a 503 (0 = no cap); "
        "auto (default) = the file-descriptor limit, raised to its hard limit, less 100.",
        metavar="N|auto",
        show=_show_connections,
    )
    keepalive_requests: int = setting(
        1000,
        _integer(0, 10**9),
        "Requests a keep-alive connection serves before its answer says Connection: close "
        "(0 = no limit), so clients reconnect and --workers rebalance (nginx's default).",
        metavar="N",
    )
    keepalive_time: float = setting(
        0.0,
        _number(0, 86400),
        "Seconds after which a keep-alive connection is closed after its current answer "
        "(0 = no limit; nginx's keepalive_time).",
        metavar="S",
    )
    max_body_size: int = setting(
        16 * 1024 * 1024, _size, "Largest request body accepted (413 above).", metavar="SIZE"
    )
    idle_timeout: float = setting(
        60.0, _number(0, 86400), "Seconds before an idle connection is closed.", metavar="S"
    )
    grace_period: float = setting(
        10.0,
        _number(0, 3600),
        "Seconds in-flight requests get to finish on SIGTERM/SIGINT.",
        metavar="S",
    )


@attrs.frozen
class HttpLimits:
    """The limits on a request's head (L{mockoai.wire.guard}); 0 turns ``header_timeout`` off."""

    max_url_length: int = setting(
        8192, _integer(64, 1 << 20), "Longest request target (414 above).", metavar="N"
    )
    max_headers: int = setting(
        100, _integer(8, 10_000), "Most header fields (431 above).", metavar="N"
    )
    max_header_bytes: int = setting(
        64 * 1024, _size, "Most bytes of header names and values (431 above).", metavar="SIZE"
    )
    header_timeout: float = setting(
        10.0,
        _number(0, 3600),
        "Seconds a client has to send a request's headers, from connecting or from the "
        "first byte of a later request; slower ones get 408 and are closed (0 = no limit).",
        metavar="S",
    )
    body_timeout: float = setting(
        60.0,
        _number(0, 86400),
        "Seconds a request body has to arrive whole after its headers; slower ones get 408 "
        "and are closed (0 = no limit).",
        metavar="S",
    )
    body_min_rate: int = setting(
        1024,
        _integer(0, 1 << 30),
        "Bytes per second a request body must average once it has taken over "
        f"{BODY_RATE_GRACE:g} s; slower ones get 408 and are closed (0 = no minimum).",
        metavar="BYTES",
    )

    @property
    def head_bytes(self) -> int:
        """The most a request head may take on the wire (line, fields, framing)."""
        return self.max_url_length + self.max_header_bytes + 4 * self.max_headers + 1024


@attrs.frozen
class InputLimits:
    """
    What a request body may hold (L{mockoai.dialects.openai.validate}): nesting
    depth, chat messages, characters per string and in all, and ``n``.
    """

    max_json_depth: int = setting(
        64,
        _integer(2, 512),
        "Deepest nesting of arrays and objects in a body (unparseable JSON, 400, above).",
        metavar="N",
    )
    max_messages: int = setting(
        2048, _integer(1, 1_000_000), "Most chat messages (400 above).", metavar="N"
    )
    max_string_length: int = setting(
        10_485_760,
        _integer(1, 1 << 30),
        "Longest message content or prompt string, in characters (400 above).",
        metavar="N",
    )
    max_prompt_chars: int = setting(  # 0: only the body size bounds it
        0,
        _integer(0, 1 << 34),
        "Most characters of message content or prompt text in all (0 = no limit).",
        metavar="N",
    )
    max_n: int = setting(
        128, _integer(1, 10_000), "Largest n, choices per prompt (400 above).", metavar="N"
    )


@attrs.frozen
class RateSettings:
    """OpenAI's rate limits, per API key and per client IP (0 = unlimited)."""

    rpm: int = setting(
        0, _integer(0, 10**9), "Requests per minute per API key (0 = unlimited).", metavar="N"
    )
    tpm: int = setting(
        0, _integer(0, 10**12), "Tokens per minute per API key (0 = unlimited).", metavar="N"
    )
    ip_rpm: int = setting(
        0, _integer(0, 10**9), "Requests per minute per client IP (0 = unlimited).", metavar="N"
    )


@attrs.frozen
class AuthSettings:
    """The API keys the server accepts (L{mockoai.pipeline.auth}); none = any or no key."""

    keys: tuple[ApiKey, ...] = setting(
        (),
        parse_keys,
        "API key the server accepts (repeatable); none = any or no key is accepted.",
        name="api_keys",
        repeatable=True,
        cli="api-key",
        metavar="KEY",
    )
    keys_file: KeysFile | None = setting(
        None,
        parse_keys_file,
        "TOML or .json file of accepted keys: [[keys]] with key, label, rpm, tpm.",
        name="api_keys_file",
        metavar="PATH",
    )
    #: Keys are required on /health, /metrics and /stats too.
    health: bool = setting(
        False,
        _boolean,
        "With API keys: require a key on /health, /metrics and /stats too.",
        name="auth_health",
        flag=True,
    )

    @property
    def all_keys(self) -> tuple[ApiKey, ...]:
        """The keys of ``--api-key`` and of ``--api-keys-file`` together."""
        if self.keys_file is None:
            return self.keys
        return self.keys + self.keys_file.keys


@attrs.frozen
class CorsSettings:
    """Which browser origins may call the API (L{mockoai.wire.cors}); no origin = CORS off."""

    origins: tuple[str, ...] = setting(
        (),
        parse_origins,
        "Origin allowed to call the API from a browser (repeatable), or *; none = CORS off.",
        name="cors_origins",
        repeatable=True,
        cli="cors-origin",
        metavar="ORIGIN",
    )
    methods: tuple[str, ...] = setting(
        CORS_METHODS,
        parse_tokens,
        "CORS: methods a preflight allows, comma-separated. Default GET,POST.",
        name="cors_methods",
        metavar="LIST",
    )
    headers: tuple[str, ...] = setting(
        (CORS_ANY,),
        parse_tokens,
        "CORS: request headers a preflight allows, comma-separated; * (default) = "
        "whatever the preflight asks for.",
        name="cors_headers",
        metavar="LIST",
    )
    max_age: int = setting(
        CORS_MAX_AGE,
        _integer(0, 86400),
        "CORS: seconds a browser may cache a preflight answer.",
        name="cors_max_age",
        metavar="S",
    )
    credentials: bool = setting(
        False,
        _boolean,
        "CORS: allow credentialed requests (cookies); the origin is echoed instead of *.",
        name="cors_credentials",
        flag=True,
    )


@attrs.frozen
class OpenRouterSettings:
    """OpenRouter mode (``/api/v1/``): providers, failures, credits, generations."""

    providers: tuple[ProviderSpec, ...] = setting(
        DEFAULT_PROVIDERS,
        _providers,
        "OpenRouter mode: upstream providers, comma-separated, each Name or "
        "Name:price=FACTOR:latency=MS:throughput=TOKENS_PER_S. Default OpenAI,Azure.",
        name="openrouter_providers",
        metavar="LIST",
    )
    failing_models: tuple[FailingSpec, ...] = setting(
        (),
        _failing_models,
        "OpenRouter mode: models that fail before answering, comma-separated "
        "MODEL[@PROVIDER][=STATUS] (status 403, 408, 429, 502 or 503; default 502).",
        name="openrouter_failing_models",
        metavar="LIST",
    )
    credit_limit: float | None = setting(  # USD per API key; None = unlimited
        None,
        _credit_limit,
        "OpenRouter mode: USD each API key may spend before it gets 402 (default unlimited).",
        name="openrouter_credit_limit",
        metavar="USD",
    )
    processing_interval: float = setting(  # seconds (configured in ms); 0 = off
        1.0,
        _milliseconds,
        "OpenRouter mode: ms between ': OPENROUTER PROCESSING' comments while a stream "
        "waits for its first token (0 = none).",
        name="openrouter_processing_interval",
        metavar="MS",
        show=_show_ms,
    )
    generations: int = setting(
        10_000,
        _integer(1, 10_000_000),
        "OpenRouter mode: finished generations kept for /api/v1/generation.",
        name="openrouter_generations",
        metavar="N",
    )
    generation_ttl: float = setting(
        3600.0,
        _number(1, 30 * 86400),
        "OpenRouter mode: seconds a finished generation stays queryable.",
        name="openrouter_generation_ttl",
        metavar="S",
    )


@attrs.frozen
class ResponsesSettings:
    """The Responses API's store (``store: true``, its default), bounded by count and age."""

    store_size: int = setting(
        4096,
        _integer(0, 10_000_000),
        "Responses kept for GET /v1/responses/{id} and previous_response_id (0 = none).",
        name="responses_store_size",
        metavar="N",
    )
    store_ttl: float = setting(
        3600.0,
        _number(1, 30 * 86400),
        "Seconds a stored response stays retrievable.",
        name="responses_store_ttl",
        metavar="S",
    )


@attrs.frozen
class RulesFile:
    """
    ``--rules FILE`` as read at startup: TOML, or JSON for a ``.json`` name.
    What its rules say is checked by L{mockoai.pipeline.rules} (the command
    line does it at once, L{mockoai.ops.tap}); here, only that it reads.
    """

    path: str
    document: Any = attrs.field(hash=False)

    def __str__(self) -> str:
        return self.path


def parse_rules_file(value: object) -> RulesFile:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a file name, got {value!r}")
    try:
        with open(value, "rb") as handle:
            raw = handle.read()
    except OSError as e:
        raise ValueError(f"cannot read {value}: {e.strerror}") from None
    try:
        if value.endswith(".json"):
            document: Any = json.loads(raw)
        else:
            document = tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        kind = "JSON" if value.endswith(".json") else "TOML"
        raise ValueError(f"{value} is not valid {kind}: {e}") from None
    return RulesFile(value, document)


def _journal(value: object) -> str:
    if value not in (JOURNAL_AUTO, "on", "off"):
        raise ValueError(f"expected auto, on or off, got {value!r}")
    return str(value)


#: The journal is kept while rules or control headers are in force.
JOURNAL_AUTO = "auto"


@attrs.frozen
class FaultSettings:
    """
    Rules, control headers, the admin API, the journal
    (L{mockoai.pipeline.control}, L{mockoai.ops.admin}, L{mockoai.ops.journal}).
    """

    rules: RulesFile | None = setting(
        None,
        parse_rules_file,
        "TOML or .json file of rules: scripted answers, faults, schedules (docs/faults.md).",
        metavar="PATH",
        show=str,
    )
    allow_control_headers: bool = setting(
        False,
        _boolean,
        "Take the per-request x-mockoai-fault, x-mockoai-ttft-ms, x-mockoai-itl-ms, "
        "x-mockoai-tokens and x-mockoai-tokens-per-event headers.",
        flag=True,
    )
    admin_key: str | None = setting(
        None,
        _text,
        "Key the admin API (/_mockoai/rules, ...) requires; with --api-key and none, "
        "the admin API is off.",
        metavar="KEY",
        show=lambda key: "(set)" if key else "None",
    )
    journal: str = setting(
        JOURNAL_AUTO,
        _journal,
        "Keep the journal of the last requests (GET /_mockoai/journal, the verdict): auto "
        "(while rules or control headers are in force), on or off.",
        metavar="MODE",
    )
    journal_size: int = setting(
        1000, _integer(1, 1_000_000), "Requests the journal keeps (per worker).", metavar="N"
    )
    journal_bodies: int = setting(
        0,
        _integer(0, 1_000_000),
        "Bytes of each request body the journal keeps (0 = none).",
        metavar="BYTES",
    )


@attrs.frozen
class ObservabilitySettings:
    """What the server tells about itself: access and request logs, the KV-cache gauge."""

    access_log: bool = setting(
        False, _boolean, "Log every request (costs ~20% throughput).", flag=True
    )
    request_log: str | None = setting(
        None,
        _text,
        "Write one JSON line per request to this file (with --workers, one file per "
        "worker: PATH-0, PATH-1, ...).",
        metavar="PATH",
    )
    request_log_max_size: int = setting(
        100 * 1024 * 1024,
        _size,
        "Rotate the request log when it reaches this size (default 100MiB).",
        metavar="SIZE",
    )
    request_log_files: int = setting(
        5, _integer(1, 1000), "Rotated request-log files kept (PATH.1 is the newest).", metavar="N"
    )
    kv_cache_tokens: int = setting(  # 0 = vllm:kv_cache_usage_perc is the share of --max-running
        0,
        _integer(0, 10**10),
        "Engine: simulated KV-cache capacity in tokens, for vllm:kv_cache_usage_perc "
        "(prompt + output tokens held by running sequences / this); 0 = running "
        "sequences / --max-running.",
        metavar="N",
    )
    dashboard_interval: float = setting(
        1.0,
        _number(0.1, 60.0),
        "Seconds between the live dashboard's updates (/_mockoai/dashboard).",
        metavar="S",
    )


@attrs.frozen
class Settings:
    """Everything the server needs to know, already validated, in groups."""

    config: str | None = setting(
        None, _text, "TOML profile file (e.g. etc/profiles/latency.toml).", metavar="PATH"
    )
    server: ServerSettings = group(ServerSettings)
    served: ModelSettings = group(ModelSettings)
    answers: AnswerSettings = group(AnswerSettings)
    http_limits: HttpLimits = group(HttpLimits)
    input_limits: InputLimits = group(InputLimits)
    rates: RateSettings = group(RateSettings)
    auth: AuthSettings = group(AuthSettings)
    cors: CorsSettings = group(CorsSettings)
    openrouter: OpenRouterSettings = group(OpenRouterSettings)
    responses: ResponsesSettings = group(ResponsesSettings)
    faults: FaultSettings = group(FaultSettings)
    observability: ObservabilitySettings = group(ObservabilitySettings)

    @classmethod
    def from_values(cls, **values: Any) -> Settings:
        """
        Settings from flat, already parsed values under their external names
        (``max_running=4, itl=0.02, cors_origins=("*",)``); the rest default.
        """
        remaining = dict(values)
        settings = _build(cls, remaining)
        if remaining:
            raise TypeError(f"no such setting: {sorted(remaining)[0]!r}")
        return settings

    def serves(self, spec: ModelSpec, kind: str) -> bool:
        """Whether ``spec`` answers on ``kind`` (OpenAI's mapping under strict_endpoints)."""
        if kind not in spec.endpoints:
            return False
        return kind in spec.native or not self.served.strict_endpoints

    def model(self, model_id: str) -> ModelSpec | None:
        for spec in self.served.models:
            if spec.id == model_id:
                return spec
        return None

    def profile(self, spec: ModelSpec | None = None) -> ModelProfile:
        """Everything that shapes one model's answers: the defaults, then its overrides."""
        defaults = self.served.defaults
        if spec is None or not spec.overrides:
            return defaults
        return _replace(defaults, dict(spec.overrides))


# --- the registry, derived from the groups ---

#: Shorthand for a listen endpoint: not a value of its own in L{Settings}.
PORT = Field("port", _integer(0, 65535), "Shorthand for --listen tcp:PORT.", metavar="PORT")
FIELDS: tuple[Field, ...] = (*_fields(Settings), PORT)
FIELDS_BY_NAME = {f.name: f for f in FIELDS}
#: Settings a [[models]] table may set for that model alone.
PER_MODEL: tuple[str, ...] = tuple(f.name for f in _fields(ModelProfile))
_PROFILE_FIELDS = {f.name: f for f in _fields(ModelProfile)}


def model_settings(profile: ModelProfile) -> dict[str, str]:
    """A model's per-model settings as the startup log shows them (the admin API's view)."""
    return {name: field.describe(field.get(profile)) for name, field in _PROFILE_FIELDS.items()}  # type: ignore[arg-type]


def with_model_settings(profile: ModelProfile, raw: Mapping[str, object]) -> ModelProfile:
    """
    ``profile`` with some per-model settings replaced at runtime (the admin
    API), each parsed as a [[models]] table's value is; a ValueError names
    the first that is not a per-model setting or does not parse.
    """
    values = {}
    for name, value in raw.items():
        field = _PROFILE_FIELDS.get(name)
        if field is None:
            raise ValueError(f"{name}: not a per-model setting (one of {', '.join(PER_MODEL)})")
        try:
            values[name] = field.parse(value)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None
    return _replace(profile, values)


def _read_profile(path: str) -> dict[str, object]:
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as e:
        raise ConfigError(f"config: cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config: {path} is not valid TOML: {e}") from None
    unknown = sorted(set(data) - set(FIELDS_BY_NAME))
    if unknown:
        raise ConfigError(f"config: {path}: unknown setting {unknown[0]!r}")
    return data


def load_settings(
    cli: Mapping[str, object] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """
    Merge defaults < profile < environment < command line into L{Settings}.

    ``cli`` maps field names to raw values (strings; lists for repeatable
    options; True for flags given).  ``None`` or empty means "not given".
    """
    cli = dict(cli or {})
    environ = os.environ if environ is None else environ
    unknown_env = sorted(
        k
        for k in environ
        if k.startswith(ENV_PREFIX) and k[len(ENV_PREFIX) :].lower() not in FIELDS_BY_NAME
    )
    if unknown_env:
        raise ConfigError(f"{unknown_env[0]}: unknown environment variable")

    values: dict[str, Any] = {}

    def take(field: Field, raw: object, source: str) -> None:
        try:
            values[field.name] = field.parse(raw)
        except ValueError as e:
            raise ConfigError(f"{source}: {e}") from None

    profile_path = cli.get("config") or environ.get(FIELDS_BY_NAME["config"].env)
    if profile_path:
        path = str(profile_path)
        for key, raw in _read_profile(path).items():
            take(FIELDS_BY_NAME[key], raw, f"{key} (in {path})")
        values["config"] = path
    for field in FIELDS:
        if field.env in environ:
            take(field, environ[field.env], field.env)
    for field in FIELDS:
        raw = cli.get(field.name)
        if raw is None or raw == [] or raw is False:
            continue
        take(field, raw, f"--{field.option}")

    port = values.pop(PORT.name, None)
    if port is not None:
        values["listen"] = (*values.get("listen", ()), f"tcp:{port}")
    settings = Settings.from_values(**values)
    _check(settings)
    return settings


def _check(settings: Settings) -> None:
    """Cross-field rules: things no single parser can see."""
    from twisted.internet.endpoints import serverFromString

    server = settings.server
    for description in server.listen:
        try:
            # A reactor is not needed to build (not listen on) an endpoint.
            serverFromString(None, description)
        except IndexError:
            raise ConfigError(
                f"--listen: {description!r}: no such socket was passed in by systemd"
            ) from None
        except Exception as e:
            if type(e).__module__.startswith("OpenSSL"):
                # pyOpenSSL's errors are lists of (library, function, reason).
                reasons = e.args[0] if e.args and isinstance(e.args[0], list) else [(str(e),)]
                raise ConfigError(
                    f"--listen: cannot use endpoint {description!r}: not a PEM private key "
                    f"and certificate (OpenSSL: {'; '.join(str(r[-1]) for r in reasons)})"
                ) from None
            raise ConfigError(f"--listen: cannot use endpoint {description!r}: {e}") from None
    if server.workers > 1:
        for description in server.listen:
            if description.split(":", 1)[0] not in ("tcp", "tcp6"):
                raise ConfigError(
                    f"--workers: {server.workers} workers share tcp: endpoints only, "
                    f"not {description!r}"
                )
    # Answers are slices of the generated text, which must be long enough
    # for the longest one (an article has at least ~150 tokens).
    defaults, articles = settings.served.defaults, settings.answers.articles
    if defaults.max_output_tokens > articles * 150:
        raise ConfigError(
            f"--max-output-tokens: {defaults.max_output_tokens} tokens need more text than "
            f"--articles {articles} gives; use --articles "
            f"{-(-defaults.max_output_tokens // 150)} or more"
        )
    if defaults.tokens_mean > defaults.max_output_tokens * 4:
        raise ConfigError(
            f"--tokens-mean: {defaults.tokens_mean:g} is far above "
            f"--max-output-tokens {defaults.max_output_tokens}"
        )
    known = {p.slug for p in settings.openrouter.providers}
    for spec in settings.served.models:
        for name in spec.providers:
            if name.lower().replace(" ", "-") not in known:
                raise ConfigError(
                    f"models: {spec.id} names provider {name!r}, "
                    "which is not in --openrouter-providers"
                )
    for failing in settings.openrouter.failing_models:
        if failing.provider and failing.provider.lower().replace(" ", "-") not in known:
            raise ConfigError(
                f"--openrouter-failing-models: {failing} names provider {failing.provider!r}, "
                "which is not in --openrouter-providers"
            )
    auth = settings.auth
    if auth.keys and auth.keys_file is not None:
        given = {k.key for k in auth.keys}
        for k in auth.keys_file.keys:
            if k.key in given:
                raise ConfigError(f"--api-keys-file: key {mask(k.key)} is also given by --api-key")


def describe(settings: Settings) -> str:
    """The effective configuration, one line, for the startup log."""
    parts = [
        f"{field.name}={field.describe(field.get(settings))}"
        for field in FIELDS
        if field is not PORT and field.name != "config"
    ]
    if settings.config:
        parts.insert(0, f"config={settings.config}")
    return " ".join(parts)
