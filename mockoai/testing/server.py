# -*- test-case-name: tests.test_testing -*-
"""
A real mockoai server for a test: ``twistd -n mockoai`` as a child process
on a free loopback port, its settings given as Python values.

What the blocking L{MockoaiServer} (pytest) and the Deferred-based
L{mockoai.testing.deferred.ReactorServer} (trial) share lives here: the
command line (L{server_arguments}), the child's environment, the URLs, the
OpenAI SDK client factories, and reading the server's log for errors
(L{logged_errors}).  Only the standard library is imported at module
level: the pytest plugin imports this module in every run.
"""

from __future__ import annotations

import atexit
import difflib
import http.client
import json as jsonlib
import os
import re
import signal
import site
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import openai

    from mockoai.ops.config import Field

#: How a child runs twistd: with this interpreter, whatever ``twistd`` is on PATH.
TWISTD = (sys.executable, "-c", "from twisted.scripts.twistd import run; run()")

#: Marker and fixture names that are not the settings' own.
ALIASES = {"profile": "config"}

#: The line the server logs once it serves (L{mockoai.ops.service}); each
#: ``--workers`` worker logs its own.
READY = "ready in "

#: A log line that reports an error: a Twisted log event at level error or
#: critical (``[namespace#critical]``, which unhandled failures are), the
#: legacy ``Unhandled Error``, or a bare Python traceback on stderr.
_ERROR = re.compile(
    r"#(?:error|critical)\]|\[-\] Unhandled Error|^Traceback \(most recent call last\):"
)


class ServerError(AssertionError):
    """The server did not start, did not stop cleanly, or logged an error."""


# --------------------------------------------------------------------------
# Settings -> command line


def _in_ms(field: Field) -> bool:
    """Whether the command line takes ``field`` in milliseconds (its metavar says)."""
    return field.metavar.startswith("MS")


def _field(name: str, fields: Mapping[str, Field]) -> Field:
    """
    The setting ``name`` means: its own name (the TOML key), an alias, or
    ``NAME_ms`` for a setting the command line takes in milliseconds.
    """
    key = ALIASES.get(name, name)
    field = fields.get(key)
    if field is None and key.endswith("_ms"):
        stem = fields.get(key[: -len("_ms")])
        if stem is not None and _in_ms(stem):
            field = stem
    if field is None:
        known = [*fields, *ALIASES, *(n + "_ms" for n, f in fields.items() if _in_ms(f))]
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown mockoai setting {name!r}{hint}")
    return field


def _text(name: str, value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (str, int, float)):
        return str(value)
    if isinstance(value, os.PathLike):
        return os.fsdecode(os.fspath(value))
    raise TypeError(
        f"mockoai setting {name!r}: {value!r} has no command-line form; "
        "put it in a TOML profile (profile=...)"
    )


def server_arguments(settings: Mapping[str, object]) -> list[str]:
    """
    The ``twistd mockoai`` options for ``settings``, generically: each name
    is a setting's TOML key (``itl``, ``models``, ``api_keys``), ``profile``
    for ``config``, or ``NAME_ms`` for one taken in ms (``itl_ms=20`` is
    ``--itl 20``).  ``True`` gives a flag (``False`` leaves it out), a list
    repeats a repeatable option (``--model a --model b``) or joins the
    values with commas, ``None`` leaves the setting at its default.

    Names are checked against the settings registry, so a typo fails here
    with a suggestion rather than as twistd's usage text.
    """
    from mockoai.ops.config import FIELDS_BY_NAME

    args: list[str] = []
    for name, value in settings.items():
        field = _field(name, FIELDS_BY_NAME)
        if value is None:
            continue
        option = "--" + field.option
        if field.flag:
            if not isinstance(value, bool):
                raise TypeError(f"mockoai setting {name!r} is a flag: give True or False")
            if value:
                args.append(option)
        elif isinstance(value, (list, tuple)):
            values = [_text(name, v) for v in value]
            if field.repeatable:
                for item in values:
                    args += [option, item]
            else:
                args += [option, ",".join(values)]
        else:
            args += [option, _text(name, value)]
    return args


# --------------------------------------------------------------------------
# The log


def logged_errors(log: str) -> list[str]:
    """
    Each error in a server's log, with its traceback: an error line and the
    lines that continue it (twistd indents them with a tab; a bare
    traceback ends at its first unindented line).  Adjacent errors (an
    unhandled failure's message and its traceback) make one entry.
    """
    lines = log.splitlines()
    errors: list[str] = []
    i = 0
    adjacent = False
    while i < len(lines):
        line = lines[i]
        i += 1
        if not _ERROR.search(line):
            adjacent = False
            continue
        block = [line]
        bare = line.startswith("Traceback")
        while i < len(lines) and lines[i][:1] in ("\t", " "):
            block.append(lines[i])
            i += 1
        if bare and i < len(lines):
            block.append(lines[i])  # the exception itself
            i += 1
        if adjacent:
            errors[-1] += "\n" + "\n".join(block)
        else:
            errors.append("\n".join(block))
        adjacent = True
    return errors


def check_exit(code: int | None, log: str, port: int) -> None:
    """Raise L{ServerError} unless the server exited 0 without logging an error."""
    errors = logged_errors(log)
    if code == 0 and not errors:
        return
    if errors:
        head = f"the mockoai server on port {port} logged {len(errors)} error(s):\n"
        head += "\n".join(errors)
    else:
        head = f"the mockoai server on port {port} exited with status {code}"
    raise ServerError(f"{head}\n--- server log ---\n{log}")


# --------------------------------------------------------------------------
# Replies of the plain HTTP helpers


@dataclass(frozen=True)
class Reply:
    """One HTTP answer, read in full."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The last value of header ``name`` (case-insensitive), or None."""
        lowered = name.lower()
        values = [v for k, v in self.headers if k.lower() == lowered]
        return values[-1] if values else None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return jsonlib.loads(self.body)

    def events(self) -> list[str]:
        """The ``data:`` payloads of a server-sent event stream, ``[DONE]`` included."""
        return [
            line[len("data:") :].strip()
            for line in self.text.splitlines()
            if line.startswith("data:")
        ]


def _body(json: object) -> tuple[bytes | None, dict[str, str]]:
    if json is None:
        return None, {}
    return jsonlib.dumps(json).encode(), {"Content-Type": "application/json"}


#: The admin API's calls (docs/faults.md): name -> (method, path).
ADMIN_CALLS = {
    "rules": ("GET", "/_mockoai/rules"),
    "set_rules": ("PUT", "/_mockoai/rules"),
    "journal": ("GET", "/_mockoai/journal"),
    "verdict": ("GET", "/_mockoai/verdict"),
    "reset": ("POST", "/_mockoai/reset"),
    "set_model": ("PATCH", "/_mockoai/models/"),
}


def admin_answer(reply: Reply, method: str, path: str) -> Any:
    """The JSON of an admin API answer, or L{ServerError} saying why there is none."""
    if reply.status != 200:
        raise ServerError(f"{method} {path}: {reply.status} {reply.body[:500]!r}")
    return reply.json()


# --------------------------------------------------------------------------
# What both kinds of server share


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _plugin_root() -> str | None:
    """
    The directory holding ``twisted/plugins/mockoai_plugin.py`` beside this
    ``mockoai`` when a child would not find it on its own: a checkout or an
    editable install (a plain install puts it in site-packages).
    """
    import mockoai

    root = os.path.dirname(os.path.dirname(os.path.abspath(mockoai.__file__)))
    if not os.path.exists(os.path.join(root, "twisted", "plugins", "mockoai_plugin.py")):
        return None
    installed = [*site.getsitepackages(), site.getusersitepackages()]
    if any(os.path.abspath(p) == root for p in installed):
        return None
    return root


def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """
    This process's environment for the server, without ``MOCKOAI_*`` (a
    test's server is what its settings say, not what the shell exports),
    with the plugin on PYTHONPATH when needed, unbuffered, plus ``extra``.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOCKOAI_")}
    root = _plugin_root()
    if root is not None:
        path = env.get("PYTHONPATH", "")
        if root not in path.split(os.pathsep):
            env["PYTHONPATH"] = root + (os.pathsep + path if path else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class ServerBase:
    """The URLs, the command line and the SDK clients of one server."""

    def __init__(self, env: Mapping[str, str] | None, settings: Mapping[str, object]) -> None:
        self.settings = dict(settings)
        #: The mockoai options the settings make (checked before anything starts).
        self.arguments = server_arguments(self.settings)
        self.env = dict(env or {})
        self.port = 0
        self._sdk_clients: list[Any] = []

    def _admin_request(
        self, call: str, document: object = None, suffix: str = ""
    ) -> tuple[str, str, bytes | None, dict[str, str]]:
        """The method, path, body and headers of an admin API call (with the admin key)."""
        method, path = ADMIN_CALLS[call]
        body, headers = _body(document)
        key = self.settings.get("admin_key")
        if key:
            headers["x-mockoai-admin-key"] = str(key)
        return method, path + suffix, body, headers

    @property
    def processes(self) -> int:
        """How many serving processes log that they are ready (``workers``)."""
        workers = self.settings.get("workers")
        if workers == "auto":
            from mockoai.ops.config import cores

            return cores()  # the child inherits this process's CPU affinity
        try:
            return max(1, int(str(workers)))
        except ValueError:
            return 1

    @property
    def url(self) -> str:
        """The server's root: ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI SDK's ``base_url``: the ``/v1`` root."""
        return self.url + "/v1"

    def command(self, port: int) -> list[str]:
        listen = f"tcp:{port}:interface=127.0.0.1"
        return [*TWISTD, "-n", "--pidfile=", "mockoai", "--listen", listen, *self.arguments]

    def _client_options(self, options: dict[str, Any]) -> dict[str, Any]:
        options.setdefault("base_url", self.base_url)
        options.setdefault("api_key", "mockoai")
        # The SDK retries 429s and 5xx twice by default: a test should see them.
        options.setdefault("max_retries", 0)
        return options

    def openai_client(self, **options: Any) -> openai.OpenAI:
        """
        An ``openai.OpenAI`` client of this server (api_key ``"mockoai"``,
        no retries, unless ``options`` say otherwise); closed by ``stop()``.
        """
        import openai

        client = openai.OpenAI(**self._client_options(options))
        self._sdk_clients.append(client)
        return client

    def async_openai_client(self, **options: Any) -> openai.AsyncOpenAI:
        """
        An ``openai.AsyncOpenAI`` client of this server, the same way.  Close
        it in its event loop (``async with`` or ``await client.close()``).
        """
        import openai

        return openai.AsyncOpenAI(**self._client_options(options))

    def _close_clients(self) -> None:
        for client in self._sdk_clients:
            client.close()
        del self._sdk_clients[:]


#: Servers still running, killed if the test process exits without stopping them.
_RUNNING: weakref.WeakSet[MockoaiServer] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    for server in list(_RUNNING):
        server.kill()


def _wait_ready(
    process: subprocess.Popen[bytes], read: Any, timeout: float, processes: int
) -> tuple[bool, str]:
    """Poll the log until every serving process is ready, or one exited: (ready, log)."""
    deadline = time.monotonic() + timeout
    while True:
        log: str = read()
        if log.count(READY) >= processes:
            return True, log
        if process.poll() is not None or time.monotonic() > deadline:
            return False, read()
        time.sleep(0.01)


class MockoaiServer(ServerBase):
    """
    ``twistd -n mockoai`` on a free loopback port, for blocking tests
    (pytest): ``start()`` returns once the server logged that it is ready,
    ``stop()`` sends SIGTERM, waits for the drain and the exit, and raises
    L{ServerError} if the exit status is not 0 or the log holds an error.
    Also a context manager.

    ``settings`` (a mapping, and keywords) are mockoai settings as
    L{server_arguments} maps them; ``env`` adds to the child's environment
    (MOCKOAI_* variables are not inherited: pass them here).

    The admin API (docs/faults.md): L{set_rules}, L{rules}, L{journal},
    L{verdict}, L{reset}, L{set_model}.
    """

    def __init__(
        self,
        settings: Mapping[str, object] | None = None,
        /,
        *,
        env: Mapping[str, str] | None = None,
        start_timeout: float = 60.0,
        **more_settings: object,
    ) -> None:
        super().__init__(env, {**(settings or {}), **more_settings})
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._log_path = ""
        self._final_log: str | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> MockoaiServer:
        """Start and wait until it serves (a few tries if the port was taken meanwhile)."""
        if self.process is not None:
            raise RuntimeError("this server was started already")
        self._dir = tempfile.TemporaryDirectory(prefix="mockoai-test-")
        self._log_path = os.path.join(self._dir.name, "server.log")
        env = child_environment(self.env)
        for attempt in range(3):
            self.port = free_port()
            with open(self._log_path, "wb") as out:
                self.process = subprocess.Popen(
                    self.command(self.port),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            _RUNNING.add(self)
            ready, log = _wait_ready(
                self.process, self._read_log, self.start_timeout, self.processes
            )
            if ready:
                return self
            exited = self.process.poll() is not None
            self.kill()
            if exited and "Address already in use" in log and attempt < 2:
                continue
            self._finish()
            if exited:
                why = f"exited with status {self.returncode} before it was ready"
            else:
                why = f"was not ready within {self.start_timeout} s"
            raise ServerError(f"the mockoai server {why}\n--- server log ---\n{log}")
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self, timeout: float = 30.0) -> str:
        """
        SIGTERM (the server drains in-flight requests for its grace period),
        wait up to ``timeout`` s for the exit, and return the server's log;
        raise L{ServerError} if it did not exit 0 or logged an error.
        """
        process = self.process
        if process is None:
            return ""
        self._close_clients()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            self.returncode = process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            log = self._finish()
            raise ServerError(
                f"the mockoai server did not exit within {timeout} s of SIGTERM"
                f"\n--- server log ---\n{log}"
            ) from None
        log = self._finish()
        check_exit(self.returncode, log, self.port)
        return log

    def kill(self) -> None:
        """SIGKILL, for a server that must go now (no drain, no checks)."""
        process = self.process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(10)
        if process is not None:
            self.returncode = process.returncode
        _RUNNING.discard(self)

    def _finish(self) -> str:
        """Keep the final log in memory and remove the temporary directory."""
        if self._final_log is None:
            self._final_log = self._read_log()
            _RUNNING.discard(self)
            if self._dir is not None:
                self._dir.cleanup()
        return self._final_log

    def __enter__(self) -> MockoaiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the log -----------------------------------------------------------

    def _read_log(self) -> str:
        if self._final_log is not None:
            return self._final_log
        try:
            with open(self._log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    @property
    def log(self) -> str:
        """What the server has logged so far (stdout and stderr)."""
        return self._read_log()

    def errors(self) -> list[str]:
        """The errors the server has logged so far (see L{logged_errors})."""
        return logged_errors(self.log)

    # -- plain HTTP --------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 60.0,
    ) -> Reply:
        """One request on a fresh connection; the whole answer (a stream too)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, "/" + path.lstrip("/"), body, dict(headers or {}))
            answer = connection.getresponse()
            return Reply(answer.status, tuple(answer.getheaders()), answer.read())
        finally:
            connection.close()

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> Reply:
        """``GET path`` (from the server's root: ``/health``, ``/v1/models``)."""
        return self.request("GET", path, headers=headers)

    def post(
        self, path: str, json: object = None, headers: Mapping[str, str] | None = None
    ) -> Reply:
        """``POST path`` with ``json`` as the body."""
        body, content = _body(json)
        return self.request("POST", path, body, {**content, **(headers or {})})

    # -- the admin API (docs/faults.md) --------------------------------------

    def _admin(self, call: str, document: object = None, suffix: str = "") -> Any:
        method, path, body, headers = self._admin_request(call, document, suffix)
        return admin_answer(self.request(method, path, body, headers), method, path)

    def set_rules(self, *rules: Mapping[str, object], seed: int = 0) -> Any:
        """Put ``rules`` in force (in every worker); their times count from now."""
        return self._admin("set_rules", {"seed": seed, "rules": list(rules)})

    def rules(self) -> Any:
        """The rules in force, each with how often it matched and applied."""
        return self._admin("rules")

    def journal(self, limit: int = 0) -> list[Any]:
        """The last requests (every worker's), oldest first."""
        answer = self._admin("journal", suffix=f"?limit={limit}" if limit else "")
        requests: list[Any] = answer["requests"]
        return requests

    def verdict(self) -> Any:
        """Each client's verdict (``["clients"][client]["verdict"]`` is good or bad)."""
        return self._admin("verdict")

    def reset(self) -> Any:
        """Counters, the journal, rate-limit buckets and rule counts back to zero."""
        return self._admin("reset")

    def set_model(self, model: str, **settings: object) -> Any:
        """Change some of ``model``'s per-model settings now (``itl=20``, ``max_running=4``)."""
        return self._admin("set_model", settings, suffix=model)


__all__ = [
    "MockoaiServer",
    "Reply",
    "ServerBase",
    "ServerError",
    "check_exit",
    "child_environment",
    "free_port",
    "logged_errors",
    "server_arguments",
]
