"""Cross-site WebSocket hijacking: the handshake checks Origin against the allow-list, and CORS uses the same list."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.security_support import running
from tests.support import RedisServer, Replica, auth, create_room, join_room, token
from tests.test_auth import SECRET

ALLOWED = "https://app.example.com"
PRODUCTION = {"RELAY_DEV_MODE": "false", "SUPABASE_JWT_SECRET": SECRET}
# Origins a hostile page could have, none of which is the allowed one.
FOREIGN = [
    "https://evil.example",
    "https://app.example.com.evil.example",  # the allowed origin as a prefix
    "https://evil-app.example.com",
    "http://app.example.com",  # same host, other scheme
    "https://app.example.com:8443",  # same host, other port
    "null",  # sandboxed iframes, file:// pages
]


def user(name: str) -> str:
    return token(name, secret=SECRET)


@pytest.fixture(scope="module")
def listed(redis_server: RedisServer) -> Iterator[Replica]:
    with running(
        {**PRODUCTION, "REDIS_URL": redis_server.url, "RELAY_ALLOWED_ORIGINS": ALLOWED}, "origin-listed"
    ) as replica:
        yield replica


@pytest.fixture(scope="module")
def unlisted(redis_server: RedisServer) -> Iterator[Replica]:
    with running({**PRODUCTION, "REDIS_URL": redis_server.url}, "origin-unlisted") as replica:
        yield replica


def room_with_member(replica: Replica, member: str) -> str:
    code = create_room(replica.http, user("owner"))
    join_room(replica.http, user(member), code)
    return code


def handshake(replica: Replica, code: str, bearer: str, origin: str | None) -> str:
    """'room_state' when the socket opens, 'HTTP <status>' when the upgrade is refused."""
    headers = {"Origin": origin} if origin is not None else None
    try:
        conn = connect(
            f"{replica.ws}/ws/{code}?token={bearer}", additional_headers=headers, open_timeout=10, legacy=True
        )
    except InvalidStatus as refused:
        body = json.loads(refused.response.body or b"{}")
        assert body.get("code") == "origin_not_allowed", body
        return f"HTTP {refused.response.status_code}"
    try:
        return str(json.loads(conn.recv(timeout=10))["type"])
    finally:
        conn.close()


@pytest.mark.parametrize("origin", FOREIGN)
def test_foreign_origin_is_refused_before_the_upgrade(listed: Replica, origin: str) -> None:
    """A member's valid token from a page on a foreign origin gets HTTP 403, never an open socket."""
    code = room_with_member(listed, "victim")
    assert handshake(listed, code, user("victim"), origin) == "HTTP 403"
    # The refused handshake left no trace: the victim is not shown as connected.
    info = httpx.get(f"{listed.http}/api/room/{code}", headers=auth(user("owner")), timeout=10).json()
    assert not any(member["connected"] for member in info["members"])


def test_allowed_origin_and_non_browser_clients_connect(listed: Replica) -> None:
    """The allow-listed origin (with or without a trailing slash) and a client without Origin both get in."""
    code = room_with_member(listed, "cara")
    assert handshake(listed, code, user("cara"), ALLOWED) == "room_state"
    assert handshake(listed, code, user("cara"), ALLOWED + "/") == "room_state"
    assert handshake(listed, code, user("cara"), None) == "room_state"


def preflight(replica: Replica, origin: str, path: str = "/api/create-room") -> httpx.Response:
    return httpx.options(
        f"{replica.http}{path}",
        timeout=10,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


def test_cors_preflight_answers_only_the_allowed_origin(listed: Replica) -> None:
    """Preflight names the allowed origin and the Authorization header; a foreign origin gets no grant."""
    allowed = preflight(listed, ALLOWED)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    for origin in FOREIGN:
        refused = preflight(listed, origin)
        assert refused.status_code >= 400, origin
        assert "access-control-allow-origin" not in refused.headers, origin


def test_cors_actual_response_is_readable_only_by_the_allowed_origin(listed: Replica) -> None:
    """A create-room response carries Access-Control-Allow-Origin for the allowed origin only."""
    ok = httpx.post(
        f"{listed.http}/api/create-room",
        json={},
        timeout=10,
        headers={**auth(user("owner")), "Origin": ALLOWED},
    )
    assert ok.headers.get("access-control-allow-origin") == ALLOWED
    foreign = httpx.post(
        f"{listed.http}/api/create-room",
        json={},
        timeout=10,
        headers={**auth(user("owner")), "Origin": "https://evil.example"},
    )
    assert "access-control-allow-origin" not in foreign.headers


def test_production_without_a_list_allows_only_the_same_origin(unlisted: Replica) -> None:
    """No RELAY_ALLOWED_ORIGINS in production: only an Origin naming the Host the client connected to passes."""
    code = room_with_member(unlisted, "dina")
    same = f"http://127.0.0.1:{unlisted.port}"
    assert handshake(unlisted, code, user("dina"), same) == "room_state"
    assert handshake(unlisted, code, user("dina"), None) == "room_state"
    for origin in [
        "https://evil.example",
        f"http://localhost:{unlisted.port}",
        "http://127.0.0.1:1",
        f"http://127.0.0.1:{unlisted.port}.evil.example",
        "null",
    ]:
        assert handshake(unlisted, code, user("dina"), origin) == "HTTP 403", origin


def test_production_without_a_list_grants_no_cors(unlisted: Replica) -> None:
    """No RELAY_ALLOWED_ORIGINS in production: no cross-origin page is granted the API."""
    for origin in ["https://evil.example", f"http://localhost:{unlisted.port}"]:
        assert "access-control-allow-origin" not in preflight(unlisted, origin).headers
        response = httpx.post(
            f"{unlisted.http}/api/create-room",
            json={},
            timeout=10,
            headers={**auth(user("owner")), "Origin": origin},
        )
        assert "access-control-allow-origin" not in response.headers
