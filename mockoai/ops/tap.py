# -*- test-case-name: tests.test_tap -*-
"""
``twistd mockoai``: command-line options and the service maker.

The options are generated from L{mockoai.ops.config.FIELDS}, so the command
line, environment variables and profile files name every setting the same
way.  Daemonizing, pid files, log files, reactors and signal handling are
twistd's own (see ``twistd --help``); SIGTERM/SIGINT stop the service,
which drains in-flight requests first.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any

from twisted.python import usage

from mockoai.ops.config import FIELDS, ConfigError, Settings, load_settings
from mockoai.ops.service import MockoaiService, build
from mockoai.ops.workers import Supervisor, die_with_parent


class Options(usage.Options):
    synopsis = "[mockoai options]"
    longdesc = (
        "A mock OpenAI-compatible API server. Settings come from (lowest to highest "
        "precedence) defaults, a TOML profile (--config), MOCKOAI_* environment "
        "variables, and these options."
    )
    optFlags = [[f.option, None, f.help] for f in FIELDS if f.flag]
    optParameters = [
        *([f.option, None, None, f.help] for f in FIELDS if not (f.flag or f.repeatable)),
        ["worker-index", None, None, "(internal) Run as worker I of a --workers supervisor."],
        ["worker-dir", None, None, "(internal) Where a --workers supervisor's workers meet."],
        ["supervisor", None, None, "(internal) Process id of the --workers supervisor."],
    ]

    settings: Settings
    #: The options as given, so --workers can start workers with the same ones.
    arguments: list[str]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["model"] = []
        self["api-key"] = []
        self["cors-origin"] = []
        self.arguments = []

    def parseOptions(self, options: list[str] | None = None) -> None:
        self.arguments = list(sys.argv[1:] if options is None else options)
        super().parseOptions(options)

    def opt_listen(self, description: str) -> None:
        """Endpoint to listen on (repeatable), a Twisted endpoint string:
        tcp:3000:interface=127.0.0.1, unix:/run/mockoai.sock, ssl:8443:privateKey=key.pem,
        systemd:domain=INET:index=0. Default: tcp:3000.
        """
        self["listen"].append(description)

    def opt_model(self, model: str) -> None:
        """Model id to serve (repeatable); replaces the default list of OpenAI models."""
        self["model"].append(model)

    def opt_api_key(self, key: str) -> None:
        """API key the server accepts (repeatable); none = any or no key is accepted."""
        self["api-key"].append(key)

    def opt_cors_origin(self, origin: str) -> None:
        """Origin allowed to call the API from a browser (repeatable), or *; none = CORS off."""
        self["cors-origin"].append(origin)

    def postOptions(self) -> None:
        cli: dict[str, Any] = {
            f.name: (True if self[f.option] else None) if f.flag else self.get(f.option)
            for f in FIELDS
        }
        try:
            self.settings = load_settings(cli, os.environ)
        except ConfigError as e:
            # One line, not twistd's usage dump: the message names the option.
            raise SystemExit(f"mockoai: error: {e}") from None


def makeService(options: Options) -> MockoaiService | Supervisor:
    settings = options.settings
    worker = options["worker-index"]
    if settings.workers > 1 and worker is None:
        from twisted.internet import reactor

        argv = [
            "-c",
            "from twisted.scripts.twistd import run; run()",
            "--nodaemon",
            "--pidfile=",
            "mockoai",
            *options.arguments,
            "--workers",
            "1",
        ]
        # Each worker serves its numbers to the others on a unix socket here.
        run_dir = tempfile.mkdtemp(prefix="mockoai-workers-")
        argv += ["--worker-dir", run_dir]
        argv += ["--supervisor", str(os.getpid())]
        return Supervisor(settings.workers, argv, reactor, settings.grace_period, run_dir)
    index = None if worker is None else int(worker)
    if options["supervisor"] is not None:
        die_with_parent(int(options["supervisor"]))
    return build(settings, reuseport=index is not None, worker=index, run_dir=options["worker-dir"])
