"""Settings: defaults, precedence, every parser, error messages, and the twistd options."""

from __future__ import annotations

import ast
import json
import os
import shutil
import tempfile

import attrs
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mockoai.ops import config
from mockoai.ops.config import (
    CHAT,
    COMPLETIONS,
    DEFAULT_MODELS,
    ENDPOINT_KINDS,
    FIELDS,
    KNOWN_KINDS,
    MESSAGES,
    ConfigError,
    ModelSpec,
    Settings,
    describe,
    load_settings,
)
from mockoai.sim import latency


def ms(value: float) -> latency.Distribution:
    """A constant latency of ``value`` milliseconds, as --itl/--response-delay give it."""
    return latency.constant(value / 1000.0)


def latency_error(raw: object) -> str:
    """What the latency parser says about ``raw`` (its wording is test_latency's business)."""
    try:
        latency.parse(raw)
    except ValueError as e:
        return str(e)
    raise AssertionError(f"{raw!r} parsed")


class ProfileMixin:
    """Writes TOML profiles into a private temporary directory."""

    _tmp: str | None = None

    def profile(self, text: str, name: str = "profile.toml") -> str:
        if self._tmp is None:
            self._tmp = tempfile.mkdtemp(prefix="mockoai-config-")
            self.addCleanup(shutil.rmtree, self._tmp, True)  # type: ignore[attr-defined]
        path = os.path.join(self._tmp, name)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        return path


class DefaultsTests(SynchronousTestCase):
    def test_empty_sources_give_defaults(self) -> None:
        self.assertEqual(load_settings({}, {}), Settings())
        self.assertEqual(load_settings(None, {}), Settings())

    def test_default_values(self) -> None:
        s = load_settings({}, {})
        self.assertEqual(s.server.listen, ("tcp:3000",))
        self.assertEqual(s.served.models, DEFAULT_MODELS)
        self.assertFalse(s.served.any_model)
        self.assertEqual(s.served.defaults.tokens_mean, 256.0)
        self.assertEqual(s.served.defaults.tokens_stddev, 64.0)
        self.assertEqual(s.served.defaults.max_output_tokens, 4096)
        self.assertEqual(s.served.defaults.stream_tokens, (1, 1))
        self.assertEqual(s.served.defaults.response_delay, ms(0))
        self.assertEqual(s.served.defaults.itl, ms(0))
        self.assertEqual(s.served.defaults.prefill_per_token, 0.0)
        self.assertEqual(s.server.max_body_size, 16 * 1024 * 1024)
        self.assertEqual(s.server.grace_period, 10.0)
        self.assertEqual(s.server.idle_timeout, 60.0)
        self.assertEqual(s.answers.articles, 4096)
        self.assertEqual(s.answers.corpus_seed, 0)
        self.assertFalse(s.observability.access_log)
        self.assertEqual(s.answers.system_fingerprint, "fp_6d6f636b6f")
        self.assertEqual(s.server.workers, 1)
        self.assertEqual(s.server.http, "auto")
        self.assertIsNone(s.config)

    def test_default_models(self) -> None:
        ids = [m.id for m in DEFAULT_MODELS]
        self.assertIn("gpt-4o", ids)
        self.assertEqual(len(ids), len(set(ids)))
        instruct = Settings().model("gpt-3.5-turbo-instruct")
        assert instruct is not None
        self.assertEqual(instruct.native, frozenset({COMPLETIONS}))
        chat = Settings().model("gpt-4o")
        assert chat is not None
        self.assertEqual(chat.native, frozenset({CHAT}))
        # Both endpoints by default (as vLLM serves); OpenAI's mapping when strict.
        self.assertTrue(Settings().serves(chat, COMPLETIONS))
        self.assertFalse(Settings.from_values(strict_endpoints=True).serves(chat, COMPLETIONS))
        self.assertTrue(Settings.from_values(strict_endpoints=True).serves(chat, CHAT))
        self.assertFalse(Settings.from_values(strict_endpoints=True).serves(instruct, CHAT))
        self.assertIsNone(Settings().model("no-such-model"))

    def test_families(self) -> None:
        """OpenAI's models are not served on Anthropic's API; Claude's and the rest are."""
        claude = Settings().model("claude-sonnet-4-6")
        chat = Settings().model("gpt-4o")
        assert claude is not None and chat is not None
        self.assertFalse(Settings().serves(chat, MESSAGES))
        self.assertTrue(Settings().serves(claude, MESSAGES))
        self.assertTrue(Settings().serves(claude, CHAT))
        self.assertEqual(Settings().profile(claude).max_output_tokens, 64_000)
        self.assertEqual(claude.context_length, 1_000_000)
        strict = Settings.from_values(strict_endpoints=True)
        self.assertFalse(strict.serves(claude, COMPLETIONS))
        named = load_settings(
            {"models": ["gpt-4.1", "o3", "claude-x", "llama", "claude-haiku-4-5"]}, {}
        )
        kinds = {m.id: m.endpoints for m in named.served.models}
        self.assertEqual(kinds["gpt-4.1"], kinds["o3"])
        self.assertNotIn(MESSAGES, kinds["o3"])
        self.assertEqual((kinds["claude-x"], kinds["llama"]), (ENDPOINT_KINDS, ENDPOINT_KINDS))
        self.assertEqual(named.served.models[-1], Settings().model("claude-haiku-4-5"))
        self.assertEqual(config.family("openai/gpt-4o"), config.OPENAI)
        self.assertEqual(config.family("anthropic/claude-3.5-sonnet"), config.ANTHROPIC)
        self.assertIsNone(config.family("olmo-2"))

    def test_non_prefixed_environment_is_ignored(self) -> None:
        s = load_settings({}, {"PATH": "/bin", "HOME": "/root", "MOCKOAIX": "1"})
        self.assertEqual(s, Settings())


class PrecedenceTests(ProfileMixin, SynchronousTestCase):
    def test_profile_over_defaults(self) -> None:
        path = self.profile("itl = 10\ntokens_mean = 100\n")
        s = load_settings({"config": path}, {})
        self.assertEqual(s.served.defaults.itl, ms(10))
        self.assertEqual(s.served.defaults.tokens_mean, 100.0)
        self.assertEqual(s.config, path)
        # Untouched settings keep their defaults.
        self.assertEqual(s.served.defaults.max_output_tokens, 4096)

    def test_environment_over_profile(self) -> None:
        path = self.profile("itl = 10\ntokens_mean = 100\n")
        s = load_settings({"config": path}, {"MOCKOAI_ITL": "20"})
        self.assertEqual(s.served.defaults.itl, ms(20))
        self.assertEqual(s.served.defaults.tokens_mean, 100.0)

    def test_cli_over_environment(self) -> None:
        path = self.profile("itl = 10\ntokens_mean = 100\nresponse_delay = 5\n")
        s = load_settings(
            {"config": path, "itl": "30", "tokens_mean": "50"},
            {"MOCKOAI_ITL": "20", "MOCKOAI_TOKENS_MEAN": "70"},
        )
        self.assertEqual(s.served.defaults.itl, ms(30))
        self.assertEqual(s.served.defaults.tokens_mean, 50.0)
        self.assertEqual(s.served.defaults.response_delay, ms(5))

    def test_profile_from_environment(self) -> None:
        path = self.profile("articles = 64\n")
        s = load_settings({}, {"MOCKOAI_CONFIG": path})
        self.assertEqual(s.answers.articles, 64)
        self.assertEqual(s.config, path)

    def test_cli_profile_beats_environment_profile(self) -> None:
        env_path = self.profile("articles = 64\n", "env.toml")
        cli_path = self.profile("articles = 128\n", "cli.toml")
        s = load_settings({"config": cli_path}, {"MOCKOAI_CONFIG": env_path})
        self.assertEqual(s.answers.articles, 128)
        self.assertEqual(s.config, cli_path)

    def test_cli_values_meaning_not_given(self) -> None:
        s = load_settings(
            {"itl": None, "listen": [], "models": [], "any_model": False},
            {"MOCKOAI_ITL": "20", "MOCKOAI_ANY_MODEL": "yes", "MOCKOAI_LISTEN": "tcp:1,tcp:2"},
        )
        self.assertEqual(s.served.defaults.itl, ms(20))
        self.assertTrue(s.served.any_model)
        self.assertEqual(s.server.listen, ("tcp:1", "tcp:2"))

    def test_repeatable_cli_replaces_environment(self) -> None:
        s = load_settings({"listen": ["tcp:7"]}, {"MOCKOAI_LISTEN": "tcp:1,tcp:2"})
        self.assertEqual(s.server.listen, ("tcp:7",))

    def test_shipped_profiles_load(self) -> None:
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        for where in (("etc", "profiles"), ("bench", "profiles")):
            profiles = os.path.join(here, *where)
            names = sorted(n for n in os.listdir(profiles) if n.endswith(".toml"))
            self.assertTrue(names)
            for name in names:
                path = os.path.join(profiles, name)
                self.assertEqual(load_settings({"config": path}, {}).config, path)

    def test_multi_model_profile_gives_each_model_its_own_latency(self) -> None:
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        path = os.path.join(here, "etc", "profiles", "multi-model.toml")
        s = load_settings({"config": path}, {})
        small = s.profile(s.model("Qwen/Qwen2.5-0.5B-Instruct"))
        large = s.profile(s.model("Qwen/Qwen3-VL-32B-Instruct-FP8"))
        self.assertAlmostEqual(small.itl.percentile(50), 0.0051)
        self.assertAlmostEqual(large.itl.percentile(50), 0.05195)
        self.assertAlmostEqual(small.response_delay.a, 0.027)
        self.assertAlmostEqual(large.response_delay.a, 0.084)
        self.assertTrue(small.engine.enabled and large.engine.enabled)
        self.assertEqual((small.engine.batch_slowdown, large.engine.batch_slowdown), (3.24, 15.0))


class PortTests(SynchronousTestCase):
    def test_port_replaces_default_listen(self) -> None:
        self.assertEqual(load_settings({"port": "8080"}, {}).server.listen, ("tcp:8080",))

    def test_port_appends_to_listen(self) -> None:
        s = load_settings({"listen": ["unix:/tmp/mockoai-test.sock"], "port": "8080"}, {})
        self.assertEqual(s.server.listen, ("unix:/tmp/mockoai-test.sock", "tcp:8080"))

    def test_port_from_environment(self) -> None:
        s = load_settings({}, {"MOCKOAI_PORT": "9000", "MOCKOAI_LISTEN": "tcp:1"})
        self.assertEqual(s.server.listen, ("tcp:1", "tcp:9000"))

    def test_port_zero(self) -> None:
        self.assertEqual(load_settings({"port": "0"}, {}).server.listen, ("tcp:0",))

    def test_bad_port(self) -> None:
        self.assertConfigError({"port": "70000"}, "--port: must be between 0 and 65535, got 70000")
        self.assertConfigError({"port": "http"}, "--port: expected a whole number, got 'http'")

    def assertConfigError(self, cli: dict[str, object], message: str) -> None:
        with self.assertRaises(ConfigError) as caught:
            load_settings(cli, {})
        self.assertEqual(str(caught.exception), message)


class ParserTests(ProfileMixin, SynchronousTestCase):
    """Each parser's accepted forms from CLI, environment and TOML."""

    def cli(self, name: str, raw: object) -> Settings:
        return load_settings({name: raw}, {})

    def env(self, name: str, raw: str) -> Settings:
        return load_settings({}, {"MOCKOAI_" + name.upper(): raw})

    def toml(self, line: str) -> Settings:
        return load_settings({"config": self.profile(line + "\n")}, {})

    def error(self, cli: dict[str, object] | None = None, env: dict[str, str] | None = None) -> str:
        with self.assertRaises(ConfigError) as caught:
            load_settings(cli or {}, env or {})
        message = str(caught.exception)
        self.assertNotIn("\n", message)
        return message

    def toml_error(self, line: str) -> tuple[str, str]:
        path = self.profile(line + "\n")
        return self.error({"config": path}), path

    # numbers

    def test_number_forms(self) -> None:
        self.assertEqual(self.cli("tokens_mean", "12.5").served.defaults.tokens_mean, 12.5)
        self.assertEqual(self.cli("tokens_mean", " 7 ").served.defaults.tokens_mean, 7.0)
        self.assertEqual(self.env("tokens_stddev", "0").served.defaults.tokens_stddev, 0.0)
        self.assertEqual(self.toml("tokens_mean = 300").served.defaults.tokens_mean, 300.0)
        self.assertEqual(self.toml("grace_period = 2.5").server.grace_period, 2.5)
        self.assertEqual(self.cli("idle_timeout", "1e2").server.idle_timeout, 100.0)

    def test_number_errors(self) -> None:
        self.assertEqual(
            self.error({"tokens_mean": "lots"}), "--tokens-mean: expected a number, got 'lots'"
        )
        self.assertEqual(
            self.error({"tokens_mean": "0"}),
            "--tokens-mean: must be between 1 and 1e+06, got 0",
        )
        self.assertEqual(
            self.error(env={"MOCKOAI_GRACE_PERIOD": "nan"}),
            "MOCKOAI_GRACE_PERIOD: must be between 0 and 3600, got nan",
        )
        self.assertEqual(
            self.error(env={"MOCKOAI_IDLE_TIMEOUT": "-1"}),
            "MOCKOAI_IDLE_TIMEOUT: must be between 0 and 86400, got -1",
        )
        message, path = self.toml_error("tokens_mean = true")
        self.assertEqual(message, f"tokens_mean (in {path}): expected a number, got True")
        message, path = self.toml_error('grace_period = "soon"')
        self.assertEqual(message, f"grace_period (in {path}): expected a number, got 'soon'")

    # milliseconds

    def test_milliseconds_forms(self) -> None:
        self.assertEqual(
            self.cli("prefill_per_token", "0.5").served.defaults.prefill_per_token, 0.0005
        )
        self.assertEqual(
            self.env("prefill_per_token", "2").served.defaults.prefill_per_token, 0.002
        )
        self.assertEqual(
            self.toml("prefill_per_token = 1").served.defaults.prefill_per_token, 0.001
        )

    def test_milliseconds_errors(self) -> None:
        self.assertEqual(
            self.error({"prefill_per_token": "slow"}),
            "--prefill-per-token: expected a number, got 'slow'",
        )
        self.assertEqual(
            self.error(env={"MOCKOAI_PREFILL_PER_TOKEN": "-5"}),
            "MOCKOAI_PREFILL_PER_TOKEN: must be between 0 and 3.6e+06, got -5",
        )
        message, path = self.toml_error("prefill_per_token = 3600001")
        self.assertEqual(
            message, f"prefill_per_token (in {path}): must be between 0 and 3.6e+06, got 3.6e+06"
        )

    # latencies (the distribution forms themselves are test_latency's)

    def test_latency_forms(self) -> None:
        self.assertEqual(self.cli("itl", "20").served.defaults.itl, ms(20))
        self.assertEqual(self.cli("itl", "0.5").served.defaults.itl, ms(0.5))
        self.assertEqual(self.env("response_delay", "250").served.defaults.response_delay, ms(250))
        self.assertEqual(
            self.toml("response_delay = 1500").served.defaults.response_delay, ms(1500)
        )
        self.assertEqual(self.toml("itl = 2.5").served.defaults.itl, ms(2.5))
        self.assertEqual(
            self.cli("itl", "normal:20:3").served.defaults.itl, latency.parse("normal:20:3")
        )
        self.assertEqual(
            self.toml('itl = { dist = "uniform", low = 10, high = 30 }').served.defaults.itl,
            latency.parse("uniform:10:30"),
        )

    def test_latency_errors(self) -> None:
        self.assertEqual(self.error({"itl": "fast"}), f"--itl: {latency_error('fast')}")
        self.assertEqual(
            self.error(env={"MOCKOAI_ITL": "-5"}), f"MOCKOAI_ITL: {latency_error('-5')}"
        )
        message, path = self.toml_error("itl = -1")
        self.assertEqual(message, f"itl (in {path}): {latency_error(-1)}")
        self.assertEqual(
            self.error({"response_delay": "3600001"}),
            f"--response-delay: {latency_error('3600001')}",
        )

    # integers

    def test_integer_forms(self) -> None:
        self.assertEqual(
            self.cli("max_output_tokens", "100").served.defaults.max_output_tokens, 100
        )
        self.assertEqual(self.env("articles", " 64 ").answers.articles, 64)
        self.assertEqual(self.toml("corpus_seed = 4294967295").answers.corpus_seed, 2**32 - 1)

    def test_integer_errors(self) -> None:
        self.assertEqual(
            self.error({"max_output_tokens": "1.5"}),
            "--max-output-tokens: expected a whole number, got '1.5'",
        )
        self.assertEqual(
            self.error({"articles": "15"}), "--articles: must be between 16 and 65536, got 15"
        )
        self.assertEqual(
            self.error(env={"MOCKOAI_CORPUS_SEED": "-1"}),
            "MOCKOAI_CORPUS_SEED: must be between 0 and 4294967295, got -1",
        )
        message, path = self.toml_error("articles = 64.0")
        self.assertEqual(message, f"articles (in {path}): expected a whole number, got 64.0")
        message, path = self.toml_error("articles = false")
        self.assertEqual(message, f"articles (in {path}): expected a whole number, got False")

    # sizes

    def test_size_forms(self) -> None:
        kib, mib, gib = 1024, 1024**2, 1024**3
        for raw, expected in [
            ("2048", 2048),
            ("2048b", 2048),
            ("2048B", 2048),
            ("512k", 512 * kib),
            ("512K", 512 * kib),
            ("512KiB", 512 * kib),
            ("512kb", 512 * kib),
            ("16M", 16 * mib),
            ("16MiB", 16 * mib),
            ("16 MiB", 16 * mib),
            ("16Mi", 16 * mib),
            ("1G", gib),
            ("1GiB", gib),
        ]:
            self.assertEqual(self.cli("max_body_size", raw).server.max_body_size, expected, raw)
        self.assertEqual(self.env("max_body_size", "1k").server.max_body_size, kib)
        self.assertEqual(self.toml("max_body_size = 4096").server.max_body_size, 4096)
        self.assertEqual(self.toml('max_body_size = "8MiB"').server.max_body_size, 8 * mib)

    def test_size_errors(self) -> None:
        for raw in ["16X", "MiB", "-1k", "1.5M", "16 MiBs", "16i", ""]:
            self.assertEqual(
                self.error({"max_body_size": raw}),
                f"--max-body-size: expected a size like 16MiB, got {raw!r}",
            )
        self.assertEqual(
            self.error({"max_body_size": "1023"}),
            "--max-body-size: must be between 1KiB and 1GiB, got 1023 bytes",
        )
        self.assertEqual(
            self.error(env={"MOCKOAI_MAX_BODY_SIZE": "2G"}),
            f"MOCKOAI_MAX_BODY_SIZE: must be between 1KiB and 1GiB, got {2 * 1024**3} bytes",
        )
        message, path = self.toml_error("max_body_size = 1.5")
        self.assertEqual(message, f"max_body_size (in {path}): expected a size like 16MiB, got 1.5")

    # ranges

    def test_range_forms(self) -> None:
        self.assertEqual(self.cli("stream_tokens", "1-4").served.defaults.stream_tokens, (1, 4))
        self.assertEqual(self.cli("stream_tokens", "3").served.defaults.stream_tokens, (3, 3))
        self.assertEqual(self.cli("stream_tokens", " 2 - 5 ").served.defaults.stream_tokens, (2, 5))
        self.assertEqual(
            self.env("stream_tokens", "1024").served.defaults.stream_tokens, (1024, 1024)
        )
        self.assertEqual(self.toml("stream_tokens = [2, 8]").served.defaults.stream_tokens, (2, 8))
        self.assertEqual(self.toml("stream_tokens = 4").served.defaults.stream_tokens, (4, 4))
        self.assertEqual(self.toml('stream_tokens = "1-2"').served.defaults.stream_tokens, (1, 2))

    def test_range_errors(self) -> None:
        for raw in ["a-b", "1-2-3", "-1", "1-", "1.5"]:
            self.assertEqual(
                self.error({"stream_tokens": raw}),
                f"--stream-tokens: expected a range like 1-4, got {raw!r}",
            )
        for raw in ["4-1", "0-2", "0", "1-1025"]:
            self.assertEqual(
                self.error({"stream_tokens": raw}),
                f"--stream-tokens: expected 1 <= low <= high <= 1024, got {raw!r}",
            )
        message, path = self.toml_error("stream_tokens = [1]")
        self.assertEqual(message, f"stream_tokens (in {path}): expected a range like 1-4, got [1]")
        message, path = self.toml_error("stream_tokens = true")
        self.assertEqual(message, f"stream_tokens (in {path}): expected a range like 1-4, got True")

    @given(st.integers(1, 1024), st.integers(1, 1024))
    def test_range_roundtrip(self, a: int, b: int) -> None:
        low, high = min(a, b), max(a, b)
        self.assertEqual(config._range(f"{low}-{high}"), (low, high))
        self.assertEqual(config._range([low, high]), (low, high))
        if low < high:
            with self.assertRaises(ValueError):
                config._range(f"{high}-{low}")

    # workers and http

    def test_workers_forms(self) -> None:
        self.assertEqual(self.cli("workers", "auto").server.workers, config.cores())
        self.assertEqual(self.env("workers", "AUTO").server.workers, config.cores())
        self.assertEqual(self.cli("workers", "4").server.workers, 4)
        self.assertEqual(self.toml("workers = 2").server.workers, 2)
        self.assertEqual(
            self.error({"workers": "0"}), "--workers: must be between 1 and 256, got 0"
        )
        self.assertEqual(
            self.error({"workers": "many"}), "--workers: expected a whole number, got 'many'"
        )

    def test_workers_auto_follows_the_affinity_mask(self) -> None:
        # taskset -c 0,2 on a 4-core machine: two workers, not four.
        self.patch(os, "cpu_count", lambda: 4)
        if not hasattr(os, "sched_getaffinity"):  # PyPy 3.9, macOS
            os.sched_getaffinity = None  # type: ignore[attr-defined]
            self.addCleanup(delattr, os, "sched_getaffinity")
        self.patch(os, "sched_getaffinity", lambda pid: {0, 2})
        self.assertEqual(self.cli("workers", "auto").server.workers, 2)
        # No affinity call (PyPy 3.9, macOS): every core.
        self.patch(os, "sched_getaffinity", None)
        self.assertEqual(self.cli("workers", "auto").server.workers, 4)
        self.patch(os, "cpu_count", lambda: None)
        self.assertEqual(self.cli("workers", "auto").server.workers, 1)

    def test_http_forms(self) -> None:
        self.assertEqual(self.cli("http", "twisted").server.http, "twisted")
        self.assertEqual(self.env("http", "auto").server.http, "auto")
        self.assertEqual(
            self.error({"http": "fast"}),
            "--http: expected auto, lean, lean-python or twisted, got 'fast'",
        )
        # The lean stack runs everywhere: on httptools, or on the pure-Python parser.
        self.assertEqual(self.cli("http", "lean").server.http, "lean")
        self.assertEqual(self.cli("http", "lean-python").server.http, "lean-python")

    # booleans

    def test_boolean_forms(self) -> None:
        for raw in ["1", "true", "TRUE", "yes", "on", " On "]:
            self.assertTrue(self.env("any_model", raw).served.any_model, raw)
        for raw in ["0", "false", "no", "off", ""]:
            self.assertFalse(self.env("access_log", raw).observability.access_log, raw)
        self.assertTrue(self.cli("access_log", True).observability.access_log)
        self.assertTrue(self.toml("any_model = true").served.any_model)
        self.assertFalse(self.toml("any_model = false").served.any_model)

    def test_boolean_errors(self) -> None:
        self.assertEqual(
            self.error(env={"MOCKOAI_ANY_MODEL": "maybe"}),
            "MOCKOAI_ANY_MODEL: expected true or false, got 'maybe'",
        )
        message, path = self.toml_error("access_log = 1")
        self.assertEqual(message, f"access_log (in {path}): expected true or false, got 1")

    def test_cli_false_flag_does_not_override(self) -> None:
        # A flag not given on the command line leaves the environment's value.
        s = load_settings({"any_model": False}, {"MOCKOAI_ANY_MODEL": "1"})
        self.assertTrue(s.served.any_model)

    # text and lists

    def test_text_forms(self) -> None:
        self.assertEqual(self.cli("system_fingerprint", "fp_x").answers.system_fingerprint, "fp_x")
        self.assertEqual(
            self.error(env={"MOCKOAI_SYSTEM_FINGERPRINT": ""}),
            "MOCKOAI_SYSTEM_FINGERPRINT: expected a non-empty string, got ''",
        )
        message, path = self.toml_error("system_fingerprint = 5")
        self.assertEqual(
            message, f"system_fingerprint (in {path}): expected a non-empty string, got 5"
        )

    def test_listen_forms(self) -> None:
        self.assertEqual(self.cli("listen", ["tcp:1", "tcp:2"]).server.listen, ("tcp:1", "tcp:2"))
        self.assertEqual(self.env("listen", "tcp:1, tcp:2").server.listen, ("tcp:1", "tcp:2"))
        self.assertEqual(
            self.toml('listen = ["tcp:5", "tcp6:6"]').server.listen, ("tcp:5", "tcp6:6")
        )
        self.assertEqual(
            self.cli("listen", ["tcp:3000:interface=127.0.0.1"]).server.listen,
            ("tcp:3000:interface=127.0.0.1",),
        )
        self.assertEqual(
            self.cli("listen", ["unix:/tmp/mockoai-test.sock"]).server.listen,
            ("unix:/tmp/mockoai-test.sock",),
        )

    def test_listen_list_errors(self) -> None:
        self.assertEqual(
            self.error(env={"MOCKOAI_LISTEN": "tcp:1,,tcp:2"}),
            "MOCKOAI_LISTEN: expected a non-empty list of non-empty strings, got 'tcp:1,,tcp:2'",
        )
        message, path = self.toml_error("listen = []")
        self.assertEqual(
            message, f"listen (in {path}): expected a non-empty list of non-empty strings, got []"
        )
        message, path = self.toml_error("listen = 3000")
        self.assertEqual(message, f"listen (in {path}): expected a list, got 3000")

    def test_bad_endpoints(self) -> None:
        self.assertEqual(
            self.error({"listen": ["bogus:1"]}),
            "--listen: cannot use endpoint 'bogus:1': Unknown endpoint type: 'bogus'",
        )
        self.assertTrue(
            self.error({"listen": ["tcp:http"]}).startswith(
                "--listen: cannot use endpoint 'tcp:http': "
            )
        )
        self.assertEqual(
            self.error({"listen": ["systemd:domain=INET:index=99"]}),
            "--listen: 'systemd:domain=INET:index=99': no such socket was passed in by systemd",
        )
        # Every endpoint is checked, not only the first.
        self.assertTrue(
            self.error({"listen": ["tcp:1", "nonsense"]}).startswith(
                "--listen: cannot use endpoint 'nonsense': "
            )
        )

    def test_workers_need_tcp(self) -> None:
        self.assertEqual(
            self.error({"listen": ["unix:/tmp/mockoai-test.sock"], "workers": "2"}),
            "--workers: 2 workers share tcp: endpoints only, not 'unix:/tmp/mockoai-test.sock'",
        )
        s = load_settings({"listen": ["tcp:1", "tcp6:2"], "workers": "2"}, {})
        self.assertEqual(s.server.workers, 2)

    def test_tokens_mean_far_above_cap(self) -> None:
        self.assertEqual(
            self.error({"tokens_mean": "401", "max_output_tokens": "100"}),
            "--tokens-mean: 401 is far above --max-output-tokens 100",
        )
        s = load_settings({"tokens_mean": "400", "max_output_tokens": "100"}, {})
        self.assertEqual(s.served.defaults.tokens_mean, 400.0)

    def test_corpus_must_hold_the_longest_answer(self) -> None:
        self.assertEqual(
            self.error({"articles": "16"}),
            "--max-output-tokens: 4096 tokens need more text than --articles 16 gives; "
            "use --articles 28 or more",
        )
        self.assertEqual(load_settings({"articles": "28"}, {}).answers.articles, 28)
        s = load_settings({"articles": "16", "max_output_tokens": "2400"}, {})
        self.assertEqual((s.answers.articles, s.served.defaults.max_output_tokens), (16, 2400))

    def test_status_forms(self) -> None:
        self.assertEqual(self.cli("reject_status", "503").served.defaults.engine.reject_status, 503)
        self.assertEqual(
            self.toml("timeout_status = 504").served.defaults.engine.timeout_status, 504
        )
        self.assertEqual(
            self.error({"reject_status": "404"}),
            "--reject-status: expected one of 429, 503, got 404",
        )
        self.assertEqual(
            self.error(env={"MOCKOAI_TIMEOUT_STATUS": "700"}),
            "MOCKOAI_TIMEOUT_STATUS: must be between 100 and 599, got 700",
        )

    # models

    def test_models_from_strings(self) -> None:
        s = self.cli("models", ["alpha", "meta-llama/Llama-3.1-8B-Instruct"])
        self.assertEqual(
            s.served.models,
            (
                ModelSpec("alpha", "mockoai"),
                ModelSpec("meta-llama/Llama-3.1-8B-Instruct", "meta-llama"),
            ),
        )
        self.assertEqual(s.served.models[0].endpoints, ENDPOINT_KINDS)
        s = self.env("models", "a, openai/gpt-4o")
        self.assertEqual([m.id for m in s.served.models], ["a", "openai/gpt-4o"])
        self.assertEqual(s.served.models[1].owned_by, "openai")
        self.assertEqual([m.id for m in self.toml('models = "solo"').served.models], ["solo"])

    def test_models_from_toml_tables(self) -> None:
        path = self.profile(
            "[[models]]\n"
            'id = "chatty"\n'
            'endpoints = ["chat"]\n'
            "[[models]]\n"
            'id = "acme/base"\n'
            'owned_by = "someone"\n'
            "created = 1234\n"
            'endpoints = "completions"\n'
            "[[models]]\n"
            'id = "both"\n'
        )
        s = load_settings({"config": path}, {})
        self.assertEqual(
            s.served.models,
            (
                ModelSpec("chatty", "mockoai", 1700000000, frozenset({CHAT})),
                ModelSpec("acme/base", "someone", 1234, frozenset({COMPLETIONS})),
                ModelSpec("both", "mockoai", 1700000000, ENDPOINT_KINDS),
            ),
        )

    def test_models_mixed_toml_array(self) -> None:
        s = self.toml('models = ["plain", { id = "tabled", endpoints = ["chat"] }]')
        self.assertEqual([m.id for m in s.served.models], ["plain", "tabled"])
        self.assertEqual(s.served.models[1].endpoints, frozenset({CHAT}))

    def test_model_errors(self) -> None:
        self.assertEqual(
            self.error({"models": ["a", "b", "a"]}), "--model: model ids must be unique"
        )
        self.assertEqual(
            self.error(env={"MOCKOAI_MODELS": "x,x"}), "MOCKOAI_MODELS: model ids must be unique"
        )
        self.assertEqual(
            self.error({"models": ["has space"]}), "--model: invalid model id 'has space'"
        )
        self.assertEqual(
            self.error({"models": ["x" * 257]}), f"--model: invalid model id {'x' * 257!r}"
        )
        message, path = self.toml_error("models = []")
        self.assertEqual(message, f"models (in {path}): at least one model is needed")
        message, path = self.toml_error("models = 5")
        self.assertEqual(message, f"models (in {path}): expected a list of models, got 5")
        message, path = self.toml_error('models = [{ id = "a", color = "red" }]')
        self.assertEqual(message, f"models (in {path}): unknown model key(s) color")
        message, path = self.toml_error('models = [{ id = "a", endpoints = ["images"] }]')
        self.assertEqual(
            message,
            f"models (in {path}): endpoints must be among {sorted(KNOWN_KINDS)}, got ['images']",
        )
        message, path = self.toml_error('models = [{ owned_by = "me" }]')
        self.assertEqual(message, f"models (in {path}): expected a model id or table, got None")
        message, path = self.toml_error('models = [{ id = "a" }, { id = "a" }]')
        self.assertEqual(message, f"models (in {path}): model ids must be unique")
        message, path = self.toml_error('models = [{ id = "a", created = -1 }]')
        self.assertEqual(message, f"models (in {path}): must be between 0 and {2**40}, got -1")


class SourceErrorTests(ProfileMixin, SynchronousTestCase):
    def error(self, cli: dict[str, object], env: dict[str, str] | None = None) -> str:
        with self.assertRaises(ConfigError) as caught:
            load_settings(cli, env or {})
        message = str(caught.exception)
        self.assertNotIn("\n", message)
        return message

    def test_same_error_names_each_source(self) -> None:
        path = self.profile('itl = "-1"\n')
        reason = latency_error("-1")
        self.assertEqual(self.error({"config": path}), f"itl (in {path}): {reason}")
        self.assertEqual(self.error({}, {"MOCKOAI_ITL": "-1"}), f"MOCKOAI_ITL: {reason}")
        self.assertEqual(self.error({"itl": "-1"}), f"--itl: {reason}")
        path = self.profile("articles = 1\n")
        reason = "must be between 16 and 65536, got 1"
        self.assertEqual(self.error({"config": path}), f"articles (in {path}): {reason}")
        self.assertEqual(self.error({}, {"MOCKOAI_ARTICLES": "1"}), f"MOCKOAI_ARTICLES: {reason}")
        self.assertEqual(self.error({"articles": "1"}), f"--articles: {reason}")

    def test_bad_value_in_lower_layer_is_still_an_error(self) -> None:
        # Every given value is validated, even one a higher layer overrides.
        self.assertEqual(
            self.error({"tokens_mean": "5"}, {"MOCKOAI_TOKENS_MEAN": "x"}),
            "MOCKOAI_TOKENS_MEAN: expected a number, got 'x'",
        )

    def test_unknown_environment_variable(self) -> None:
        self.assertEqual(
            self.error({}, {"MOCKOAI_ITLS": "5", "MOCKOAI_ITL": "5"}),
            "MOCKOAI_ITLS: unknown environment variable",
        )
        # The first, in sorted order, is named.
        self.assertEqual(
            self.error({}, {"MOCKOAI_ZZZ": "1", "MOCKOAI_AAA": "1"}),
            "MOCKOAI_AAA: unknown environment variable",
        )

    def test_unknown_toml_key(self) -> None:
        path = self.profile("itl = 5\ninter_token_latency = 5\n")
        self.assertEqual(
            self.error({"config": path}), f"config: {path}: unknown setting 'inter_token_latency'"
        )

    def test_unreadable_file(self) -> None:
        path = os.path.join(tempfile.gettempdir(), "mockoai-no-such-dir", "missing.toml")
        self.assertEqual(
            self.error({"config": path}), f"config: cannot read {path}: No such file or directory"
        )
        self.assertEqual(
            self.error({}, {"MOCKOAI_CONFIG": path}),
            f"config: cannot read {path}: No such file or directory",
        )

    def test_directory_is_unreadable(self) -> None:
        directory = os.path.dirname(self.profile(""))
        self.assertTrue(
            self.error({"config": directory}).startswith(f"config: cannot read {directory}: ")
        )

    def test_invalid_toml(self) -> None:
        path = self.profile("itl = = 5\n[unterminated\n")
        message = self.error({"config": path})
        self.assertTrue(message.startswith(f"config: {path} is not valid TOML: "), message)


class DescribeTests(SynchronousTestCase):
    def test_mentions_every_field(self) -> None:
        line = describe(Settings())
        self.assertNotIn("\n", line)
        for field in FIELDS:
            if field.name in ("config", "port"):
                continue
            self.assertIn(f"{field.name}=", line)
        self.assertNotIn("config=", line)
        self.assertNotIn("port=", line)

    def test_formats_values(self) -> None:
        s = Settings.from_values(
            listen=("tcp:1", "unix:/x"),
            models=(ModelSpec("a"), ModelSpec("b/c", "b")),
            stream_tokens=(2, 5),
            response_delay=0.25,
            itl=0.02,
            config="/etc/p.toml",
        )
        line = describe(s)
        self.assertTrue(line.startswith("config=/etc/p.toml "))
        for part in [
            "listen=tcp:1,unix:/x",
            "models=a,b/c",
            "stream_tokens=2-5",
            "response_delay=250ms",
            "itl=20ms",
            "any_model=False",
            "max_body_size=16777216",
        ]:
            self.assertIn(part, line.split())


class TapOptionsTests(SynchronousTestCase):
    def setUp(self) -> None:
        # The options read os.environ: run them against a clean one.
        self.patch(os, "environ", {})

    def parse(self, *argv: str) -> Settings:
        from mockoai.ops.tap import Options

        options = Options()
        options.parseOptions(list(argv))
        self.assertEqual(options.arguments, list(argv))
        return options.settings

    def test_no_options(self) -> None:
        self.assertEqual(self.parse(), Settings())

    def test_values_and_flags(self) -> None:
        s = self.parse(
            "--port", "8080", "--itl", "20", "--response-delay", "100",
            "--stream-tokens", "2-4", "--any-model", "--access-log",
        )  # fmt: skip
        self.assertEqual(s.server.listen, ("tcp:8080",))
        self.assertEqual(s.served.defaults.itl, ms(20))
        self.assertEqual(s.served.defaults.response_delay, ms(100))
        self.assertEqual(s.served.defaults.stream_tokens, (2, 4))
        self.assertTrue(s.served.any_model)
        self.assertTrue(s.observability.access_log)

    def test_repeatable_options(self) -> None:
        s = self.parse(
            "--listen", "tcp:1", "--listen", "unix:/tmp/mockoai-test.sock",
            "--model", "a", "--model", "org/b",
        )  # fmt: skip
        self.assertEqual(s.server.listen, ("tcp:1", "unix:/tmp/mockoai-test.sock"))
        self.assertEqual([m.id for m in s.served.models], ["a", "org/b"])
        self.assertEqual(s.served.models[1].owned_by, "org")

    def test_environment_under_options(self) -> None:
        os.environ["MOCKOAI_ITL"] = "5"
        os.environ["MOCKOAI_TOKENS_MEAN"] = "10"
        s = self.parse("--itl", "7")
        self.assertEqual(s.served.defaults.itl, ms(7))
        self.assertEqual(s.served.defaults.tokens_mean, 10.0)

    def assertExits(self, argv: list[str], prefix: str) -> str:
        with self.assertRaises(SystemExit) as caught:
            self.parse(*argv)
        message = str(caught.exception.code)
        self.assertNotIn("\n", message)
        self.assertTrue(message.startswith("mockoai: error: --"), message)
        self.assertTrue(message.startswith(prefix), message)
        return message

    def test_invalid_value_exits_with_one_line(self) -> None:
        self.assertEqual(
            self.assertExits(["--tokens-mean", "abc"], "mockoai: error: --tokens-mean: "),
            "mockoai: error: --tokens-mean: expected a number, got 'abc'",
        )
        self.assertEqual(
            self.assertExits(["--itl", "abc"], "mockoai: error: --itl: "),
            f"mockoai: error: --itl: {latency_error('abc')}",
        )
        self.assertExits(["--port", "99999"], "mockoai: error: --port: ")
        self.assertExits(["--model", "a", "--model", "a"], "mockoai: error: --model: ")
        self.assertExits(["--listen", "bogus:1"], "mockoai: error: --listen: ")
        self.assertExits(["--max-body-size", "12X"], "mockoai: error: --max-body-size: ")


#: A raw, non-default value for every setting, as the command line gives it.
RAW: dict[str, object] = {
    "listen": ["tcp:1234"],
    "workers": "2",
    "http": "twisted",
    "http2": "off",
    "lean_poll": "off",
    "max_connections": "10",
    "keepalive_requests": "50",
    "keepalive_time": "30",
    "max_body_size": "1MiB",
    "idle_timeout": "5",
    "grace_period": "3",
    "models": ["a", "b"],
    "any_model": True,
    "strict_endpoints": True,
    "tokens_mean": "100",
    "tokens_stddev": "5",
    "max_output_tokens": "300",
    "stream_tokens": "2-3",
    "response_delay": "150",
    "itl": "normal:7:1",
    "prefill_per_token": "0.5",
    "tool_call_rate": "0.25",
    "reasoning": "visible",
    "reasoning_tokens": "low=10,high=99",
    "max_running": "8",
    "max_waiting": "9",
    "queue_timeout": "2.5",
    "reject_status": "503",
    "timeout_status": "504",
    "batch_slowdown": "1.5",
    "max_tokens_per_s": "1000",
    "articles": "64",
    "corpus_seed": "7",
    "system_fingerprint": "fp_test",
    "max_url_length": "1000",
    "max_headers": "50",
    "max_header_bytes": "8k",
    "header_timeout": "4",
    "body_timeout": "20",
    "body_min_rate": "100",
    "max_json_depth": "10",
    "max_messages": "20",
    "max_string_length": "1000",
    "max_prompt_chars": "5000",
    "max_n": "4",
    "rpm": "60",
    "tpm": "6000",
    "ip_rpm": "30",
    "api_keys": ["k1-abc"],
    "api_keys_file": "",  # a file written by the test
    "auth_health": True,
    "cors_origins": ["https://a.example"],
    "cors_methods": "GET",
    "cors_headers": "authorization",
    "cors_max_age": "60",
    "cors_credentials": True,
    "openrouter_providers": "OpenAI,Groq",
    "openrouter_failing_models": "a",
    "openrouter_credit_limit": "5",
    "openrouter_processing_interval": "500",
    "openrouter_generations": "100",
    "openrouter_generation_ttl": "60",
    "responses_store_size": "100",
    "responses_store_ttl": "60",
    "rules": "",  # a file written by the test
    "allow_control_headers": True,
    "admin_key": "admin-secret",
    "journal": "on",
    "journal_size": "50",
    "journal_bodies": "256",
    "access_log": True,
    "request_log": "/tmp/mockoai-test-requests.jsonl",
    "request_log_max_size": "1M",
    "request_log_files": "2",
    "kv_cache_tokens": "1000",
    "dashboard_interval": "2.5",
}


class RegistryTests(ProfileMixin, SynchronousTestCase):
    """The flat registry, derived from the groups: one declaration per setting."""

    def test_names_are_unique_and_documented(self) -> None:
        for attribute in ("name", "option", "env"):
            names = [getattr(f, attribute) for f in FIELDS]
            self.assertEqual(len(names), len(set(names)), attribute)
        for field in FIELDS:
            self.assertEqual(field.env, "MOCKOAI_" + field.name.upper())
            self.assertTrue(field.help.strip(), field.name)
            self.assertTrue(field.flag or field.metavar, field.name)
            self.assertIs(config.FIELDS_BY_NAME[field.name], field)

    def test_every_group_attribute_is_a_setting_or_a_group(self) -> None:
        # Nothing in Settings escapes the registry (ModelProfile.latency is derived).
        seen = []
        pending: list[type] = [Settings]
        while pending:
            cls = pending.pop()
            for a in attrs.fields(cls):
                if config._GROUP in a.metadata:
                    pending.append(a.metadata[config._GROUP])
                elif config._SETTING in a.metadata:
                    seen.append(a.name)
                else:
                    self.assertEqual((cls, a.name, a.init), (config.ModelProfile, "latency", False))
        self.assertEqual(len(seen), len(FIELDS) - 1)  # all but --port

    def all_values(self) -> dict[str, object]:
        keys = self.profile('[[keys]]\nkey = "k2-file"\n', "keys.toml")
        self.assertEqual({f.name for f in FIELDS} - set(RAW), {"config", "port"})
        rules = self.profile('[[rules]]\nfault = "hang"\n', "rules.toml")
        return {**RAW, "api_keys_file": keys, "rules": rules}

    def test_every_setting_lands_in_its_group(self) -> None:
        values = self.all_values()
        s = load_settings(values, {})
        defaults = Settings()
        for field in FIELDS:
            if field.name in ("config", "port"):
                continue
            self.assertEqual(field.get(s), field.parse(values[field.name]), field.name)
            self.assertNotEqual(field.get(s), field.get(defaults), field.name)
        self.assertEqual(s.served.defaults.engine.max_running, 8)
        self.assertEqual(s.cors.origins, ("https://a.example",))
        self.assertEqual(s.openrouter.credit_limit, 5.0)

    def test_environment_names_reach_the_same_values(self) -> None:
        values = self.all_values()
        environ = {}
        for name, raw in values.items():
            if isinstance(raw, list):
                raw = ",".join(raw)
            environ[config.FIELDS_BY_NAME[name].env] = "1" if raw is True else str(raw)
        self.assertEqual(load_settings({}, environ), load_settings(values, {}))

    def test_flat_builder_round_trip(self) -> None:
        s = load_settings(self.all_values(), {})
        flat = {f.name: f.get(s) for f in FIELDS if f.name != "port"}
        self.assertEqual(Settings.from_values(**flat), s)
        self.assertEqual(Settings.from_values(), Settings())
        with self.assertRaises(TypeError) as caught:
            Settings.from_values(itl=0.01, inter_token_latency=0.01)
        self.assertEqual(str(caught.exception), "no such setting: 'inter_token_latency'")

    def test_flat_builder_takes_seconds_for_latencies(self) -> None:
        s = Settings.from_values(itl=0.02, response_delay=0.5, max_running=4)
        self.assertEqual(s.served.defaults.itl, ms(20))
        self.assertEqual(s.served.defaults.response_delay, ms(500))
        self.assertEqual(s.profile().latency.itl, ms(20))
        self.assertTrue(s.profile().engine.enabled)


class PerModelTests(ProfileMixin, SynchronousTestCase):
    """A [[models]] table may set every profile setting for its model alone."""

    def test_per_model_names_are_the_profile_group(self) -> None:
        under_profile = [f.name for f in FIELDS if f.path[:2] == ("served", "defaults")]
        self.assertEqual(list(config.PER_MODEL), under_profile)
        self.assertIn("max_running", config.PER_MODEL)
        self.assertIn("itl", config.PER_MODEL)

    def test_every_override_reaches_the_model_and_its_engine(self) -> None:
        table = "".join(f"{name} = {json.dumps(RAW[name])}\n" for name in config.PER_MODEL)
        path = self.profile(f'[[models]]\nid = "tuned"\n{table}[[models]]\nid = "plain"\n')
        s = load_settings({"config": path}, {})
        tuned, plain = s.served.models
        profile = s.profile(tuned)
        for name in config.PER_MODEL:
            field = config.FIELDS_BY_NAME[name]
            wanted = field.parse(RAW[name])
            within = attrs.evolve(field, path=field.path[2:])  # the path inside a profile
            self.assertEqual(within.get(profile), wanted, name)
            self.assertNotEqual(within.get(s.profile(plain)), wanted, name)
        self.assertIs(s.profile(plain), s.served.defaults)
        self.assertEqual(profile.latency.itl, latency.parse("normal:7:1"))
        self.assertEqual(profile.latency.prefill_per_token, 0.0005)

        from tests.support import make_service

        core = make_service(models=s.served.models).core
        served = core.models["tuned"]
        self.assertEqual(served.profile, profile)
        assert served.engine is not None
        self.assertEqual(served.engine.config, profile.engine)
        self.assertEqual(served.engine.config.max_tokens_per_s, 1000.0)
        self.assertIs(served.engine.latency, served.profile.latency)
        self.assertIsNone(core.models["plain"].engine)


class LayeringTests(SynchronousTestCase):
    """Config sits below the wire and the pipeline: they import its types, not the reverse."""

    def test_config_imports_neither_auth_nor_cors(self) -> None:
        with open(config.__file__, encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
                imported.update(f"{node.module}.{alias.name}" for alias in node.names)
        ours = {name for name in imported if name.startswith("mockoai")}
        self.assertTrue(ours)
        for name in ours:
            self.assertFalse(name.startswith(("mockoai.pipeline", "mockoai.wire")), name)
            self.assertFalse(name.startswith(("mockoai.dialects", "mockoai.routes")), name)

    def test_auth_and_cors_are_built_from_their_groups(self) -> None:
        from mockoai.pipeline import auth
        from mockoai.wire import cors

        self.assertIsNone(auth.from_settings(Settings().auth))
        self.assertIsNone(cors.from_settings(Settings().cors))
        s = Settings.from_values(
            api_keys=(config.ApiKey("k1-abc"),), auth_health=True, cors_origins=("*",)
        )
        authenticator = auth.from_settings(s.auth)
        assert authenticator is not None
        self.assertEqual(list(authenticator.keys), [b"k1-abc"])
        policy = cors.from_settings(s.cors)
        assert policy is not None
        self.assertEqual(policy.allowed(b"https://x.example"), b"*")
