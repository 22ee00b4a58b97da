"""relay on a real Redis Cluster: three primaries with a replica each, and relay replicas as processes."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.cluster_support import LocalCluster, slot_of
from tests.support import Client, Replica, create_room, join_room, replicas, token

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    started = LocalCluster().start()
    yield started
    started.cleanup()


@pytest.fixture(scope="module")
def cluster_replicas(cluster: LocalCluster) -> Iterator[list[Replica]]:
    with replicas(2, {"REDIS_URL": cluster.url, "RELAY_REDIS_LINK_TIMEOUT": "3"}) as started:
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


def test_readiness_names_every_shard(cluster: LocalCluster, cluster_replicas: list[Replica]) -> None:
    """/api/ready lists each primary as up."""
    body = httpx.get(f"{cluster_replicas[0].http}/api/ready", timeout=5).json()
    assert body["status"] == "ready"
    assert body["shards"] == {node.address: "up" for node in cluster.primaries()}
