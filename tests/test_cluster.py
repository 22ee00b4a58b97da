"""relay on a real Redis Cluster: three primaries with a replica each, and relay replicas as processes."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from bench.processes import wait_for
from relay.config import ConfigError, MultiNodeURL, Settings
from tests.cluster_support import LocalCluster, cli, delivered_edits, edit_until_acked, slot_of
from tests.support import Client, Replica, create_room, join_room, open_refused, replicas, token
from tests.yjs_client import YjsClient

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    started = LocalCluster().start()
    yield started
    started.cleanup()


def relay_env(cluster: LocalCluster) -> dict[str, str]:
    # Tests create rooms until one lands on the shard they want: more than the hourly default allows.
    return {"REDIS_URL": cluster.url, "RELAY_REDIS_LINK_TIMEOUT": "3", "RELAY_CREATE_LIMIT": "1000"}


@pytest.fixture(scope="module")
def cluster_replicas(cluster: LocalCluster) -> Iterator[list[Replica]]:
    with replicas(2, relay_env(cluster)) as started:
        yield started


def rooms_on_every_shard(cluster: LocalCluster, replica: Replica, owner: str) -> dict[int, str]:
    """Creates rooms until each primary serves one; port of the primary -> room code."""
    found: dict[int, str] = {}
    primaries = {node.port for node in cluster.primaries()}
    for _ in range(60):
        code = create_room(replica.http, owner)
        found.setdefault(cluster.primary_of(f"relay:{{{code}}}:room").port, code)
        if set(found) == primaries:
            return found
    raise AssertionError(f"60 rooms all landed on {sorted(found)}")


def test_members_on_different_replicas_exchange_edits_in_rooms_of_every_shard(
    cluster: LocalCluster, cluster_replicas: list[Replica]
) -> None:
    """Rooms on all three shards: edits sent through one replica reach the member on the other."""
    a, b = cluster_replicas
    alice, bob = token("alice"), token("bob")
    rooms = rooms_on_every_shard(cluster, a, alice)
    assert len({slot_of(f"relay:{{{code}}}:room") for code in rooms.values()}) == 3
    for code in rooms.values():
        join_room(b.http, bob, code)
        writer, reader = Client(a.ws, code, alice), Client(b.ws, code, bob)
        writer.recv_type("room_state")
        reader.recv_type("room_state")
        for n in range(1, 4):
            writer.send({"type": "editor_update", "content": f"{code} v{n}", "client_msg_id": f"m{n}"})
            assert writer.recv_type("ack")["seq"] == n
            got = reader.recv_type("editor_update")
            assert got["seq"] == n and got["content"] == f"{code} v{n}"
        reader.send({"type": "cursor_update", "cursor_position": {"lineNumber": 2}})
        assert writer.recv_type("cursor_update")["cursor_position"] == {"lineNumber": 2}
        writer.close()
        reader.close()


def test_readiness_and_metrics_name_every_shard(
    cluster: LocalCluster, cluster_replicas: list[Replica]
) -> None:
    """/api/ready lists each primary as up, and /metrics has relay_redis_shard_up 1 for each."""
    body = httpx.get(f"{cluster_replicas[0].http}/api/ready", timeout=5).json()
    assert body["status"] == "ready"
    assert body["shards"] == {node.address: "up" for node in cluster.primaries()}
    text = httpx.get(f"{cluster_replicas[0].http}/metrics", timeout=5).text
    for node in cluster.primaries():
        assert f'relay_redis_shard_up{{shard="{node.address}"}} 1.0' in text
    assert "relay_redis_up 1.0" in text


def test_a_shards_pubsub_link_lost_and_regained_resubscribes_rooms_of_several_slots(
    cluster: LocalCluster, cluster_replicas: list[Replica]
) -> None:
    """The server drops every pub/sub connection of one primary (CLIENT KILL TYPE pubsub): each relay
    replica reconnects to the same node and resubscribes its rooms there, one slot at a time (a single
    SSUBSCRIBE of channels in two slots is refused with CROSSSLOT), tells only those rooms, and live
    delivery goes on in both rooms."""
    a, b = cluster_replicas
    alice, bob = token("alice"), token("bob")
    shard = cluster.primaries()[2]
    codes: list[str] = []
    while len(codes) < 2:
        code = room_on(cluster, shard.port, a, alice)
        if all(slot_of(f"relay:{{{code}}}:room") != slot_of(f"relay:{{{c}}}:room") for c in codes):
            codes.append(code)
    pairs = []
    for code in codes:
        join_room(b.http, bob, code)
        writer, reader = Client(a.ws, code, alice), Client(b.ws, code, bob)
        writer.recv_type("room_state")
        reader.recv_type("room_state")
        pairs.append((writer, reader))
    cli(shard.port, "CLIENT", "KILL", "TYPE", "pubsub")
    for _, reader in pairs:
        assert reader.recv_type("redis_status")["available"] is False
        assert reader.recv_type("redis_status", timeout=15)["available"] is True

    # Both relay replicas are subscribed again to both rooms' channels on that node, and stay so.
    def subscribed() -> bool:
        reply = cli(shard.port, "PUBSUB", "SHARDNUMSUB", *(f"relay:{{{code}}}:pubsub" for code in codes))
        return reply.split()[1::2] == ["2", "2"]

    wait_for(subscribed, 10, "both channels to be subscribed again")
    time.sleep(1)
    assert subscribed()
    for n, (writer, reader) in enumerate(pairs):
        seq = edit_until_acked(writer, f"after the drop {n}", f"d{n}")
        got = reader.recv_type("editor_update")
        assert (got["seq"], got["content"]) == (seq, f"after the drop {n}")
        writer.close()
        reader.close()


def room_on(cluster: LocalCluster, primary_port: int, replica: Replica, owner: str) -> str:
    for _ in range(80):
        code = create_room(replica.http, owner)
        if cluster.primary_of(f"relay:{{{code}}}:room").port == primary_port:
            return code
    raise AssertionError(f"no room landed on {primary_port} in 80 tries")


def test_slot_migrated_live_while_its_room_is_in_use(
    cluster: LocalCluster, cluster_replicas: list[Replica]
) -> None:
    """A room's slot moves to another primary while edits flow: every acked edit reaches the member on
    the other replica once, in order, and live delivery goes on from the new primary."""
    a, b = cluster_replicas
    alice, bob = token("alice"), token("bob")
    code = create_room(a.http, alice)
    join_room(b.http, bob, code)
    key = f"relay:{{{code}}}:room"
    source = cluster.primary_of(key)
    target = next(node for node in cluster.primaries() if node is not source)
    writer, reader = Client(a.ws, code, alice), Client(b.ws, code, bob)
    writer.recv_type("room_state")
    reader.recv_type("room_state")

    acked: dict[int, str] = {}
    started = threading.Event()

    def write() -> None:
        for n in range(1, 41):
            acked[edit_until_acked(writer, f"v{n}", f"m{n}")] = f"v{n}"
            if n == 5:
                started.set()
            time.sleep(0.02)

    thread = threading.Thread(target=write)
    thread.start()
    assert started.wait(20)
    cluster.migrate_slot(slot_of(key), target)
    thread.join(60)
    assert not thread.is_alive()
    assert cluster.primary_of(key) is target
    assert len(acked) == 40
    got = delivered_edits(reader, max(acked))
    assert {seq: got.get(seq) for seq in acked} == acked

    # Live, not only replayed: the channel is subscribed on the new primary.
    seq = edit_until_acked(writer, "after the move", "m-after")
    assert reader.recv_type("editor_update")["seq"] == seq
    writer.close()
    reader.close()


def test_primary_killed_mid_session_fails_over_and_nothing_acked_is_lost(cluster: LocalCluster) -> None:
    """SIGKILL a primary while its room is edited: the replica is promoted, edits are resent until acked,
    the member on the other relay replica ends up with every acked edit exactly once and in order, a
    socket that reconnects with last_seq resumes from history, and a room on another shard never noticed.
    With RELAY_REDIS_WAIT_REPLICAS=1 an ack means a replica has the edit, so none may be lost."""
    env = {**relay_env(cluster), "RELAY_REDIS_WAIT_REPLICAS": "1"}
    with replicas(2, env) as (a, b):
        alice, bob = token("alice"), token("bob")
        victim = cluster.primaries()[0]
        code = room_on(cluster, victim.port, a, alice)
        other = room_on(cluster, cluster.primaries()[1].port, a, alice)
        for room in (code, other):
            join_room(b.http, bob, room)
        writer, reader = Client(a.ws, code, alice), Client(b.ws, code, bob)
        other_writer, other_reader = Client(a.ws, other, alice), Client(b.ws, other, bob)
        for client in (writer, reader, other_writer, other_reader):
            client.recv_type("room_state")

        acked = {edit_until_acked(writer, f"v{n}", f"m{n}"): f"v{n}" for n in range(1, 6)}
        cluster.kill(victim)
        # Another shard's room goes on at once, while the victim's slots have no primary.
        assert edit_until_acked(other_writer, "elsewhere", "o1", timeout=5) == 1
        assert other_reader.recv_type("editor_update")["content"] == "elsewhere"
        writer.send({"type": "editor_update", "content": "v6", "client_msg_id": "m6"})
        promoted = cluster.wait_failover(victim)
        assert cluster.primary_of(f"relay:{{{code}}}:room") is promoted
        # With WAIT 1 the promoted primary acks no edit until it has a replica again: the killed node
        # comes back (as an orchestrator would restart it) and rejoins as that replica.
        cluster.restart(victim)
        for n in range(6, 16):
            acked[edit_until_acked(writer, f"v{n}", f"m{n}")] = f"v{n}"

        got = delivered_edits(reader, max(acked))
        assert {seq: got.get(seq) for seq in acked} == acked
        statuses = [f["available"] for f in reader.frames if f.get("type") == "redis_status"]
        assert statuses[:1] == [False] and statuses[-1] is True, statuses
        assert not [f for f in other_reader.drain(0.5) if f.get("type") == "redis_status"]

        resumed = Client(b.ws, code, bob, last_seq=5)
        state = resumed.recv_type("room_state")
        assert state["resumed"] is True
        replayed = [resumed.recv_type("editor_update") for _ in range(max(acked) - 5)]
        assert [f["seq"] for f in replayed] == list(range(6, max(acked) + 1))
        assert {f["seq"]: f["content"] for f in replayed} == {s: c for s, c in acked.items() if s > 5}
        for client in (writer, reader, other_writer, other_reader, resumed):
            client.close()
    cluster.wait_healthy()


@pytest.fixture()
def lone_cluster() -> Iterator[LocalCluster]:
    started = LocalCluster().start()
    yield started
    started.cleanup()


def test_replica_started_while_a_shard_is_down_is_not_ready_for_that_shard_only(
    lone_cluster: LocalCluster,
) -> None:
    """A shard loses its primary and its replica. A relay replica started then reports the shard down by
    name (503 for its rooms with ?room=, 200 "degraded" overall), refuses its rooms' sockets with 1013,
    and serves the other shards' rooms; room creation skips the unreachable quota counter."""
    cluster = lone_cluster
    env = relay_env(cluster)
    alice, bob = token("alice"), token("bob")
    # The shard that holds alice's room-creation quota counter: creating rooms must not depend on it.
    quota_key = f"relay:limit:create:{hashlib.sha256(b'alice').hexdigest()[:32]}"
    dead = cluster.primary_of(quota_key)
    alive = next(node for node in cluster.primaries() if node is not dead)
    with replicas(1, env) as (first,):
        dead_room = room_on(cluster, dead.port, first, alice)
        live_room = room_on(cluster, alive.port, first, alice)
        join_room(first.http, bob, live_room)
    cluster.kill(cluster.replica_of(dead))
    cluster.kill(dead)
    with replicas(1, env) as (late,):
        body = httpx.get(f"{late.http}/api/ready", timeout=5).json()
        assert body["status"] == "degraded"
        assert body["shards"][alive.address] == "up"
        assert body["shards"][dead.address] != "up"
        refused = httpx.get(f"{late.http}/api/ready", params={"room": dead_room}, timeout=5)
        assert refused.status_code == 503
        assert any(dead.address in problem for problem in refused.json()["problems"])
        assert httpx.get(f"{late.http}/api/ready", params={"room": live_room}, timeout=5).status_code == 200

        assert open_refused(late.ws, dead_room, f"?token={alice}")[0] == 1013
        writer, reader = Client(late.ws, live_room, alice), Client(late.ws, live_room, bob)
        writer.recv_type("room_state")
        reader.recv_type("room_state")
        assert edit_until_acked(writer, "still here", "s1", timeout=10) == 1
        assert reader.recv_type("editor_update")["content"] == "still here"
        # New rooms land on the shards that are up, although alice's quota counter is unreachable.
        assert cluster.primary_of(f"relay:{{{create_room(late.http, alice)}}}:room") is not dead
        writer.close()
        reader.close()


def test_cluster_url_is_parsed_and_its_password_never_echoed() -> None:
    """REDIS_URL=redis+cluster://... chooses cluster mode; a bad one names what is wrong, not the secret."""
    url = MultiNodeURL.parse("rediss+cluster://relay:s3cret@10.0.0.1:6379,[::1]:7000,redis-2:6380")
    assert url.seeds == ("10.0.0.1:6379", "::1:7000", "redis-2:6380")
    assert (url.username, url.password, url.tls) == ("relay", "s3cret", True)
    assert "s3cret" not in repr(url)
    settings = Settings.from_environ({"RELAY_DEV_MODE": "true", "REDIS_URL": "redis+cluster://a:1,b:2"})
    assert settings.redis_cluster and not Settings.from_environ({"RELAY_DEV_MODE": "true"}).redis_cluster
    for bad in ("redis+cluster://:s3cret@a:1,b", "redis+cluster://:s3cret@a:1/3"):
        with pytest.raises(ConfigError) as refused:
            Settings.from_environ({"RELAY_DEV_MODE": "true", "REDIS_URL": bad})
        assert "REDIS_URL" in str(refused.value) and "s3cret" not in str(refused.value)


def test_yjs_clients_converge_in_rooms_of_every_shard(
    cluster: LocalCluster, cluster_replicas: list[Replica]
) -> None:
    """The Yjs endpoint on a cluster: in a room on each shard, Yjs clients on both replicas type at once
    and converge (updates and awareness go by SPUBLISH on the room's shard), and a whole-document client
    gets the text."""
    a, b = cluster_replicas
    ann, bob = token("yjs-ann"), token("yjs-bob")
    for code in rooms_on_every_shard(cluster, a, ann).values():
        join_room(b.http, bob, code)
        clients = [
            YjsClient(a.ws, code, ann, name="ann").connect(),
            YjsClient(b.ws, code, bob, name="bob").connect(),
        ]
        try:
            _yjs_room_converges(clients, Client(b.ws, code, bob))
        finally:
            for client in clients:
                client.disconnect()


def _yjs_room_converges(clients: list[YjsClient], reader: Client) -> None:
    def type_into(client: YjsClient, chars: str) -> None:
        for char in chars:
            client.insert(0, char)

    typing = [
        threading.Thread(target=type_into, args=(client, chars))
        for client, chars in zip(clients, ("abcdefghij", "0123456789"), strict=True)
    ]
    for thread in typing:
        thread.start()
    for thread in typing:
        thread.join(30)
    for client in clients:
        client.wait_until_acked()
    first, second = clients

    def converged() -> bool:
        return first.content() == second.content() and len(first.content()) == 20

    wait_for(converged, 20, "both Yjs clients to hold all 20 characters")
    second.set_awareness('{"user":{"name":"Bob"}}')
    wait_for(lambda: second.doc.client_id in first.awareness, 10, "bob's awareness to reach ann")
    text = first.content()
    if reader.recv_type("room_state")["content"] != text:
        reader.recv_until(lambda frame: frame.get("content") == text, timeout=10)
    reader.close()
