"""Servers as child processes on free ports: started, waited for until they answer, stopped by pid.

Shared by the load generator (which starts redis-server, relay and baseline replicas for a run) and the
test suite (which starts its own redis-server, relay replicas and nginx). Nothing here touches a server
it did not start. Standard library only, so that the tests can use it without the bench's extras.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Self

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


def port_accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class ServerProcess:
    """One server process listening on 127.0.0.1:port.

    `start` returns once `answers()` is true (by default: the port accepts connections) and fails at
    once, with the end of the log, if the process exits first. Subclasses override `answers` with a
    probe that means "ready" for their server.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        port: int,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        cwd: str | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.port = port
        self.env = dict(os.environ if env is None else env)
        # A log file of the caller's choosing, else a fresh one (kept after stop, for the post-mortem).
        self.log_path = log_path or Path(tempfile.mkstemp(prefix=f"relay-{name}-", suffix=".log")[1])
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> Self:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 (an argv of our own, no shell)
                self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd
            )
        wait_for(self._started, timeout, f"{self.name} on 127.0.0.1:{self.port}")
        return self

    def _started(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            code = None if self.process is None else self.process.returncode
            raise RuntimeError(f"{self.name} exited with code {code} before answering:\n{self.log()[-3000:]}")
        return self.answers()

    def answers(self) -> bool:
        return port_accepts(self.port)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def send_signal(self, sig: int) -> None:
        """Send sig if the process still runs (a process that already exited is not an error)."""
        if self.is_running:
            assert self.process is not None
            self.process.send_signal(sig)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """Wait for the exit (SIGKILL after timeout); returns the exit code and forgets the process."""
        if self.process is None:
            return None
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        code = self.process.returncode
        self.process = None
        return code

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int | None:
        self.send_signal(sig)
        return self.wait(timeout)


def stop_all(servers: Iterable[ServerProcess], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM every server first, then wait for each: they shut down side by side, not in turn."""
    servers = list(servers)
    for server in servers:
        server.send_signal(signal.SIGTERM)
    for server in servers:
        server.wait(timeout)


class RedisServer(ServerProcess):
    """A redis-server of our own, on a free port, with its data and log in a temporary directory."""

    def __init__(
        self,
        *,
        appendonly: bool = False,
        port: int | None = None,
        binary: str = "redis-server",
        log_path: Path | None = None,
    ) -> None:
        found = shutil.which(binary)
        if found is None:
            raise RuntimeError(f"{binary} is not installed (apt-get install redis-server); see README")
        port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="relay-redis-")
        log_path = log_path or Path(self.dir, "log")
        argv = [
            found,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", self.dir,
            "--save", "",
            "--appendonly", "yes" if appendonly else "no",
            "--appendfsync", "always",
            "--daemonize", "no",
            "--logfile", str(log_path),
        ]  # fmt: skip
        super().__init__("redis-server", argv, port=port, log_path=log_path)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
