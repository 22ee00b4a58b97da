"""The authorization matrix: every kind of caller against every endpoint and the WebSocket.

The table below is the single source: the test runs every cell against real replicas in production
mode, and docs/authorization-matrix.md is rendered from the same rows (RELAY_REGENERATE_DOCS=1 rewrites
it; otherwise the test fails when the file and the table differ).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
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

from relay.keys import new_code
from tests.security_support import DOCS, check_generated_doc, checkout_replica, hs256_with_key
from tests.support import Client, RedisServer, Replica, auth
from tests.test_auth import KID, SECRET, JwksServer

HS = "hs256"  # a replica with only SUPABASE_JWT_SECRET
AS = "jwks"  # a replica with only SUPABASE_URL (ES256 / RS256 from the project's JWKS)
BOTH = (HS, AS)

COLUMNS = {
    "create": "POST /api/create-room",
    "join": "POST /api/join-room",
    "get": "GET /api/room/{code}",
    "delete": "DELETE /api/room/{code}",
    "remove": "DELETE /api/room/{code}/members/{candidate}",
    "ws": "WS /ws/{code}",
    "monitoring": "GET /api/room/{code}/monitoring",
    "monitor": "WS window_focus_lost",
}
SOCKET_COLUMNS = ("ws", "monitor")

REFUSED = {
    **{column: "401 unauthorized" for column in COLUMNS},
    **{column: "close 4401" for column in SOCKET_COLUMNS},
}

# Tokens with this under app_metadata join rooms as interviewers (RELAY_INTERVIEWER_CLAIM below).
INTERVIEWER_CLAIM = {"role": "interviewer"}

# The matrix replicas run with small limits, so that a row can reach each one in a few requests.
LIMITS = {
    "RELAY_MAX_MEMBERS": 3,
    "RELAY_CREATE_LIMIT": 3,
    "RELAY_JOIN_FAILURE_LIMIT": 3,
    "RELAY_MAX_CONNECTIONS_PER_USER": 1,
    "RELAY_MAX_CONNECTIONS_PER_ROOM": 2,
}


class Keys:
    """What the test can sign with: the replicas' own keys and an attacker's."""

    def __init__(self, jwks: JwksServer) -> None:
        self.jwks = jwks
        self.issuer = f"{jwks.url}/auth/v1"
        self.attacker_ec = ec.generate_private_key(ec.SECP256R1())

    def claims(self, user: str, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        base: dict[str, Any] = {
            "sub": user,
            "aud": "authenticated",
            "role": "authenticated",
            "iat": now,
            "exp": now + 600,
            "iss": self.issuer,
            "email": f"{user}@example.test",
            "user_metadata": {"full_name": user},
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


def _fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _address() -> str:
    """A client address of the cell's own (sent as X-Forwarded-For, which relay trusts from 127.0.0.1)."""
    return "10." + ".".join(str(secrets.randbelow(256)) for _ in range(3))


@dataclass
class Cell:
    """One cell's world: a fresh open room with an interviewer and a candidate, on one replica."""

    kind: str
    replica: Replica
    keys: Keys
    http: httpx.Client
    code: str = ""
    interviewer: str = field(default_factory=lambda: _fresh("ivr"))
    candidate: str = field(default_factory=lambda: _fresh("cand"))
    address: str = field(default_factory=_address)
    held: list[Client] = field(default_factory=list)  # sockets kept open while the cell runs
    colleagues: set[str] = field(default_factory=set)  # users whose tokens carry the interviewer claim

    def token(self, user: str) -> str:
        if user in self.colleagues:
            claims = self.keys.claims(user, app_metadata=INTERVIEWER_CLAIM)
            return self.keys.sign(self.kind, claims)
        return self.keys.valid(self.kind, user)

    def colleague(self) -> str:
        """A new user whose token carries the interviewer claim (joins as an interviewer)."""
        user = _fresh("colleague")
        self.colleagues.add(user)
        return user

    def headers(self, bearer: str | None, address: str | None = None) -> dict[str, str]:
        headers = {"X-Forwarded-For": address or self.address}
        return {**headers, **auth(bearer)} if bearer is not None else headers

    def post(self, path: str, user: str, body: dict[str, Any], address: str | None = None) -> httpx.Response:
        return self.http.post(
            f"{self.replica.http}{path}", headers=self.headers(self.token(user), address), json=body
        )

    def join(self, user: str, code: str | None = None, address: str | None = None) -> httpx.Response:
        return self.post("/api/join-room", user, {"room_code": code or self.code}, address)

    def hold(self, user: str) -> None:
        client = Client(self.replica.ws, self.code, self.token(user))
        self.held.append(client)
        client.recv_type("room_state")

    def setup(self) -> Cell:
        created = self.post("/api/create-room", self.interviewer, {})
        assert created.status_code == 200, created.text
        self.code = created.json()["room_code"]
        joined = self.join(self.candidate)
        assert joined.status_code == 200 and joined.json()["role"] == "candidate", joined.text
        return self

    def release(self) -> None:
        for client in self.held:
            client.close()


def _none(kind: str, keys: Keys) -> str | None:
    return None


def _alg_none(kind: str, keys: Keys) -> str:
    header = {"alg": "none", "typ": "JWT"}
    return (
        ".".join(
            jwt.utils.base64url_encode(json.dumps(part).encode()).decode()
            for part in (header, keys.claims("mallory"))
        )
        + "."
    )


def _bad_signature(kind: str, keys: Keys) -> str:
    claims = keys.claims("mallory")
    if kind == HS:
        return jwt.encode(claims, "another-secret-that-is-also-at-least-32-bytes", algorithm="HS256")
    return jwt.encode(claims, keys.attacker_ec, algorithm="ES256", headers={"kid": KID})


def _hs256_on_asymmetric(kind: str, keys: Keys) -> str:
    # Algorithm confusion: HMAC keyed with the replica's *public* key, which anyone can download.
    public_pem = keys.jwks.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hs256_with_key(keys.claims("mallory"), public_pem, {"kid": KID})


def _es256_on_hs(kind: str, keys: Keys) -> str:
    return jwt.encode(keys.claims("mallory"), keys.attacker_ec, algorithm="ES256", headers={"kid": KID})


def _api_key(role: str) -> Callable[[str, Keys], str]:
    def make(kind: str, keys: Keys) -> str:
        # The shape of Supabase's anon / service_role keys: no sub, no aud. Signed as genuinely as the
        # replica accepts, so only the claims can be what refuses them.
        now = int(time.time())
        return keys.sign(
            kind,
            {"iss": "supabase", "ref": "abcdefghijklmnopqrst", "role": role, "iat": now, "exp": now + 3600},
        )

    return make


def _claims(**overrides: Any) -> Callable[[str, Keys], str]:
    def make(kind: str, keys: Keys) -> str:
        return keys.sign(kind, keys.claims("mallory", **overrides))

    return make


def _times(**offsets: int) -> Callable[[str, Keys], str]:
    """Time claims relative to when the token is minted (the cell's moment, not the module's import)."""

    def make(kind: str, keys: Keys) -> str:
        now = int(time.time())
        return keys.sign(
            kind, keys.claims("mallory", **{name: now + delta for name, delta in offsets.items()})
        )

    return make


@dataclass(frozen=True)
class Row:
    """A kind of caller: how to get its token for a cell, where it is exercised, and what each column answers."""

    key: str
    title: str
    expect: dict[str, str]
    replicas: tuple[str, ...] = BOTH
    bad_token: Callable[[str, Keys], str | None] | None = None
    # For valid callers: brings the cell into the row's situation; returns (caller, room code).
    prepare: Callable[[Cell], tuple[str, str]] | None = None


def _stranger(cell: Cell) -> tuple[str, str]:
    return _fresh("stranger"), cell.code


def _candidate(cell: Cell) -> tuple[str, str]:
    return cell.candidate, cell.code


def _interviewer(cell: Cell) -> tuple[str, str]:
    return cell.interviewer, cell.code


def _closed_room(cell: Cell) -> tuple[str, str]:
    closed = cell.http.delete(
        f"{cell.replica.http}/api/room/{cell.code}", headers=cell.headers(cell.token(cell.interviewer))
    )
    assert closed.status_code == 200, closed.text
    return cell.interviewer, cell.code


def _unknown_code(cell: Cell) -> str:
    code = new_code()
    while code == cell.code:
        code = new_code()
    return code


def _unknown_room(cell: Cell) -> tuple[str, str]:
    return cell.interviewer, _unknown_code(cell)


def _removed(cell: Cell) -> tuple[str, str]:
    removed = cell.http.delete(
        f"{cell.replica.http}/api/room/{cell.code}/members/{cell.candidate}",
        headers=cell.headers(cell.token(cell.interviewer)),
    )
    assert removed.status_code == 200, removed.text
    return cell.candidate, cell.code


def _colleague(cell: Cell) -> tuple[str, str]:
    return cell.colleague(), cell.code


def _room_full(cell: Cell) -> tuple[str, str]:
    # Interviewers fill the room: it already has its one candidate.
    for _ in range(LIMITS["RELAY_MAX_MEMBERS"] - 2):
        assert cell.join(cell.colleague()).status_code == 200
    return _stranger(cell)


def _creations_used_up(cell: Cell) -> tuple[str, str]:
    for _ in range(LIMITS["RELAY_CREATE_LIMIT"] - 1):
        assert cell.post("/api/create-room", cell.interviewer, {}).status_code == 200
    return _interviewer(cell)


def _user_guessed_codes(cell: Cell) -> tuple[str, str]:
    # From another address, so only the user's own counter fills up.
    guesser, elsewhere = _fresh("guesser"), _address()
    for _ in range(LIMITS["RELAY_JOIN_FAILURE_LIMIT"]):
        assert cell.join(guesser, _unknown_code(cell), elsewhere).status_code == 404
    return guesser, cell.code


def _address_guessed_codes(cell: Cell) -> tuple[str, str]:
    # Each guess by a new account from the cell's address: only the address's counter fills up.
    for _ in range(LIMITS["RELAY_JOIN_FAILURE_LIMIT"]):
        assert cell.join(_fresh("puppet"), _unknown_code(cell)).status_code == 404
    return _stranger(cell)


def _user_connections_used_up(cell: Cell) -> tuple[str, str]:
    for _ in range(LIMITS["RELAY_MAX_CONNECTIONS_PER_USER"]):
        cell.hold(cell.candidate)
    return _candidate(cell)


def _room_connections_used_up(cell: Cell) -> tuple[str, str]:
    cell.hold(cell.interviewer)
    cell.hold(cell.candidate)
    assert LIMITS["RELAY_MAX_CONNECTIONS_PER_ROOM"] == 2
    member = cell.colleague()
    assert cell.join(member).status_code == 200
    return member, cell.code


ROWS: list[Row] = [
    Row("no_token", "no token", REFUSED, bad_token=_none),
    Row("malformed", "malformed (`not-a-jwt`)", REFUSED, bad_token=lambda kind, keys: "not-a-jwt"),
    Row(
        "bad_signature",
        "bad signature (another secret / another EC key, same kid)",
        REFUSED,
        bad_token=_bad_signature,
    ),
    Row(
        "expired",
        "expired (exp 120 s ago)",
        {
            **{column: "401 token_expired" for column in COLUMNS},
            **{column: "close 4401" for column in SOCKET_COLUMNS},
        },
        bad_token=_times(exp=-120, iat=-720),
    ),
    Row(
        "not_yet_valid",
        "not yet valid (nbf 60 s ahead, beyond the 5 s leeway)",
        REFUSED,
        bad_token=_times(nbf=60),
    ),
    Row(
        "wrong_audience",
        "wrong audience (`aud: someone-else`)",
        REFUSED,
        bad_token=_claims(aud="someone-else"),
    ),
    # Only a replica that knows SUPABASE_URL knows which issuer to expect.
    Row(
        "wrong_issuer",
        "wrong issuer (`https://evil.example/auth/v1`)",
        REFUSED,
        replicas=(AS,),
        bad_token=_claims(iss="https://evil.example/auth/v1"),
    ),
    Row("alg_none", "`alg: none`", REFUSED, bad_token=_alg_none),
    Row(
        "hs256_on_asymmetric",
        "HS256 keyed with the public key, when only JWKS is configured",
        REFUSED,
        replicas=(AS,),
        bad_token=_hs256_on_asymmetric,
    ),
    Row(
        "es256_on_hs256",
        "ES256 when only the HS256 secret is configured",
        REFUSED,
        replicas=(HS,),
        bad_token=_es256_on_hs,
    ),
    Row("anon_key", "Supabase anon key (role anon, no sub / aud)", REFUSED, bad_token=_api_key("anon")),
    Row(
        "service_role_key",
        "Supabase service_role key (no sub / aud)",
        REFUSED,
        bad_token=_api_key("service_role"),
    ),
    Row(
        "service_role_user",
        "role service_role on an otherwise valid user token",
        REFUSED,
        bad_token=_claims(role="service_role"),
    ),
    Row(
        "non_member",
        "valid token, not a member (a fresh user per cell)",
        {
            "create": "200",
            "join": "409 candidate_taken",
            "get": "403 forbidden",
            "delete": "403 not_member",
            "remove": "403 not_member",
            "ws": "close 4403",
            "monitoring": "403 forbidden",
            "monitor": "close 4403",
        },
        prepare=_stranger,
    ),
    Row(
        "colleague",
        "valid token with the interviewer claim, not a member",
        {
            "create": "200",
            "join": "200 interviewer",
            "get": "403 forbidden",
            "delete": "403 not_member",
            "remove": "403 not_member",
            "ws": "close 4403",
            "monitoring": "403 forbidden",
            "monitor": "close 4403",
        },
        prepare=_colleague,
    ),
    Row(
        "candidate",
        "the room's candidate",
        {
            "create": "200",
            "join": "200 candidate",
            "get": "200 open",
            "delete": "403 forbidden",
            "remove": "403 forbidden",
            "ws": "room_state",
            "monitoring": "403 forbidden",
            "monitor": "stored",
        },
        prepare=_candidate,
    ),
    Row(
        "interviewer",
        "the room's interviewer",
        {
            "create": "200",
            "join": "200 interviewer",
            "get": "200 open",
            "delete": "200",
            "remove": "200",
            "ws": "room_state",
            "monitoring": "200",
            "monitor": "error forbidden",
        },
        prepare=_interviewer,
    ),
    Row(
        "closed_room",
        "closed room, its interviewer's token",
        {
            "create": "200",
            "join": "410 room_closed",
            "get": "200 closed",
            "delete": "410 room_closed",
            "remove": "410 room_closed",
            "ws": "close 4410",
            "monitoring": "200",
            "monitor": "close 4410",
        },
        prepare=_closed_room,
    ),
    Row(
        "unknown_room",
        "unknown room (valid code, never created), a valid token",
        {
            "create": "200",
            "join": "404 room_not_found",
            "get": "404 room_not_found",
            "delete": "404 room_not_found",
            "remove": "404 room_not_found",
            "ws": "close 4404",
            "monitoring": "404 room_not_found",
            "monitor": "close 4404",
        },
        prepare=_unknown_room,
    ),
    Row(
        "removed_member",
        "a candidate the interviewer removed",
        {
            "create": "200",
            "join": "403 member_removed",
            "get": "403 forbidden",
            "delete": "403 member_removed",
            "remove": "403 member_removed",
            "ws": "close 4403",
            "monitoring": "403 forbidden",
            "monitor": "close 4403",
        },
        prepare=_removed,
    ),
    Row(
        "room_full",
        "a new user, room at `RELAY_MAX_MEMBERS` (3)",
        {
            "create": "200",
            "join": "409 room_full",
            "get": "403 forbidden",
            "delete": "403 not_member",
            "remove": "403 not_member",
            "ws": "close 4403",
            "monitoring": "403 forbidden",
            "monitor": "close 4403",
        },
        prepare=_room_full,
    ),
    Row(
        "creations_used_up",
        "the interviewer, after `RELAY_CREATE_LIMIT` (3) rooms this hour",
        {
            "create": "429 rate_limited",
            "join": "200 interviewer",
            "get": "200 open",
            "delete": "200",
            "remove": "200",
            "ws": "room_state",
            "monitoring": "200",
            "monitor": "error forbidden",
        },
        prepare=_creations_used_up,
    ),
    Row(
        "user_guessed_codes",
        "a user with `RELAY_JOIN_FAILURE_LIMIT` (3) failed joins (from another address)",
        {
            "create": "200",
            "join": "429 rate_limited",
            "get": "403 forbidden",
            "delete": "403 not_member",
            "remove": "403 not_member",
            "ws": "close 4403",
            "monitoring": "403 forbidden",
            "monitor": "close 4403",
        },
        prepare=_user_guessed_codes,
    ),
    Row(
        "address_guessed_codes",
        "a new user from an address with `RELAY_JOIN_FAILURE_LIMIT` (3) failed joins",
        {
            "create": "200",
            "join": "429 rate_limited",
            "get": "403 forbidden",
            "delete": "403 not_member",
            "remove": "403 not_member",
            "ws": "close 4403",
            "monitoring": "403 forbidden",
            "monitor": "close 4403",
        },
        prepare=_address_guessed_codes,
    ),
    Row(
        "user_connections_used_up",
        "the candidate, holding `RELAY_MAX_CONNECTIONS_PER_USER` (1) sockets",
        {
            "create": "200",
            "join": "200 candidate",
            "get": "200 open",
            "delete": "403 forbidden",
            "remove": "403 forbidden",
            "ws": "close 4429",
            "monitoring": "403 forbidden",
            "monitor": "close 4429",
        },
        prepare=_user_connections_used_up,
    ),
    Row(
        "room_connections_used_up",
        "an interviewer, room holding `RELAY_MAX_CONNECTIONS_PER_ROOM` (2) sockets",
        {
            "create": "200",
            "join": "200 interviewer",
            "get": "200 open",
            "delete": "200",
            "remove": "200",
            "ws": "close 4429",
            "monitoring": "200",
            "monitor": "close 4429",
        },
        prepare=_room_connections_used_up,
    ),
]


# --- running one cell ---------------------------------------------------------------------------


def _http(cell: Cell, column: str, code: str, bearer: str | None) -> str:
    headers = cell.headers(bearer)
    base, http = cell.replica.http, cell.http
    if column == "create":
        response = http.post(f"{base}/api/create-room", headers=headers, json={})
    elif column == "join":
        response = http.post(f"{base}/api/join-room", headers=headers, json={"room_code": code})
    elif column == "get":
        response = http.get(f"{base}/api/room/{code}", headers=headers)
    elif column == "delete":
        response = http.delete(f"{base}/api/room/{code}", headers=headers)
    elif column == "monitoring":
        response = http.get(f"{base}/api/room/{code}/monitoring", headers=headers)
    else:
        response = http.delete(f"{base}/api/room/{code}/members/{cell.candidate}", headers=headers)
    assert "Traceback" not in response.text
    body = response.json()
    if response.status_code != 200:
        assert body["status"] == "error" and body["message"], body
        if response.status_code == 429:
            assert int(response.headers["Retry-After"]) > 0
        return f"{response.status_code} {body['code']}"
    if column == "get":
        # `status` is the room's state in the old backend's words there (README, compatibility fields)
        assert body["status"] in {"waiting_for_candidate", "active", "closed"}, body
    else:
        assert body["status"] == "success", body
    if column == "join":
        return f"200 {body['role']}"
    if column == "monitoring":
        assert isinstance(body["monitoring_incidents"], list) and isinstance(body["total_keystrokes"], int)
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


def _monitor(cell: Cell, code: str, bearer: str | None) -> str:
    """Open the caller's socket and send a focus loss: 'stored' when the room's interviewer then sees it,
    'error <code>' when the socket answers with an error (and stays open), else the close code."""
    query = f"?token={bearer}" if bearer is not None else ""
    conn = connect(f"{cell.replica.ws}/ws/{code}{query}", open_timeout=10, legacy=True)
    try:
        with contextlib.suppress(ConnectionClosed):
            while json.loads(conn.recv(timeout=10))["type"] != "room_state":
                pass
            conn.send(json.dumps({"type": "window_focus_lost", "duration": 2.5}))
            conn.send(json.dumps({"type": "ping"}))
            errors = []
            while (frame := json.loads(conn.recv(timeout=10)))["type"] != "pong":
                if frame["type"] == "error":
                    errors.append(frame["code"])
            if errors:
                return " ".join(f"error {error}" for error in errors)
            report = cell.http.get(
                f"{cell.replica.http}/api/room/{cell.code}/monitoring",
                headers=cell.headers(cell.token(cell.interviewer)),
            ).json()
            return "stored" if report["total_incidents"] == 1 else f"not stored: {report}"
        return f"close {conn.close_code}"
    finally:
        conn.close()


def run_cell(cell: Cell, row: Row, column: str) -> str:
    if row.bad_token is not None:
        bearer, code = row.bad_token(cell.kind, cell.keys), cell.code
    else:
        assert row.prepare is not None
        user, code = row.prepare(cell)
        bearer = cell.token(user)
    if column == "ws":
        return _ws(cell, code, bearer)
    if column == "monitor":
        return _monitor(cell, code, bearer)
    return _http(cell, column, code, bearer)


# --- fixtures and the test ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def matrix_keys() -> Iterator[Keys]:
    server = JwksServer()
    yield Keys(server)
    server.stop()


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def matrix_redis() -> Iterator[RedisServer]:
    """The matrix's own redis-server: the quota counters it fills must not limit other tests."""
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def matrix_replicas(matrix_redis: RedisServer, matrix_keys: Keys) -> Iterator[dict[str, Replica]]:
    production = {
        "RELAY_DEV_MODE": "false",
        "REDIS_URL": matrix_redis.url,
        "RELAY_INTERVIEWER_CLAIM": "app_metadata.role=interviewer",
        **{name: str(value) for name, value in LIMITS.items()},
    }
    started: dict[str, Replica] = {}
    try:
        started[HS] = checkout_replica({**production, "SUPABASE_JWT_SECRET": SECRET}, "matrix-hs").start()
        started[AS] = checkout_replica(
            {**production, "SUPABASE_URL": matrix_keys.jwks.url}, "matrix-jwks"
        ).start()
        yield started
    finally:
        for replica in started.values():
            replica.stop()


CASES = [(kind, row, column) for row in ROWS for kind in row.replicas for column in COLUMNS]


@pytest.mark.parametrize(
    ("kind", "row", "column"), CASES, ids=[f"{kind}-{row.key}-{column}" for kind, row, column in CASES]
)
def test_authorization_matrix(
    matrix_replicas: dict[str, Replica],
    matrix_keys: Keys,
    http: httpx.Client,
    kind: str,
    row: Row,
    column: str,
) -> None:
    """Each caller kind gets exactly the status or close code its matrix cell names, on each auth setup."""
    cell = Cell(kind, matrix_replicas[kind], matrix_keys, http)
    try:
        assert run_cell(cell.setup(), row, column) == row.expect[column]
    finally:
        cell.release()


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
        "WebSocket cells give the close code, or `room_state` when the socket is accepted. The",
        "`WS window_focus_lost` column opens the caller's socket and sends a candidate monitoring frame:",
        "`stored` when the room's interviewer then finds it in the monitoring data, `error <code>` when the",
        "socket answers with an error frame (and stays open), or the close code. Tokens travel as",
        "`Authorization: Bearer` on HTTP and `?token=` on the WebSocket. Every cell runs on a fresh room whose",
        "candidate is the target of the member-removal column, from a client address of its own.",
        "The replicas run with small limits so that a row reaches each: "
        + ", ".join(f"`{name}={value}`" for name, value in LIMITS.items())
        + ".",
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
        "- Joining by code is how one becomes a member: as a candidate, or as an interviewer with the claim",
        "  `RELAY_INTERVIEWER_CLAIM` names (`app_metadata.role=interviewer` here). A room takes one candidate",
        "  (`RELAY_MAX_CANDIDATES`, default 1), so a non-member's join of a room that has its candidate is",
        "  409 `candidate_taken`, while another interviewer may still join. Guessing codes is what the",
        "  join-failure limit is for: it counts joins of unknown rooms per user and per client address, and",
        "  refuses every join (even of a real room) past the limit.",
        "- 429 answers carry `Retry-After`; the test checks it on every 429 cell.",
        "- Monitoring data is the room's interviewers' only, and stays readable by them once the room is",
        "  closed (until it expires). Monitoring frames count only from the room's candidates; an",
        "  interviewer's is answered with `error forbidden` on a socket that stays open.",
        "",
    ]
    return "\n".join(lines)


def test_matrix_document_matches_the_table() -> None:
    """docs/authorization-matrix.md is exactly the table the matrix test asserts."""
    check_generated_doc(DOCS / "authorization-matrix.md", render_matrix(), "tests/test_authz_matrix.py")


README_START = "<!-- authorization-matrix:start (generated by tests/test_authz_matrix.py) -->"
README_END = "<!-- authorization-matrix:end -->"


def test_readme_carries_the_matrix_table() -> None:
    """README's Security section holds the same table rows as the matrix test asserts."""
    table = "\n".join(line for line in render_matrix().splitlines() if line.startswith("|"))
    readme_path = DOCS.parent / "README.md"
    readme = readme_path.read_text()
    assert README_START in readme and README_END in readme, "README lost its authorization matrix markers"
    before, rest = readme.split(README_START, 1)
    current, after = rest.split(README_END, 1)
    if os.environ.get("RELAY_REGENERATE_DOCS") == "1":
        readme_path.write_text(f"{before}{README_START}\n{table}\n{README_END}{after}")
        return
    assert current.strip() == table, (
        "README's authorization matrix is out of date; regenerate it with "
        "RELAY_REGENERATE_DOCS=1 python -m pytest tests/test_authz_matrix.py"
    )
