"""A replica never freezes: rooms closed and sockets aborted mid-burst while witness rooms keep typing.

Every socket's edits go through one pipeline writer per process. A socket whose reader is cancelled
while its edit is in flight (its room was closed, it was kicked) must not take the writer down with it:
the witnesses, in other rooms on the same replicas, keep getting every ack, and the REST API answers.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.support import (
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

CHAOS_ENV = {"RELAY_RATE_PER_SECOND": "5000", "RELAY_RATE_BURST": "5000", "RELAY_CREATE_LIMIT": "1000"}
WITNESS_ROOMS = 6
VICTIM_ROOMS = 24
# Generous: a frozen replica never answers at all; a loaded shared CI machine is merely slow.
ACK_DEADLINE = 15.0


@pytest.fixture(scope="module")
def chaos_replicas(redis_server: RedisServer) -> Iterator[list[Replica]]:
    with replicas(2, {"REDIS_URL": redis_server.url, **CHAOS_ENV}) as started:
        yield started


class Witness(threading.Thread):
    """Types one edit at a time in its own room and records how long each ack took."""

    def __init__(self, replica: Replica, index: int) -> None:
        super().__init__(daemon=True)
        self.user = token(f"witness-{index}")
        self.code = create_room(replica.http, self.user)
        self.client = Client(replica.ws, self.code, self.user)
        self.client.recv_type("room_state")
        self.stop = threading.Event()
        self.ack_seconds: list[float] = []
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            n = 0
            while not self.stop.is_set():
                n += 1
                sent = time.monotonic()
                self.client.send({"type": "editor_update", "content": f"w{n}", "client_msg_id": f"w{n}"})
                self.client.recv_until(_ack_of(f"w{n}"), timeout=ACK_DEADLINE)
                self.ack_seconds.append(time.monotonic() - sent)
        except BaseException as error:
            self.failure = error


def _only_witnesses_connected(replica: Replica) -> bool:
    text = httpx.get(f"{replica.http}/metrics", timeout=5).text
    gauge = [float(line.split()[-1]) for line in text.splitlines() if line.startswith("relay_connections ")]
    return gauge == [WITNESS_ROOMS // 2]


def _ack_of(msg_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda frame: frame.get("type") == "ack" and frame.get("client_msg_id") == msg_id


def _victim(replica: Replica, index: int, *, abort: bool) -> None:
    """A burst of edits without waiting for acks, cut short by a room close or a dropped TCP link."""
    interviewer, candidate = token(f"victim-i-{index}"), token(f"victim-c-{index}")
    code = create_room(replica.http, interviewer)
    join_room(replica.http, candidate, code)
    typist = Client(replica.ws, code, candidate)
    typist.recv_type("room_state")
    # The room's close reaches this socket mid-burst: the sends after it fail, as they should.
    with contextlib.suppress(ConnectionClosed):
        for n in range(200):
            typist.send({"type": "editor_update", "content": f"burst {n} " * 20, "client_msg_id": f"b{n}"})
            if n == 60:
                if abort:
                    typist.conn.socket.close()  # vanish mid-burst: no close frame
                    return
                closer = threading.Thread(
                    target=httpx.delete,
                    args=(f"{replica.http}/api/room/{code}",),
                    kwargs={"headers": auth(interviewer), "timeout": 30},
                )
                closer.start()
    with contextlib.suppress(Exception):
        typist.wait_closed(timeout=30)
    typist.close()


def test_closing_rooms_and_aborting_sockets_mid_burst_never_freezes_a_replica(
    chaos_replicas: list[Replica],
) -> None:
    """Witness rooms on both replicas get every ack while 24 rooms are closed or abandoned mid-burst;
    afterwards create-room answers, no replica logged an unretrieved task exception or a failed socket,
    and each replica counts only its witnesses as connected: every kicked reader (cancelled inside
    `websocket.receive()` or mid-edit, in the endpoint's own task) got as far as unregistering."""
    witnesses = [Witness(chaos_replicas[i % 2], i) for i in range(WITNESS_ROOMS)]
    for witness in witnesses:
        witness.start()
    victims = [
        threading.Thread(target=_victim, args=(chaos_replicas[i % 2], i), kwargs={"abort": i % 3 == 0})
        for i in range(VICTIM_ROOMS)
    ]
    for victim in victims:
        victim.start()
    for victim in victims:
        victim.join(60)
    time.sleep(0.5)  # the witnesses keep typing after the last close
    for witness in witnesses:
        witness.stop.set()
    for witness in witnesses:
        witness.join(ACK_DEADLINE + 5)

    for witness in witnesses:
        assert witness.failure is None, (
            f"witness in room {witness.code} stopped getting acks: {witness.failure}"
        )
        assert witness.ack_seconds, "the witness never typed"
    slowest = max(max(w.ack_seconds) for w in witnesses)
    print(
        "\nFIGURES chaos: "
        + json.dumps(
            {
                "witness_acks": sum(len(w.ack_seconds) for w in witnesses),
                "slowest_ack_s": round(slowest, 3),
            }
        )
    )
    for replica in chaos_replicas:
        response = httpx.post(
            f"{replica.http}/api/create-room", headers=auth(token("after")), json={}, timeout=10
        )
        assert response.status_code == 200, response.text
        log = replica.log()
        assert "never retrieved" not in log, log[-3000:]
        assert "pipeline writer failed" not in log, log[-3000:]
        assert re.search(r"connection [0-9a-f]{16} failed", log) is None, log[-3000:]
        wait_for(partial(_only_witnesses_connected, replica), 10, "kicked sockets to be unregistered")
    for witness in witnesses:
        witness.client.close()
