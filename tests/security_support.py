"""Helpers for the security tests: replicas that run this checkout, Redis bookkeeping, generated docs.

Kept apart from support.py so the security tests add what they need without touching shared helpers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from tests.support import REPO, Replica

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


def relay_keys(redis_url: str) -> set[str]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return set(client.keys("relay:*"))
    finally:
        client.close()


def command_calls(redis_url: str) -> dict[str, int]:
    """Calls per Redis command so far (INFO commandstats), without INFO itself: who touched Redis."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {
        name: int(value["calls"]) for name, value in stats.items()
        if name != "cmdstat_info" and isinstance(value, dict)
    }


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
