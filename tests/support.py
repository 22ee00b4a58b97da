"""Real parts for tests: a redis-server and relay replicas as processes on free ports, and clients.

Every server is started on a free port and stopped by its pid (bench/processes.py, shared with the load
generator); nothing touches a Redis the test did not start.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from bench.processes import RedisServer as RedisServer  # noqa: PLC0414 (re-exported for the tests)
from bench.processes import ServerProcess
from bench.processes import free_port as free_port  # noqa: PLC0414 (re-exported for the tests)
from bench.processes import wait_for as wait_for  # noqa: PLC0414 (re-exported for the tests)
from relay.auth import mint_dev_token
from relay.config import DEV_JWT_SECRET

REPO = Path(__file__).resolve().parent.parent

# Replicas for tests that type faster than a person and kill replicas on purpose: short presence and link
# timeouts, a short drain, high rate limits.
FAST_REPLICA_ENV = {
    "RELAY_PRESENCE_TTL": "3",
    "RELAY_REDIS_LINK_TIMEOUT": "2",
    "RELAY_SHUTDOWN_GRACE": "5",
    "RELAY_RATE_PER_SECOND": "2000",
    "RELAY_RATE_BURST": "2000",
}


class Replica(ServerProcess):
    """`relay serve` as a real process (uvicorn), on a free port; started means /api/ready answers 200."""

    def __init__(self, env: dict[str, str], *, port: int | None = None, name: str = "replica") -> None:
        port = port or free_port()
        full_env = {
            **os.environ,
            "RELAY_DEV_MODE": "true",
            "RELAY_LOG_FORMAT": "json",
            "RELAY_LOG_LEVEL": "info",
            "PYTHONUNBUFFERED": "1",
            # This checkout's relay, whatever the venv has installed (worktrees share one venv).
            "PYTHONPATH": str(REPO),
            **env,
        }
        full_env.pop("CI", None)
        argv = [sys.executable, "-m", "relay.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
        super().__init__(name, argv, port=port, env=full_env, cwd=tempfile.gettempdir())

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def answers(self) -> bool:
        try:
            return httpx.get(f"{self.http}/api/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        return super().stop(sig, timeout)


def token(user: str, *, name: str | None = None, secret: str = DEV_JWT_SECRET, **claims: Any) -> str:
    return mint_dev_token(secret, user, name=name, extra_claims=claims or None)


def auth(user_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {user_token}"}


class Client:
    """A WebSocket client that keeps every frame it received, for assertions."""

    def __init__(
        self,
        base_ws: str,
        code: str,
        user_token: str,
        *,
        last_seq: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        query = f"?token={user_token}" + (f"&last_seq={last_seq}" if last_seq is not None else "")
        self.conn: ClientConnection = connect(
            f"{base_ws}/ws/{code}{query}",
            additional_headers=headers,
            open_timeout=10,
            max_size=2**22,
            legacy=True,
        )
        self.frames: list[dict[str, Any]] = []

    def send(self, frame: dict[str, Any]) -> None:
        self.conn.send(json.dumps(frame))

    def recv(self, timeout: float = 5) -> dict[str, Any]:
        frame: dict[str, Any] = json.loads(self.conn.recv(timeout=timeout))
        self.frames.append(frame)
        return frame

    def recv_until(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no matching frame within {timeout}s; got {self.frames[-5:]}")
            frame = self.recv(timeout=remaining)
            if predicate(frame):
                return frame

    def recv_type(self, kind: str, timeout: float = 10) -> dict[str, Any]:
        return self.recv_until(lambda f: f.get("type") == kind, timeout)

    def drain(self, quiet: float = 0.3) -> list[dict[str, Any]]:
        """Every frame that arrives until the socket is quiet for `quiet` seconds."""
        got = []
        with contextlib.suppress(TimeoutError):
            while True:
                got.append(self.recv(timeout=quiet))
        return got

    def wait_closed(self, timeout: float = 10) -> tuple[int | None, str | None]:
        """Read until the server closes; returns (close code, reason)."""
        deadline = time.monotonic() + timeout
        with contextlib.suppress(ConnectionClosed):
            while time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    self.recv(timeout=max(0.01, deadline - time.monotonic()))
            raise TimeoutError("socket still open")
        return self.conn.close_code, self.conn.close_reason

    def close(self) -> None:
        self.conn.close()


def open_refused(
    base_ws: str,
    code: str,
    query: str = "",
    headers: dict[str, str] | None = None,
) -> tuple[int | None, str | None]:
    """Open a socket that the server is expected to close at once; returns (close code, reason)."""
    conn = connect(f"{base_ws}/ws/{code}{query}", additional_headers=headers, open_timeout=10, legacy=True)
    try:
        with contextlib.suppress(ConnectionClosed):
            while True:
                conn.recv(timeout=10)
        return conn.close_code, conn.close_reason
    finally:
        conn.close()


@contextlib.contextmanager
def replicas(count: int, env: dict[str, str]) -> Iterator[list[Replica]]:
    started: list[Replica] = []
    try:
        for index in range(count):
            started.append(Replica(env, name=f"r{index}").start())
        yield started
    finally:
        for replica in started:
            replica.stop()


def create_room(base_http: str, user_token: str) -> str:
    response = httpx.post(f"{base_http}/api/create-room", headers=auth(user_token), json={}, timeout=10)
    response.raise_for_status()
    return str(response.json()["room_code"])


def join_room(base_http: str, user_token: str, code: str) -> dict[str, Any]:
    response = httpx.post(
        f"{base_http}/api/join-room", headers=auth(user_token), json={"room_code": code}, timeout=10
    )
    response.raise_for_status()
    data: dict[str, Any] = response.json()
    return data


def connected_pair(replica: Replica, bobs_replica: Replica | None = None) -> tuple[str, Client, Client]:
    """A room created by alice and joined by bob, both connected (bob to `bobs_replica` if given) and
    past their room_state."""
    alice, bob = token("alice"), token("bob")
    code = create_room(replica.http, alice)
    join_room(replica.http, bob, code)
    a, b = Client(replica.ws, code, alice), Client((bobs_replica or replica).ws, code, bob)
    a.recv_type("room_state")
    b.recv_type("room_state")
    return code, a, b
