"""
mockoai.testing: the pytest plugin, the trial helper, and the mapping of
settings to ``twistd mockoai`` options.

The plugin is proven the way ``pytester`` would, but in a child process
(``python -m pytest -p mockoai.testing.pytest_plugin`` over a temporary
directory), so it runs under both pytest and trial: an example test file
uses the fixtures, the marker and the OpenAI SDK, and the outcomes are
read from the child's report.  Entry-point plugins are not loaded there
(``PYTEST_DISABLE_PLUGIN_AUTOLOAD``): an installed mockoai would register
the same module a second time; ``setup.cfg`` is checked for the entry point
instead.
"""

from __future__ import annotations

import configparser
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mockoai.testing import ReactorServer, ServerError, logged_errors, server_arguments
from mockoai.testing import start_server as start_server_lazily
from mockoai.testing.deferred import start_server
from tests.optional import needs_openai, openai
from tests.support import REPO_ROOT, clean_environ

#: A file every write to fails with ENOSPC: a request log there makes the
#: server log an error (a real one: its flush fails) a second after a request.
DEV_FULL = "/dev/full"

MESSAGES = [{"role": "user", "content": "Say hello"}]


class ArgumentsTests(SynchronousTestCase):
    """Settings as Python values become the options twistd takes."""

    def test_generic_mapping(self) -> None:
        args = server_arguments(
            {
                "itl_ms": 20,  # the CLI takes ms: the suffix only says so
                "response_delay": "normal:200:20",
                "models": ["a", "b/c"],  # repeatable: --model, once per value
                "cors_methods": ["GET", "POST"],  # one comma-separated option
                "any_model": True,
                "access_log": False,
                "http2": False,
                "profile": "etc/profiles/latency.toml",
                "grace_period": 0.5,
                "max_tokens_per_s": None,
            }
        )
        self.assertEqual(
            args,
            [
                *("--itl", "20", "--response-delay", "normal:200:20"),
                *("--model", "a", "--model", "b/c", "--cors-methods", "GET,POST"),
                *("--any-model", "--http2", "off"),
                *("--config", "etc/profiles/latency.toml", "--grace-period", "0.5"),
            ],
        )

    def test_names_are_checked(self) -> None:
        with self.assertRaises(ValueError) as caught:
            server_arguments({"itl_msec": 5})
        self.assertIn("unknown mockoai setting 'itl_msec' (did you mean", str(caught.exception))
        # _ms only where the command line takes milliseconds.
        with self.assertRaises(ValueError):
            server_arguments({"grace_period_ms": 5})
        with self.assertRaises(TypeError):
            server_arguments({"any_model": "yes"})
        with self.assertRaises(TypeError):
            server_arguments({"models": [{"id": "x", "itl": 20}]})

    def test_logged_errors(self) -> None:
        log = (
            "2026-01-01T00:00:00+0000 [mockoai#info] ready in 0.70 s, RSS 74.6 MB\n"
            "2026-01-01T00:00:01+0000 [twisted.internet.defer#critical] Unhandled error:\n"
            "2026-01-01T00:00:01+0000 [twisted.internet.defer#critical] \n"
            "\tTraceback (most recent call last):\n"
            "\tbuiltins.OSError: [Errno 28] No space left on device\n"
            "2026-01-01T00:00:02+0000 [mockoai#warn] grace period over\n"
            "2026-01-01T00:00:03+0000 [mockoai.wire#error] bad\n"
            "Traceback (most recent call last):\n"
            '  File "x.py", line 1, in <module>\n'
            "ImportError: nope\n"
            "2026-01-01T00:00:04+0000 [mockoai#info] stopped\n"
        )
        errors = logged_errors(log)
        self.assertEqual(len(errors), 2, errors)
        self.assertTrue(errors[0].endswith("No space left on device"))
        self.assertIn("[mockoai.wire#error] bad", errors[1])
        self.assertTrue(errors[1].endswith("ImportError: nope"))
        self.assertEqual(logged_errors(log.splitlines()[0]), [])


class PackagingTests(SynchronousTestCase):
    def test_entry_point_and_package(self) -> None:
        config = configparser.ConfigParser()
        config.read(os.path.join(REPO_ROOT, "setup.cfg"))
        self.assertIn("mockoai.testing", config["options"]["packages"].split())
        entry_points = config["options.entry_points"]["pytest11"].split("\n")
        self.assertIn("mockoai = mockoai.testing.pytest_plugin", [e.strip() for e in entry_points])

    def test_plugin_imports_nothing_heavy(self) -> None:
        # pytest loads the plugin in every run: it must not import the server, Twisted or
        # the SDK until a fixture is used.
        code = (
            "import sys, mockoai.testing.pytest_plugin\n"
            "heavy = ('twisted', 'mockoai.ops', 'mockoai.sim', 'openai', 'numpy')\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy"
            " or m.startswith(heavy)))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code],
            env=clean_environ(),
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        self.assertEqual(out.stdout.strip(), "[]", out.stderr)


# --------------------------------------------------------------------------
# The pytest plugin, run by pytest in a child process

CONFTEST = """
import pytest

@pytest.fixture(scope="session")
def mockoai_session_settings():
    return {"articles": 64, "models": ["s"]}
"""

EXAMPLE = """
import asyncio
import time

import pytest

# Every test's server: a small corpus starts faster.  Tests add their own.
pytestmark = pytest.mark.mockoai(articles=64)

MESSAGES = [{"role": "user", "content": "Say hello"}]
STREAM = {
    "model": "s", "messages": MESSAGES, "max_tokens": 10, "ignore_eos": True,
    "stream": True,
}


def timed_stream(server):
    started = time.monotonic()
    reply = server.post("/v1/chat/completions", json=STREAM)
    took = time.monotonic() - started
    assert reply.status == 200
    assert reply.events()[-1] == "[DONE]"
    return took


def test_sdk(mockoai):
    openai = pytest.importorskip("openai")
    client = mockoai.openai_client()
    reply = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=8)
    assert reply.choices[0].message.content
    chunks = client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, max_tokens=8, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=MESSAGES)

    async def models():
        async with mockoai.async_openai_client() as client:
            return [m.id async for m in client.models.list()]

    assert "gpt-4o" in asyncio.run(models())


@pytest.mark.mockoai(models=["s", "x"], itl_ms=50)
def test_marker(mockoai):
    listed = mockoai.get("/v1/models").json()["data"]
    assert [m["id"] for m in listed] == ["s", "x"]
    took = timed_stream(mockoai)
    assert took >= 9 * 0.050  # 10 tokens, 9 gaps of 50 ms
    print(f"stream with itl_ms=50: {took:.3f} s")
    assert "articles=64" in mockoai.log  # the module's marker still applies


@pytest.mark.parametrize("mockoai", [{"models": ["a", "b"]}], indirect=True)
def test_indirect(mockoai):
    assert [m["id"] for m in mockoai.get("/v1/models").json()["data"]] == ["a", "b"]


SESSION_URLS = []


def test_session_first(mockoai_session):
    SESSION_URLS.append(mockoai_session.url)
    assert mockoai_session.get("/health").json() == {"status": "ok"}
    assert mockoai_session.base_url == mockoai_session.url + "/v1"
    assert [m["id"] for m in mockoai_session.get("/v1/models").json()["data"]] == ["s"]
    print(f"stream without itl: {timed_stream(mockoai_session):.3f} s")


def test_session_second(mockoai_session):
    assert SESSION_URLS == [mockoai_session.url]


@pytest.mark.mockoai(request_log=FULL)
def test_server_error(mockoai):
    # The request log is on a full disk: the server logs an error at its next flush,
    # and this test fails at teardown although its own assertions pass.
    assert mockoai.get("/v1/models").status == 200
    deadline = time.monotonic() + 10
    while not mockoai.errors() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mockoai.errors()


@pytest.mark.mockoai(itl_msec=5)
def test_unknown_setting(mockoai):
    pass
"""


#: The plugin by module name (as a checkout without the entry point needs), no
#: cache, and every test's outcome in the short summary.
PYTEST_OPTIONS = ("-p", "mockoai.testing.pytest_plugin", "-p", "no:cacheprovider", "-rA")


def _outcomes(report: str) -> dict[str, list[str]]:
    """Test id -> outcomes, from ``-rA``'s short summary (a test may pass and error)."""
    outcomes: dict[str, list[str]] = {}
    for line in report.splitlines():
        match = re.match(r"(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) (\S+\.py::\S+)", line)
        if match:
            outcomes.setdefault(match.group(2).split("::", 1)[1], []).append(match.group(1))
    return outcomes


def doc_example(kind: str) -> str:
    """The code block after ``<!-- example: KIND`` in docs/testing-with-mockoai.md."""
    with open(os.path.join(REPO_ROOT, "docs", "testing-with-mockoai.md")) as f:
        text = f.read()
    match = re.search(rf"<!-- example: {kind}\b.*?-->\n```python\n(.*?)```", text, re.S)
    assert match is not None, f"no {kind} example in the docs"
    return match.group(1)


@functools.cache
def run_example() -> tuple[int, str]:
    """
    Run the example, and the docs' pytest example where the SDK is
    installed, under pytest once: (status, report).
    """
    with tempfile.TemporaryDirectory(prefix="mockoai-pytester-") as directory:
        full = os.path.join(directory, "full.jsonl")
        os.symlink(DEV_FULL, full)
        files = {
            "pytest.ini": "[pytest]\n",  # the root: not this repository's configuration
            "conftest.py": CONFTEST,
            "test_example.py": f"FULL = {full!r}\n" + EXAMPLE,
        }
        if openai is not None:
            files["test_docs_example.py"] = doc_example("pytest")
        for name, text in files.items():
            with open(os.path.join(directory, name), "w") as f:
                f.write(text)
        result = subprocess.run(
            [sys.executable, "-m", "pytest", *PYTEST_OPTIONS],
            cwd=directory,
            env=clean_environ(PYTEST_DISABLE_PLUGIN_AUTOLOAD="1"),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        return result.returncode, result.stdout + result.stderr


class PytestPluginTests(SynchronousTestCase):
    def setUp(self) -> None:
        if not os.path.exists(DEV_FULL):
            self.skipTest(f"{DEV_FULL} is Linux's")
        self.status, self.report = run_example()
        self.outcomes = _outcomes(self.report)

    def assertOutcome(self, test: str, *expected: str) -> None:
        self.assertEqual(self.outcomes.get(test), list(expected), self.report)

    def test_fixture_answers(self) -> None:
        if openai is not None:
            self.assertOutcome("test_sdk", "PASSED")
        else:  # -rA names a skip by where it was raised
            self.assertNotIn("test_sdk", self.outcomes)
            self.assertRegex(self.report, r"SKIPPED \[1\] test_example.py:\d+: could not import")

    def test_marker_and_indirect_settings_reach_the_server(self) -> None:
        self.assertOutcome("test_marker", "PASSED")
        self.assertOutcome("test_indirect[mockoai0]", "PASSED")
        plain = re.search(r"stream without itl: ([\d.]+) s", self.report)
        paced = re.search(r"stream with itl_ms=50: ([\d.]+) s", self.report)
        assert plain is not None and paced is not None, self.report
        self.assertGreater(float(paced.group(1)), float(plain.group(1)) + 0.3)

    def test_session_server_is_shared(self) -> None:
        self.assertOutcome("test_session_first", "PASSED")
        self.assertOutcome("test_session_second", "PASSED")

    def test_server_error_fails_the_test_at_teardown(self) -> None:
        self.assertOutcome("test_server_error", "PASSED", "ERROR")
        self.assertIn("ERROR at teardown of test_server_error", self.report)
        self.assertRegex(self.report, r"the mockoai server on port \d+ logged 1 error\(s\)")
        self.assertIn("No space left on device", self.report)
        self.assertIn("mockoai server log", self.report)  # the log is in the report
        self.assertEqual(self.status, 1)

    @needs_openai
    def test_docs_example(self) -> None:
        for test in ("test_chat", "test_my_model_streams", "test_any_model[mockoai0]"):
            self.assertOutcome(test, "PASSED")

    def test_unknown_setting_fails_at_setup(self) -> None:
        self.assertOutcome("test_unknown_setting", "ERROR")
        self.assertIn("ERROR at setup of test_unknown_setting", self.report)
        self.assertIn("unknown mockoai setting 'itl_msec'", self.report)


# --------------------------------------------------------------------------
# The trial helper


class TrialHelperTests(TestCase):
    """start_server() on the reactor: started, asked, stopped, all by Deferreds."""

    def test_lazy_export(self) -> None:
        self.assertIs(start_server_lazily, start_server)

    def test_start_answer_stop(self) -> Deferred[None]:
        async def go() -> None:
            server = await start_server(articles=64, models=["t"], itl_ms=5)
            self.assertIsInstance(server, ReactorServer)
            models = await server.get("/v1/models")
            self.assertEqual([m["id"] for m in models.json()["data"]], ["t"])
            body = {"model": "t", "messages": MESSAGES, "max_tokens": 4, "stream": True}
            reply = await server.post("/v1/chat/completions", json=body)
            self.assertEqual(reply.status, 200)
            self.assertEqual(reply.header("content-type"), "text/event-stream; charset=utf-8")
            self.assertEqual(reply.events()[-1], "[DONE]")
            log = await server.stop()
            self.assertEqual(server.returncode, 0)
            self.assertIn("itl=5ms", log)
            self.assertIn("stopped", log)

        return Deferred.fromCoroutine(go())

    def test_stop_fails_when_the_server_logged_an_error(self) -> Deferred[None]:
        if not os.path.exists(DEV_FULL):
            self.skipTest(f"{DEV_FULL} is Linux's")
        directory = tempfile.mkdtemp(prefix="mockoai-full-")
        self.addCleanup(shutil.rmtree, directory)
        full = os.path.join(directory, "full.jsonl")
        os.symlink(DEV_FULL, full)

        async def go() -> None:
            server = await start_server(articles=64, request_log=full)
            self.assertEqual((await server.get("/health")).status, 200)
            for _ in range(200):  # the request log flushes once a second
                if "No space left on device" in server.log:
                    break
                await deferLater(reactor, 0.05)
            failure = await self.assertFailure(server.stop(), ServerError)
            self.assertIn("logged 1 error(s)", str(failure))
            self.assertEqual(server.returncode, 0)

        return Deferred.fromCoroutine(go())

    def test_waits_for_every_worker(self) -> Deferred[None]:
        async def go() -> None:
            server = await start_server(articles=64, workers=2)
            self.assertEqual(server.log.count("ready in "), 2)
            self.assertEqual((await server.get("/health")).json(), {"status": "ok"})
            log = await server.stop()
            self.assertEqual(log.count("] stopped"), 2, log)  # both workers drained

        return Deferred.fromCoroutine(go())

    def test_docs_example(self) -> None:
        directory = tempfile.mkdtemp(prefix="mockoai-trial-example-")
        self.addCleanup(shutil.rmtree, directory)
        with open(os.path.join(directory, "test_trial_example.py"), "w") as f:
            f.write(doc_example("trial"))
        result = subprocess.run(
            [sys.executable, "-m", "twisted.trial", "test_trial_example"],
            cwd=directory,
            env=clean_environ(PYTHONPATH=os.pathsep.join([REPO_ROOT, "."])),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("PASSED (successes=1)", result.stdout)

    def test_start_fails_with_the_log(self) -> Deferred[None]:
        async def go() -> None:
            failure = await self.assertFailure(start_server(itl="abc"), ServerError)
            self.assertIn("exited with status 1 before it was ready", str(failure))
            self.assertIn("--itl", str(failure))

        return Deferred.fromCoroutine(go())
