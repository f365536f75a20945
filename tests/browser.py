"""
Headless Chromium driven over the DevTools protocol: load a page, evaluate
JavaScript in it, take screenshots.  The websocket client is the smallest
that the protocol needs (RFC 6455 text frames, masked as a client must, no
extensions), so no websocket package is required.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from typing import Any

#: The headless flags: no sandbox (CI runs as root), no network of its own.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class WebSocket:
    """One websocket client connection carrying text messages."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        parts = urllib.parse.urlsplit(url)
        assert parts.hostname is not None and parts.port is not None, url
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout)
        key = base64.b64encode(os.urandom(16))
        self.sock.sendall(
            b"GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
            % (parts.path.encode(), parts.netloc.encode(), key)
        )
        self._buffer = b""
        head = self._until(b"\r\n\r\n").decode("latin-1")
        if not head.startswith("HTTP/1.1 101"):
            raise ConnectionError(f"no websocket upgrade: {head.splitlines()[0]!r}")
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()
        if accept.lower() not in head.lower():
            raise ConnectionError("wrong Sec-WebSocket-Accept")

    def _until(self, marker: bytes) -> bytes:
        while marker not in self._buffer:
            self._fill()
        head, self._buffer = self._buffer.split(marker, 1)
        return head

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("websocket closed")
        self._buffer += data

    def _read(self, n: int) -> bytes:
        while len(self._buffer) < n:
            self._fill()
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def _frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def send(self, text: str) -> None:
        self._frame(0x1, text.encode())

    def receive(self) -> str:
        """The next whole text message (control frames answered on the way)."""
        parts: list[bytes] = []
        while True:
            first, second = self._read(2)
            opcode, n = first & 0x0F, second & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._read(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._read(8))
            mask = self._read(4) if second & 0x80 else b""
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x8:
                raise ConnectionError("websocket closed by the browser")
            if opcode == 0x9:
                self._frame(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            parts.append(payload)
            if first & 0x80:
                return b"".join(parts).decode()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._frame(0x8, b"")
        self.sock.close()


class Browser:
    """A headless Chromium showing ``url``, and its page's DevTools session."""

    def __init__(self, url: str, width: int = 1280, height: int = 900) -> None:
        chromium = find_chromium()
        if chromium is None:
            raise RuntimeError("chromium is not installed")
        self.profile = tempfile.mkdtemp(prefix="mockoai-chromium-")
        self._log = open(os.path.join(self.profile, "stderr.log"), "w+b")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                chromium,
                *FLAGS,
                f"--user-data-dir={self.profile}",
                f"--window-size={width},{height}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                url,
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            start_new_session=True,
        )
        self._id = 0
        self.ws: WebSocket | None = None
        try:
            self.ws = WebSocket(self._page_socket())
        except BaseException:
            self.close()
            raise

    def _page_socket(self, timeout: float = 30.0) -> str:
        """The page target's websocket URL (Chromium writes its port to the profile)."""
        active = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited: {self.stderr()}")
            with contextlib.suppress(OSError, ValueError, IndexError):
                with open(active) as f:
                    port = int(f.read().split()[0])
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                    targets = json.load(r)
                for target in targets:
                    if target.get("type") == "page" and "webSocketDebuggerUrl" in target:
                        return str(target["webSocketDebuggerUrl"])
            time.sleep(0.1)
        raise RuntimeError(f"no DevTools page target within {timeout} s: {self.stderr()}")

    def stderr(self) -> str:
        self._log.flush()
        with open(self._log.name, "rb") as f:
            return f.read().decode("utf-8", "replace")[-2000:]

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command and its result (events in between are dropped)."""
        assert self.ws is not None
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.receive())
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]  # type: ignore[no-any-return]

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0, what: str = "") -> Any:
        """Poll ``expression`` until it is truthy (errors while the page loads count as not)."""
        deadline = time.monotonic() + timeout
        value: Any = None
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except RuntimeError as e:
                value = e
            else:
                if value:
                    return value
            time.sleep(0.1)
        raise AssertionError(f"{what or expression} still {value!r} after {timeout} s")

    def screenshot(self, path: str) -> bytes:
        """A PNG of the viewport, written to ``path``."""
        data = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        with open(path, "wb") as f:
            f.write(data)
        return data

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()
            self.ws = None
        # The browser and its helpers: the process group it leads.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)
