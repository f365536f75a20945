"""
The container image: the Dockerfile's instructions (non-root user,
HEALTHCHECK on /health, STOPSIGNAL, entrypoint, MOCKOAI_* environment), the
build context ``.dockerignore`` leaves, the compose file; the image's exact
entrypoint and health check run on this host with the image's environment
(answers, drains on SIGTERM, exits 0); and, given a built image
(``CONTAINER_TEST_IMAGE``, see ``.ci/container``), the same in a real
container under podman.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

import yaml
from twisted.trial.unittest import SkipTest, TestCase

from mockoai.ops.config import load_settings
from tests.support import (
    REPO_ROOT,
    TWISTD,
    build_request,
    clean_environ,
    free_port,
    parse_responses,
    sse_json,
    wait_for_port,
)

DOCKERFILE = os.path.join(REPO_ROOT, "Dockerfile")
ENTRYPOINT = ["twistd", "-n", "--pidfile=", "mockoai"]
#: Environment given to every run here, as `docker run -e` would: a short
#: corpus and paced tokens, so a stream is in flight when SIGTERM comes.
RUN_ENV = {"MOCKOAI_ARTICLES": "64", "MOCKOAI_ITL": "20"}

Instruction = tuple[str, str]


def instructions(text: str) -> list[Instruction]:
    """(KEYWORD, arguments) per instruction, continuations joined, comments dropped."""
    out: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue  # comment lines go before continuations are joined, as in Docker
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        line = pending + line
        pending = ""
        if line.strip():
            keyword, _, arguments = line.strip().partition(" ")
            out.append((keyword.upper(), " ".join(arguments.split())))
    return out


def final_stage(steps: list[Instruction]) -> list[Instruction]:
    last = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last:]


def image_env(steps: list[Instruction]) -> dict[str, str]:
    """The final stage's ENV (``KEY=VALUE`` form), ``$PATH`` left unexpanded."""
    env: dict[str, str] = {}
    for keyword, arguments in final_stage(steps):
        if keyword == "ENV":
            for pair in shlex.split(arguments):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def exec_form(steps: list[Instruction], keyword: str) -> list[str]:
    [arguments] = [a for k, a in final_stage(steps) if k == keyword]
    value = json.loads(arguments)
    assert isinstance(value, list), f"{keyword} is not in exec (JSON) form"
    return value


def healthcheck(steps: list[Instruction]) -> tuple[dict[str, str], list[str]]:
    """The HEALTHCHECK's options and its CMD, exec form."""
    [arguments] = [a for k, a in final_stage(steps) if k == "HEALTHCHECK"]
    options, _, command = arguments.partition("CMD ")
    flags = dict(o[2:].split("=", 1) for o in options.split())
    return flags, json.loads(command)


def ignored(patterns: Sequence[str], path: str) -> bool:
    """Whether ``.dockerignore`` ``patterns`` leave ``path`` (or a parent) out of the context."""

    def regex(pattern: str) -> re.Pattern[str]:
        out = ""
        for part in re.split(r"(\*\*/|\*\*|\*|\?)", pattern.strip("/")):
            out += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
                part, re.escape(part)
            )
        return re.compile(out)

    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        compiled = regex(pattern[1:] if negated else pattern)
        if any(compiled.fullmatch(prefix) for prefix in prefixes):
            result = not negated
    return result


def dockerignore() -> list[str]:
    with open(os.path.join(REPO_ROOT, ".dockerignore")) as f:
        lines = [line.strip() for line in f]
    return [line for line in lines if line and not line.startswith("#")]


def stream(max_tokens: int) -> bytes:
    """A streamed chat completion of ``max_tokens`` (20 ms apart under RUN_ENV)."""
    body = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    return build_request("POST", "/v1/chat/completions", json.dumps(body).encode())


def first_event(sock: socket.socket) -> bytes:
    data = b""
    while b"data: " not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"closed before the first event: {data!r}")
        data += chunk
    return data


def read_until_closed(sock: socket.socket, data: bytes) -> bytes:
    sock.settimeout(20)
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


class DrainCheck:
    """
    Two streams in flight when SIGTERM comes, a /health pipelined behind the
    shorter: it arrives while the longer still runs, so it must hear 503.
    """

    def __init__(self, case: TestCase, port: int) -> None:
        self.case = case
        self.short = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.long = socket.create_connection(("127.0.0.1", port), timeout=20)
        case.addCleanup(self.short.close)
        case.addCleanup(self.long.close)
        self.short.sendall(stream(20) + build_request("GET", "/health"))
        self.long.sendall(stream(60))
        self.first = (first_event(self.short), first_event(self.long))

    def check(self) -> None:
        short = read_until_closed(self.short, self.first[0])
        long = read_until_closed(self.long, self.first[1])
        first, health = parse_responses(short, closed=True)
        [second] = parse_responses(long, closed=True)
        for response, tokens in ((first, 20), (second, 60)):
            self.case.assertTrue(response.complete, "the streams in flight finish")
            chunks = sse_json(response.body)
            reasons = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
            self.case.assertEqual(reasons[-1], "length")
            self.case.assertEqual(chunks[-1]["usage"]["completion_tokens"], tokens)
        self.case.assertEqual((health.status, health.json()), (503, {"status": "draining"}))


class DockerfileTests(TestCase):
    def setUp(self) -> None:
        with open(DOCKERFILE) as f:
            self.steps = instructions(f.read())
        self.final = final_stage(self.steps)

    def test_slim_python_base(self) -> None:
        [base] = [a for k, a in self.steps if k == "ARG" and a.startswith("BASE=")]
        self.assertRegex(base, r"^BASE=python:3\.\d+-slim(-\w+)?$")
        froms = [a for k, a in self.steps if k == "FROM"]
        self.assertEqual(froms, ["${BASE} AS build", "${BASE}"])

    def test_installs_the_package_with_pip(self) -> None:
        runs = " ".join(a for k, a in self.steps if k == "RUN")
        self.assertIn("python3 -m venv /opt/mockoai", runs)
        self.assertRegex(runs, r"/opt/mockoai/bin/pip install /src\b")
        self.assertIn(
            "COPY --from=build /opt/mockoai /opt/mockoai",
            [f"COPY {a}" for k, a in self.final if k == "COPY"],
        )

    def test_runs_as_a_fixed_non_root_user(self) -> None:
        keywords = [k for k, _ in self.final]
        [user] = [a for k, a in self.final if k == "USER"]
        uid, _, gid = user.partition(":")
        self.assertTrue(uid.isdigit() and int(uid) > 0, "numeric, so runAsNonRoot can check it")
        self.assertTrue(gid.isdigit() and int(gid) > 0)
        # Nothing runs as root after it, and the entrypoint comes after it.
        self.assertNotIn("RUN", keywords[keywords.index("USER") :])
        self.assertLess(keywords.index("USER"), keywords.index("ENTRYPOINT"))
        runs = " ".join(a for k, a in self.final if k == "RUN")
        self.assertIn(f"--uid {uid}", runs)

    def test_entrypoint_stop_signal_port(self) -> None:
        self.assertEqual(exec_form(self.steps, "ENTRYPOINT"), ENTRYPOINT)
        self.assertEqual(exec_form(self.steps, "CMD"), [])
        self.assertEqual([a for k, a in self.final if k == "STOPSIGNAL"], ["SIGTERM"])
        self.assertEqual([a for k, a in self.final if k == "EXPOSE"], ["3000"])

    def test_healthcheck_on_health_without_curl(self) -> None:
        flags, command = healthcheck(self.steps)
        self.assertEqual(command[:2], ["python3", "-c"])
        self.assertIn("/health", command[2])
        self.assertNotIn("curl", command[2])
        self.assertIn("start-period", flags)
        # Failing while draining needs the check to treat 503 as a failure:
        # urllib raises HTTPError for it.
        self.assertIn("urllib.request.urlopen", command[2])

    def test_environment_is_mockoai_settings(self) -> None:
        env = image_env(self.steps)
        self.assertEqual(env["MOCKOAI_LISTEN"], "tcp:3000")
        self.assertEqual(env["MOCKOAI_WORKERS"], "1")
        self.assertTrue(env["PATH"].startswith("/opt/mockoai/bin:"))
        mockoai = {k: v for k, v in env.items() if k.startswith("MOCKOAI_")}
        # Unknown MOCKOAI_* names and bad values raise here, as they would at start.
        load_settings({}, environ=mockoai)

    def test_context_holds_what_pip_install_needs(self) -> None:
        patterns = dockerignore()
        tracked = subprocess.run(
            ["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
        needed = [
            p
            for p in tracked
            if p in ("pyproject.toml", "setup.cfg", "README.md")
            or p == "twisted/plugins/mockoai_plugin.py"
            or (p.startswith(("mockoai/", "etc/profiles/")))
        ]
        self.assertIn("mockoai/ops/tap.py", needed)
        self.assertEqual([p for p in needed if ignored(patterns, p)], [])
        for path in (
            ".git/HEAD",
            ".venv/bin/python",
            "tests/test_e2e.py",
            "bench/run.py",
            "mockoai/__pycache__/x.pyc",
            "mockoai/ops/__pycache__/x.pyc",
            "twisted/plugins/dropin.cache",
            "mockoai.egg-info/PKG-INFO",
        ):
            self.assertTrue(ignored(patterns, path), path)

    def test_compose_runs_mockoai_and_prometheus_scraping_it(self) -> None:
        compose_dir = os.path.join(REPO_ROOT, "etc", "compose")
        with open(os.path.join(compose_dir, "compose.yaml")) as f:
            compose = yaml.safe_load(f)
        with open(os.path.join(compose_dir, "prometheus.yml")) as f:
            prometheus = yaml.safe_load(f)
        mockoai = compose["services"]["mockoai"]
        build = os.path.normpath(os.path.join(compose_dir, mockoai["build"]["context"]))
        self.assertEqual(build, os.path.normpath(REPO_ROOT))
        self.assertEqual(mockoai["build"]["dockerfile"], "Dockerfile")
        # SIGKILL comes after stop_grace_period: longer than the default drain.
        self.assertGreater(int(mockoai["stop_grace_period"].rstrip("s")), 10)
        load_settings({}, environ=mockoai["environment"])
        volume = compose["services"]["prometheus"]["volumes"][0]
        self.assertTrue(volume.startswith("./prometheus.yml:/etc/prometheus/prometheus.yml"))
        [job] = prometheus["scrape_configs"]
        self.assertEqual(job["metrics_path"], "/metrics")
        self.assertEqual(job["static_configs"][0]["targets"], ["mockoai:3000"])
        try:
            from check_jsonschema.builtin_schemas import get_builtin_schema
        except ImportError:
            raise SkipTest(
                "check-jsonschema (compose-spec schema; CPython only) is not installed"
            ) from None
        import jsonschema

        validator = jsonschema.Draft202012Validator(get_builtin_schema("vendor.compose-spec"))
        self.assertEqual([e.message for e in validator.iter_errors(compose)], [])
        compose["services"]["mockoai"]["stop_grace_periodd"] = "20s"
        self.assertFalse(validator.is_valid(compose), "a misspelt key fails")


class HostEntrypointTests(TestCase):
    """The image's ENTRYPOINT + CMD and HEALTHCHECK, run here with its ENV."""

    def setUp(self) -> None:
        with open(DOCKERFILE) as f:
            self.steps = instructions(f.read())
        self.port = free_port()

    def environ(self, **extra: str) -> dict[str, str]:
        """This host's environment with the image's on top (its PATH aside), the port free."""
        image = {k: v for k, v in image_env(self.steps).items() if k != "PATH"}
        image["MOCKOAI_LISTEN"] = f"tcp:{self.port}:interface=127.0.0.1"
        return clean_environ(**{**image, **RUN_ENV, **extra})

    def start(self, **extra: str) -> subprocess.Popen[bytes]:
        command = exec_form(self.steps, "ENTRYPOINT") + exec_form(self.steps, "CMD")
        self.assertEqual(command[0], "twistd")
        out = tempfile.TemporaryFile()  # noqa: SIM115 (read after the process ends)
        self.addCleanup(out.close)
        process = subprocess.Popen(
            [*TWISTD, *command[1:]],
            env=self.environ(**extra),
            cwd=tempfile.gettempdir(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        self.output = out

        def kill() -> None:
            if process.poll() is None:
                process.kill()
                process.wait(10)

        self.addCleanup(kill)
        wait_for_port(self.port, 30, process)
        return process

    def log(self) -> str:
        self.output.seek(0)
        return self.output.read().decode("utf-8", "replace")

    def health(self, **extra: str) -> int:
        """The HEALTHCHECK's exit status (its python3 is this interpreter)."""
        _, command = healthcheck(self.steps)
        return subprocess.run(
            [sys.executable, *command[1:]], env=self.environ(**extra), timeout=30, check=False
        ).returncode

    def test_serves_checks_health_and_drains(self) -> None:
        process = self.start()
        self.assertEqual(self.health(), 0)
        drain = DrainCheck(self, self.port)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        drain.check()
        self.assertEqual(process.wait(15), 0, self.log())
        self.assertLess(time.monotonic() - started, 10, "within the grace period")
        self.assertIn("draining 2 in-flight request(s)", self.log())
        self.assertNotEqual(self.health(), 0, "nothing answers: unhealthy")

    def test_workers_from_the_environment(self) -> None:
        process = self.start(MOCKOAI_WORKERS="2")
        deadline = time.monotonic() + 30
        while self.log().count("ready in") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertIn("supervising 2 workers", self.log())
        self.assertEqual(self.log().count("ready in"), 2)
        self.assertEqual(self.health(), 0)
        process.send_signal(signal.SIGTERM)
        self.assertEqual(process.wait(30), 0, self.log())


class ImageTests(TestCase):
    """A built image in a real container (podman); ``.ci/container`` builds and runs it."""

    def setUp(self) -> None:
        self.image = os.environ.get("CONTAINER_TEST_IMAGE", "")
        if not self.image:
            raise SkipTest("no image to run: CONTAINER_TEST_IMAGE is unset (see .ci/container)")
        if shutil.which("podman") is None:
            raise SkipTest("podman is not installed")
        #: What this machine's podman needs (runtime, ulimits), from .ci/container.
        self.run_args = shlex.split(os.environ.get("CONTAINER_RUN_ARGS", ""))
        self.name = f"mockoai-test-{os.getpid()}-{free_port()}"
        self.port = free_port()

    def podman(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        result = subprocess.run(
            ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: {result.stderr}")
        return result.stdout

    def run_container(self, *args: str, env: dict[str, str] | None = None) -> None:
        environment = {
            "MOCKOAI_LISTEN": f"tcp:{self.port}:interface=127.0.0.1",
            **RUN_ENV,
            **(env or {}),
        }
        options = [f"--env={k}={v}" for k, v in environment.items()]
        self.addCleanup(self.podman, "rm", "--force", self.name, check=False)
        # The network is the host's (this test's loopback port); the root
        # filesystem read-only with a /tmp, as etc/k8s runs it.
        self.podman(
            "run", "--detach", f"--name={self.name}", "--network=host", "--read-only",
            "--tmpfs=/tmp", *self.run_args, *options, self.image, *args,
        )  # fmt: skip
        try:
            wait_for_port(self.port, 60)
        except AssertionError:
            raise AssertionError(self.podman("logs", self.name, check=False)) from None

    def inspect(self, template: str) -> str:
        return self.podman("inspect", "--format", template, self.name).strip()

    def test_image_configuration(self) -> None:
        config = json.loads(
            self.podman("image", "inspect", "--format", "{{json .Config}}", self.image)
        )
        self.assertEqual(config["User"], "10001:10001")
        self.assertEqual(config["Entrypoint"], ENTRYPOINT)
        self.assertEqual(config["StopSignal"], "SIGTERM")
        self.assertIn("3000/tcp", config["ExposedPorts"])
        health = json.loads(
            self.podman("image", "inspect", "--format", "{{json .HealthCheck}}", self.image)
        )
        self.assertEqual(health["Test"][:3], ["CMD", "python3", "-c"])

    def test_serves_as_non_root_checks_health_and_drains(self) -> None:
        self.run_container()
        [user] = self.podman("top", self.name, "user").splitlines()[1:]
        self.assertIn(user.strip(), ("mockoai", "10001"))
        self.podman("healthcheck", "run", self.name)  # exits 0: healthy
        drain = DrainCheck(self, self.port)
        self.podman("stop", "--time=30", self.name)  # the image's STOPSIGNAL, SIGTERM
        drain.check()
        self.assertEqual(self.inspect("{{.State.ExitCode}}"), "0")
        self.assertIn("draining 2 in-flight request(s)", self.podman("logs", self.name))

    def test_workers_and_a_profile_of_the_image(self) -> None:
        # (With two workers the kernel spreads connections over them, so the
        # pipelined-/health drain check above needs the one worker.)
        self.run_container(
            "--config", "/etc/mockoai/profiles/throughput.toml", env={"MOCKOAI_WORKERS": "2"}
        )
        deadline = time.monotonic() + 60
        while self.podman("logs", self.name).count("ready in") < 2:
            self.assertLess(time.monotonic(), deadline, "two workers ready")
            time.sleep(0.2)
        users = self.podman("top", self.name, "user").splitlines()[1:]
        self.assertEqual(len(users), 3, users)  # the supervisor and two workers
        self.assertTrue(all(u.strip() in ("mockoai", "10001") for u in users), users)
        log = self.podman("logs", self.name)
        self.assertIn("supervising 2 workers", log)
        self.assertIn("any_model=True", log)  # from the profile
        self.podman("stop", "--time=30", self.name)
        self.assertEqual(self.inspect("{{.State.ExitCode}}"), "0")
