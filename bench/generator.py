"""One load generator process: its members' WebSockets, the senders, and the receivers' tally.

Each event carries its sender id, a per-sender counter and its send time (``time.time_ns()``, one clock
for every process on the machine) inside the fields that relay relays verbatim: ``content`` for editor
updates and ``cursor_position`` for cursor updates. Receivers therefore count loss, duplicates, order
and latency without trusting any field a server adds. A room never spans two generator processes, so
each process checks its rooms' deliveries on its own and the parent only adds the tallies up.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import math
import random
import signal
import time
from array import array
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.typing import Origin

from bench.workload import MemberPlan, RoomPlan, WorkerPlan

if TYPE_CHECKING:
    from multiprocessing.queues import Queue

NS = 1_000_000_000
LAG_SAMPLE_NS = 10_000_000  # the generator's event-loop lag is sampled every 10 ms
# Realistic editor content (deflate compresses it like real code, unlike a run of one letter).
FILLER = (
    "def two_sum(nums: list[int], target: int) -> tuple[int, int]:\n"
    "    seen: dict[int, int] = {}\n"
    "    for i, n in enumerate(nums):\n"
    "        if target - n in seen:\n"
    "            return seen[target - n], i\n"
    "        seen[n] = i\n"
    "    raise ValueError(f'no pair sums to {target}')\n"
)


@dataclasses.dataclass
class WorkerResult:
    index: int
    connections: int = 0
    connect_failures: int = 0
    connect_error: str = ""
    closed_early: int = 0
    sent: int = 0
    sent_measured: int = 0
    expected: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    out_of_order_same_type: int = 0
    malformed: int = 0
    acks: int = 0
    errors: int = 0
    # Measured editor updates the server refused with an error frame naming them (admission control's
    # `unavailable`, rate limits): not accepted, so not delivered, and the bench does not resend them.
    refused_edits: int = 0
    # Measured editor updates a receiver never got although the server did not refuse them: what a server
    # that sheds load explicitly must keep at 0.
    lost_unrefused_edits: int = 0
    first_error_frame: str = ""
    # The close code and reason of the first socket closed before the end (e.g. 1013 and its retry hint).
    first_early_close: str = ""
    incomplete_at_end: int = 0
    cpu_seconds: float = 0.0
    latencies_ns: array[int] = dataclasses.field(default_factory=lambda: array("q"))
    # How late this process's event loop ran a timer, sampled every LAG_SAMPLE_NS during the measured
    # window: a frame that reached the generator's socket waits about this long before its receive time
    # is taken, so a latency figure with a large generator lag is partly the generator's own.
    loop_lag_ns: array[int] = dataclasses.field(default_factory=lambda: array("q"))


# ---------------------------------------------------------------------------------------------------------
# One generator process
# ---------------------------------------------------------------------------------------------------------


class Peer:
    """What one receiver has seen of one sender."""

    __slots__ = ("distinct", "dups", "got", "max_seen", "max_seen_by_kind", "ooo", "ooo_same_kind")

    def __init__(self, size: int) -> None:
        self.got = bytearray(size)
        self.max_seen = -1
        # Per frame type too: tells reordering between editor and cursor updates from reordering within one.
        self.max_seen_by_kind = {"editor_update": -1, "cursor_update": -1}
        self.ooo_same_kind = 0
        self.distinct = 0
        self.dups = 0
        self.ooo = 0


class Client:
    __slots__ = (
        "acks",
        "closed_early",
        "edits",
        "errors",
        "first_error",
        "measured_count",
        "measured_first",
        "peers",
        "plan",
        "refused",
        "room_size",
        "sent",
        "ws",
    )

    def __init__(self, plan: MemberPlan, ws: ClientConnection, size: int) -> None:
        self.plan = plan
        self.ws = ws
        self.peers: dict[int, Peer] = {}
        self.room_size = 1
        self.sent = 0
        self.measured_first = -1
        self.measured_count = 0
        self.acks = 0
        self.errors = 0
        self.first_error = ""
        self.closed_early = False
        # By this sender's counter: 1 where the event was an editor update / refused by the server.
        self.edits = bytearray(size)
        self.refused = bytearray(size)


class Worker:
    def __init__(self, plan: WorkerPlan, out: Queue[Any]) -> None:
        self.plan = plan
        self.load = plan.workload
        self.out = out
        self.clients: list[Client] = []
        self.rooms: list[list[Client]] = []
        self.result = WorkerResult(index=plan.index)
        self.latencies = self.result.latencies_ns
        # Until the start message, nothing counts as measured.
        self.measure_start = math.inf
        self.measure_end = math.inf
        self.stopping = False
        self.received = 0
        self.distinct_total = 0
        self.malformed = 0
        # Known once the senders stop; then the last delivery sets all_delivered.
        self.expected_final = math.inf
        self.all_delivered = asyncio.Event()
        self.peer_size = int(self.load.rate * (self.load.warmup + self.load.duration)) + 64
        self.readers: list[asyncio.Task[None]] = []

    async def connect_all(self) -> None:
        gate = asyncio.Semaphore(64)
        compression = "deflate" if self.load.client_deflate else None

        async def open_one(member: MemberPlan) -> Client | None:
            async with gate:
                try:
                    ws = await connect(
                        member.ws_url,
                        compression=compression,
                        origin=Origin(self.load.origin) if self.load.origin else None,
                        ping_interval=None,
                        open_timeout=30,
                        close_timeout=2,
                        max_size=2**22,
                        max_queue=None,
                    )
                except (OSError, TimeoutError, WebSocketException) as exc:
                    self.result.connect_failures += 1
                    if not self.result.connect_error:
                        self.result.connect_error = f"{type(exc).__name__}: {exc}"
                    return None
            return Client(member, ws, self.peer_size)

        async def open_room(room: RoomPlan) -> list[Client | None]:
            return list(await asyncio.gather(*(open_one(m) for m in room.members)))

        # Every room at once; the gate bounds the handshakes in flight.
        for opened in await asyncio.gather(*(open_room(room) for room in self.plan.rooms)):
            members = [c for c in opened if c is not None]
            for client in members:
                client.room_size = len(members)
                client.peers = {
                    other.plan.sender_id: Peer(self.peer_size) for other in members if other is not client
                }
            self.rooms.append(members)
            self.clients.extend(members)
        self.result.connections = len(self.clients)
        self.readers = [asyncio.create_task(self.read(c)) for c in self.clients]

    async def read(self, client: Client) -> None:
        try:
            async for frame in client.ws:
                self.on_frame(client, frame, time.time_ns())
        except ConnectionClosed:
            pass
        if not self.stopping:
            client.closed_early = True
            close = client.ws.protocol.close_rcvd
            if not self.result.first_early_close:
                self.result.first_early_close = f"{close.code} {close.reason}" if close else "no close frame"

    def on_frame(self, client: Client, frame: str | bytes, now_ns: int) -> None:
        self.received += 1
        try:
            event = orjson.loads(frame)
            kind = event["type"]
            if kind == "cursor_update":
                mark = event["cursor_position"]["m"]
            elif kind == "editor_update":
                content = event["content"]
                mark = content[: content.index("|")]
            elif kind == "ack":
                client.acks += 1
                return
            elif kind == "error":
                client.errors += 1
                if not client.first_error:
                    client.first_error = frame if isinstance(frame, str) else frame.decode()
                refused = event.get("client_msg_id")
                if isinstance(refused, str) and refused.isdigit() and int(refused) < len(client.refused):
                    client.refused[int(refused)] = 1
                return
            else:  # room_state, member_joined, member_left, pong
                return
            sender_s, counter_s, sent_s = mark.split(":")
            sender, counter, sent_ns = int(sender_s), int(counter_s), int(sent_s)
        except (ValueError, KeyError, TypeError, AttributeError, orjson.JSONDecodeError):
            self.malformed += 1
            return
        peer = client.peers.get(sender)
        if peer is None:
            self.malformed += 1
            return
        got = peer.got
        if counter >= len(got):
            got.extend(bytes(counter + 64 - len(got)))
        if got[counter]:
            peer.dups += 1
            return
        got[counter] = 1
        peer.distinct += 1
        self.distinct_total += 1
        if self.distinct_total >= self.expected_final:
            self.all_delivered.set()
        if counter < peer.max_seen:
            peer.ooo += 1
        else:
            peer.max_seen = counter
        if counter < peer.max_seen_by_kind[kind]:
            peer.ooo_same_kind += 1
        else:
            peer.max_seen_by_kind[kind] = counter
        if self.measure_start <= sent_ns < self.measure_end:
            self.latencies.append(now_ns - sent_ns)

    async def send(self, client: Client, start_ns: int, stop_ns: int, rng: random.Random) -> None:
        load = self.load
        period = NS / load.rate
        next_ns = start_ns + rng.random() * period
        sender = client.plan.sender_id
        filler_at = rng.randrange(len(FILLER))
        filler = (FILLER * (load.payload // len(FILLER) + 2))[filler_at : filler_at + load.payload]
        ws = client.ws
        try:
            while next_ns < stop_ns:
                delay = next_ns - time.time_ns()
                if delay > 0:
                    await asyncio.sleep(delay / NS)
                counter = client.sent
                sent_ns = time.time_ns()
                mark = f"{sender}:{counter}:{sent_ns}"
                line, column = rng.randrange(1, 40), rng.randrange(1, 80)
                if rng.random() < load.editor_ratio:
                    head = mark + "|"
                    event: dict[str, Any] = {
                        "type": "editor_update",
                        "content": head + filler[: max(0, load.payload - len(head))],
                        "cursor_position": {"lineNumber": line, "column": column},
                        # So that a refusal names the edit it refuses (a server that relays it
                        # verbatim, like the baseline, costs nothing more).
                        "client_msg_id": str(counter),
                    }
                    if counter < len(client.edits):
                        client.edits[counter] = 1
                else:
                    event = {
                        "type": "cursor_update",
                        "cursor_position": {"lineNumber": line, "column": column, "m": mark},
                    }
                await ws.send(orjson.dumps(event).decode())
                client.sent = counter + 1
                if self.measure_start <= sent_ns < self.measure_end:
                    if client.measured_first < 0:
                        client.measured_first = counter
                    client.measured_count += 1
                next_ns += period
        except ConnectionClosed:
            client.closed_early = True

    async def sample_lag(self) -> None:
        """Record how late a timer runs, every LAG_SAMPLE_NS of the measured window."""
        lags = self.result.loop_lag_ns
        due = time.time_ns() + LAG_SAMPLE_NS
        while due < self.measure_end:
            await asyncio.sleep(max(0, due - time.time_ns()) / NS)
            now = time.time_ns()
            if due >= self.measure_start:
                lags.append(now - due)
            due = max(due + LAG_SAMPLE_NS, now + LAG_SAMPLE_NS // 2)

    async def cpu_at(self, at_ns: int) -> float:
        await asyncio.sleep(max(0.0, (at_ns - time.time_ns()) / NS))
        return time.process_time()

    def expected_total(self) -> int:
        return sum(c.sent * (c.room_size - 1) for c in self.clients)

    async def progress(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            sent = sum(c.sent for c in self.clients)
            self.out.put(("progress", self.plan.index, sent, self.distinct_total))

    async def run_load(self, start_ns: int, measure_start: int, measure_end: int) -> None:
        self.measure_start, self.measure_end = measure_start, measure_end
        cpu = [asyncio.create_task(self.cpu_at(at)) for at in (measure_start, measure_end)]
        reporter = asyncio.create_task(self.progress())
        lag = asyncio.create_task(self.sample_lag())
        rng = random.Random(self.load.seed * 1000 + self.plan.index)  # noqa: S311 (timing jitter, not secrets)
        await asyncio.gather(
            *(self.send(c, start_ns, measure_end, random.Random(rng.random())) for c in self.clients)  # noqa: S311
        )
        # Wait for what is still in flight: until every receiver has every event, or the drain time ends.
        expected = self.expected_total()
        self.expected_final = expected
        if self.distinct_total < expected:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_delivered.wait(), self.load.drain)
        reporter.cancel()
        await lag
        cpu_start, cpu_end = await asyncio.gather(*cpu)
        self.result.cpu_seconds = cpu_end - cpu_start
        self.tally(expected)

    def tally(self, expected_all: int) -> None:
        result = self.result
        by_id = {c.plan.sender_id: c for c in self.clients}
        for client in self.clients:
            result.sent += client.sent
            result.sent_measured += client.measured_count
            result.acks += client.acks
            result.errors += client.errors
            if client.first_error and not result.first_error_frame:
                result.first_error_frame = client.first_error[:300]
            result.closed_early += client.closed_early
            for sender_id, peer in client.peers.items():
                sender = by_id[sender_id]
                result.duplicated += peer.dups
                result.out_of_order += peer.ooo
                result.out_of_order_same_type += peer.ooo_same_kind
                if sender.measured_count:
                    first = sender.measured_first
                    window = peer.got[first : first + sender.measured_count]
                    result.expected += sender.measured_count
                    result.lost += sender.measured_count - window.count(1)
                    for counter in range(first, first + sender.measured_count):
                        if counter < len(sender.edits) and sender.edits[counter]:
                            if sender.refused[counter]:
                                result.refused_edits += 1
                            elif counter >= len(peer.got) or not peer.got[counter]:
                                result.lost_unrefused_edits += 1
        result.delivered = len(self.latencies)
        result.malformed = self.malformed
        result.incomplete_at_end = expected_all - self.distinct_total

    async def close_all(self) -> None:
        self.stopping = True
        await asyncio.gather(*(c.ws.close() for c in self.clients), return_exceptions=True)
        for task in self.readers:
            task.cancel()


async def _worker_main(plan: WorkerPlan, control: Queue[Any], out: Queue[Any]) -> None:
    loop = asyncio.get_running_loop()
    worker = Worker(plan, out)
    await worker.connect_all()
    out.put(("ready", plan.index, worker.result.connections, worker.result.connect_failures))
    command = await loop.run_in_executor(None, control.get)
    if command[0] == "load":
        _, start_ns, measure_start, measure_end = command
        await worker.run_load(start_ns, measure_start, measure_end)
    else:  # "idle": the parent has measured the servers; nothing else to do
        worker.result.closed_early = sum(c.closed_early for c in worker.clients)
    out.put(("result", plan.index, worker.result))
    await worker.close_all()


def worker_entry(plan: WorkerPlan, control: Queue[Any], out: Queue[Any]) -> None:
    """Entry point of a generator process (multiprocessing, spawn)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_worker_main(plan, control, out))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory
