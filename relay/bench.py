"""relay bench: a load generator for relay (and for relay.baseline, run the same way).

R rooms x K members, each member a WebSocket on one of the replica URLs given, assigned round-robin so
that the members of a room sit on different replicas and every event crosses replicas through Redis.
Every member sends F events per second (a mix of ``editor_update`` and ``cursor_update``) for a warm-up
and then D measured seconds. Each event carries its sender id, a per-sender counter and its send time
(``time.time_ns()``, one clock for every process on the machine) inside the fields that relay relays
verbatim: ``content`` for editor updates and ``cursor_position`` for cursor updates. Receivers therefore
count loss, duplicates, order and latency without trusting any field a server adds.

The rooms are split between ``--procs`` generator processes; a room never spans two processes, so each
process checks its rooms' deliveries on its own and the parent only adds the tallies up.

Server CPU and memory are read from /proc for the pids given with ``--server-pid`` (their child
processes included, e.g. uvicorn workers) or for the servers the command starts itself with ``--start``
or ``--compare-baseline``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import itertools
import math
import multiprocessing
import os
import queue
import random
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import httpx
import jwt
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.typing import Origin

if TYPE_CHECKING:
    from multiprocessing.queues import Queue

# relay.config.DEV_JWT_SECRET; repeated here so that the bench runs against a deployment from any checkout.
DEV_JWT_SECRET = "relay-dev-secret-0123456789abcdef-not-for-production"  # noqa: S105 (public dev secret)
NS = 1_000_000_000
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


# ---------------------------------------------------------------------------------------------------------
# The plan: what each generator process does
# ---------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Workload:
    rooms: int
    members: int
    rate: float
    payload: int
    duration: float
    warmup: float
    drain: float
    editor_ratio: float
    idle: int
    client_deflate: bool
    origin: str | None
    seed: int

    @property
    def is_idle(self) -> bool:
        return self.idle > 0

    def describe(self) -> str:
        if self.is_idle:
            return f"{self.idle} idle connections ({self.members} per room)"
        return (
            f"{self.rooms} rooms x {self.members} members x {self.rate:g} ev/s, "
            f"{self.payload} B content, {self.editor_ratio:.0%} editor_update, "
            f"{self.duration:g} s measured after {self.warmup:g} s warm-up"
        )


@dataclasses.dataclass(frozen=True)
class MemberPlan:
    sender_id: int
    ws_url: str


@dataclasses.dataclass(frozen=True)
class RoomPlan:
    code: str
    members: tuple[MemberPlan, ...]


@dataclasses.dataclass(frozen=True)
class WorkerPlan:
    index: int
    rooms: tuple[RoomPlan, ...]
    workload: Workload


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
    first_error_frame: str = ""
    incomplete_at_end: int = 0
    cpu_seconds: float = 0.0
    latencies_ns: array[int] = dataclasses.field(default_factory=lambda: array("q"))


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
        "errors",
        "first_error",
        "measured_count",
        "measured_first",
        "peers",
        "plan",
        "room_size",
        "sent",
        "ws",
    )

    def __init__(self, plan: MemberPlan, ws: ClientConnection) -> None:
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
            return Client(member, ws)

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
                    }
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


def _worker_entry(plan: WorkerPlan, control: Queue[Any], out: Queue[Any]) -> None:
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


# ---------------------------------------------------------------------------------------------------------
# Server processes: CPU and memory from /proc
# ---------------------------------------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def process_tree(root: int) -> list[int]:
    """root and all its descendants (uvicorn --workers, `relay serve --workers`)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def cpu_seconds(roots: Sequence[int]) -> float:
    """User + system CPU of the processes and their live descendants (and reaped children)."""
    ticks = 0
    for root in roots:
        for pid in process_tree(root):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            # utime stime cutime cstime: fields 14-17 of stat(5); index 11.. after the state field.
            ticks += sum(int(f) for f in fields[11:15])
    return ticks / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy (all cores), to show what else ran during a measurement."""
    with open("/proc/stat") as stat:
        fields = [int(f) for f in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


def rss_bytes(roots: Sequence[int]) -> int:
    total = 0
    for root in roots:
        for pid in process_tree(root):
            try:
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
            except OSError:
                continue
    return total


# ---------------------------------------------------------------------------------------------------------
# Starting servers for a one-run comparison
# ---------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} before listening on {port}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:g} s")


@dataclasses.dataclass
class Replica:
    kind: str
    url: str
    process: subprocess.Popen[bytes]


class Servers:
    """One redis-server and the replicas started on free ports; stopped by pid on exit."""

    def __init__(self, args: argparse.Namespace, log_dir: Path) -> None:
        self.args = args
        self.log_dir = log_dir
        self.redis: subprocess.Popen[bytes] | None = None
        self.redis_url = ""
        self.replicas: list[Replica] = []

    def start_redis(self) -> None:
        binary = shutil.which(self.args.redis_server) or self.args.redis_server
        port = free_port()
        log = (self.log_dir / "redis.log").open("wb")
        self.redis = subprocess.Popen(  # noqa: S603 (our own argv)
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(port, self.redis, "redis-server")
        self.redis_url = f"redis://127.0.0.1:{port}/0"

    def start(self, kind: str, count: int) -> list[Replica]:
        started = []
        for i in range(count):
            port = free_port()
            env = dict(os.environ, REDIS_URL=self.redis_url)
            if kind == "baseline":
                argv = [
                    sys.executable, "-m", "uvicorn", "relay.baseline:app",
                    "--host", "127.0.0.1", "--port", str(port),
                    "--log-level", "warning", "--no-access-log",
                    "--ws", self.args.ws,
                    "--loop", self.args.loop,
                    "--http", self.args.http,
                ]  # fmt: skip
                if not self.args.ws_per_message_deflate:
                    argv.append("--ws-per-message-deflate=false")
            else:
                env["RELAY_DEV_MODE"] = "true"
                # The workload decides the room size; relay's default member limit (10) must not.
                env.setdefault("RELAY_MAX_MEMBERS", str(max(10, self.args.members)))
                env.update(item.split("=", 1) for item in self.args.relay_env)
                argv = [
                    *shlex.split(self.args.relay_cmd),
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--log-level",
                    "warning",
                ]
            log = (self.log_dir / f"{kind}-{i}.log").open("wb")
            process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
            replica = Replica(kind, f"http://127.0.0.1:{port}", process)
            self.replicas.append(replica)
            wait_for_port(port, process, f"{kind} replica ({' '.join(argv)})")
            started.append(replica)
        return started

    def stop(self) -> None:
        # Replicas first, so that their shutdown can still talk to Redis; then Redis.
        self._terminate([r.process for r in self.replicas])
        if self.redis is not None:
            self._terminate([self.redis])

    @staticmethod
    def _terminate(processes: Sequence[subprocess.Popen[bytes]]) -> None:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# ---------------------------------------------------------------------------------------------------------
# The parent: set up rooms, drive the generator processes, measure the servers, report
# ---------------------------------------------------------------------------------------------------------


def mint_token(user_id: str, name: str, secret: str) -> str:
    now = int(time.time())
    claims = {
        "sub": user_id,
        "aud": "authenticated",
        "role": "authenticated",
        "iat": now,
        "exp": now + 3600,
        "email": f"{user_id}@bench.invalid",
        "user_metadata": {"full_name": name},
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def ws_base(url: str) -> str:
    url = url.rstrip("/")
    if url.startswith("https://"):
        return "wss://" + url[len("https://") :]
    if url.startswith("http://"):
        return "ws://" + url[len("http://") :]
    return url


async def set_up_rooms(urls: Sequence[str], load: Workload, secret: str) -> list[RoomPlan]:
    """Create the rooms and join their members over HTTP, exactly as the product's clients do."""
    run_tag = secrets.token_hex(3)
    room_count = math.ceil(load.idle / load.members) if load.is_idle else load.rooms
    sender_ids = itertools.count()
    gate = asyncio.Semaphore(16)

    async def post(client: httpx.AsyncClient, url: str, path: str, token: str, body: Any) -> Any:
        async with gate:
            response = await client.post(
                f"{url.rstrip('/')}{path}", json=body, headers={"Authorization": f"Bearer {token}"}
            )
        payload = response.json() if response.content else {}
        if response.status_code >= 400 or payload.get("status") != "success":
            raise RuntimeError(f"POST {url}{path} answered {response.status_code}: {response.text[:300]}")
        return payload

    async def one_room(client: httpx.AsyncClient, r: int, size: int) -> RoomPlan:
        tokens = [mint_token(f"bench-{run_tag}-{r}-{m}", f"Bench {r}.{m}", secret) for m in range(size)]
        member_urls = [urls[(r + m) % len(urls)] for m in range(size)]
        created = await post(client, member_urls[0], "/api/create-room", tokens[0], {})
        code = str(created["room_code"])
        await asyncio.gather(
            *(
                post(client, member_urls[m], "/api/join-room", tokens[m], {"room_code": code})
                for m in range(1, size)
            )
        )
        members = tuple(
            MemberPlan(next(sender_ids), f"{ws_base(member_urls[m])}/ws/{code}?token={tokens[m]}")
            for m in range(size)
        )
        return RoomPlan(code, members)

    sizes = [load.members] * room_count
    if load.is_idle and load.idle % load.members:
        sizes[-1] = load.idle % load.members
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        return list(await asyncio.gather(*(one_room(client, r, size) for r, size in enumerate(sizes))))


class Progress:
    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self.is_tty = stream.isatty()
        self.last_line = 0.0

    def show(self, text: str) -> None:
        now = time.monotonic()
        if self.is_tty:
            self._write("\r\x1b[K" + text)
        elif now - self.last_line >= 5.0:
            self._write(text + "\n")
            self.last_line = now

    def done(self) -> None:
        if self.is_tty:
            self._write("\r\x1b[K")

    def _write(self, text: str) -> None:
        if not self.enabled:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except OSError:  # a closed pipe must not abort the run and leave servers behind
            self.enabled = False


def percentile(sorted_values: Sequence[int], fraction: float) -> float:
    if not sorted_values:
        return math.nan
    index = min(len(sorted_values) - 1, max(0, math.ceil(fraction * len(sorted_values)) - 1))
    return float(sorted_values[index])


def run_workload(
    label: str,
    urls: Sequence[str],
    load: Workload,
    args: argparse.Namespace,
    *,
    server_pids: Sequence[int],
    redis_pid: int | None,
    progress: Progress,
) -> dict[str, Any]:
    """One measured run against the replicas at urls; returns the figures as a JSON-able dict."""
    progress.show(f"[{label}] setting up rooms over HTTP ...")
    plans = asyncio.run(set_up_rooms(urls, load, args.jwt_secret))
    procs = max(1, min(args.procs, len(plans)))
    shares: list[list[RoomPlan]] = [[] for _ in range(procs)]
    for i, room in enumerate(plans):
        shares[i % procs].append(room)
    connections = sum(len(r.members) for r in plans)

    rss_before = rss_bytes(server_pids) if server_pids else 0
    context = multiprocessing.get_context("spawn")
    out: Queue[Any] = context.Queue()
    controls: list[Queue[Any]] = [context.Queue() for _ in range(procs)]
    workers = [
        context.Process(
            target=_worker_entry,
            args=(WorkerPlan(i, tuple(shares[i]), load), controls[i], out),
            name=f"relay-bench-{i}",
            daemon=True,
        )
        for i in range(procs)
    ]
    for process in workers:
        process.start()
    results: dict[int, WorkerResult] = {}
    sent_by: dict[int, int] = {}
    got_by: dict[int, int] = {}

    def pump(until: float, status: Callable[[], str], done: Callable[[], bool] = lambda: False) -> None:
        """Handle worker messages until `until` (time.time()) or done(), showing progress."""
        while not done():
            remaining = until - time.time()
            if remaining <= 0:
                return
            try:
                message = out.get(timeout=min(remaining, 0.25))
            except queue.Empty:
                if any(not p.is_alive() and i not in results for i, p in enumerate(workers)):
                    raise RuntimeError("a load generator process died; see its traceback above") from None
                progress.show(status())
                continue
            kind, index = message[0], message[1]
            if kind == "ready":
                ready[index] = (message[2], message[3])
            elif kind == "progress":
                sent_by[index], got_by[index] = message[2], message[3]
            elif kind == "result":
                results[index] = message[2]
            progress.show(status())

    ready: dict[int, tuple[int, int]] = {}
    try:
        start = time.time()
        connect_deadline = start + 60 + connections / 50
        pump(
            connect_deadline,
            lambda: (
                f"[{label}] connecting: {sum(r[0] for r in ready.values())}/{connections} "
                f"({len(ready)}/{procs} generator processes ready)"
            ),
            lambda: len(ready) == procs,
        )
        if len(ready) < procs:
            raise RuntimeError(f"generator processes did not connect within {connect_deadline - start:.0f} s")
        figures: dict[str, Any]
        if load.is_idle:
            settle_until = time.time() + args.settle
            pump(settle_until, lambda: f"[{label}] {connections} idle connections open; settling ...")
            rss_after = rss_bytes(server_pids) if server_pids else 0
            cpu0 = cpu_seconds(server_pids) if server_pids else 0.0
            idle_until = time.time() + 2.0
            pump(idle_until, lambda: f"[{label}] measuring idle CPU ...")
            idle_cpu = (cpu_seconds(server_pids) - cpu0) / 2.0 if server_pids else math.nan
            for control in controls:
                control.put(("idle",))
            pump(time.time() + 60, lambda: f"[{label}] closing ...", lambda: len(results) == procs)
            opened = sum(r.connections for r in results.values())
            figures = {
                "connections": opened,
                "connect_failures": sum(r.connect_failures for r in results.values()),
                "closed_early": sum(r.closed_early for r in results.values()),
                "server_rss_mb_before": rss_before / 2**20 if server_pids else None,
                "server_rss_mb": rss_after / 2**20 if server_pids else None,
                "server_kb_per_connection": ((rss_after - rss_before) / 1024 / opened)
                if server_pids and opened
                else None,
                "server_idle_cpu_percent": idle_cpu * 100 if server_pids else None,
            }
        else:
            start_ns = time.time_ns() + NS // 2
            measure_start = start_ns + int(load.warmup * NS)
            measure_end = measure_start + int(load.duration * NS)
            for control in controls:
                control.put(("load", start_ns, measure_start, measure_end))
            t0 = start_ns / NS

            def status() -> str:
                now = time.time()
                phase = (
                    "warm-up"
                    if now < measure_start / NS
                    else "measure"
                    if now < measure_end / NS
                    else "drain"
                )
                got = sum(got_by.values())
                return (
                    f"[{label}] {phase} {now - t0:5.1f}/{(measure_end - start_ns) / NS:.0f}s "
                    f"sent {sum(sent_by.values())} delivered {got}"
                )

            pump(measure_start / NS, status)
            cpu0 = cpu_seconds(server_pids) if server_pids else 0.0
            redis0 = cpu_seconds([redis_pid]) if redis_pid else 0.0
            busy0 = machine_busy_seconds()
            pump(measure_end / NS, status)
            cpu1 = cpu_seconds(server_pids) if server_pids else 0.0
            redis1 = cpu_seconds([redis_pid]) if redis_pid else 0.0
            busy1 = machine_busy_seconds()
            rss = rss_bytes(server_pids) if server_pids else 0
            pump(time.time() + load.drain + 60, status, lambda: len(results) == procs)
            if len(results) < procs:
                raise RuntimeError("generator processes did not report within the drain time + 60 s")
            figures = summarize(load, list(results.values()))
            figures["machine_cpu_percent"] = (busy1 - busy0) / load.duration * 100
            delivered = figures["delivered"]
            if server_pids:
                figures["server_cpu_percent"] = (cpu1 - cpu0) / load.duration * 100
                figures["server_cpu_us_per_msg"] = (cpu1 - cpu0) * 1e6 / delivered if delivered else None
                figures["server_rss_mb"] = rss / 2**20
            if redis_pid:
                figures["redis_cpu_percent"] = (redis1 - redis0) / load.duration * 100
                figures["redis_cpu_us_per_msg"] = (redis1 - redis0) * 1e6 / delivered if delivered else None
            # What the rest of the machine took meanwhile: a figure measured on a busy machine says so.
            ours = figures.get("server_cpu_percent", 0.0) + figures.get("redis_cpu_percent", 0.0)
            ours += sum(figures["generator_cpu_percent"])
            figures["other_cpu_percent"] = max(0.0, figures["machine_cpu_percent"] - ours)
    finally:
        # After a normal run the workers are closing their sockets; after an error or a signal they are
        # ended now, not left sending.
        finished = len(results) == procs
        for control in controls:
            with contextlib.suppress(Exception):
                control.put(("idle",))
        for process in workers:
            process.join(timeout=15 if finished else 0.5)
            if process.is_alive():
                process.kill()
                process.join()
        progress.done()
    return {
        "target": label,
        "urls": list(urls),
        "server_pids": list(server_pids),
        "generator_processes": procs,
        **figures,
    }


def summarize(load: Workload, results: list[WorkerResult]) -> dict[str, Any]:
    latencies: list[int] = sorted(itertools.chain.from_iterable(r.latencies_ns for r in results))
    total = {
        name: sum(getattr(r, name) for r in results)
        for name in (
            "connections",
            "connect_failures",
            "closed_early",
            "sent",
            "sent_measured",
            "expected",
            "delivered",
            "lost",
            "duplicated",
            "out_of_order",
            "out_of_order_same_type",
            "malformed",
            "acks",
            "errors",
            "incomplete_at_end",
        )
    }
    target_sends = total["connections"] * load.rate * load.duration
    first_error = next((r.first_error_frame for r in results if r.first_error_frame), "")
    connect_error = next((r.connect_error for r in results if r.connect_error), "")
    ms = 1e6
    return {
        **total,
        "sent_per_s": total["sent_measured"] / load.duration,
        "send_rate_achieved": total["sent_measured"] / target_sends if target_sends else None,
        "delivered_per_s": total["delivered"] / load.duration,
        "latency_ms": {
            "p50": percentile(latencies, 0.50) / ms,
            "p90": percentile(latencies, 0.90) / ms,
            "p99": percentile(latencies, 0.99) / ms,
            "max": (latencies[-1] / ms) if latencies else math.nan,
            "mean": (sum(latencies) / len(latencies) / ms) if latencies else math.nan,
        },
        "generator_cpu_percent": [round(r.cpu_seconds / load.duration * 100, 1) for r in results],
        "first_error_frame": first_error or None,
        "connect_error": connect_error or None,
    }


# ---------------------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------------------

ROWS: tuple[tuple[str, str, str], ...] = (
    ("connections", "connections", "{:.0f}"),
    ("connect_failures", "connect failures", "{:.0f}"),
    ("sent_per_s", "sent/s", "{:.0f}"),
    ("delivered_per_s", "delivered/s", "{:.0f}"),
    ("expected", "expected deliveries", "{:.0f}"),
    ("delivered", "delivered", "{:.0f}"),
    ("lost", "lost", "{:.0f}"),
    ("duplicated", "duplicated", "{:.0f}"),
    ("out_of_order", "out of order", "{:.0f}"),
    ("out_of_order_same_type", "  of which within one type", "{:.0f}"),
    ("latency_ms.p50", "latency p50 ms", "{:.2f}"),
    ("latency_ms.p90", "latency p90 ms", "{:.2f}"),
    ("latency_ms.p99", "latency p99 ms", "{:.2f}"),
    ("latency_ms.max", "latency max ms", "{:.2f}"),
    ("server_cpu_us_per_msg", "server CPU us/delivered", "{:.1f}"),
    ("server_cpu_percent", "server CPU % (all replicas)", "{:.0f}"),
    ("redis_cpu_us_per_msg", "redis CPU us/delivered", "{:.1f}"),
    ("server_rss_mb", "server RSS MB (all replicas)", "{:.1f}"),
    ("server_rss_mb_before", "server RSS MB before", "{:.1f}"),
    ("server_kb_per_connection", "server KB/connection", "{:.1f}"),
    ("server_idle_cpu_percent", "server idle CPU %", "{:.1f}"),
    ("generator_cpu_percent", "generator CPU % (per process)", "{}"),
    ("redis_cpu_percent", "redis CPU %", "{:.0f}"),
    ("machine_cpu_percent", "machine CPU % (all processes)", "{:.0f}"),
    ("other_cpu_percent", "  of which other processes", "{:.0f}"),
    ("acks", "acks", "{:.0f}"),
    ("errors", "error frames", "{:.0f}"),
    ("closed_early", "closed early", "{:.0f}"),
    ("malformed", "unparsable frames", "{:.0f}"),
)
RATIO_KEYS = (
    "delivered_per_s",
    "latency_ms.p50",
    "latency_ms.p99",
    "server_cpu_us_per_msg",
    "server_rss_mb",
    "server_kb_per_connection",
)


def lookup(figures: dict[str, Any], key: str) -> Any:
    value: Any = figures
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def ratios(runs: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    relay_run, baseline_run = runs
    out: dict[str, float | None] = {}
    for key in RATIO_KEYS:
        a, b = lookup(relay_run, key), lookup(baseline_run, key)
        ok = isinstance(a, int | float) and isinstance(b, int | float) and b and not math.isnan(b)
        out[key] = round(a / b, 3) if ok else None
    return out


def render_table(report: dict[str, Any]) -> str:
    runs: list[dict[str, Any]] = report["runs"]
    ratio = report.get("ratios")
    headers = ["", *(r["target"] for r in runs)] + (["relay/baseline"] if ratio else [])
    lines: list[list[str]] = []
    for key, title, fmt in ROWS:
        values = [lookup(r, key) for r in runs]
        if all(v is None for v in values):
            continue
        row = [title]
        for v in values:
            if v is None or (isinstance(v, float) and math.isnan(v)):
                row.append("-")
            elif isinstance(v, list):
                row.append(" ".join(f"{x:g}" for x in v))
            else:
                row.append(fmt.format(v))
        if ratio:
            r = ratio.get(key)
            row.append(f"{r:.2f}x" if r is not None else "")
        lines.append(row)
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *lines, strict=True)]
    text = [f"workload: {report['workload']}"]
    text.append(
        "  ".join(
            h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths, strict=True))
        )
    )
    text.append("  ".join("-" * w for w in widths))
    for row in lines:
        text.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    for r in runs:
        for key in ("first_error_frame", "connect_error"):
            if r.get(key):
                text.append(f"{r['target']}: {key.replace('_', ' ')}: {r[key]}")
    return "\n".join(text)


# ---------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Load-test relay replicas: R rooms x K members spread over the URLs given, each member sending F "
        "events/s; reports delivered/s, lost, duplicated, out of order, latency percentiles and (with server "
        "pids, or servers it starts) server CPU per delivered message and memory."
    )
    parser.add_argument(
        "urls", nargs="*", metavar="URL", help="replica base URLs, e.g. http://127.0.0.1:8000"
    )
    load = parser.add_argument_group("workload")
    load.add_argument("--rooms", "-R", type=int, default=200, help="rooms (default 200)")
    load.add_argument("--members", "-K", type=int, default=2, help="members per room (default 2)")
    load.add_argument("--rate", "-F", type=float, default=5.0, help="events/s per member (default 5)")
    load.add_argument("--payload", "-P", type=int, default=200, help="editor content bytes (default 200)")
    load.add_argument("--duration", "-D", type=float, default=20.0, help="measured seconds (default 20)")
    load.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring (default 5)")
    load.add_argument("--drain", type=float, default=5.0, help="max seconds to wait for stragglers (5)")
    load.add_argument(
        "--editor-ratio", type=float, default=0.3, help="share of editor_update, rest cursor_update (0.3)"
    )
    load.add_argument("--idle", type=int, default=0, metavar="N", help="idle mode: open N connections")
    load.add_argument("--settle", type=float, default=3.0, help="idle mode: seconds before measuring (3)")
    load.add_argument(
        "--client-deflate",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="clients offer permessage-deflate as browsers do (default off: the generator's CPU is scarce)",
    )
    load.add_argument("--origin", default=None, help="Origin header for the WebSocket handshake")
    load.add_argument("--seed", type=int, default=1)
    load.add_argument("--procs", type=int, default=1, help="load generator processes (default 1)")
    load.add_argument(
        "--jwt-secret",
        default=os.environ.get("RELAY_BENCH_JWT_SECRET", DEV_JWT_SECRET),
        help="HS256 secret for the members' tokens (default: relay's dev secret; needs RELAY_DEV_MODE=true)",
    )
    measure = parser.add_argument_group("servers")
    measure.add_argument(
        "--server-pid", type=int, action="append", default=[], help="server pid to measure (repeatable)"
    )
    measure.add_argument("--redis-pid", type=int, default=None, help="redis-server pid to measure")
    measure.add_argument(
        "--start",
        choices=("baseline", "relay"),
        default=None,
        help="start one redis-server and --replicas replicas of this server on free ports, and target them",
    )
    measure.add_argument(
        "--compare-baseline",
        action="store_true",
        help="start relay and baseline replicas (one shared redis-server) and run the workload on each",
    )
    measure.add_argument("--replicas", type=int, default=2, help="replicas to start (default 2)")
    measure.add_argument(
        "--relay-cmd",
        default=f"{shlex.quote(sys.executable)} -m relay.cli",
        help="command that runs relay's CLI (default: this Python, -m relay.cli)",
    )
    measure.add_argument(
        "--relay-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment for started relay replicas (repeatable); RELAY_MAX_MEMBERS defaults to --members",
    )
    measure.add_argument("--redis-server", default="redis-server", help="redis-server binary")
    measure.add_argument(
        "--log-dir", type=Path, default=None, help="keep the started servers' logs here (default: discarded)"
    )
    measure.add_argument(
        "--ws", default="auto", help="uvicorn --ws for started baseline replicas (auto = websockets-sansio)"
    )
    measure.add_argument(
        "--ws-per-message-deflate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="uvicorn --ws-per-message-deflate for started baseline replicas",
    )
    measure.add_argument("--loop", default="auto", help="uvicorn --loop for started baseline replicas")
    measure.add_argument("--http", default="auto", help="uvicorn --http for started baseline replicas")
    output = parser.add_argument_group("output")
    output.add_argument("--format", choices=("table", "json"), default="table", help="stdout format")
    output.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write JSON here")
    output.add_argument("--quiet", "-q", action="store_true", help="no progress line on stderr")


def workload_from(args: argparse.Namespace) -> Workload:
    if args.members < 1 or (args.rooms < 1 and not args.idle):
        raise ValueError(f"--rooms and --members must be positive, got {args.rooms} and {args.members}")
    if args.rate <= 0 or args.duration <= 0:
        raise ValueError(f"--rate and --duration must be positive, got {args.rate} and {args.duration}")
    if any("=" not in item for item in args.relay_env):
        raise ValueError(f"--relay-env takes KEY=VALUE, got {args.relay_env}")
    if not 0 <= args.editor_ratio <= 1:
        raise ValueError(f"--editor-ratio must be between 0 and 1, got {args.editor_ratio}")
    return Workload(
        rooms=args.rooms,
        members=args.members,
        rate=args.rate,
        payload=args.payload,
        duration=args.duration,
        warmup=args.warmup,
        drain=args.drain,
        editor_ratio=args.editor_ratio,
        idle=args.idle,
        client_deflate=args.client_deflate,
        origin=args.origin,
        seed=args.seed,
    )


def run(args: argparse.Namespace) -> int:
    """`relay bench`: 0 when every run delivered everything, 1 when any lost, duplicated or reordered."""
    try:
        load = workload_from(args)
    except ValueError as exc:
        print(f"relay bench: {exc}", file=sys.stderr)
        return 2
    if not args.urls and not args.start and not args.compare_baseline:
        print(
            "relay bench: give replica URLs, --start baseline|relay, or --compare-baseline", file=sys.stderr
        )
        return 2
    progress = Progress(sys.stderr, not args.quiet)
    runs: list[dict[str, Any]] = []
    with _sigterm_as_exit():
        code = _run_and_report(args, load, runs, progress)
    return code


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the servers and generator processes started here are stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def exit_on_sigterm(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, exit_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_and_report(
    args: argparse.Namespace, load: Workload, runs: list[dict[str, Any]], progress: Progress
) -> int:
    with contextlib.ExitStack() as stack:
        if args.log_dir is not None:
            args.log_dir.mkdir(parents=True, exist_ok=True)
            tmp = str(args.log_dir)
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="relay-bench-"))
        try:
            with _servers(args, Path(tmp)) as servers:
                _run_all(args, load, servers, runs, progress)
        except RuntimeError as exc:
            progress.done()
            print(f"relay bench: {exc}", file=sys.stderr)
            for log in sorted(Path(tmp).glob("*.log")):
                tail = log.read_text(errors="replace")[-2000:]
                if tail.strip():
                    print(f"--- {log.name} (last lines)\n{tail}", file=sys.stderr)
            return 2
    report: dict[str, Any] = {
        "workload": load.describe(),
        "parameters": dataclasses.asdict(load) | {"replicas": args.replicas, "ws": args.ws},
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "runs": runs,
    }
    if len(runs) == 2:
        report["ratios"] = ratios(runs)
    encoded = orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    if args.json is not None:
        args.json.write_bytes(encoded + b"\n")
    if args.format == "json":
        print(encoded.decode())
    else:
        print(render_table(report))
    failed = any(
        r.get("lost") or r.get("duplicated") or r.get("out_of_order") or r.get("connect_failures")
        for r in runs
    )
    return 1 if failed else 0


def _run_all(
    args: argparse.Namespace,
    load: Workload,
    servers: Servers | None,
    runs: list[dict[str, Any]],
    progress: Progress,
) -> None:
    if servers is None:
        runs.append(
            run_workload(
                "target",
                args.urls,
                load,
                args,
                server_pids=args.server_pid,
                redis_pid=args.redis_pid,
                progress=progress,
            )
        )
        return
    kinds = ["relay", "baseline"] if args.compare_baseline else [args.start]
    groups = [servers.start(kind, args.replicas) for kind in kinds]
    redis_pid = servers.redis.pid if servers.redis else None
    for kind, group in zip(kinds, groups, strict=True):
        pids = [r.process.pid for r in group]
        urls = [r.url for r in group]
        runs.append(
            run_workload(kind, urls, load, args, server_pids=pids, redis_pid=redis_pid, progress=progress)
        )


@contextlib.contextmanager
def _servers(args: argparse.Namespace, log_dir: Path) -> Iterator[Servers | None]:
    if not args.start and not args.compare_baseline:
        yield None
        return
    servers = Servers(args, log_dir)
    try:
        servers.start_redis()
        yield servers
    finally:
        servers.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="relay bench")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
