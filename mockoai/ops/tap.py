# -*- test-case-name: tests.test_tap -*-
"""
``twistd mockoai``: command-line options and the service maker.

The options are generated from L{mockoai.ops.config.FIELDS}, so the command
line, environment variables and profile files name every setting the same
way: flags, parameters, and an ``opt_`` handler per repeatable option that
collects its values (the settings get them as a tuple).  Daemonizing, pid
files, log files, reactors and signal handling are twistd's own (see
``twistd --help``); SIGTERM/SIGINT stop the service, which drains
in-flight requests first.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from twisted.python import usage

from mockoai.ops.config import FIELDS, ConfigError, Field, Settings, load_settings
from mockoai.ops.service import MockoaiService, build
from mockoai.ops.workers import Supervisor, make_run_dir, serve_as_worker
from mockoai.pipeline.rules import RuleError, compile_file


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
        for field in FIELDS:
            if field.repeatable:
                self[field.option] = []
        self.arguments = []

    def parseOptions(self, options: list[str] | None = None) -> None:
        self.arguments = list(sys.argv[1:] if options is None else options)
        super().parseOptions(options)

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
        found = self.settings.faults.rules
        if found is not None:
            # What the rules say, checked now: a bad rule stops the start, in one line.
            try:
                compile_file(found.path, found.document)
            except RuleError as e:
                raise SystemExit(f"mockoai: error: --rules: {e}") from None


def _collector(field: Field) -> Callable[[Options, str], None]:
    """The ``opt_`` handler of a repeatable option: usage.Options keeps one value per name."""

    def collect(self: Options, value: str) -> None:
        self[field.option].append(value)

    collect.__doc__ = field.help
    return collect


for _field in FIELDS:
    if _field.repeatable:
        setattr(Options, "opt_" + _field.option.replace("-", "_"), _collector(_field))


def makeService(options: Options) -> MockoaiService | Supervisor:
    settings = options.settings
    worker = options["worker-index"]
    server = settings.server
    if server.workers > 1 and worker is None:
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
        run_dir = make_run_dir()
        argv += ["--worker-dir", run_dir]
        argv += ["--supervisor", str(os.getpid())]
        return Supervisor(server.workers, argv, reactor, server.grace_period, run_dir)
    index = None if worker is None else int(worker)
    if options["supervisor"] is not None:
        from twisted.internet import reactor as running

        serve_as_worker(int(options["supervisor"]), options["worker-dir"], index, running)
    return build(settings, reuseport=index is not None, worker=index, run_dir=options["worker-dir"])
