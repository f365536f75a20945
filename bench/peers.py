"""
Other Python mock servers ("peers"), installed reproducibly, for ``run.py --peers``.

Each peer lives in a venv of its own outside the repository (its
dependencies never touch mockoai's), installed at a pinned version; the
versions pip resolved for its dependencies are written beside it
(``freeze.txt``) and copied into every result file that measures it.

    python bench/peers.py install [NAME ...] [--dir /tmp/mockoai-peers]
    python bench/peers.py list [--dir DIR]          # what is installed, and how it starts
    python bench/peers.py serve NAME [--port 8000]  # one peer in the foreground

Every peer is configured to answer at once (no simulated latency) and to
write no per-request access log where its command line allows (mockoai
writes none by default); what each one still does per request is in
``bench/README.md``.  They listen on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DIR = Path("/tmp/mockoai-peers")


@dataclass(frozen=True)
class Peer:
    """A mock server of another project: how to install it and how to start it."""

    name: str
    requirement: str
    #: The server command after the venv's python, a run.py template
    #: (``{port}`` filled in; ``{args}`` takes nothing).
    command: str
    #: A GET that answers 200 once the server serves.
    health: str
    #: What the command line sets, for the report.
    configured: str

    def python(self, root: Path) -> Path:
        """The interpreter of this peer's venv."""
        return root / self.name / "bin" / "python"

    def template(self) -> str:
        """A run.py server template: ``{python}`` is the peer's venv python."""
        return "{python} " + self.command + " {args}"

    def argv(self, root: Path, port: int) -> list[str]:
        """The command that serves this peer on 127.0.0.1:port."""
        return [str(self.python(root)), *shlex.split(self.command.format(port=port))]


PEERS: dict[str, Peer] = {
    peer.name: peer
    for peer in (
        Peer(
            name="llmock",
            requirement="llmock==0.2.2",
            # uvicorn (uvloop, httptools) + FastAPI; --log-level warning drops
            # uvicorn's per-request access log (info level).
            command="-m llmock.cli serve --host 127.0.0.1 --port {port} --log-level warning "
            "--latency-ms 0 --stream-chunk-delay-ms 0",
            health="/health",
            configured="latency 0 ms, stream chunk delay 0 ms (its defaults), no error or "
            "stream-fault rates, uvicorn log level warning (no access log)",
        ),
        Peer(
            name="guidellm",
            requirement="guidellm==0.8.1",
            # Sanic, single process.  Its defaults simulate a model: TTFT 150 ms,
            # ITL 10 ms, 128 output tokens; non-streaming answers sleep TTFT + ITL
            # x (tokens - 1).  The CLI always turns Sanic's access log on.
            command="-m guidellm mock-server --host 127.0.0.1 --port {port} "
            "--request-latency 0 --ttft-ms 0 --itl-ms 0",
            health="/health",
            configured="TTFT 0 ms and ITL 0 ms (defaults 150 and 10), request latency 0 s "
            "(default 3, unused by its handlers), 1 worker; its CLI keeps Sanic's access log on",
        ),
    )
}


def status(peer: Peer, root: Path) -> str | None:
    """None when the pinned version is installed under root, else why not."""
    marker = root / peer.name / "peer.json"
    if not peer.python(root).exists() or not marker.exists():
        return f"not installed (python bench/peers.py install {peer.name} --dir {root})"
    try:
        installed = json.loads(marker.read_text())["requirement"]
    except (OSError, ValueError, KeyError):
        return f"{marker} unreadable: reinstall"
    if installed != peer.requirement:
        return f"{installed} installed, {peer.requirement} pinned: reinstall"
    return None


def freeze(peer: Peer, root: Path) -> list[str]:
    """The packages pip resolved when this peer was installed."""
    path = root / peer.name / "freeze.txt"
    try:
        return path.read_text().split()
    except OSError:
        return []


def install(peer: Peer, root: Path, python: str) -> None:
    """A fresh venv with the pinned requirement, its freeze and a marker."""
    home = root / peer.name
    print(f"== {peer.name}: {peer.requirement} into {home}", flush=True)
    subprocess.run([python, "-m", "venv", "--clear", str(home)], check=True)
    pip = [str(peer.python(root)), "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "install", peer.requirement], check=True)
    frozen = subprocess.run([*pip, "freeze"], check=True, capture_output=True, text=True)
    (home / "freeze.txt").write_text(frozen.stdout)
    (home / "peer.json").write_text(json.dumps({"requirement": peer.requirement}) + "\n")
    print(f"== {peer.name}: {shlex.join(peer.argv(root, 8000))}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """install / list / serve."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("install", "list", "serve"):
        s = sub.add_parser(name)
        s.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="where the venvs live")
        if name == "install":
            s.add_argument("names", nargs="*", metavar="NAME", help=f"{', '.join(PEERS)} (all)")
            s.add_argument("--python", default=sys.executable, help="the venvs' interpreter")
        if name == "serve":
            s.add_argument("name", choices=list(PEERS))
            s.add_argument("--port", type=int, default=8000)
    args = p.parse_args(argv)
    root: Path = args.dir.resolve()
    if args.cmd == "install":
        unknown = [n for n in args.names if n not in PEERS]
        if unknown:
            p.error(f"unknown peer(s) {', '.join(unknown)}: choose from {', '.join(PEERS)}")
        root.mkdir(parents=True, exist_ok=True)
        for name in args.names or PEERS:
            install(PEERS[name], root, args.python)
        return 0
    if args.cmd == "list":
        for peer in PEERS.values():
            why = status(peer, root)
            print(f"{peer.name} ({peer.requirement}): {why or 'installed'}")
            print(f"    {shlex.join(peer.argv(root, 8000))}")
            print(f"    {peer.configured}")
        return 0
    peer = PEERS[args.name]
    why = status(peer, root)
    if why is not None:
        print(f"{peer.name}: {why}", file=sys.stderr)
        return 2
    argv_ = peer.argv(root, args.port)
    os.execv(argv_[0], argv_)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
