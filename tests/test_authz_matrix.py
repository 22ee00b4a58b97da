"""The authorization matrix: every kind of caller against every endpoint and the WebSocket.

The table below is the single source: the test runs every cell against real replicas in production
mode, and docs/authorization-matrix.md is rendered from the same rows (RELAY_REGENERATE_DOCS=1 rewrites
it; otherwise the test fails when the file and the table differ).
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from relay.rooms import new_code
from tests.security_support import DOCS, check_generated_doc, checkout_replica, hs256_with_key
from tests.support import RedisServer, Replica, auth
from tests.test_auth import KID, SECRET, JwksServer

HS = "hs256"  # a replica with only SUPABASE_JWT_SECRET
AS = "jwks"  # a replica with only SUPABASE_URL (ES256 / RS256 from the project's JWKS)
BOTH = (HS, AS)

COLUMNS = {
    "create": "POST /api/create-room",
    "join": "POST /api/join-room",
    "get": "GET /api/room/{code}",
    "delete": "DELETE /api/room/{code}",
    "ws": "WS /ws/{code}",
}

REFUSED = {"create": "401 unauthorized", "join": "401 unauthorized", "get": "401 unauthorized",
           "delete": "401 unauthorized", "ws": "close 4401"}


class Keys:
    """What the test can sign with: the replicas' own keys and an attacker's."""

    def __init__(self, jwks: JwksServer) -> None:
        self.jwks = jwks
        self.issuer = f"{jwks.url}/auth/v1"
        self.attacker_ec = ec.generate_private_key(ec.SECP256R1())

    def claims(self, user: str, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        base: dict[str, Any] = {
            "sub": user, "aud": "authenticated", "role": "authenticated", "iat": now, "exp": now + 600,
            "iss": self.issuer, "email": f"{user}@example.test", "user_metadata": {"full_name": user},
        }
        base.update(overrides)
        return {k: v for k, v in base.items() if v is not None}

    def sign(self, kind: str, claims: dict[str, Any]) -> str:
        """Signed the way a genuine token for that replica is: HS256 with the secret, or ES256 via the JWKS."""
        if kind == HS:
            return jwt.encode(claims, SECRET, algorithm="HS256")
        return jwt.encode(claims, self.jwks.private_key, algorithm="ES256", headers={"kid": KID})

    def valid(self, kind: str, user: str) -> str:
        return self.sign(kind, self.claims(user))


@dataclass
class Cell:
    """One cell's world: a fresh open room with an interviewer and a candidate, on one replica."""

    kind: str
    replica: Replica
    keys: Keys
    code: str = ""
    interviewer: str = field(default_factory=lambda: f"ivr-{uuid.uuid4().hex[:8]}")
    candidate: str = field(default_factory=lambda: f"cand-{uuid.uuid4().hex[:8]}")

    def token(self, user: str) -> str:
        return self.keys.valid(self.kind, user)

    def setup(self) -> Cell:
        created = httpx.post(f"{self.replica.http}/api/create-room", headers=auth(self.token(self.interviewer)),
                             json={}, timeout=10)
        assert created.status_code == 200, created.text
        self.code = created.json()["room_code"]
        joined = httpx.post(f"{self.replica.http}/api/join-room", headers=auth(self.token(self.candidate)),
                            json={"room_code": self.code}, timeout=10)
        assert joined.status_code == 200 and joined.json()["role"] == "candidate", joined.text
        return self


def _none(kind: str, keys: Keys) -> str | None:
    return None


def _alg_none(kind: str, keys: Keys) -> str:
    header = {"alg": "none", "typ": "JWT"}
    return ".".join(jwt.utils.base64url_encode(json.dumps(part).encode()).decode()
                    for part in (header, keys.claims("mallory"))) + "."


def _bad_signature(kind: str, keys: Keys) -> str:
    claims = keys.claims("mallory")
    if kind == HS:
        return jwt.encode(claims, "another-secret-that-is-also-at-least-32-bytes", algorithm="HS256")
    return jwt.encode(claims, keys.attacker_ec, algorithm="ES256", headers={"kid": KID})


def _hs256_on_asymmetric(kind: str, keys: Keys) -> str:
    # Algorithm confusion: HMAC keyed with the replica's *public* key, which anyone can download.
    public_pem = keys.jwks.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hs256_with_key(keys.claims("mallory"), public_pem, {"kid": KID})


def _es256_on_hs(kind: str, keys: Keys) -> str:
    return jwt.encode(keys.claims("mallory"), keys.attacker_ec, algorithm="ES256", headers={"kid": KID})


def _api_key(role: str) -> Callable[[str, Keys], str]:
    def make(kind: str, keys: Keys) -> str:
        # The shape of Supabase's anon / service_role keys: no sub, no aud. Signed as genuinely as the
        # replica accepts, so only the claims can be what refuses them.
        now = int(time.time())
        return keys.sign(kind, {"iss": "supabase", "ref": "abcdefghijklmnopqrst", "role": role,
                                "iat": now, "exp": now + 3600})
    return make


def _claims(**overrides: Any) -> Callable[[str, Keys], str]:
    def make(kind: str, keys: Keys) -> str:
        return keys.sign(kind, keys.claims("mallory", **overrides))
    return make


def _times(**offsets: int) -> Callable[[str, Keys], str]:
    """Time claims relative to when the token is minted (the cell's moment, not the module's import)."""
    def make(kind: str, keys: Keys) -> str:
        now = int(time.time())
        return keys.sign(kind, keys.claims("mallory", **{name: now + delta for name, delta in offsets.items()}))
    return make


@dataclass(frozen=True)
class Row:
    """A kind of caller: how to get its token for a cell, where it is exercised, and what each column answers."""

    key: str
    title: str
    expect: dict[str, str]
    replicas: tuple[str, ...] = BOTH
    bad_token: Callable[[str, Keys], str | None] | None = None
    # For valid callers: which user of the cell it is and what is done to the room first.
    who: str = ""
    room: str = "open"


ROWS: list[Row] = [
    Row("no_token", "no token", REFUSED, bad_token=_none),
    Row("malformed", "malformed (`not-a-jwt`)", REFUSED, bad_token=lambda kind, keys: "not-a-jwt"),
    Row("bad_signature", "bad signature (another secret / another EC key, same kid)", REFUSED,
        bad_token=_bad_signature),
    Row("expired", "expired (exp 120 s ago)",
        {**REFUSED, **{c: "401 token_expired" for c in ("create", "join", "get", "delete")}},
        bad_token=_times(exp=-120, iat=-720)),
    Row("not_yet_valid", "not yet valid (nbf 60 s ahead, beyond the 5 s leeway)", REFUSED,
        bad_token=_times(nbf=60)),
    Row("wrong_audience", "wrong audience (`aud: someone-else`)", REFUSED, bad_token=_claims(aud="someone-else")),
    # Only a replica that knows SUPABASE_URL knows which issuer to expect.
    Row("wrong_issuer", "wrong issuer (`https://evil.example/auth/v1`)", REFUSED, replicas=(AS,),
        bad_token=_claims(iss="https://evil.example/auth/v1")),
    Row("alg_none", "`alg: none`", REFUSED, bad_token=_alg_none),
    Row("hs256_on_asymmetric", "HS256 keyed with the public key, when only JWKS is configured", REFUSED,
        replicas=(AS,), bad_token=_hs256_on_asymmetric),
    Row("es256_on_hs256", "ES256 when only the HS256 secret is configured", REFUSED, replicas=(HS,),
        bad_token=_es256_on_hs),
    Row("anon_key", "Supabase anon key (role anon, no sub / aud)", REFUSED, bad_token=_api_key("anon")),
    Row("service_role_key", "Supabase service_role key (no sub / aud)", REFUSED,
        bad_token=_api_key("service_role")),
    Row("service_role_user", "role service_role on an otherwise valid user token", REFUSED,
        bad_token=_claims(role="service_role")),
    Row("non_member", "valid token, not a member (a fresh user per cell)",
        {"create": "200", "join": "200 candidate", "get": "403 forbidden", "delete": "403 not_member",
         "ws": "close 4403"}, who="stranger"),
    Row("candidate", "the room's candidate",
        {"create": "200", "join": "200 candidate", "get": "200 open", "delete": "403 forbidden",
         "ws": "room_state"}, who="candidate"),
    Row("interviewer", "the room's interviewer",
        {"create": "200", "join": "200 interviewer", "get": "200 open", "delete": "200",
         "ws": "room_state"}, who="interviewer"),
    Row("closed_room", "closed room, its interviewer's token",
        {"create": "200", "join": "410 room_closed", "get": "200 closed", "delete": "410 room_closed",
         "ws": "close 4410"}, who="interviewer", room="closed"),
    Row("unknown_room", "unknown room (valid code, never created), a valid token",
        {"create": "200", "join": "404 room_not_found", "get": "404 room_not_found",
         "delete": "404 room_not_found", "ws": "close 4404"}, who="interviewer", room="unknown"),
]


# --- running one cell ---------------------------------------------------------------------------


def _http(cell: Cell, column: str, code: str, bearer: str | None) -> str:
    headers = auth(bearer) if bearer is not None else {}
    base = cell.replica.http
    if column == "create":
        response = httpx.post(f"{base}/api/create-room", headers=headers, json={}, timeout=10)
    elif column == "join":
        response = httpx.post(f"{base}/api/join-room", headers=headers, json={"room_code": code}, timeout=10)
    elif column == "get":
        response = httpx.get(f"{base}/api/room/{code}", headers=headers, timeout=10)
    else:
        response = httpx.delete(f"{base}/api/room/{code}", headers=headers, timeout=10)
    assert "Traceback" not in response.text
    body = response.json()
    if response.status_code != 200:
        assert body["status"] == "error" and body["message"], body
        return f"{response.status_code} {body['code']}"
    assert body["status"] == "success", body
    if column == "join":
        return f"200 {body['role']}"
    if column == "get":
        return f"200 {body['room_status']}"
    return "200"


def _ws(cell: Cell, code: str, bearer: str | None) -> str:
    query = f"?token={bearer}" if bearer is not None else ""
    conn = connect(f"{cell.replica.ws}/ws/{code}{query}", open_timeout=10, legacy=True)
    try:
        with contextlib.suppress(ConnectionClosed):
            while True:
                frame = json.loads(conn.recv(timeout=10))
                if frame["type"] == "room_state":
                    return "room_state"
                assert frame["type"] == "error", frame
        return f"close {conn.close_code}"
    finally:
        conn.close()


def run_cell(cell: Cell, row: Row, column: str) -> str:
    if row.bad_token is not None:
        bearer = row.bad_token(cell.kind, cell.keys)
        return _ws(cell, cell.code, bearer) if column == "ws" else _http(cell, column, cell.code, bearer)
    user = {"stranger": f"stranger-{uuid.uuid4().hex[:8]}", "candidate": cell.candidate,
            "interviewer": cell.interviewer}[row.who]
    code = cell.code
    if row.room == "closed":
        closed = httpx.delete(f"{cell.replica.http}/api/room/{code}", headers=auth(cell.token(cell.interviewer)),
                              timeout=10)
        assert closed.status_code == 200, closed.text
    elif row.room == "unknown":
        code = new_code()
        while code == cell.code:
            code = new_code()
    bearer = cell.token(user)
    return _ws(cell, code, bearer) if column == "ws" else _http(cell, column, code, bearer)


# --- fixtures and the test ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def matrix_keys() -> Iterator[Keys]:
    server = JwksServer()
    yield Keys(server)
    server.stop()


@pytest.fixture(scope="module")
def matrix_replicas(redis_server: RedisServer, matrix_keys: Keys) -> Iterator[dict[str, Replica]]:
    production = {"RELAY_DEV_MODE": "false", "REDIS_URL": redis_server.url}
    started: dict[str, Replica] = {}
    try:
        started[HS] = checkout_replica({**production, "SUPABASE_JWT_SECRET": SECRET}, "matrix-hs").start()
        started[AS] = checkout_replica({**production, "SUPABASE_URL": matrix_keys.jwks.url}, "matrix-jwks").start()
        yield started
    finally:
        for replica in started.values():
            replica.stop()


CASES = [(kind, row, column) for row in ROWS for kind in row.replicas for column in COLUMNS]


@pytest.mark.parametrize(("kind", "row", "column"), CASES,
                         ids=[f"{kind}-{row.key}-{column}" for kind, row, column in CASES])
def test_authorization_matrix(matrix_replicas: dict[str, Replica], matrix_keys: Keys, kind: str, row: Row,
                              column: str) -> None:
    """Each caller kind gets exactly the status or close code its matrix cell names, on each auth setup."""
    cell = Cell(kind, matrix_replicas[kind], matrix_keys).setup()
    assert run_cell(cell, row, column) == row.expect[column]


def render_matrix() -> str:
    replica_names = {HS: "HS256 only", AS: "JWKS only"}
    lines = [
        "# Authorization matrix",
        "",
        "Generated from `tests/test_authz_matrix.py`, which asserts every cell against two replicas in",
        "production mode: one with only `SUPABASE_JWT_SECRET` (HS256), one with only `SUPABASE_URL`",
        "(ES256 through the project's JWKS). Regenerate with",
        "`RELAY_REGENERATE_DOCS=1 python -m pytest tests/test_authz_matrix.py`.",
        "",
        "HTTP cells give the status and the error `code` (for joins the role, for reads the room status);",
        "WebSocket cells give the close code, or `room_state` when the socket is accepted. Tokens travel as",
        "`Authorization: Bearer` on HTTP and `?token=` on the WebSocket. Every cell runs on a fresh room.",
        "",
        "| caller | replicas | " + " | ".join(f"`{title}`" for title in COLUMNS.values()) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    for row in ROWS:
        where = ", ".join(replica_names[kind] for kind in row.replicas)
        cells = " | ".join(row.expect[column] for column in COLUMNS)
        lines.append(f"| {row.title} | {where} | {cells} |")
    lines += [
        "",
        "Notes:",
        "",
        "- *wrong issuer* runs only where `SUPABASE_URL` is set: without it relay has no issuer to compare",
        "  with (an HS256 token from another project fails the signature check instead).",
        "- Supabase API keys are signed as genuinely as each replica accepts (HS256 with the project secret,",
        "  or ES256 with the JWKS key), so what refuses them is their claims, not their signature.",
        "- A non-member's join succeeds and makes them a candidate: joining by code is how one becomes a",
        "  member. Guessing codes is what the join-failure limit is for.",
        "",
    ]
    return "\n".join(lines)


def test_matrix_document_matches_the_table() -> None:
    """docs/authorization-matrix.md is exactly the table the matrix test asserts."""
    check_generated_doc(DOCS / "authorization-matrix.md", render_matrix(), "tests/test_authz_matrix.py")

