"""Supabase auth against a replica in production mode: HS256 secret and ES256 via a JWKS served locally."""

from __future__ import annotations

import base64
import json
import math
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support import Client, RedisServer, Replica, auth, free_port, open_refused

SECRET = "test-project-jwt-secret-with-at-least-32-bytes"
KID = "test-key-1"


class JwksServer:
    """Serves {SUPABASE_URL}/auth/v1/.well-known/jwks.json for one EC key; counts the fetches."""

    def __init__(self) -> None:
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        public_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.private_key.public_key()))
        public_jwk.update(kid=KID, alg="ES256", use="sig")
        self.body = json.dumps({"keys": [public_jwk]}).encode()
        self.fetches = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/auth/v1/.well-known/jwks.json":
                    self.send_error(404)
                    return
                server.fetches += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def jwks() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def prod_replica(redis_server: RedisServer, jwks: JwksServer) -> Iterator[Replica]:
    replica = Replica(
        {
            "RELAY_DEV_MODE": "false",
            "REDIS_URL": redis_server.url,
            "SUPABASE_URL": jwks.url,
            "SUPABASE_JWT_SECRET": SECRET,
            "RELAY_JWKS_MIN_REFRESH": "1",
        },
        name="prod",
    ).start()
    yield replica
    replica.stop()


def claims(user: str = "user-1", **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": user,
        "aud": "authenticated",
        "role": "authenticated",
        "iat": now,
        "exp": now + 600,
        "iss": f"{overrides.pop('_issuer_base')}/auth/v1",
        "email": f"{user}@example.test",
        "user_metadata": {"full_name": f"User {user}"},
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs256(jwks: JwksServer, user: str = "user-1", secret: str = SECRET, **overrides: Any) -> str:
    return jwt.encode(claims(user, _issuer_base=jwks.url, **overrides), secret, algorithm="HS256")


def es256(jwks: JwksServer, user: str = "user-1", kid: str = KID, **overrides: Any) -> str:
    return jwt.encode(
        claims(user, _issuer_base=jwks.url, **overrides),
        jwks.private_key,
        algorithm="ES256",
        headers={"kid": kid},
    )


def alg_none(jwks: JwksServer) -> str:
    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims(_issuer_base=jwks.url))}."


def bad_tokens(jwks: JwksServer) -> dict[str, str | None]:
    now = int(time.time())
    other_key = ec.generate_private_key(ec.SECP256R1())
    return {
        "missing": None,
        "malformed": "not-a-jwt",
        "bad_signature_hs256": hs256(jwks, secret="another-secret-that-is-also-32-bytes-long"),
        "bad_signature_es256": jwt.encode(
            claims(_issuer_base=jwks.url), other_key, algorithm="ES256", headers={"kid": KID}
        ),
        "unknown_kid": es256(jwks, kid="rotated-away"),
        "expired": hs256(jwks, exp=now - 120, iat=now - 720),
        "wrong_audience": hs256(jwks, aud="someone-else"),
        "wrong_issuer": hs256(jwks, iss="https://evil.example/auth/v1"),
        "alg_none": alg_none(jwks),
        "anon_key": jwt.encode(
            {"iss": "supabase", "ref": "abc", "role": "anon", "iat": now, "exp": now + 600},
            SECRET,
            algorithm="HS256",
        ),
        "service_role_with_sub": hs256(jwks, role="service_role"),
        "no_exp": hs256(jwks, exp=None),
    }


ENDPOINTS = [
    ("POST", "/api/create-room", {}),
    ("POST", "/api/join-room", {"room_code": "ABCDEF"}),
    ("GET", "/api/room/ABCDEF", None),
    ("DELETE", "/api/room/ABCDEF", None),
]


def test_every_endpoint_refuses_every_bad_token(prod_replica: Replica, jwks: JwksServer) -> None:
    """401 with a JSON error for each bad token on each endpoint, and close 4401 on the WebSocket."""
    for name, bad in bad_tokens(jwks).items():
        headers = auth(bad) if bad is not None else {}
        for method, path, body in ENDPOINTS:
            response = httpx.request(method, prod_replica.http + path, headers=headers, json=body, timeout=10)
            assert response.status_code == 401, (name, method, path, response.text)
            error = response.json()
            assert error["status"] == "error" and error["message"], (name, error)
            assert "Traceback" not in response.text
        query = f"?token={bad}" if bad is not None else ""
        close_code, reason = open_refused(prod_replica.ws, "ABCDEF", query)
        assert close_code == 4401, (name, close_code, reason)


def test_refusals_explain_themselves(prod_replica: Replica, jwks: JwksServer) -> None:
    """The message says what was wrong, so a developer can fix the client."""
    bad = bad_tokens(jwks)

    def message(name: str) -> str:
        value = bad[name]
        response = httpx.post(
            f"{prod_replica.http}/api/create-room", json={}, timeout=10, headers=auth(value) if value else {}
        )
        return str(response.json()["message"])

    assert "missing token" in message("missing")
    assert "expired" in message("expired")
    assert response_code(prod_replica, bad["expired"]) == "token_expired"
    assert "audience" in message("wrong_audience")
    assert "issuer" in message("wrong_issuer")
    assert "'none'" in message("alg_none")
    assert "anon" in message("anon_key")
    assert "unknown key" in message("unknown_kid")


def response_code(replica: Replica, bearer: str | None) -> str:
    response = httpx.post(f"{replica.http}/api/create-room", json={}, headers=auth(bearer or ""), timeout=10)
    return str(response.json()["code"])


def test_hs256_and_es256_tokens_both_work(prod_replica: Replica, jwks: JwksServer) -> None:
    """A room created with an ES256 token is joined with an HS256 one; both edit over the socket."""
    interviewer = es256(jwks, "ines", user_metadata={"name": "Ines"})
    candidate = hs256(jwks, "carl", user_metadata={})
    created = httpx.post(
        f"{prod_replica.http}/api/create-room", headers=auth(interviewer), json={}, timeout=10
    )
    assert created.status_code == 200, created.text
    code = created.json()["room_code"]
    joined = httpx.post(
        f"{prod_replica.http}/api/join-room", headers=auth(candidate), json={"room_code": code}, timeout=10
    )
    assert joined.json()["role"] == "candidate"
    a = Client(prod_replica.ws, code, interviewer)
    b = Client(prod_replica.ws, code, candidate)
    assert a.recv_type("room_state")["you"]["user_name"] == "Ines"
    # no name in user_metadata: the email stands in
    assert b.recv_type("room_state")["you"]["user_name"] == "carl@example.test"
    b.send({"type": "editor_update", "content": "ok"})
    assert a.recv_type("editor_update")["user_id"] == "carl"
    a.close()
    b.close()


def test_jwks_is_fetched_once_and_refreshed_for_a_new_kid_at_most_per_cooldown(
    prod_replica: Replica, jwks: JwksServer
) -> None:
    """Known kid: no refetch. A burst of unknown kids within the cooldown triggers at most one fetch."""
    good = es256(jwks, "kim")
    for _ in range(3):
        assert (
            httpx.post(
                f"{prod_replica.http}/api/create-room", headers=auth(good), json={}, timeout=10
            ).status_code
            == 200
        )
    before = jwks.fetches
    time.sleep(1.1)  # RELAY_JWKS_MIN_REFRESH=1 in this replica
    started = time.monotonic()
    for n in range(20):
        response = httpx.post(
            f"{prod_replica.http}/api/create-room",
            headers=auth(es256(jwks, kid=f"x{n}")),
            json={},
            timeout=10,
        )
        assert response.status_code == 401
    # At most one fetch per cooldown second that the burst lasted (a loaded machine makes it last longer),
    # where a fetch per unknown kid would be 20.
    cooldowns = math.ceil(time.monotonic() - started)
    assert jwks.fetches - before <= 1 + cooldowns < 20
