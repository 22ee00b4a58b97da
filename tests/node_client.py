"""A stock y-websocket `WebsocketProvider` under Node (tests/js/yjs_client.mjs), driven from Python.

    node = NodeYjsClient.start()              # skips outside CI when Node or tests/js/node_modules is missing
    node.open(f"{replica.ws}/yjs", code, token("nia"), name="Nia")
    node.wait(synced=True)
    node.type("abc", seed=7)                  # each character at a random position
    node.state()["text"]

One JSON command per line on the script's stdin, one JSON answer per command on its stdout; provider
events (status, sync, closed) arrive on stdout too and are kept in `events`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from queue import Empty, Queue
from typing import Any

import pytest

from tests.support import REPO

JS_DIR = REPO / "tests" / "js"
SCRIPT = JS_DIR / "yjs_client.mjs"


def node_binary() -> str:
    """Node and tests/js's locked packages, or a skip (outside CI) / a failure (in CI) saying how to get them."""
    node = shutil.which("node")
    problem = None
    if node is None:
        problem = "Node is not installed (apt-get install nodejs npm)"
    elif not (JS_DIR / "node_modules" / "y-websocket").is_dir():
        problem = "tests/js has no node_modules: run `npm ci` in tests/js"
    if problem is None:
        assert node is not None
        return node
    if os.environ.get("CI"):
        pytest.fail(f"{problem}; .ci/run installs both")
    pytest.skip(f"{problem}; CI runs this test")


class NodeYjsClient:
    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []
        self._answers: Queue[dict[str, Any]] = Queue()
        self._next_id = 0
        self._stderr: list[str] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    @classmethod
    def start(cls) -> NodeYjsClient:
        process = subprocess.Popen(
            [node_binary(), str(SCRIPT)],
            cwd=JS_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        return cls(process)

    # --- commands -----------------------------------------------------------------------------------

    def call(self, cmd: str, timeout: float = 30, **args: Any) -> dict[str, Any]:
        with self._lock:
            self._next_id += 1
            request_id = self._next_id
            assert self.process.stdin is not None
            self.process.stdin.write(json.dumps({"id": request_id, "cmd": cmd, **args}) + "\n")
            self.process.stdin.flush()
        try:
            answer = self._answers.get(timeout=timeout)
        except Empty:
            raise TimeoutError(
                f"node: no answer to {cmd} within {timeout}s; stderr: {self.stderr()}"
            ) from None
        assert answer.get("id") == request_id, f"node answered {answer} to request {request_id} ({cmd})"
        if not answer["ok"]:
            raise AssertionError(f"node: {cmd} failed: {answer['error']}; stderr: {self.stderr()}")
        return answer

    def open(self, url: str, room: str, user_token: str, *, name: str, connect: bool = True) -> None:
        self.call("open", url=url, room=room, token=user_token, name=name, connect=connect)

    def connect(self) -> None:
        self.call("connect")

    def disconnect(self) -> None:
        self.call("disconnect")

    def insert(self, index: int, text: str) -> str:
        """Insert at a UTF-16 index (what Y.Text counts in JavaScript); returns the text after it."""
        return str(self.call("insert", index=index, text=text)["text"])

    def type(self, chars: str, *, seed: int, interval_ms: int = 0) -> str:
        """Insert each character at a random position (seeded), `interval_ms` apart."""
        timeout = 30 + len(chars) * interval_ms / 1000
        return str(
            self.call("type", timeout=timeout, chars=chars, seed=seed, interval_ms=interval_ms)["text"]
        )

    def set_awareness(self, field: str, value: Any) -> None:
        self.call("awareness", field=field, value=value)

    def state(self) -> dict[str, Any]:
        return self.call("state")

    def text(self) -> str:
        return str(self.state()["text"])

    def wait(
        self,
        *,
        contains: list[str] | None = None,
        synced: bool | None = None,
        connected: bool | None = None,
        timeout: float = 20,
    ) -> dict[str, Any]:
        """Wait inside Node until the document contains every string and the provider is as asked."""
        return self.call(
            "wait",
            timeout=timeout + 10,
            contains=contains or [],
            synced=synced,
            connected=connected,
            timeout_ms=int(timeout * 1000),
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.call("quit", timeout=5)
                self.process.wait(5)
            except (TimeoutError, AssertionError, OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(5)

    def stderr(self) -> str:
        return "".join(self._stderr)[-2000:]

    # --- internals ----------------------------------------------------------------------------------

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            message: dict[str, Any] = json.loads(line)
            if "event" in message:
                self.events.append(message)
            else:
                self._answers.put(message)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._stderr.append(line)


@contextmanager
def node_clients(count: int) -> Iterator[list[NodeYjsClient]]:
    started: list[NodeYjsClient] = []
    try:
        for _ in range(count):
            started.append(NodeYjsClient.start())
        yield started
    finally:
        for client in started:
            client.stop()
