"""Helpers for the security tests: replicas that run this checkout, Redis bookkeeping, generated docs.

Kept apart from support.py so the security tests add what they need without touching shared helpers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from websockets.exceptions import ConnectionClosed

from tests.support import REPO, Client, Replica

DOCS = REPO / "docs"
# Set to 1 to rewrite the generated docs (authorization matrix, fuzz findings) instead of checking them.
REGENERATE_ENV = "RELAY_REGENERATE_DOCS"


def checkout_replica(env: dict[str, str], name: str) -> Replica:
    """A Replica that imports relay from this checkout, whatever the venv's editable install points at."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return Replica({"PYTHONPATH": path, **env}, name=name)


@contextmanager
def running(env: dict[str, str], name: str) -> Iterator[Replica]:
    replica = checkout_replica(env, name).start()
    try:
        yield replica
    finally:
        replica.stop()


class RedisWatch:
    """One long-lived connection to a test redis-server, to see which keys exist and which commands ran.

    One connection, opened once, so that watching adds no HELLO / CLIENT SETINFO of its own to the counts.
    """

    def __init__(self, redis_url: str) -> None:
        self.client = redis.Redis.from_url(redis_url, decode_responses=True)

    def keys(self) -> set[str]:
        return {k.decode() if isinstance(k, bytes) else k for k in self.client.keys("relay:*")}

    def calls(self) -> dict[str, int]:
        """Calls per Redis command so far (INFO commandstats), INFO itself left out."""
        stats = self.client.info("commandstats")
        return {
            name: int(value["calls"])
            for name, value in stats.items()
            if name != "cmdstat_info" and isinstance(value, dict)
        }

    def close(self) -> None:
        self.client.close()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_with_key(claims: dict[str, Any], key: bytes, headers: dict[str, Any] | None = None) -> str:
    """An HS256 JWT signed with raw bytes as the secret (PyJWT refuses PEM-looking secrets; attackers don't)."""
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", **(headers or {})}).encode())
    payload = b64url(json.dumps(claims).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = b64url(hmac.new(key, signing_input, hashlib.sha256).digest())
    return f"{header}.{payload}.{signature}"


def check_generated_doc(path: Path, text: str, test_file: str) -> None:
    """Rewrite `path` when RELAY_REGENERATE_DOCS=1, else assert it holds exactly `text`."""
    if os.environ.get(REGENERATE_ENV) == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    current = path.read_text() if path.is_file() else "<missing>"
    assert current == text, (
        f"{path.relative_to(REPO)} is out of date with the test's table; regenerate it with "
        f"{REGENERATE_ENV}=1 python -m pytest {test_file}"
    )


class Listener:
    """A member's socket read on a background thread, so it never falls behind while others flood."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.frames: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                frame = json.loads(self.client.conn.recv())
                with self._changed:
                    self.frames.append(frame)
                    self._changed.notify_all()
        except ConnectionClosed:
            with self._changed:
                self.close_code = self.client.conn.close_code
                self._changed.notify_all()

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10) -> dict[str, Any]:
        """The first frame so far (or arriving within `timeout`) that matches."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for frame in self.frames:
                    if predicate(frame):
                        return frame
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.close_code is not None:
                    raise TimeoutError(
                        f"no matching frame; last frames {self.frames[-3:]}, close {self.close_code}"
                    )
                self._changed.wait(remaining)

    def send(self, frame: dict[str, Any]) -> None:
        self.client.send(frame)

    def close(self) -> None:
        self.client.close()
        self._thread.join(10)
