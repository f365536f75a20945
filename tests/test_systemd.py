"""
The service files in ``etc/``, run for real.

- ``etc/systemd/``: ``systemd-analyze verify`` on copies whose ExecStart names
  this environment's twistd instead of ``/opt/mockoai/bin/twistd`` (verify
  checks that the binary exists; that rewrite is the only change), and
  their mockoai options parsed by the real option parser.
- Socket activation: ``systemd-socket-activate`` (systemd's own tool, which
  sets LISTEN_FDS, LISTEN_PID and, given ``--fdname``, LISTEN_FDNAMES as
  systemd does) on the address family of ``mockoai.socket``'s ListenStream,
  running ``mockoai-activated.service``'s ExecStart arguments (the profile
  path rewritten to a temporary one): an answer, then SIGTERM drains a
  stream in flight and the exit status is 0.
- ``etc/init.d/mockoai``: start, status, stop through start-stop-daemon, with
  a defaults file (``DEFAULTS=``) pointing the pid file, log and profile at a
  temporary directory and TWISTD at this environment's twistd.

Each test skips, with the reason, where its tool is missing (Debian's
``systemd`` and ``dpkg`` packages; ``.ci/run`` installs them).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from unittest import SkipTest

from twisted.trial.unittest import SynchronousTestCase

from mockoai.ops.tap import Options
from tests.support import (
    REPO_ROOT,
    build_request,
    clean_environ,
    free_port,
    parse_responses,
    sse_json,
    wait_for_port,
)

SYSTEMD = os.path.join(REPO_ROOT, "etc", "systemd")
INIT_SCRIPT = os.path.join(REPO_ROOT, "etc", "init.d", "mockoai")
#: Where the units expect twistd (a virtual environment in /opt/mockoai).
UNIT_TWISTD = "/opt/mockoai/bin/twistd"
UNIT_PROFILE = "/etc/mockoai/profile.toml"
UNITS = ("mockoai.service", "mockoai-activated.service", "mockoai.socket")
RUN_TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def read_unit(name: str) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit file (all sections), keys repeatable."""
    entries: dict[str, list[str]] = {}
    with open(os.path.join(SYSTEMD, name)) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith(("#", ";", "[")):
                key, _, value = line.partition("=")
                entries.setdefault(key.strip(), []).append(value.strip())
    return entries


def exec_start(name: str) -> list[str]:
    [command] = read_unit(name)["ExecStart"]
    return shlex.split(command)


def venv_twistd() -> str | None:
    """The ``twistd`` script installed beside this interpreter, if any."""
    path = os.path.join(os.path.dirname(sys.executable), "twistd")
    return path if os.access(path, os.X_OK) else None


def require(tool: str, package: str) -> str:
    """The path of ``tool``, or skip the test that needs it."""
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if path is None:
        raise SkipTest(f"{tool} is missing (Debian package {package})")
    return path


class UnitFileTests(SynchronousTestCase):
    def test_units_pass_systemd_analyze_verify(self) -> None:
        analyze = require("systemd-analyze", "systemd")
        twistd = venv_twistd()
        directory = tempfile.mkdtemp(prefix="mockoai-units-")
        self.addCleanup(shutil.rmtree, directory)
        if twistd is None:  # verify only checks that ExecStart's binary is executable
            twistd = os.path.join(directory, "twistd")
            with open(twistd, "w") as f:
                f.write(f'#!/bin/sh\nexec {shlex.join(RUN_TWISTD)} "$@"\n')
            os.chmod(twistd, 0o755)
        for name in UNITS:
            with open(os.path.join(SYSTEMD, name)) as f:
                text = f.read()
            if name.endswith(".service"):
                self.assertIn(f"ExecStart={UNIT_TWISTD} ", text)
                text = text.replace(f"ExecStart={UNIT_TWISTD} ", f"ExecStart={twistd} ")
            with open(os.path.join(directory, name), "w") as f:
                f.write(text)
        result = subprocess.run(
            [analyze, "verify", *UNITS],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 0, output)
        # Warnings (an unknown key, a bad value) leave the status 0: any line
        # about our units fails the test.
        ours = [line for line in output.splitlines() if "mockoai" in line]
        self.assertEqual(ours, [])

        # And verify does check: the units as shipped name a twistd this machine lacks.
        if not os.path.exists(UNIT_TWISTD):
            shipped = subprocess.run(
                [analyze, "verify", os.path.join(SYSTEMD, "mockoai.service")],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            self.assertNotEqual(shipped.returncode, 0)
            self.assertIn(f"Command {UNIT_TWISTD} is not executable", shipped.stderr)

    def test_exec_start_options_parse(self) -> None:
        # mockoai.service's command line and environment, through the real option
        # parser (the activated unit's runs for real in SocketActivationTests: its
        # systemd: endpoint needs the sockets to parse).
        for name in ("mockoai.service", "mockoai-activated.service"):
            argv = exec_start(name)
            self.assertEqual(argv[0], UNIT_TWISTD)
            self.assertEqual(argv[1:4], ["--nodaemon", "--pidfile=", "mockoai"])
        profile = os.path.join(REPO_ROOT, "etc", "profiles", "latency.toml")
        args = [profile if a == UNIT_PROFILE else a for a in exec_start("mockoai.service")[4:]]
        environment = read_unit("mockoai.service").get("Environment", [])
        self.patch(os, "environ", dict(e.split("=", 1) for e in environment))
        options = Options()
        options.parseOptions(args)
        self.assertEqual(options.settings.server.listen, ("tcp:3000",))
        self.assertEqual(options.settings.config, profile)

    def test_socket_family_matches_the_endpoint(self) -> None:
        # An INET endpoint adopting an IPv6 socket (ListenStream=3000 on a dual-stack
        # host) reads every peer address as garbage.
        [stream] = read_unit("mockoai.socket")["ListenStream"]
        listen = [a for a in exec_start("mockoai-activated.service") if a.startswith("systemd:")]
        self.assertEqual(listen, ["systemd:domain=INET:index=0"])
        host, _, port = stream.rpartition(":")
        socket.inet_pton(socket.AF_INET, host)  # an IPv4 address, not [::] or a bare port
        self.assertEqual(port, "3000")


def loopback_listen(stream: str, port: int) -> tuple[str, str]:
    """
    ``systemd-socket-activate -l`` for a unit's ListenStream on ``port``, on
    loopback of the same family: (the -l address, the host to connect to).
    A bare port is systemd's (and the tool's) dual-stack IPv6 socket.
    """
    host, _, _ = stream.rpartition(":")
    if not host:
        return str(port), "127.0.0.1"
    if host.startswith("["):
        return f"[::1]:{port}", "::1"
    return f"127.0.0.1:{port}", "127.0.0.1"


def stream_body(max_tokens: int) -> bytes:
    return json.dumps(
        {
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "Hello"}],
            "max_tokens": max_tokens,
            "ignore_eos": True,
            "stream": True,
        }
    ).encode()


class SocketActivationTests(SynchronousTestCase):
    def test_activated_answers_and_drains_on_sigterm(self) -> None:
        activate = require("systemd-socket-activate", "systemd")
        directory = tempfile.mkdtemp(prefix="mockoai-activated-")
        self.addCleanup(shutil.rmtree, directory)
        requests = os.path.join(directory, "requests.jsonl")
        profile = os.path.join(directory, "profile.toml")
        with open(profile, "w") as f:
            f.write(f"articles = 64\nitl = 20\nrequest_log = {json.dumps(requests)}\n")
        argv = exec_start("mockoai-activated.service")
        args = [profile if a == UNIT_PROFILE else a for a in argv[1:]]
        [stream] = read_unit("mockoai.socket")["ListenStream"]
        port = free_port()
        address, host = loopback_listen(stream, port)
        command = [
            activate,
            "-l",
            address,
            "--fdname=mockoai.socket",  # systemd's default FileDescriptorName
            "-E",
            f"PYTHONPATH={REPO_ROOT}",
            "-E",
            "PYTHONUNBUFFERED=1",
            *RUN_TWISTD,
            *args,
        ]
        log_path = os.path.join(directory, "log")
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=clean_environ()
            )

        def read_log() -> str:
            with open(log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")

        def cleanup() -> None:
            if process.poll() is None:
                process.kill()
                process.wait(10)

        self.addCleanup(cleanup)
        # systemd-socket-activate listens at once and execs twistd (same pid)
        # on the first connection, which waits in the backlog meanwhile.
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((host, port), 1).close()
                break
            except OSError:
                self.assertLess(time.monotonic(), deadline, read_log())
                time.sleep(0.02)

        connection = http.client.HTTPConnection(host, port, timeout=30)
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}
        connection.request(
            "POST",
            "/v1/chat/completions",
            json.dumps({**body, "max_tokens": 3}),
            {"Content-Type": "application/json"},
        )
        answer = connection.getresponse()
        reply = json.loads(answer.read())
        connection.close()
        self.assertEqual(answer.status, 200, reply)
        self.assertEqual(reply["object"], "chat.completion")
        self.assertIn("systemd:domain=INET:index=0", read_log())

        # A stream in flight (30 tokens, 20 ms apart) when SIGTERM arrives.
        with socket.create_connection((host, port), timeout=15) as sock:
            sock.sendall(build_request("POST", "/v1/chat/completions", stream_body(30)))
            data = sock.recv(65536)
            while b"data: " not in data:
                more = sock.recv(65536)
                self.assertTrue(more, "closed before the first event")
                data += more
            process.send_signal(signal.SIGTERM)
            while True:
                more = sock.recv(65536)
                if not more:
                    break
                data += more
        [response] = parse_responses(data, closed=True)
        self.assertTrue(response.complete)
        chunks = sse_json(response.body)  # ends with [DONE]
        self.assertEqual(chunks[-1]["choices"][0]["finish_reason"], "length")
        self.assertEqual(process.wait(10), 0, read_log())
        log = read_log()
        self.assertIn("draining 1 in-flight request(s)", log)
        self.assertIn("stopped", log)
        # The adopted socket's peers are read right: the request log's clients.
        with open(requests) as f:
            clients = {json.loads(line)["client"] for line in f}
        self.assertEqual(clients, {host})


class InitScriptTests(SynchronousTestCase):
    def sh(self, action: str) -> subprocess.CompletedProcess[str]:
        """``etc/init.d/mockoai ACTION`` as service(8) runs it: a near-empty environment."""
        return subprocess.run(
            ["/bin/sh", INIT_SCRIPT, action],
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEFAULTS": self.defaults},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def test_start_status_stop(self) -> None:
        require("start-stop-daemon", "dpkg")
        twistd = venv_twistd()
        if twistd is None:
            self.skipTest("no twistd script beside this interpreter")
        directory = tempfile.mkdtemp(prefix="mockoai-initd-")
        self.addCleanup(shutil.rmtree, directory)
        pidfile = os.path.join(directory, "mockoai.pid")
        logfile = os.path.join(directory, "mockoai.log")
        profile = os.path.join(directory, "profile.toml")
        port = free_port()
        with open(profile, "w") as f:
            f.write(f'articles = 64\nlisten = ["tcp:{port}:interface=127.0.0.1"]\n')
        self.defaults = os.path.join(directory, "defaults")
        with open(self.defaults, "w") as f:
            f.write(
                f"PIDFILE={shlex.quote(pidfile)}\nLOGFILE={shlex.quote(logfile)}\n"
                f"PROFILE={shlex.quote(profile)}\nTWISTD={shlex.quote(twistd)}\n"
                f"STOP_TIMEOUT=15\nexport PYTHONPATH={shlex.quote(REPO_ROOT)}\n"
            )

        def kill_leftover() -> None:
            if os.path.exists(pidfile):
                with open(pidfile) as f, contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(f.read()), signal.SIGKILL)

        self.addCleanup(kill_leftover)

        started = self.sh("start")
        self.assertEqual(started.returncode, 0, started.stdout + started.stderr)
        with open(pidfile) as f:
            pid = int(f.read())
        self.assertIn(f"mockoai started (pid {pid})", started.stdout)
        # twistd's parent returns once the daemon listens.
        wait_for_port(port, 5)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/health")
        self.assertEqual(json.loads(connection.getresponse().read()), {"status": "ok"})
        connection.close()

        status = self.sh("status")
        self.assertEqual(
            (status.returncode, status.stdout.strip()), (0, f"mockoai is running (pid {pid})")
        )
        again = self.sh("start")
        self.assertEqual(again.returncode, 0)
        self.assertIn("already running", again.stdout)

        stopped = self.sh("stop")
        self.assertEqual(stopped.returncode, 0, stopped.stdout + stopped.stderr)
        self.assertEqual(stopped.stdout.strip(), "mockoai stopped")
        self.assertFalse(os.path.exists(pidfile))
        with open(logfile) as f:
            log = f.read()
        self.assertIn("ready in", log)
        self.assertIn("stopped", log)  # the drain ran: SIGTERM, not SIGKILL
        status = self.sh("status")
        self.assertEqual((status.returncode, status.stdout.strip()), (3, "mockoai is not running"))

        # A pid file left by a process that died: status 1 (LSB), stop cleans it up.
        with open(pidfile, "w") as f:
            f.write(f"{pid}\n")
        status = self.sh("status")
        self.assertEqual(status.returncode, 1, status.stdout)
        stopped = self.sh("stop")
        self.assertEqual(stopped.returncode, 0)
        self.assertFalse(os.path.exists(pidfile))
