"""Secrets stay secret: no token or JWT secret in any log line or error answer, and no start-up with a weak secret."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from relay.config import DEV_JWT_SECRET
from tests.security_support import b64url, running
from tests.support import REPO, Client, RedisServer, Replica, auth
from tests.test_auth import KID, JwksServer
from tests.test_cli import run_serve

# Exactly 32 bytes: the shortest secret production mode accepts (the session below runs with it).
SESSION_SECRET = "s3ssion-secret-32-bytes-exactly!"
ALLOWED_ORIGIN = "https://app.example.com"


@dataclass
class Session:
    """Everything secret the session used, and everything relay said back to the clients."""

    tokens: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)  # HTTP bodies, WS frames, close reasons

    def token(self, value: str) -> str:
        self.tokens.append(value)
        return value

    def heard(self, response: httpx.Response) -> httpx.Response:
        self.answers.append(response.text)
        return response

    def heard_client(self, client: Client) -> None:
        self.answers += [json.dumps(frame) for frame in client.frames]
        self.answers.append(str(client.conn.close_reason or ""))


def mint(
    jwks: JwksServer,
    user: str,
    *,
    secret: str = SESSION_SECRET,
    ttl: int = 600,
    es256: bool = False,
    **claims: Any,
) -> str:
    now = int(time.time())
    payload = {
        "sub": user,
        "aud": "authenticated",
        "role": "authenticated",
        "iat": now,
        "exp": now + ttl,
        "iss": f"{jwks.url}/auth/v1",
        "email": f"{user}@example.test",
        "user_metadata": {"full_name": user.title()},
        **claims,
    }
    if es256:
        return jwt.encode(payload, jwks.private_key, algorithm="ES256", headers={"kid": KID})
    return jwt.encode(payload, secret, algorithm="HS256")


def refused_ws(replica: Replica, path: str, headers: dict[str, str] | None = None) -> tuple[int | None, str]:
    """Open a socket that relay refuses; (close code, everything it said), or (HTTP status, body)."""
    try:
        conn = connect(f"{replica.ws}{path}", additional_headers=headers, open_timeout=10, legacy=True)
    except InvalidStatus as refused:
        return refused.response.status_code, (refused.response.body or b"").decode()
    said = []
    try:
        with contextlib.suppress(ConnectionClosed):
            while True:
                said.append(str(conn.recv(timeout=10)))
        said.append(conn.close_reason or "")
        return conn.close_code, "\n".join(said)
    finally:
        conn.close()


@pytest.fixture(scope="module")
def session(redis_server: RedisServer) -> Iterator[tuple[Replica, Session]]:
    jwks = JwksServer()
    env = {
        "RELAY_DEV_MODE": "false",
        "REDIS_URL": redis_server.url,
        "SUPABASE_URL": jwks.url,
        "SUPABASE_JWT_SECRET": SESSION_SECRET,
        "RELAY_LOG_LEVEL": "debug",
        "RELAY_ALLOWED_ORIGINS": ALLOWED_ORIGIN,
        "RELAY_TOKEN_EXPIRY_WARNING": "2",
        "RELAY_MAX_CANDIDATES": "2",  # carl and dave both join as candidates
    }
    try:
        with running(env, "secrets") as replica:
            yield replica, _run_session(replica, jwks)
    finally:
        jwks.stop()


def _run_session(replica: Replica, jwks: JwksServer) -> Session:
    s = Session()
    base = replica.http
    ines = s.token(mint(jwks, "ines", es256=True))
    carl = s.token(mint(jwks, "carl"))
    dave = s.token(mint(jwks, "dave"))
    # REST with Authorization: Bearer
    created = s.heard(
        httpx.post(f"{base}/api/create-room", headers=auth(ines), json={"title": "t"}, timeout=10)
    )
    code = created.json()["room_code"]
    for user in (carl, dave):
        s.heard(httpx.post(f"{base}/api/join-room", headers=auth(user), json={"room_code": code}, timeout=10))
    s.heard(httpx.get(f"{base}/api/room/{code}", headers=auth(carl), timeout=10))
    # Sockets: ?token=, ?access_token=, Authorization header, and a resume with last_seq
    a = Client(replica.ws, code, ines)
    b = Client(replica.ws, code, carl, headers={"Origin": ALLOWED_ORIGIN})
    a.recv_type("room_state")
    b.recv_type("room_state")
    a.send({"type": "editor_update", "content": "def f(): pass", "client_msg_id": "e1"})
    a.recv_type("ack")
    b.send({"type": "cursor_update", "cursor_position": {"lineNumber": 1, "column": 3}})
    b.send({"type": "editor_update", "content": "def f(): return 1", "client_msg_id": "e2"})
    b.recv_type("ack")
    # A socket whose token runs out: warned, refreshed in time with a fresh token.
    short = s.token(mint(jwks, "dave", ttl=4))
    fresh = s.token(mint(jwks, "dave", es256=True))
    c = Client(replica.ws, code, "", headers=auth(short))
    c.recv_type("room_state")
    c.recv_type("token_expiring", timeout=10)
    c.send({"type": "refresh_token", "token": fresh})
    c.recv_type("token_refreshed")
    # A refresh with another user's token closes the socket.
    c.send({"type": "refresh_token", "token": carl})
    c.wait_closed()
    s.heard_client(c)
    d = Client(replica.ws, code, "", headers=auth(fresh))
    d.recv_type("room_state")
    d.send({"type": "refresh_token", "token": s.token(mint(jwks, "dave", secret="x" * 40))})  # bad signature
    d.wait_closed()
    s.heard_client(d)
    resumed = Client(replica.ws, code, dave, last_seq=1)
    resumed.recv_type("room_state")
    # Token-shaped strings that are not valid tokens, everywhere a token can travel.
    forged = s.token(mint(jwks, "mallory", secret="forged-secret-that-is-long-enough!!"))
    expired = s.token(mint(jwks, "carl", ttl=-120))
    not_eyj = s.token(
        f"{b64url(b'not-a-header-at-all')}.{b64url(b'or-a-payload')}.{b64url(b'secret-looking-signature-bytes')}"
    )
    for bad in (forged, expired, not_eyj):
        # Where relay reads tokens: every one of them, JWT-shaped or not, stays out of the log.
        s.heard(httpx.post(f"{base}/api/create-room", headers=auth(bad), json={}, timeout=10))
        s.heard(
            httpx.post(
                f"{base}/api/join-room",
                headers={"Authorization": f"bearer  {bad}"},
                json={"room_code": code},
                timeout=10,
            )
        )
        s.heard(httpx.get(f"{base}/api/room/{code}", headers={"Authorization": f"Token {bad}"}, timeout=10))
        s.heard(httpx.post(f"{base}/api/join-room", headers=auth(carl), json={"room_code": bad}, timeout=10))
        for path, headers in [
            (f"/ws/{code}?token={bad}", None),
            (f"/ws/{code}?access_token={bad}", None),
            (f"/ws/{code}", auth(bad)),
            (f"/ws/{code}?token={bad}", {"Origin": "https://evil.example"}),
        ]:
            s.answers.append(refused_ws(replica, path, headers)[1])
    for bad in (forged, expired):
        # Where a token does not belong (pasted into the path or last_seq): JWT-shaped ones are still hidden.
        s.heard(httpx.get(f"{base}/api/room/{bad}", headers=auth(carl), timeout=10))
        s.answers.append(refused_ws(replica, f"/ws/{code}?last_seq={bad}&token={carl}")[1])
        s.answers.append(refused_ws(replica, f"/ws/{bad}?token={carl}")[1])
    # Bad frames carrying a token: refused without repeating it.
    a.send({"type": "editor_update", "content": 5, "token": carl})
    a.send({"type": "refresh_token", "token": 5})
    a.send({"type": carl})
    a.drain()
    # Interviewer removes a member, then closes the room.
    s.heard(httpx.delete(f"{base}/api/room/{code}/members/dave", headers=auth(ines), timeout=10))
    s.heard(httpx.delete(f"{base}/api/room/{code}", headers=auth(ines), timeout=10))
    for client in (a, b, resumed):
        client.wait_closed()
        s.heard_client(client)
    return s


def fragments(secret: str, size: int = 12) -> set[str]:
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


def leaks(text: str, session: Session) -> list[str]:
    """Every token, signature fragment (12 characters or more) or the JWT secret found in `text`."""
    found = []
    for value in session.tokens:
        signature = value.rsplit(".", 1)[-1]
        if value in text:
            found.append(f"token {value[:16]}...")
        found += [f"signature fragment {part!r}" for part in fragments(signature) if part in text]
    if SESSION_SECRET in text:
        found.append("SUPABASE_JWT_SECRET")
    return found


def test_logs_hold_no_token_signature_or_secret(session: tuple[Replica, Session]) -> None:
    """A full session at debug level (query, header and refresh-frame tokens, bad ones too) logs no secret."""
    replica, s = session
    log = replica.log()
    assert "WebSocket /ws/" in log and "?token=[redacted]" in log, (
        "the session's requests should be in the log"
    )
    leaking = [(line[:300], leaks(line, s)) for line in log.splitlines() if leaks(line, s)]
    assert leaking == []


def test_answers_never_echo_a_token(session: tuple[Replica, Session]) -> None:
    """No HTTP error body, error frame or close reason of the session repeats a token or the secret."""
    _, s = session
    assert len(s.answers) > 50
    assert leaks("\n".join(s.answers), s) == []


def test_unknown_paths_do_not_echo_a_token(session: tuple[Replica, Session]) -> None:
    """A token pasted into an unknown path is not repeated in the 404 body."""
    replica, s = session
    value = s.tokens[0]
    for path in (f"/api/{value}", f"/api/room/ABCDEF/{value}", f"/{value}"):
        response = httpx.get(f"{replica.http}{path}", headers=auth(value), timeout=10)
        assert response.status_code == 404
        assert leaks(response.text, s) == [], response.text


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"SUPABASE_JWT_SECRET": f"  {DEV_JWT_SECRET}\t"}, "public development secret"),
        (
            {"SUPABASE_JWT_SECRET": DEV_JWT_SECRET, "SUPABASE_URL": "https://abc.supabase.co"},
            "public development secret",
        ),
        ({"SUPABASE_JWT_SECRET": DEV_JWT_SECRET, "RELAY_DEV_MODE": "false"}, "public development secret"),
        ({"SUPABASE_JWT_SECRET": DEV_JWT_SECRET, "RELAY_DEV_MODE": "0"}, "public development secret"),
        ({"SUPABASE_JWT_SECRET": "x" * 31}, "at least 32 bytes, got 31"),
        ({"SUPABASE_JWT_SECRET": "\u20ac" * 10}, "at least 32 bytes, got 30"),  # 10 characters, 30 bytes
        ({"SUPABASE_JWT_SECRET": "   short-secret   "}, "at least 32 bytes, got 12"),
        ({"SUPABASE_JWT_SECRET": "short", "SUPABASE_URL": "https://abc.supabase.co"}, "at least 32 bytes"),
        ({"SUPABASE_JWT_SECRET": " " * 40}, "no Supabase settings"),
    ],
    ids=[
        "dev-secret-padded",
        "dev-secret-with-jwks",
        "dev-mode-false",
        "dev-mode-0",
        "31-bytes",
        "30-bytes-in-10-chars",
        "padded-short",
        "short-with-jwks",
        "blank",
    ],
)
def test_production_refuses_weak_or_public_secrets(env: dict[str, str], needle: str) -> None:
    """Production mode will not start with the development secret or under 32 bytes, and never echoes it."""
    result = run_serve({**env, "PYTHONPATH": str(REPO)})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr
    secret = env["SUPABASE_JWT_SECRET"].strip()
    assert not secret or secret not in result.stderr + result.stdout


def test_production_refuses_the_dev_secret_from_an_env_file(tmp_path: Path) -> None:
    """The development secret in ./.env is refused like one in the environment."""
    (tmp_path / ".env").write_text(f"SUPABASE_JWT_SECRET={DEV_JWT_SECRET}\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "SUPABASE_", "REDIS_"))}
    clean["PYTHONPATH"] = str(REPO)
    result = subprocess.run(
        [sys.executable, "-m", "relay.cli", "serve", "--port", "1"],
        env=clean,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "public development secret" in result.stderr
    assert DEV_JWT_SECRET not in result.stderr
