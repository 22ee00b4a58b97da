"""Stock JavaScript clients: y-websocket's WebsocketProvider under Node, unchanged, against two replicas,
typing alongside Python (pycrdt) clients. Everyone must end with one text holding every typed
character exactly once."""

from __future__ import annotations

import json
import random
import secrets
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from tests.node_client import node_binary, node_clients
from tests.support import Replica, create_room, join_room, token, wait_for
from tests.yjs_client import YjsClient


@pytest.fixture(autouse=True)
def node_available() -> None:
    node_binary()  # skip (outside CI) or fail (in CI) before starting anything when Node is missing


def room_of(replicas: list[Replica], *users: str) -> tuple[str, dict[str, str]]:
    """A room created by the first user on replica 0, joined by the others on replica 1.

    User ids are fresh per room (the display name is the given one): the test Redis is shared by the
    whole run, and room creation is limited per user.
    """
    tokens = {user: token(f"{user}-{secrets.token_hex(4)}", name=user.capitalize()) for user in users}
    code = create_room(replicas[0].http, tokens[users[0]])
    for user in users[1:]:
        join_room(replicas[1].http, tokens[user], code)
    return code, tokens


@pytest.fixture
def python_clients() -> Iterator[list[YjsClient]]:
    started: list[YjsClient] = []
    yield started
    for client in started:
        client.disconnect()


def run_together(*jobs: Callable[[], object]) -> None:
    errors: list[BaseException] = []

    def run(job: Callable[[], object]) -> None:
        try:
            job()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    if errors:
        raise errors[0]


def python_typist(client: YjsClient, chars: str, seed: int, interval: float) -> Callable[[], None]:
    def type_all() -> None:
        rng = random.Random(seed)
        for char in chars:
            client.type_random(rng, char)
            time.sleep(interval)
        client.wait_until_acked()

    return type_all


def test_stock_provider_converges_with_python_clients_across_replicas(
    two_replicas: list[Replica], python_clients: list[YjsClient]
) -> None:
    """Two Node providers and two pycrdt clients, spread over both replicas, type at random positions at
    the same time: all four end with the same text, in which every typed character appears exactly once
    (multi-byte and astral characters included, so UTF-16 and UTF-8 offsets must agree)."""
    a, b = two_replicas
    code, tokens = room_of(two_replicas, "ann", "nia", "noe", "pia", "pete")
    typed = {
        "nia": "".join(chr(0x4E00 + i) for i in range(40)) + "😀",
        "noe": "".join(chr(0x3041 + i) for i in range(40)) + "🎉",
        "pia": "".join(chr(0x0410 + i) for i in range(32)),
        "pete": "abcdefghijklmnopqrstuvwxyz0123456789",
    }
    with node_clients(3) as (nia, noe, late):
        nia.open(f"{a.ws}/yjs", code, tokens["nia"], name="Nia")
        noe.open(f"{b.ws}/yjs", code, tokens["noe"], name="Noe")
        pia = YjsClient(a.ws, code, tokens["pia"], name="pia").connect()
        pete = YjsClient(b.ws, code, tokens["pete"], name="pete").connect()
        python_clients += [pia, pete]
        nia.wait(synced=True)
        noe.wait(synced=True)

        run_together(
            lambda: nia.type(typed["nia"], seed=11, interval_ms=10),
            lambda: noe.type(typed["noe"], seed=12, interval_ms=10),
            python_typist(pia, typed["pia"], seed=13, interval=0.01),
            python_typist(pete, typed["pete"], seed=14, interval=0.01),
        )

        expected = Counter("".join(typed.values()))

        def everyone_agrees() -> bool:
            texts = {nia.text(), noe.text(), pia.content(), pete.content()}
            return len(texts) == 1 and Counter(texts.pop()) == expected

        try:
            wait_for(everyone_agrees, 30, "all four clients to hold every typed character once")
        finally:
            print(
                json.dumps(
                    {"nia": nia.state(), "noe": noe.state(), "pia": pia.content(), "pete": pete.content()}
                )
            )
        final = pia.content()

        # A provider that joins afterwards, with an empty document, gets exactly that text.
        late.open(f"{b.ws}/yjs", code, tokens["ann"], name="Ann")
        assert late.wait(synced=True, contains=[final])["text"] == final


def test_offline_edits_of_stock_and_python_clients_merge_on_connect(
    two_replicas: list[Replica], python_clients: list[YjsClient]
) -> None:
    """A provider that typed before it ever connected, and a pycrdt client that typed while disconnected,
    both reach everyone once connected (relay sends its own sync step 1 and merges what it gets)."""
    a, b = two_replicas
    code, tokens = room_of(two_replicas, "ann", "nia", "pia")
    with node_clients(1) as (nia,):
        pia = YjsClient(b.ws, code, tokens["pia"], name="pia").connect()
        python_clients.append(pia)
        pia.insert(0, "shared start\n")
        pia.wait_until_acked()

        nia.open(f"{a.ws}/yjs", code, tokens["nia"], name="Nia", connect=False)
        nia.insert(0, "typed offline by node\n")
        nia.connect()
        state = nia.wait(synced=True, contains=["shared start", "typed offline by node"])
        pia.wait_for_text(lambda text: "typed offline by node" in text)

        pia.disconnect()
        pia.insert(len(pia.content()), "typed offline by python\n")
        nia.insert(0, "node, meanwhile\n")
        pia.connect(b.ws)
        pia.wait_for_text(lambda text: "node, meanwhile" in text)
        state = nia.wait(contains=["typed offline by python"])
        wait_for(lambda: nia.text() == pia.content(), 20, "node and python to agree")
        for line in ("shared start", "typed offline by node", "typed offline by python", "node, meanwhile"):
            assert state["text"].count(line) == 1


def test_stock_awareness_reaches_python_and_goes_when_the_provider_dies(
    two_replicas: list[Replica], python_clients: list[YjsClient]
) -> None:
    """The provider's awareness (its user name) reaches a pycrdt client on the other replica, the Python
    client's reaches the provider, and when the Node process is killed (no goodbye) relay clears it."""
    a, b = two_replicas
    code, tokens = room_of(two_replicas, "ann", "nia", "pia")
    with node_clients(1) as (nia,):
        nia.open(f"{a.ws}/yjs", code, tokens["nia"], name="Nia")
        nia.wait(synced=True)
        pia = YjsClient(b.ws, code, tokens["pia"], name="pia").connect()
        python_clients.append(pia)
        pia.set_awareness(json.dumps({"user": {"name": "Pia", "color": "#3c9d4e"}}))
        nia.set_awareness("cursor", {"line": 1})  # a change, so the provider broadcasts its state now

        node_id = int(nia.state()["client_id"])

        def pia_sees_nia() -> bool:
            entry = pia.awareness.get(node_id)
            return entry is not None and json.loads(entry.state).get("user", {}).get("name") == "Nia"

        wait_for(pia_sees_nia, 20, "the provider's awareness to reach the python client")

        def nia_sees_pia() -> bool:
            states = nia.state()["awareness"]
            return any((s["state"] or {}).get("user", {}).get("name") == "Pia" for s in states)

        wait_for(nia_sees_pia, 20, "the python client's awareness to reach the provider")

        nia.process.send_signal(signal.SIGKILL)
        nia.process.wait(5)
        wait_for(lambda: node_id not in pia.awareness, 40, "relay to clear the dead provider's awareness")


def test_node_harness_reports_refusals(two_replicas: list[Replica]) -> None:
    """The harness is a real client: a provider with a token of a non-member is refused (close 4403) and
    stops reconnecting, as y-websocket does for every 44xx close."""
    a, _ = two_replicas
    code, _tokens = room_of(two_replicas, "ann", "nia")
    with node_clients(1) as (eve,):
        eve.open(f"{a.ws}/yjs", code, token("eve"), name="Eve")
        wait_for(lambda: any(e["event"] == "closed" for e in eve.events), 20, "the provider to be refused")
        closed = next(e for e in eve.events if e["event"] == "closed")
        assert closed["code"] == 4403, eve.events
        assert eve.state()["connected"] is False


def test_an_idle_provider_alone_in_a_room_keeps_its_socket(two_replicas: list[Replica]) -> None:
    """y-websocket closes and reopens a socket that received nothing for 30 s; its awareness heartbeat
    (every 15 s) must come back from relay, so a lone, idle user is not reconnected every 30 s."""
    a, _ = two_replicas
    code, tokens = room_of(two_replicas, "ann")
    with node_clients(1) as (ann,):
        ann.open(f"{a.ws}/yjs", code, tokens["ann"], name="Ann")
        ann.wait(synced=True)
        time.sleep(40)
        assert not [e for e in ann.events if e["event"] == "connection-close"], ann.events
        assert ann.state()["connected"] is True
