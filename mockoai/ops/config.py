# -*- test-case-name: tests.test_config -*-
"""
The one typed settings object, and the only code that builds it.

Every setting is declared once in L{FIELDS}; that declaration drives the
command line (``--name-with-dashes``), the environment (``MOCKOAI_NAME``) and
profile files (``name = ...`` in TOML), so the three can never drift apart.
Precedence, lowest to highest: defaults, profile file, environment, command
line.  Every value is validated here, at startup, and a bad one stops the
process with a single line naming the option and where it came from.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from mockoai.pipeline import auth
from mockoai.sim import latency
from mockoai.sim.engine import EngineConfig
from mockoai.sim.latency import Distribution, LatencyModel
from mockoai.wire import cors

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - PyPy 3.10
    import tomli as tomllib

ENV_PREFIX = "MOCKOAI_"

CHAT = "chat"
COMPLETIONS = "completions"
ENDPOINT_KINDS = frozenset({CHAT, COMPLETIONS})


_NO_DELAY = latency.constant(0.0)


def _as_distribution(value: object) -> Distribution:
    """Settings(itl=0.02) means a constant 20 ms, as the parsed forms do."""
    if isinstance(value, Distribution):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return latency.constant(float(value))
    raise TypeError(f"expected a Distribution or seconds, got {value!r}")


class ConfigError(Exception):
    """A setting is invalid; the message is one line naming it."""


@attrs.frozen
class ModelSpec:
    """
    One served model.  ``endpoints`` says which of chat/completions accept it
    (a profile may restrict it); ``native`` is OpenAI's own mapping, which
    only ``--strict-endpoints`` applies: real benchmark tools take the first
    listed model for both endpoints, as vLLM serves every model on both.
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
    prompt_price: float = 0.0
    completion_price: float = 0.0
    providers: tuple[str, ...] = ()
    context_length: int = 128_000
    stream_error_rate: float = 0.0
    stream_error_after: int = 0


_CHAT_ONLY = frozenset({CHAT})
DEFAULT_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("gpt-4o", "system", 1715367049, native=_CHAT_ONLY),
    ModelSpec("gpt-4o-mini", "system", 1721172741, native=_CHAT_ONLY),
    ModelSpec("gpt-4.1", "system", 1744316542, native=_CHAT_ONLY),
    ModelSpec("gpt-4.1-mini", "system", 1744318173, native=_CHAT_ONLY),
    ModelSpec("gpt-4.1-nano", "system", 1744321707, native=_CHAT_ONLY),
    ModelSpec("o4-mini", "system", 1744225351, native=_CHAT_ONLY),
    ModelSpec("gpt-5", "system", 1754425777, native=_CHAT_ONLY),
    ModelSpec("gpt-5-mini", "system", 1754425928, native=_CHAT_ONLY),
    ModelSpec("gpt-3.5-turbo-instruct", "system", 1692901427, native=frozenset({COMPLETIONS})),
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
}


def _priced(spec: ModelSpec) -> ModelSpec:
    if spec.id not in _LIST_PRICES:
        return spec
    prompt, completion, context = _LIST_PRICES[spec.id]
    return attrs.evolve(
        spec, prompt_price=prompt, completion_price=completion, context_length=context
    )


DEFAULT_MODELS = tuple(_priced(m) for m in DEFAULT_MODELS)


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


@attrs.frozen
class Settings:
    """Everything the server needs to know, already validated."""

    listen: tuple[str, ...] = ("tcp:3000",)
    models: tuple[ModelSpec, ...] = DEFAULT_MODELS
    any_model: bool = False
    strict_endpoints: bool = False
    tokens_mean: float = 256.0
    tokens_stddev: float = 64.0
    max_output_tokens: int = 4096
    stream_tokens: tuple[int, int] = (1, 1)
    response_delay: Distribution = attrs.field(default=_NO_DELAY, converter=_as_distribution)
    itl: Distribution = attrs.field(default=_NO_DELAY, converter=_as_distribution)
    prefill_per_token: float = 0.0  # seconds per prompt token (configured in ms)
    max_running: int = 0
    max_waiting: int = 1024
    queue_timeout: float = 0.0
    reject_status: int = 429
    timeout_status: int = 503
    batch_slowdown: float = 0.0
    max_tokens_per_s: float = 0.0
    rpm: int = 0
    tpm: int = 0
    ip_rpm: int = 0
    max_connections: int = 0
    max_body_size: int = 16 * 1024 * 1024
    grace_period: float = 10.0
    idle_timeout: float = 60.0
    articles: int = 4096
    corpus_seed: int = 0
    access_log: bool = False
    system_fingerprint: str = "fp_6d6f636b6f"
    workers: int = 1
    http: str = "auto"
    openrouter_providers: tuple[ProviderSpec, ...] = DEFAULT_PROVIDERS
    openrouter_failing_models: tuple[FailingSpec, ...] = ()
    openrouter_credit_limit: float | None = None  # USD per API key; None = unlimited
    openrouter_processing_interval: float = 1.0  # seconds (configured in ms); 0 = off
    openrouter_generations: int = 10_000
    openrouter_generation_ttl: float = 3600.0  # seconds
    # --- settings: observability ---
    kv_cache_tokens: int = 0  # 0 = vllm:kv_cache_usage_perc is the share of --max-running
    request_log: str | None = None
    request_log_max_size: int = 100 * 1024 * 1024
    request_log_files: int = 5
    # --- settings: auth-cors ---
    api_keys: tuple[auth.ApiKey, ...] = ()
    api_keys_file: auth.KeysFile | None = None
    auth_health: bool = False
    cors_origins: tuple[str, ...] = ()
    cors_methods: tuple[str, ...] = cors.DEFAULT_METHODS
    cors_headers: tuple[str, ...] = (cors.ANY,)
    cors_max_age: int = cors.DEFAULT_MAX_AGE
    cors_credentials: bool = False
    # --- settings: hostile-input ---
    header_timeout: float = 10.0
    max_url_length: int = 8192
    max_headers: int = 100
    max_header_bytes: int = 64 * 1024
    max_json_depth: int = 64
    max_messages: int = 2048
    max_string_length: int = 10_485_760
    max_prompt_chars: int = 0
    max_n: int = 128
    # --- settings: tls-http2 ---
    http2: bool = True
    config: str | None = None

    def serves(self, spec: ModelSpec, kind: str) -> bool:
        """Whether ``spec`` answers on ``kind`` (OpenAI's mapping under strict_endpoints)."""
        if kind not in spec.endpoints:
            return False
        return kind in spec.native or not self.strict_endpoints

    def model(self, model_id: str) -> ModelSpec | None:
        for spec in self.models:
            if spec.id == model_id:
                return spec
        return None

    def profile(self, spec: ModelSpec | None = None) -> ModelProfile:
        """Everything that shapes one model's answers: globals, then its overrides."""
        values = {name: getattr(self, name) for name in PER_MODEL}
        if spec is not None:
            values.update(spec.overrides)
        return ModelProfile(**values)


@attrs.frozen
class ModelProfile:
    """One model's output lengths, latency and engine, resolved."""

    tokens_mean: float
    tokens_stddev: float
    max_output_tokens: int
    stream_tokens: tuple[int, int]
    response_delay: Distribution
    itl: Distribution
    prefill_per_token: float
    max_running: int
    max_waiting: int
    queue_timeout: float
    reject_status: int
    timeout_status: int
    batch_slowdown: float
    max_tokens_per_s: float
    #: Built once: every request's plan reads it.
    latency: LatencyModel = attrs.field(
        init=False,
        eq=False,
        repr=False,
        default=attrs.Factory(
            lambda p: LatencyModel(p.response_delay, p.itl, p.prefill_per_token), takes_self=True
        ),
    )

    @property
    def engine(self) -> EngineConfig:
        return EngineConfig(
            max_running=self.max_running,
            max_waiting=self.max_waiting,
            queue_timeout=self.queue_timeout,
            reject_status=self.reject_status,
            timeout_status=self.timeout_status,
            batch_slowdown=self.batch_slowdown,
            max_tokens_per_s=self.max_tokens_per_s,
        )


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


def _workers(value: object) -> int:
    """A process count, or ``auto`` for one per CPU core."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return os.cpu_count() or 1
    return _integer(1, 256)(value)


def _http(value: object) -> str:
    if value not in ("auto", "lean", "twisted"):
        raise ValueError(f"expected auto, lean or twisted, got {value!r}")
    if value == "lean":
        try:
            import httptools  # noqa: F401
        except ImportError:
            raise ValueError("lean needs the httptools package, which is not installed") from None
    return str(value)


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


def _model(value: object) -> ModelSpec:
    if isinstance(value, str):
        if not value or len(value) > 256 or any(c.isspace() for c in value):
            raise ValueError(f"invalid model id {value!r}")
        owner = value.split("/", 1)[0] if "/" in value else "mockoai"
        return ModelSpec(value, owned_by=owner)
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
        endpoints = value.get("endpoints", sorted(ENDPOINT_KINDS))
        kinds = frozenset(_strings(endpoints))
        if not kinds <= ENDPOINT_KINDS:
            raise ValueError(f"endpoints must be among {sorted(ENDPOINT_KINDS)}, got {endpoints!r}")
        return ModelSpec(
            id=base.id,
            owned_by=_text(value.get("owned_by", base.owned_by)),
            created=_integer(0, 2**40)(value.get("created", base.created)),
            endpoints=kinds,
            overrides=tuple(overrides),
            **_router_model(value),
        )
    raise ValueError(f"expected a model id or table, got {value!r}")


_PRICE = _number(0.0, 1.0)  # USD per token
_ROUTER_MODEL_KEYS = {
    "prompt_price": _PRICE,
    "completion_price": _PRICE,
    "providers": _strings,
    "context_length": _integer(1, 100_000_000),
    "stream_error_rate": _number(0.0, 1.0),
    "stream_error_after": _integer(0, 10_000_000),
}


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


def _credit_limit(value: object) -> float | None:
    if isinstance(value, str) and value.strip().lower() in ("unlimited", "none"):
        return None
    return _number(0.0, 1e12)(value)


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


@attrs.frozen
class Field:
    """
    One setting.  ``name`` is the Settings attribute and the TOML key;
    the command-line flag and the environment variable derive from it.
    """

    name: str
    parse: Callable[[object], Any]
    help: str
    flag: bool = False
    repeatable: bool = False
    cli: str = ""
    metavar: str = ""

    @property
    def option(self) -> str:
        return self.cli or self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


FIELDS: tuple[Field, ...] = (
    Field("config", _text, "TOML profile file (e.g. etc/profiles/latency.toml).", metavar="PATH"),
    Field(
        "listen",
        _strings,
        "Endpoint to listen on, as a Twisted endpoint string (repeatable): "
        "tcp:3000:interface=127.0.0.1, unix:/run/mockoai.sock, ssl:8443:privateKey=..., "
        "systemd:domain=INET:index=0. Default tcp:3000.",
        repeatable=True,
        metavar="ENDPOINT",
    ),
    Field("port", _integer(0, 65535), "Shorthand for --listen tcp:PORT.", metavar="PORT"),
    Field(
        "models",
        _models,
        "Model id to serve (repeatable; replaces the default OpenAI list).",
        repeatable=True,
        cli="model",
        metavar="ID",
    ),
    Field("any_model", _boolean, "Accept any model name and echo it back.", flag=True),
    Field(
        "strict_endpoints",
        _boolean,
        "OpenAI's endpoint mapping: a chat model on /v1/completions (or the reverse) is a "
        "404. Off by default: every model answers on both, as on vLLM.",
        flag=True,
    ),
    Field("tokens_mean", _number(1, 1_000_000), "Mean completion tokens per choice.", metavar="N"),
    Field("tokens_stddev", _number(0, 1_000_000), "Stddev of completion tokens.", metavar="N"),
    Field(
        "max_output_tokens",
        _integer(1, 131_072),
        "Cap on completion tokens per choice (the model's output limit).",
        metavar="N",
    ),
    Field("stream_tokens", _range, "Tokens per SSE event, a range like 1-4.", metavar="A-B"),
    Field(
        "response_delay",
        latency.parse,
        "Time to first token in ms, or a distribution: normal:200:20, lognormal:MEAN:SD, "
        "uniform:LO:HI, p50=180,p99=400 (non-streaming waits the same total).",
        metavar="MS|DIST",
    ),
    Field("itl", latency.parse, "Inter-token latency in ms, or a distribution.", metavar="MS|DIST"),
    Field(
        "prefill_per_token",
        _milliseconds,
        "Extra time to first token per prompt token, in ms (prefill cost).",
        metavar="MS",
    ),
    Field(
        "max_running",
        _integer(0, 100_000),
        "Engine: sequences decoded together (vLLM's max-num-seqs); 0 = no engine, "
        "every request paced on its own.",
        metavar="N",
    ),
    Field(
        "max_waiting",
        _integer(0, 1_000_000),
        "Engine: queued requests beyond running.",
        metavar="N",
    ),
    Field(
        "queue_timeout",
        _number(0, 86400),
        "Engine: seconds a request may wait queued (0 = no limit).",
        metavar="S",
    ),
    Field(
        "reject_status", _status(429, 503), "Engine: status when the queue is full.", metavar="CODE"
    ),
    Field(
        "timeout_status", _status(503, 504), "Engine: status on a queue timeout.", metavar="CODE"
    ),
    Field(
        "batch_slowdown",
        _number(0, 100),
        "Engine: k in step = itl * (1 + k * (batch - 1) / max_running).",
        metavar="K",
    ),
    Field(
        "max_tokens_per_s",
        _number(0, 10_000_000),
        "Engine: token throughput ceiling across all streams (0 = none).",
        metavar="N",
    ),
    Field("max_body_size", _size, "Largest request body accepted (413 above).", metavar="SIZE"),
    Field(
        "grace_period",
        _number(0, 3600),
        "Seconds in-flight requests get to finish on SIGTERM/SIGINT.",
        metavar="S",
    ),
    Field(
        "idle_timeout",
        _number(0, 86400),
        "Seconds before an idle connection is closed.",
        metavar="S",
    ),
    Field(
        "articles", _integer(16, 65536), "Lorem-ipsum articles generated at startup.", metavar="N"
    ),
    Field("corpus_seed", _integer(0, 2**32 - 1), "Seed of the generated corpus.", metavar="N"),
    Field("access_log", _boolean, "Log every request (costs ~20% throughput).", flag=True),
    Field("system_fingerprint", _text, "system_fingerprint sent in responses.", metavar="FP"),
    Field(
        "rpm", _integer(0, 10**9), "Requests per minute per API key (0 = unlimited).", metavar="N"
    ),
    Field(
        "tpm", _integer(0, 10**12), "Tokens per minute per API key (0 = unlimited).", metavar="N"
    ),
    Field(
        "ip_rpm",
        _integer(0, 10**9),
        "Requests per minute per client IP (0 = unlimited).",
        metavar="N",
    ),
    Field(
        "max_connections",
        _integer(0, 10**7),
        "Open connections per process beyond which new ones get a 503 (0 = no cap).",
        metavar="N",
    ),
    Field(
        "workers",
        _workers,
        "Serving processes sharing the TCP ports (SO_REUSEPORT); 'auto' = one per core.",
        metavar="N",
    ),
    Field(
        "http",
        _http,
        "HTTP/1.1 stack: lean (httptools), twisted (twisted.web), or auto (lean if installed).",
        metavar="STACK",
    ),
    Field(
        "openrouter_providers",
        _providers,
        "OpenRouter mode: upstream providers, comma-separated, each Name or "
        "Name:price=FACTOR:latency=MS:throughput=TOKENS_PER_S. Default OpenAI,Azure.",
        metavar="LIST",
    ),
    Field(
        "openrouter_failing_models",
        _failing_models,
        "OpenRouter mode: models that fail before answering, comma-separated "
        "MODEL[@PROVIDER][=STATUS] (status 403, 408, 429, 502 or 503; default 502).",
        metavar="LIST",
    ),
    Field(
        "openrouter_credit_limit",
        _credit_limit,
        "OpenRouter mode: USD each API key may spend before it gets 402 (default unlimited).",
        metavar="USD",
    ),
    Field(
        "openrouter_processing_interval",
        _milliseconds,
        "OpenRouter mode: ms between ': OPENROUTER PROCESSING' comments while a stream "
        "waits for its first token (0 = none).",
        metavar="MS",
    ),
    Field(
        "openrouter_generations",
        _integer(1, 10_000_000),
        "OpenRouter mode: finished generations kept for /api/v1/generation.",
        metavar="N",
    ),
    Field(
        "openrouter_generation_ttl",
        _number(1, 30 * 86400),
        "OpenRouter mode: seconds a finished generation stays queryable.",
        metavar="S",
    ),
    # --- fields: observability ---
    Field(
        "kv_cache_tokens",
        _integer(0, 10**10),
        "Engine: simulated KV-cache capacity in tokens, for vllm:kv_cache_usage_perc "
        "(prompt + output tokens held by running sequences / this); 0 = running "
        "sequences / --max-running.",
        metavar="N",
    ),
    Field(
        "request_log",
        _text,
        "Write one JSON line per request to this file (with --workers, one file per "
        "worker: PATH-0, PATH-1, ...).",
        metavar="PATH",
    ),
    Field(
        "request_log_max_size",
        _size,
        "Rotate the request log when it reaches this size (default 100MiB).",
        metavar="SIZE",
    ),
    Field(
        "request_log_files",
        _integer(1, 1000),
        "Rotated request-log files kept (PATH.1 is the newest).",
        metavar="N",
    ),
    # --- fields: auth-cors ---
    Field(
        "api_keys",
        auth.parse_keys,
        "API key the server accepts (repeatable); none = any or no key is accepted.",
        repeatable=True,
        cli="api-key",
        metavar="KEY",
    ),
    Field(
        "api_keys_file",
        auth.parse_keys_file,
        "TOML or .json file of accepted keys: [[keys]] with key, label, rpm, tpm.",
        metavar="PATH",
    ),
    Field(
        "auth_health",
        _boolean,
        "With API keys: require a key on /health, /metrics and /stats too.",
        flag=True,
    ),
    Field(
        "cors_origins",
        cors.parse_origins,
        "Origin allowed to call the API from a browser (repeatable), or *; none = CORS off.",
        repeatable=True,
        cli="cors-origin",
        metavar="ORIGIN",
    ),
    Field(
        "cors_methods",
        cors.parse_tokens,
        "CORS: methods a preflight allows, comma-separated. Default GET,POST.",
        metavar="LIST",
    ),
    Field(
        "cors_headers",
        cors.parse_tokens,
        "CORS: request headers a preflight allows, comma-separated; * (default) = "
        "whatever the preflight asks for.",
        metavar="LIST",
    ),
    Field(
        "cors_max_age",
        _integer(0, 86400),
        "CORS: seconds a browser may cache a preflight answer.",
        metavar="S",
    ),
    Field(
        "cors_credentials",
        _boolean,
        "CORS: allow credentialed requests (cookies); the origin is echoed instead of *.",
        flag=True,
    ),
    # --- fields: hostile-input ---
    Field(
        "header_timeout",
        _number(0, 3600),
        "Seconds a client has to send a request's headers, from connecting or from the "
        "first byte of a later request; slower ones get 408 and are closed (0 = no limit).",
        metavar="S",
    ),
    Field(
        "max_url_length", _integer(64, 1 << 20), "Longest request target (414 above).", metavar="N"
    ),
    Field("max_headers", _integer(8, 10_000), "Most header fields (431 above).", metavar="N"),
    Field(
        "max_header_bytes",
        _size,
        "Most bytes of header names and values (431 above).",
        metavar="SIZE",
    ),
    Field(
        "max_json_depth",
        _integer(2, 512),
        "Deepest nesting of arrays and objects in a body (unparseable JSON, 400, above).",
        metavar="N",
    ),
    Field("max_messages", _integer(1, 1_000_000), "Most chat messages (400 above).", metavar="N"),
    Field(
        "max_string_length",
        _integer(1, 1 << 30),
        "Longest message content or prompt string, in characters (400 above).",
        metavar="N",
    ),
    Field(
        "max_prompt_chars",
        _integer(0, 1 << 34),
        "Most characters of message content or prompt text in all (0 = no limit).",
        metavar="N",
    ),
    Field("max_n", _integer(1, 10_000), "Largest n, choices per prompt (400 above).", metavar="N"),
    # --- fields: tls-http2 ---
    Field(
        "http2",
        _boolean,
        "Offer HTTP/2 (ALPN h2) on ssl: listeners; off = HTTP/1.1 only.",
        metavar="on|off",
    ),
)
FIELDS_BY_NAME = {f.name: f for f in FIELDS}
#: Settings a [[models]] table may set for that model alone.
PER_MODEL = (
    "tokens_mean",
    "tokens_stddev",
    "max_output_tokens",
    "stream_tokens",
    "response_delay",
    "itl",
    "prefill_per_token",
    "max_running",
    "max_waiting",
    "queue_timeout",
    "reject_status",
    "timeout_status",
    "batch_slowdown",
    "max_tokens_per_s",
)


def _read_profile(path: str) -> dict[str, object]:
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as e:
        raise ConfigError(f"config: cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config: {path} is not valid TOML: {e}") from None
    unknown = sorted(set(data) - set(FIELDS_BY_NAME) - {"config"})
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

    port = values.pop("port", None)
    if port is not None:
        values["listen"] = (*values.get("listen", ()), f"tcp:{port}")
    settings = Settings(**values)
    _check(settings)
    return settings


def _check(settings: Settings) -> None:
    """Cross-field rules: things no single parser can see."""
    from twisted.internet.endpoints import serverFromString

    for description in settings.listen:
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
    if settings.workers > 1:
        for description in settings.listen:
            if description.split(":", 1)[0] not in ("tcp", "tcp6"):
                raise ConfigError(
                    f"--workers: {settings.workers} workers share tcp: endpoints only, "
                    f"not {description!r}"
                )
    # Answers are slices of the generated text, which must be long enough
    # for the longest one (an article has at least ~150 tokens).
    if settings.max_output_tokens > settings.articles * 150:
        raise ConfigError(
            f"--max-output-tokens: {settings.max_output_tokens} tokens need more text than "
            f"--articles {settings.articles} gives; use --articles "
            f"{-(-settings.max_output_tokens // 150)} or more"
        )
    if settings.tokens_mean > settings.max_output_tokens * 4:
        raise ConfigError(
            f"--tokens-mean: {settings.tokens_mean:g} is far above "
            f"--max-output-tokens {settings.max_output_tokens}"
        )
    known = {p.slug for p in settings.openrouter_providers}
    for spec in settings.models:
        for name in spec.providers:
            if name.lower().replace(" ", "-") not in known:
                raise ConfigError(
                    f"models: {spec.id} names provider {name!r}, "
                    "which is not in --openrouter-providers"
                )
    for failing in settings.openrouter_failing_models:
        if failing.provider and failing.provider.lower().replace(" ", "-") not in known:
            raise ConfigError(
                f"--openrouter-failing-models: {failing} names provider {failing.provider!r}, "
                "which is not in --openrouter-providers"
            )
    if settings.api_keys and settings.api_keys_file is not None:
        given = {k.key for k in settings.api_keys}
        for k in settings.api_keys_file.keys:
            if k.key in given:
                raise ConfigError(
                    f"--api-keys-file: key {auth.mask(k.key)} is also given by --api-key"
                )


def describe(settings: Settings) -> str:
    """The effective configuration, one line, for the startup log."""
    parts = []
    for field in FIELDS:
        if field.name in ("config", "port"):
            continue
        value = getattr(settings, field.name)
        if field.name == "models":
            value = ",".join(m.id + ("*" if m.overrides else "") for m in value)
        elif field.name in ("response_delay", "itl"):
            value = f"{value.describe()}ms"
        elif field.name in ("prefill_per_token", "openrouter_processing_interval"):
            value = f"{value * 1000:g}ms"
        elif field.name == "stream_tokens":
            value = f"{value[0]}-{value[1]}"
        elif isinstance(value, tuple):
            value = ",".join(map(str, value))
        parts.append(f"{field.name}={value}")
    if settings.config:
        parts.insert(0, f"config={settings.config}")
    return " ".join(parts)
