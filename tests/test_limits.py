"""Abuse limits, live token expiry, member removal and slow consumers, against real processes."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from relay.auth import mint_dev_token
from relay.config import DEV_JWT_SECRET
from tests.support import (
    Client,
    RedisServer,
    Replica,
    auth,
    create_room,
    join_room,
    open_refused,
    token,
    wait_for,
)


@pytest.fixture(scope="module")
def limited(redis_server: RedisServer) -> Iterator[Replica]:
    replica = Replica(
        {
            "REDIS_URL": redis_server.url,
            "RELAY_RATE_PER_SECOND": "5",
            "RELAY_RATE_BURST": "10",
            "RELAY_MAX_CONNECTIONS_PER_USER": "2",
            "RELAY_MAX_CONNECTIONS_PER_ROOM": "3",
            "RELAY_MAX_MEMBERS": "3",
            # two candidates, so that one room can reach RELAY_MAX_MEMBERS without interviewer claims
            "RELAY_MAX_CANDIDATES": "2",
            "RELAY_CREATE_LIMIT": "3",
            "RELAY_TOKEN_EXPIRY_WARNING": "2",
            "RELAY_SEND_QUEUE": "8",
        },
        name="limited",
    ).start()
    yield replica
    replica.stop()


def unique(name: str) -> str:
    return f"{name}-{os.urandom(4).hex()}"


def test_burst_passes_flood_is_refused_then_closed(limited: Replica) -> None:
    """A burst within RELAY_RATE_BURST passes; beyond it frames are refused; a sustained flood is closed 4429."""
    alice, bob = token(unique("alice")), token(unique("bob"))
    code = create_room(limited.http, alice)
    join_room(limited.http, bob, code)
    flooder, other = Client(limited.ws, code, alice), Client(limited.ws, code, bob)
    flooder.recv_type("room_state")
    other.recv_type("room_state")
    for n in range(10):
        flooder.send({"type": "cursor_update", "cursor_position": {"n": n}})
    flooder.send({"type": "editor_update", "content": "x", "client_msg_id": "over"})
    assert [f["cursor_position"]["n"] for f in (other.recv_type("cursor_update") for _ in range(10))] == list(
        range(10)
    )
    refused = flooder.recv_type("error")
    assert refused["code"] == "rate_limited" and refused["client_msg_id"] == "over"
    assert [f for f in flooder.frames if f.get("type") == "error"] == [refused]
    for n in range(40):
        with contextlib.suppress(Exception):
            flooder.send({"type": "cursor_update", "cursor_position": {"n": n}})
    close_code, reason = flooder.wait_closed()
    assert close_code == 4429, (close_code, reason)
    # the room goes on for the others
    other.send({"type": "ping"})
    assert other.recv_type("pong") == {"type": "pong"}


def test_connections_per_user_and_per_room(limited: Replica) -> None:
    """A user's third socket in a room, and a room's fourth socket, are closed with 4429."""
    alice, bob = token(unique("alice")), token(unique("bob"))
    code = create_room(limited.http, alice)
    join_room(limited.http, bob, code)
    tabs = [Client(limited.ws, code, alice) for _ in range(2)]
    for tab in tabs:
        tab.recv_type("room_state")
    close_code, reason = open_refused(limited.ws, code, f"?token={alice}")
    assert close_code == 4429 and "connections" in (reason or "")
    third = Client(limited.ws, code, bob)
    third.recv_type("room_state")
    assert open_refused(limited.ws, code, f"?token={bob}")[0] == 4429  # room has 3 of 3
    tabs[0].close()
    wait_for(lambda: Client(limited.ws, code, bob).recv_type("room_state") is not None, 10, "a free slot")


def test_members_per_room(limited: Replica) -> None:
    """Past RELAY_MAX_MEMBERS, join-room answers 409 room_full; existing members can still rejoin."""
    owner = token(unique("owner"))
    code = create_room(limited.http, owner)
    join_room(limited.http, token("m1"), code)
    join_room(limited.http, token("m2"), code)
    full = httpx.post(
        f"{limited.http}/api/join-room", headers=auth(token("m3")), json={"room_code": code}, timeout=5
    )
    assert full.status_code == 409 and full.json()["code"] == "room_full"
    assert join_room(limited.http, token("m1"), code)["role"] == "candidate"


def test_room_creations_per_user(limited: Replica) -> None:
    """The fourth room within an hour is refused with 429 and Retry-After; other users are unaffected."""
    user = token(unique("maker"))
    for _ in range(3):
        create_room(limited.http, user)
    refused = httpx.post(f"{limited.http}/api/create-room", headers=auth(user), json={}, timeout=5)
    assert refused.status_code == 429 and refused.json()["code"] == "rate_limited"
    assert 0 < int(refused.headers["Retry-After"]) <= 3600
    create_room(limited.http, token(unique("other-maker")))


def test_guessing_room_codes_is_limited_per_user_and_per_address() -> None:
    """Failed joins count per user and per client address: a guesser is stopped even with fresh accounts."""
    # Its own Redis: the address counter it fills would block 127.0.0.1 for the other tests.
    redis_server = RedisServer().start()
    limited = Replica({"REDIS_URL": redis_server.url, "RELAY_JOIN_FAILURE_LIMIT": "3"}, name="guess").start()
    try:
        _guess(limited)
    finally:
        limited.stop()
        redis_server.cleanup()


def _guess(limited: Replica) -> None:
    guesser = token(unique("guesser"))
    for guess in ("AAAAAA", "BBBBBB", "CCCCCC"):
        response = httpx.post(
            f"{limited.http}/api/join-room", headers=auth(guesser), json={"room_code": guess}, timeout=5
        )
        assert response.status_code in (404, 429)
    real = create_room(limited.http, token(unique("host")))
    blocked = httpx.post(
        f"{limited.http}/api/join-room", headers=auth(guesser), json={"room_code": real}, timeout=5
    )
    assert blocked.status_code == 429 and "Retry-After" in blocked.headers
    # same address (127.0.0.1), a new account: still blocked
    fresh = httpx.post(
        f"{limited.http}/api/join-room",
        headers=auth(token(unique("sock-puppet"))),
        json={"room_code": real},
        timeout=5,
    )
    assert fresh.status_code == 429


def test_expiring_token_is_warned_then_closed(limited: Replica) -> None:
    """A socket whose token expires gets token_expiring, then token_expired and close 4401."""
    user = unique("short")
    code = create_room(limited.http, token(user))
    short_lived = mint_dev_token(DEV_JWT_SECRET, user, ttl_seconds=4)
    client = Client(limited.ws, code, short_lived)
    client.recv_type("room_state")
    warning = client.recv_type("token_expiring", timeout=10)
    assert warning["expires_at"] > time.time() - 1
    close_code, _ = client.wait_closed(timeout=15)
    assert close_code == 4401
    assert any(f.get("code") == "token_expired" for f in client.frames)


def test_refreshed_token_keeps_the_socket_and_another_users_token_closes_it(limited: Replica) -> None:
    user = unique("refresher")
    code = create_room(limited.http, token(user))
    client = Client(limited.ws, code, mint_dev_token(DEV_JWT_SECRET, user, ttl_seconds=4))
    client.recv_type("room_state")
    client.recv_type("token_expiring", timeout=10)
    client.send({"type": "refresh_token", "token": mint_dev_token(DEV_JWT_SECRET, user, ttl_seconds=600)})
    refreshed = client.recv_type("token_refreshed")
    assert refreshed["expires_at"] > time.time() + 500
    time.sleep(5)  # past the first token's expiry
    client.send({"type": "ping"})
    assert client.recv_type("pong") == {"type": "pong"}
    client.send({"type": "refresh_token", "token": token(unique("someone-else"))})
    assert client.wait_closed()[0] == 4401


def test_token_grace_keeps_an_expired_socket_open_but_removal_and_close_still_end_it(
    redis_server: RedisServer,
) -> None:
    """RELAY_TOKEN_GRACE: past its token's expiry a socket stays open until the grace ends (then 4401);
    removing the member or closing the room ends it at once; an expired token still opens nothing."""
    graceful = Replica(
        {
            "REDIS_URL": redis_server.url,
            "RELAY_TOKEN_GRACE": "4",
            "RELAY_TOKEN_EXPIRY_WARNING": "1",
            "RELAY_MAX_CANDIDATES": "2",
        },
        name="grace",
    ).start()
    try:
        owner_id, cand_id, other_id = unique("owner"), unique("cand"), unique("other")
        code = create_room(graceful.http, token(owner_id))
        join_room(graceful.http, token(cand_id), code)
        join_room(graceful.http, token(other_id), code)
        owner = Client(graceful.ws, code, mint_dev_token(DEV_JWT_SECRET, owner_id, ttl_seconds=2))
        cand = Client(graceful.ws, code, mint_dev_token(DEV_JWT_SECRET, cand_id, ttl_seconds=2))
        other = Client(graceful.ws, code, mint_dev_token(DEV_JWT_SECRET, other_id, ttl_seconds=600))
        for client in (owner, cand, other):
            client.recv_type("room_state")
        time.sleep(3)  # past both short tokens' expiry, within the grace
        for client in (owner, cand):
            client.send({"type": "ping"})
            assert client.recv_type("pong") == {"type": "pong"}
        # removal during the grace closes the socket at once, not at the grace's end
        removed = httpx.delete(
            f"{graceful.http}/api/room/{code}/members/{cand_id}", headers=auth(token(owner_id)), timeout=5
        )
        assert removed.status_code == 200
        assert cand.wait_closed(timeout=3)[0] == 4403
        # the grace ends: warned first (closes_at = expires_at + grace), then 4401
        warning = owner.recv_type("token_expiring", timeout=10)
        assert warning["closes_at"] == warning["expires_at"] + 4
        assert owner.wait_closed(timeout=10)[0] == 4401
        # an expired token opens no new socket, grace or not
        expired = mint_dev_token(DEV_JWT_SECRET, other_id, ttl_seconds=-60)
        assert open_refused(graceful.ws, code, f"?token={expired}")[0] == 4401
        # closing the room ends the remaining socket at once
        closed = httpx.delete(f"{graceful.http}/api/room/{code}", headers=auth(token(owner_id)), timeout=5)
        assert closed.status_code == 200
        assert other.wait_closed(timeout=5)[0] == 4410
    finally:
        graceful.stop()


def test_removed_member_is_disconnected_and_cannot_come_back(limited: Replica) -> None:
    """DELETE /api/room/{code}/members/{user}: their sockets close 4403; they can neither rejoin nor connect."""
    alice_id, bob_id = unique("alice"), unique("bob")
    alice, bob = token(alice_id), token(bob_id)
    code = create_room(limited.http, alice)
    join_room(limited.http, bob, code)
    interviewer, candidate = Client(limited.ws, code, alice), Client(limited.ws, code, bob)
    interviewer.recv_type("room_state")
    candidate.recv_type("room_state")
    url = f"{limited.http}/api/room/{code}/members/{bob_id}"
    assert (
        httpx.delete(
            f"{limited.http}/api/room/{code}/members/{alice_id}", headers=auth(bob), timeout=5
        ).status_code
        == 403
    )
    assert httpx.delete(url, headers=auth(alice), timeout=5).status_code == 200
    assert candidate.recv_type("member_removed")["user_id"] == bob_id
    assert candidate.wait_closed()[0] == 4403
    assert interviewer.recv_type("member_removed")["user_id"] == bob_id
    rejoin = httpx.post(
        f"{limited.http}/api/join-room", headers=auth(bob), json={"room_code": code}, timeout=5
    )
    assert rejoin.status_code == 403 and rejoin.json()["code"] == "member_removed"
    assert open_refused(limited.ws, code, f"?token={bob}")[0] == 4403
    assert httpx.delete(url, headers=auth(alice), timeout=5).status_code == 404
    assert (
        httpx.delete(
            f"{limited.http}/api/room/{code}/members/{alice_id}", headers=auth(alice), timeout=5
        ).status_code
        == 403
    )


def _stalled_socket(replica: Replica, code: str, user_token: str) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads again."""
    sock = socket.create_connection(("127.0.0.1", replica.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws/{code}?token={user_token} HTTP/1.1\r\nHost: 127.0.0.1:{replica.port}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert b" 101 " in response.split(b"\r\n")[0], response
    return sock


def test_slow_consumer_is_dropped_and_the_room_goes_on(limited: Replica) -> None:
    """A client that stops reading is closed once its queue (RELAY_SEND_QUEUE) is full; others get everything."""
    alice, bob_id, carol = token(unique("alice")), unique("bob"), token(unique("carol"))
    bob = token(bob_id)
    code = create_room(limited.http, alice)
    join_room(limited.http, bob, code)
    join_room(limited.http, carol, code)
    writer, healthy = Client(limited.ws, code, alice), Client(limited.ws, code, carol)
    writer.recv_type("room_state")
    healthy.recv_type("room_state")
    stalled = _stalled_socket(limited, code, bob)
    try:
        healthy.recv_type("member_joined")
        big = "x" * 150_000
        for n in range(40):
            writer.send({"type": "editor_update", "content": f"{n}:{big}"})
            assert writer.recv_type("ack")["seq"] == n + 1
            assert healthy.recv_type("editor_update")["content"].startswith(f"{n}:")
            time.sleep(0.2)  # stay within the rate limit: this test is about reading, not sending
            if "slow consumer dropped" in limited.log():
                break
        assert "slow consumer dropped" in limited.log(), "the stalled socket was never dropped"
        left = healthy.recv_type("member_left", timeout=15)
        assert left["user_id"] == bob_id
        info = httpx.get(f"{limited.http}/api/room/{code}", headers=auth(alice), timeout=5).json()
        assert {m["user_id"]: m["connected"] for m in info["members"]}[bob_id] is False
    finally:
        stalled.close()
