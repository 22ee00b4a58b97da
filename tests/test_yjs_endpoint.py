"""The Yjs endpoint /yjs/{room_code} with pycrdt clients against two real replicas and a real Redis.

"Acknowledged" for a Yjs update: relay answered the frame that carried it with an (empty) sync step 2,
which it sends only after Redis stored the update (tests/yjs_client.py counts those answers).
"""

from __future__ import annotations

import contextlib
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
import redis
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.support import (
    FAST_REPLICA_ENV,
    Client,
    RedisServer,
    Replica,
    auth,
    create_room,
    join_room,
    replicas,
    token,
    wait_for,
)
from tests.yjs_client import Refused, YjsClient

FAST = {
    **FAST_REPLICA_ENV,
    "RELAY_MAX_CANDIDATES": "10",
    "RELAY_CREATE_LIMIT": "1000",
    "RELAY_ALLOWED_ORIGINS": "https://app.example",
}


@pytest.fixture(scope="module")
def pair(redis_server: RedisServer) -> Iterator[list[Replica]]:
    """Two replicas that compact early, so that tests cross compactions."""
    env = {
        "REDIS_URL": redis_server.url,
        **FAST,
        "RELAY_YJS_COMPACT_AFTER": "60",
        "RELAY_YJS_COMPACT_KEEP": "10",
    }
    with replicas(2, env) as started:
        yield started


@pytest.fixture
def clients() -> Iterator[list[YjsClient]]:
    started: list[YjsClient] = []
    yield started
    for client in started:
        client.disconnect()


def _room(replica: Replica, *users: str) -> tuple[str, dict[str, str]]:
    # User ids of this module's own: room-creation quotas are per user, in the Redis other modules share.
    tokens = {user: token(f"yjs-{user}", name=user.capitalize()) for user in users}
    code = create_room(replica.http, tokens[users[0]])
    for user in users[1:]:
        join_room(replica.http, tokens[user], code)
    return code, tokens


def _content(replica: Replica, user_token: str, code: str) -> str:
    """The document as GET /api/room shows it."""
    body = httpx.get(f"{replica.http}/api/room/{code}", headers=auth(user_token), timeout=10).json()
    return str(body.get("content", body.get("editor_content", "")))


def _type(client: YjsClient, chars: str, seed: int, pause: float = 0.005) -> threading.Thread:
    def run() -> None:
        rng = random.Random(seed)
        for char in chars:
            client.type_random(rng, char)
            time.sleep(pause)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_concurrent_typing_on_both_replicas_converges_with_every_character_once(
    pair: list[Replica], clients: list[YjsClient], redis_server: RedisServer
) -> None:
    """Four clients over two replicas insert at random positions at once (past several compactions):
    all end with one text in which every typed character appears exactly once, and so does a joiner."""
    code, tokens = _room(pair[0], "ann", "bob", "cat", "dan")
    alphabets = {
        "ann": "abcdefghijklmnopqrstuvwxyz" * 3,
        "bob": "ABCDEFGHIJKLMNOPQRSTUVWXYZ" * 3,
        "cat": "".join(chr(0x4E00 + i) for i in range(60)) + "😀",
        "dan": "0123456789!?#%&*+=-_" * 3,
    }
    for n, user in enumerate(alphabets):
        clients.append(YjsClient(pair[n % 2].ws, code, tokens[user], name=user).connect())
    threads = [_type(c, alphabets[c.name], seed=n) for n, c in enumerate(clients)]
    for thread in threads:
        thread.join(60)
    for client in clients:
        client.wait_until_acked()
    expected = Counter("".join(alphabets.values()))

    def converged() -> bool:
        texts = {c.content() for c in clients}
        return len(texts) == 1 and Counter(texts.pop()) == expected

    wait_for(converged, 30, "every client to hold every character exactly once")
    late = YjsClient(pair[1].ws, code, tokens["ann"], name="late").connect()
    clients.append(late)
    late.wait_for_text(lambda text: text == clients[0].content())
    store = redis.Redis.from_url(redis_server.url)
    wait_for(lambda: int(store.hget(f"relay:{{{code}}}:ydoc", "snapshot_seq") or 0) > 0, 10, "a compaction")
    after = YjsClient(pair[0].ws, code, tokens["bob"], name="after").connect()
    clients.append(after)
    assert after.content() == clients[0].content()
    metrics = httpx.get(f"{pair[0].http}/metrics", timeout=10).text
    assert 'relay_frames_received_total{type="yjs_update"}' in metrics
    assert "relay_yjs_compaction_seconds_count" in metrics
    # Whole-document readers see the same text: the room's content follows the Yjs document.
    wait_for(lambda: _content(pair[1], tokens["ann"], code) == clients[0].content(), 10, "the room's text")


def test_offline_edits_merge_on_reconnect(pair: list[Replica], clients: list[YjsClient]) -> None:
    """A client that edits while disconnected and one that keeps typing both keep their text."""
    code, tokens = _room(pair[0], "ann", "bob")
    ann = YjsClient(pair[0].ws, code, tokens["ann"], name="ann").connect()
    bob = YjsClient(pair[1].ws, code, tokens["bob"], name="bob").connect()
    clients += [ann, bob]
    ann.insert(0, "line 1\nline 2\n")
    ann.wait_until_acked()
    bob.wait_for_text(lambda text: text == "line 1\nline 2\n")
    bob.disconnect()
    bob.insert(len(bob.content()), "bob offline\n")
    ann.insert(0, "ann online\n")
    ann.wait_until_acked()
    bob.connect(pair[0].ws)
    wanted = {"ann online\n", "line 1\n", "line 2\n", "bob offline\n"}
    ann.wait_for_text(lambda text: all(part in text for part in wanted))
    bob.wait_for_text(lambda text: text == ann.content())
    assert all(ann.content().count(part) == 1 for part in wanted)


def test_refusals_have_close_codes_and_reasons(pair: list[Replica], clients: list[YjsClient]) -> None:
    """Non-member 4403, bad token 4401, unknown room 4404, text frame and garbage 4400 with a reason;
    a refused Origin gets HTTP 403 before the upgrade. One bad client does not disturb another."""
    code, tokens = _room(pair[0], "ann")
    ann = YjsClient(pair[0].ws, code, tokens["ann"], name="ann").connect()
    clients.append(ann)
    for who, room, user_token, close_code, words in [
        ("eve", code, token("yjs-eve"), 4403, "not a member"),
        ("bad", code, "not-a-token", 4401, "token"),
        ("gone", "ZZZZZZ", tokens["ann"], 4404, "no room"),
    ]:
        with pytest.raises(Refused) as refusal:
            YjsClient(pair[0].ws, room, user_token, name=who).connect()
        assert refusal.value.code == close_code and words in (refusal.value.reason or ""), refusal.value
    for frame in ("hello", b"\x00\x02\x05ab", b"\x00\x02\x03abc", b"\x09"):
        with connect(f"{pair[1].ws}/yjs/{code}?token={tokens['ann']}", open_timeout=10) as sock:
            sock.recv(timeout=5)  # relay's sync step 1
            sock.send(frame)
            with pytest.raises(ConnectionClosed):
                while True:
                    sock.recv(timeout=5)
            assert sock.close_code == 4400 and sock.close_reason, frame
    with pytest.raises(InvalidStatus) as refused:
        connect(
            f"{pair[0].ws}/yjs/{code}?token={tokens['ann']}",
            additional_headers={"Origin": "https://evil.example"},
            open_timeout=10,
        )
    assert refused.value.response.status_code == 403
    ann.insert(0, "still fine")
    ann.wait_until_acked()


def test_awareness_reaches_others_and_is_cleared_when_the_socket_goes(
    pair: list[Replica], clients: list[YjsClient]
) -> None:
    """Awareness is relayed across replicas; a late joiner learns it by query; a closed socket's is cleared."""
    code, tokens = _room(pair[0], "ann", "bob", "cat")
    ann = YjsClient(pair[0].ws, code, tokens["ann"], name="ann").connect()
    bob = YjsClient(pair[1].ws, code, tokens["bob"], name="bob").connect()
    clients += [ann, bob]
    ann.set_awareness('{"user":{"name":"Ann"}}')
    wait_for(lambda: ann.doc.client_id in bob.awareness, 10, "bob to see ann's awareness")
    cat = YjsClient(pair[1].ws, code, tokens["cat"], name="cat")
    clients.append(cat)
    cat.connect()
    # cat asked (relay's awareness query on connect) and ann's client answered... ann is a test client
    # that does not answer queries, so ann publishes again, as a live client would on any change
    ann.set_awareness('{"user":{"name":"Ann"},"cursor":1}')
    wait_for(lambda: ann.doc.client_id in cat.awareness, 10, "cat to see ann's awareness")
    ann.disconnect()
    wait_for(lambda: ann.doc.client_id not in bob.awareness, 10, "ann's awareness to be cleared for bob")
    wait_for(lambda: ann.doc.client_id not in cat.awareness, 10, "ann's awareness to be cleared for cat")


def test_room_close_and_member_removal_close_yjs_sockets(
    pair: list[Replica], clients: list[YjsClient]
) -> None:
    """An interviewer removing a member closes that member's Yjs socket (4403); closing the room closes all (4410)."""
    code, tokens = _room(pair[0], "ivy", "bob", "cat")  # its creator is its interviewer
    interviewer = tokens["ivy"]
    bob = YjsClient(pair[1].ws, code, tokens["bob"], name="bob").connect()
    cat = YjsClient(pair[0].ws, code, tokens["cat"], name="cat").connect()
    clients += [bob, cat]
    response = httpx.delete(
        f"{pair[0].http}/api/room/{code}/members/yjs-bob", headers=auth(interviewer), timeout=10
    )
    assert response.status_code < 300, response.text
    assert bob.wait_closed()[0] == 4403
    response = httpx.delete(f"{pair[0].http}/api/room/{code}", headers=auth(interviewer), timeout=10)
    assert response.status_code < 300, response.text
    assert cat.wait_closed()[0] == 4410


def test_replica_killed_and_redis_restarted_lose_nothing_acknowledged(tmp_path: object) -> None:
    """SIGKILL a replica mid-typing: its client reconnects to the other and nothing it typed is lost, and
    the awareness it had published is cleared for the others once the dead replica's presence expires.
    Then every client goes, Redis restarts (AOF): a new client gets every acknowledged character."""
    aof = RedisServer(appendonly=True).start()
    env = {"REDIS_URL": aof.url, **FAST, "RELAY_YJS_COMPACT_AFTER": "40", "RELAY_YJS_COMPACT_KEEP": "5"}
    a, b = Replica(env, name="a").start(), Replica(env, name="b").start()
    started: list[YjsClient] = []
    try:
        code, tokens = _room(a, "ann", "bob")
        ann = YjsClient(a.ws, code, tokens["ann"], name="ann").connect()
        bob = YjsClient(b.ws, code, tokens["bob"], name="bob").connect()
        started += [ann, bob]
        ann.set_awareness('{"user":{"name":"Ann"}}')
        wait_for(lambda: ann.doc.client_id in bob.awareness, 10, "bob to see ann's awareness")
        typing = [
            _type(ann, "abcdefghij" * 12, seed=1, pause=0.01),
            _type(bob, "ABCDEFGHIJ" * 12, seed=2, pause=0.01),
        ]
        time.sleep(0.4)
        a.stop(signal.SIGKILL)
        wait_for(lambda: not ann.connected, 10, "ann's socket to drop with its replica")
        ann.connect(b.ws)
        # Nobody said goodbye for ann's dead socket: b sweeps its presence entry (RELAY_PRESENCE_TTL=3)
        # and clears the awareness that socket had published.
        wait_for(lambda: ann.doc.client_id not in bob.awareness, 20, "ann's stale awareness to be cleared")
        for thread in typing:
            thread.join(60)
        ann.wait_until_acked()
        bob.wait_until_acked()
        expected = Counter("abcdefghij" * 12 + "ABCDEFGHIJ" * 12)
        wait_for(
            lambda: Counter(ann.content()) == expected == Counter(bob.content()),
            20,
            "both to hold everything",
        )
        final = ann.content()
        ann.disconnect()
        bob.disconnect()
        aof.stop()
        aof.start()
        wait_for(lambda: httpx.get(f"{b.http}/api/ready", timeout=5).status_code == 200, 30, "b ready again")
        fresh = YjsClient(b.ws, code, tokens["ann"], name="fresh").connect(timeout=20)
        started.append(fresh)
        assert fresh.content() == final
    finally:
        for client in started:
            client.disconnect()
        a.stop(signal.SIGKILL)
        b.stop(signal.SIGKILL)
        aof.cleanup()


def test_whole_document_and_yjs_clients_typing_at_once_both_survive(
    pair: list[Replica], clients: list[YjsClient], redis_server: RedisServer
) -> None:
    """A /ws client that sends the whole text (and takes every editor_update it gets as its new text,
    as the old frontend does) types in line C while a Yjs client types in line A, at the same time and
    on different replicas: every keystroke of both survives, and all views end with one text."""
    code, tokens = _room(pair[0], "ann", "bob")
    ann = YjsClient(pair[0].ws, code, tokens["ann"], name="ann").connect()
    clients.append(ann)
    ann.insert(0, "line A\nline B\nline C\n")
    ann.wait_until_acked()
    bob = Client(pair[1].ws, code, tokens["bob"])
    try:
        state = bob.recv_type("room_state")
        local = str(state["content"])
        while local != "line A\nline B\nline C\n":
            local = str(bob.recv_type("editor_update")["content"])

        def ann_types() -> None:
            for char in "abcdefghij":
                text = ann.content()
                ann.insert(text.index("\nline B"), char)
                time.sleep(0.03)

        typing = threading.Thread(target=ann_types)
        typing.start()
        for char in "0123456789":
            with contextlib.suppress(TimeoutError):
                while True:  # take whatever arrived, as the old frontend does
                    frame = bob.recv(timeout=0.01)
                    if frame["type"] == "editor_update":
                        local = str(frame["content"])
            end_of_c = local.index("line C") + len("line C")
            while end_of_c < len(local) and local[end_of_c] != "\n":
                end_of_c += 1
            local = local[:end_of_c] + char + local[end_of_c:]
            bob.send({"type": "editor_update", "content": local})
            time.sleep(0.03)
        typing.join(30)
        ann.wait_until_acked()

        def line(text: str, name: str) -> str:
            return next(x for x in text.split("\n") if x.startswith(name))

        ann.wait_for_text(lambda text: line(text, "line C") == "line C0123456789")
        assert line(ann.content(), "line A") == "line Aabcdefghij"
        final = ann.content()
        deadline = time.monotonic() + 10
        while local != final:  # the whole-document client ends with the same text (an ack keeps its own)
            assert time.monotonic() < deadline, f"bob's text stayed {local!r}, not {final!r}"
            with contextlib.suppress(TimeoutError):
                frame = bob.recv(timeout=0.5)
                if frame["type"] == "editor_update":
                    local = str(frame["content"])
    finally:
        bob.close()
    wait_for(lambda: _content(pair[0], tokens["ann"], code) == final, 10, "GET /api/room to show the text")
    stored = redis.Redis.from_url(redis_server.url).hget(f"relay:{{{code}}}:room", "content")
    assert stored == final.encode()


def test_an_overloaded_replica_sheds_yjs_edits_by_closing_and_the_sync_resends_them(
    redis_server: RedisServer, clients: list[YjsClient]
) -> None:
    """With admission control shedding every edit (RELAY_SHED_FRAMES_MS=0), a Yjs update is refused by
    closing the socket (1013, y-websocket cannot be asked to resend one update); on a replica that takes
    edits, the client's reconnect sync stores it."""
    shedding = Replica(
        {
            "REDIS_URL": redis_server.url,
            **FAST,
            "RELAY_SHED_FRAMES_MS": "0",
            "RELAY_SHED_SOCKETS_MS": "100000",
        },
        name="shedding",
    ).start()
    normal = Replica({"REDIS_URL": redis_server.url, **FAST}, name="normal").start()
    try:
        code, tokens = _room(normal, "ann", "bob")
        ann = YjsClient(shedding.ws, code, tokens["ann"], name="ann").connect()
        clients.append(ann)
        ann.insert(0, "typed while shed")
        assert ann.wait_closed()[0] == 1013
        bob = YjsClient(normal.ws, code, tokens["bob"], name="bob").connect()
        clients.append(bob)
        assert bob.content() == "", "a shed update was stored"
        ann.connect(normal.ws)
        bob.wait_for_text(lambda text: text == "typed while shed")
    finally:
        shedding.stop()
        normal.stop()


def test_a_room_without_yjs_clients_has_no_yjs_document_until_one_comes(
    pair: list[Replica], clients: list[YjsClient], redis_server: RedisServer
) -> None:
    """Whole-document edits in a room no Yjs client joined cost what they did before Yjs (no document
    is kept); the first Yjs client starts it from the room's text, and later edits reach it."""
    code, tokens = _room(pair[0], "ann", "bob")
    store = redis.Redis.from_url(redis_server.url)
    writer = Client(pair[1].ws, code, tokens["bob"])
    try:
        writer.recv_type("room_state")
        writer.send({"type": "editor_update", "content": "print(1)\n", "client_msg_id": "a"})
        assert writer.recv_type("ack")["seq"] == 1
        assert store.exists(f"relay:{{{code}}}:ydoc") == 0
        ann = YjsClient(pair[0].ws, code, tokens["ann"], name="ann").connect()
        clients.append(ann)
        assert ann.content() == "print(1)\n"
        writer.send({"type": "editor_update", "content": "print(1)\nprint(2)\n", "client_msg_id": "b"})
        assert writer.recv_type("ack")["seq"] == 2
        ann.wait_for_text(lambda text: text == "print(1)\nprint(2)\n")
    finally:
        writer.close()


def test_a_whole_document_edit_made_before_the_yjs_document_existed_is_merged_after_it_does(
    pair: list[Replica], clients: list[YjsClient]
) -> None:
    """A whole-document client edits a room no Yjs client has joined (no Yjs document, nothing merged);
    then a Yjs client joins and types, and the whole-document client's next edit, typed on its own last
    text before it saw that typing, is merged onto the document: both survive. Its base is its own edit
    from before the document existed, so relay must keep it even while no document is kept."""
    code, tokens = _room(pair[0], "ann", "bob")
    bob = Client(pair[1].ws, code, tokens["bob"])
    try:
        bob.recv_type("room_state")
        bob.send({"type": "editor_update", "content": "line A\nline C\n", "client_msg_id": "a"})
        assert bob.recv_type("ack")["seq"] == 1
        ann = YjsClient(pair[0].ws, code, tokens["ann"], name="ann").connect()
        clients.append(ann)
        assert ann.content() == "line A\nline C\n"
        ann.insert(len("line A"), "a")
        ann.wait_until_acked()
        # Typed on its own last text, without the Yjs typing it has not read yet.
        bob.send({"type": "editor_update", "content": "line A\nline Cc\n", "client_msg_id": "b"})
        ann.wait_for_text(lambda text: text == "line Aa\nline Cc\n")
        frame = bob.recv_until(
            lambda f: f.get("type") == "editor_update" and f.get("client_msg_id") == "b", timeout=10
        )
        assert frame["content"] == "line Aa\nline Cc\n"
    finally:
        bob.close()


def test_a_whole_document_client_joining_a_yjs_only_room_gets_the_text_then_follows_it(
    pair: list[Replica], clients: list[YjsClient], redis_server: RedisServer
) -> None:
    """While only Yjs clients are connected, nobody folds the room's text after each burst of typing
    (no editor_update is recorded); a whole-document client joining on the other replica gets the current
    text in its room_state, a reconnect with last_seq gets it as an editor_update, and from then on it
    follows the Yjs typing. After the room is closed, GET /api/room shows the final text."""
    code, tokens = _room(pair[0], "ann", "bob")
    store = redis.Redis.from_url(redis_server.url)
    room_key = f"relay:{{{code}}}:room"
    ann = YjsClient(pair[0].ws, code, tokens["ann"], name="ann").connect()
    clients.append(ann)
    ann.insert(0, "def f():\n")
    ann.insert(len(ann.content()), "    return 1\n")
    ann.wait_until_acked()
    time.sleep(0.5)  # more than RELAY_YJS_TEXT_DELAY: a mirror, had it been scheduled, would have run
    assert int(store.hget(room_key, "seq") or 0) == 0, "a text was sent with no whole-document client"
    assert (store.hget(room_key, "content") or b"") == b""

    bob = Client(pair[1].ws, code, tokens["bob"])
    try:
        state = bob.recv_type("room_state")
        assert state["room_info"]["editor_content"] == ann.content() == "def f():\n    return 1\n"
        # Now the room has a whole-document client: Yjs typing reaches it within the coalescing delay.
        ann.insert(len(ann.content()), "print(f())\n")
        ann.wait_until_acked()
        frame = bob.recv_until(lambda f: f.get("type") == "editor_update", timeout=10)
        assert frame["content"] == ann.content()
        last_seq = int(frame["seq"])
    finally:
        bob.close()

    # Yjs typing while the whole-document client is away; its reconnect from last_seq catches up.
    wait_for(lambda: int(store.zcard(f"relay:{{{code}}}:presence")) == 1, 10, "bob's presence to go")
    ann.insert(0, "# v2\n")
    ann.wait_until_acked()
    bob = Client(pair[0].ws, code, tokens["bob"], last_seq=last_seq)
    try:
        frames = bob.drain(quiet=1.0)
        texts = [f["content"] for f in frames if f.get("type") == "editor_update"]
        assert texts and texts[-1] == ann.content(), frames
    finally:
        bob.close()

    ann.insert(len(ann.content()), "# closed after this\n")
    ann.wait_until_acked()
    final = ann.content()
    response = httpx.delete(f"{pair[0].http}/api/room/{code}", headers=auth(tokens["ann"]), timeout=10)
    assert response.status_code == 200
    assert _content(pair[1], tokens["bob"], code) == final
