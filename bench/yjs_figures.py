"""Figures for Yjs editing (issue 11): prints them; not a test (nothing here asserts a timing).

    python -m bench.yjs_figures [--quick] [--two-replicas [--profile DIR]] [--only-keystrokes]

1. Per keystroke in a 4 KB document: bytes through Redis and relay CPU, Yjs path vs whole-document path,
   on one replica (typing as fast as relay takes it) and across two replicas (`--two-replicas`: a typist
   on one, a reader on the other, 20 keystrokes a second each waiting for its ack, idle CPU and Redis
   traffic subtracted; also a Yjs typist with a whole-document reader, the text mirror's case;
   `--profile DIR` records each replica with py-spy meanwhile).
2. The time a joiner waits for its sync step 2 with 1k / 10k / 100k updates of history, before and after
   compaction, and how long that compaction took.
3. Keystrokes lost when two people type at random places at 5 keys/s each with 50 ms one-way delay:
   two whole-document clients (the old frontend's behaviour: every keystroke sends the whole text, every
   remote editor_update replaces the local text), against one whole-document client and one Yjs client.

Everything runs on this machine: a redis-server and relay replicas of this checkout (tests/support.py),
pycrdt clients (tests/yjs_client.py), and a TCP proxy that delays every chunk by the one-way delay.
Run it from the repository root.
"""

# ruff: noqa: S311 - seeded generators for reproducible workloads, not security
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import redis

from relay.config import Settings
from relay.rooms import Rooms
from relay.yjs_doc import RoomDoc, TextEdit
from relay.yjs_store import YjsStore
from tests.support import Client, RedisServer, Replica, create_room, join_room, token, wait_for
from tests.yjs_client import YjsClient

BASE_ENV = {
    "RELAY_RATE_PER_SECOND": "5000",
    "RELAY_RATE_BURST": "5000",
    "RELAY_MAX_CANDIDATES": "10",
    "RELAY_CREATE_LIMIT": "10000",
    "RELAY_LOG_LEVEL": "warning",
}


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _redis_bytes(url: str) -> int:
    info: Any = redis.Redis.from_url(url).info("stats")
    return int(info["total_net_input_bytes"]) + int(info["total_net_output_bytes"])


@contextlib.contextmanager
def _servers(count: int, env: dict[str, str]) -> Iterator[tuple[RedisServer, list[Replica]]]:
    server = RedisServer().start()
    replicas: list[Replica] = []
    try:
        for n in range(count):
            replicas.append(Replica({"REDIS_URL": server.url, **BASE_ENV, **env}, name=f"r{n}").start())
        yield server, replicas
    finally:
        for replica in replicas:
            replica.stop()
        server.stop()
        server.cleanup()


# --- 1. cost per keystroke ------------------------------------------------------------------------


def per_keystroke(keystrokes: int) -> dict[str, dict[str, float]]:
    document = "".join(random.Random(1).choice("abcdefghij klmnop\n") for _ in range(4096))
    out: dict[str, dict[str, float]] = {}
    with _servers(1, {}) as (server, (replica,)):
        pid = replica.pid
        assert pid is not None
        # Yjs: a typist and a reader, both Yjs clients.
        ann, bob = token("ann"), token("bob")
        code = create_room(replica.http, ann)
        join_room(replica.http, bob, code)
        typist = YjsClient(replica.ws, code, ann, name="ann").connect()
        reader = YjsClient(replica.ws, code, bob, name="bob").connect()
        typist.insert(0, document)
        typist.wait_until_acked()
        reader.wait_for_text(lambda text: len(text) == len(document))
        time.sleep(1)
        rng = random.Random(2)
        bytes_before, cpu_before = _redis_bytes(server.url), _cpu_seconds(pid)
        for _ in range(keystrokes):
            typist.insert(rng.randint(0, len(document)), "x")
            time.sleep(0.005)
        typist.wait_until_acked()
        reader.wait_for_text(lambda text: len(text) == len(document) + keystrokes)
        time.sleep(1)  # the text mirror's last run
        out["yjs"] = {
            "redis_bytes": (_redis_bytes(server.url) - bytes_before) / keystrokes,
            "cpu_us": (_cpu_seconds(pid) - cpu_before) * 1e6 / keystrokes,
        }
        typist.disconnect()
        reader.disconnect()
        # Whole document: the same through /ws, each keystroke sending the 4 KB text; in a room no Yjs
        # client joined (no Yjs document), and in one where a Yjs client reads (edits go through it).
        out["whole_document"] = _whole_document(server, replica, document, keystrokes, yjs_reader=False)
        out["whole_document_yjs_room"] = _whole_document(
            server, replica, document, keystrokes, yjs_reader=True
        )
    return out


def _whole_document(
    server: RedisServer, replica: Replica, document: str, keystrokes: int, *, yjs_reader: bool
) -> dict[str, float]:
    pid = replica.pid
    assert pid is not None
    ann, bob = token("ann"), token("bob")
    code = create_room(replica.http, ann)
    join_room(replica.http, bob, code)
    writer = Client(replica.ws, code, ann)
    writer.recv_type("room_state")
    reader: Client | YjsClient
    if yjs_reader:
        reader = YjsClient(replica.ws, code, bob, name="bob").connect()
    else:
        reader = Client(replica.ws, code, bob)
        reader.recv_type("room_state")
    rng = random.Random(3)
    text = document
    writer.send({"type": "editor_update", "content": text})
    writer.recv_type("ack")
    time.sleep(1)
    bytes_before, cpu_before = _redis_bytes(server.url), _cpu_seconds(pid)
    for _ in range(keystrokes):
        at = rng.randint(0, len(text))
        text = text[:at] + "x" + text[at:]
        writer.send({"type": "editor_update", "content": text})
        writer.recv_type("ack")
    if isinstance(reader, YjsClient):
        reader.wait_for_text(lambda got: got == text, timeout=30)
        reader.disconnect()
    else:
        reader.recv_until(lambda f: f.get("content") == text, timeout=30)
        reader.close()
    figures = {
        "redis_bytes": (_redis_bytes(server.url) - bytes_before) / keystrokes,
        "cpu_us": (_cpu_seconds(pid) - cpu_before) * 1e6 / keystrokes,
    }
    writer.close()
    return figures


class _Profiles:
    """py-spy recording each replica while a measured phase runs (raw collapsed stacks, one file each)."""

    def __init__(self, directory: str | None, replicas: list[Replica]) -> None:
        self.directory = directory
        self.replicas = replicas

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if self.directory is None:
            yield
            return
        os.makedirs(self.directory, exist_ok=True)
        # py-spy comes with the bench extras, next to this interpreter even when its venv is not on PATH.
        spy_path = shutil.which("py-spy") or shutil.which("py-spy", path=os.path.dirname(sys.executable))
        if spy_path is None:
            raise SystemExit("--profile needs py-spy on PATH")
        spies = [
            subprocess.Popen(  # noqa: S603 (our own argv)
                [
                    spy_path,
                    "record",
                    "-r",
                    "200",
                    "-f",
                    "raw",
                    "--nonblocking",
                    "-p",
                    str(replica.pid),
                    "-o",
                    os.path.join(self.directory, f"{name}-r{n}.txt"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for n, replica in enumerate(self.replicas)
        ]
        time.sleep(1)  # py-spy attaches
        try:
            yield
        finally:
            for spy in spies:
                spy.send_signal(2)  # SIGINT: py-spy writes what it sampled and exits
            for spy in spies:
                spy.wait(30)


class _Meter:
    """Replica CPU (all replicas) and Redis bytes over a phase, minus what the same span costs idle."""

    def __init__(self, server: RedisServer, replicas: list[Replica]) -> None:
        self.server = server
        self.pids = [replica.pid for replica in replicas if replica.pid is not None]
        cpu, traffic, started = self._read()
        time.sleep(3)
        cpu2, traffic2, ended = self._read()
        self.idle_cpu = (cpu2 - cpu) / (ended - started)
        self.idle_bytes = (traffic2 - traffic) / (ended - started)

    def _read(self) -> tuple[float, int, float]:
        return sum(_cpu_seconds(pid) for pid in self.pids), _redis_bytes(self.server.url), time.monotonic()

    @contextlib.contextmanager
    def measure(self, keystrokes: int, out: dict[str, float]) -> Iterator[None]:
        cpu, traffic, started = self._read()
        yield
        cpu2, traffic2, ended = self._read()
        span = ended - started
        out["cpu_us"] = (cpu2 - cpu - self.idle_cpu * span) * 1e6 / keystrokes
        out["redis_bytes"] = (traffic2 - traffic - self.idle_bytes * span) / keystrokes


def _paced(keystrokes: int, rate: float) -> Iterator[int]:
    started = time.monotonic()
    for n in range(keystrokes):
        time.sleep(max(0.0, started + n / rate - time.monotonic()))
        yield n


def _yjs_to_whole_reader(  # noqa: PLR0917
    replicas: list[Replica], document: str, keystrokes: int, rate: float, profiles: _Profiles, meter: _Meter
) -> dict[str, float]:
    """The Yjs typist again, with a whole-document reader on the other replica: the text mirror runs."""
    ann, bob = token("ann"), token("bob")
    code = create_room(replicas[0].http, ann)
    join_room(replicas[1].http, bob, code)
    typist = YjsClient(replicas[0].ws, code, ann, name="ann").connect()
    typist.insert(0, document)
    typist.wait_until_acked()
    reader = Client(replicas[1].ws, code, bob)
    reader.recv_type("room_state")
    latest = [""]
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                frame = reader.recv(timeout=0.2)
                if frame.get("type") == "editor_update":
                    latest[0] = str(frame["content"])

    draining = threading.Thread(target=drain, daemon=True)
    draining.start()
    time.sleep(1)
    figures: dict[str, float] = {}
    rng = random.Random(2)
    with profiles.phase("yjs-whole-reader"), meter.measure(keystrokes, figures):
        for _ in _paced(keystrokes, rate):
            typist.insert(rng.randint(0, len(document)), "x")
            typist.wait_until_acked()
        wait_for(lambda: latest[0] == typist.content(), 30, "the whole-document reader to get the text")
        time.sleep(1)
    stop.set()
    draining.join(5)
    typist.disconnect()
    reader.close()
    return figures


def per_keystroke_two_replicas(
    keystrokes: int, rate: float = 20.0, profile: str | None = None
) -> dict[str, dict[str, float]]:
    """A typist on one replica, a reader on the other; each keystroke waits for its ack (a person typing)."""
    document = "".join(random.Random(1).choice("abcdefghij klmnop\n") for _ in range(4096))
    out: dict[str, dict[str, float]] = {"yjs": {}, "whole_document": {}}
    with _servers(2, {}) as (server, replicas):
        profiles = _Profiles(profile, replicas)
        meter = _Meter(server, replicas)
        ann, bob = token("ann"), token("bob")
        code = create_room(replicas[0].http, ann)
        join_room(replicas[1].http, bob, code)
        typist = YjsClient(replicas[0].ws, code, ann, name="ann").connect()
        reader = YjsClient(replicas[1].ws, code, bob, name="bob").connect()
        typist.insert(0, document)
        typist.wait_until_acked()
        reader.wait_for_text(lambda text: len(text) == len(document))
        time.sleep(1)
        rng = random.Random(2)
        with profiles.phase("yjs"), meter.measure(keystrokes, out["yjs"]):
            for _ in _paced(keystrokes, rate):
                typist.insert(rng.randint(0, len(document)), "x")
                typist.wait_until_acked()
            reader.wait_for_text(lambda text: len(text) == len(document) + keystrokes)
            time.sleep(1)  # the text mirror's last run
        typist.disconnect()
        reader.disconnect()
        out["yjs_whole_document_reader"] = _yjs_to_whole_reader(
            replicas, document, keystrokes, rate, profiles, meter
        )

        code = create_room(replicas[0].http, ann)
        join_room(replicas[1].http, bob, code)
        writer = Client(replicas[0].ws, code, ann)
        writer.recv_type("room_state")
        text = document
        final = document
        rng = random.Random(3)
        for _ in range(keystrokes):
            at = rng.randint(0, len(final))
            final = final[:at] + "x" + final[at:]
        whole_reader = Client(replicas[1].ws, code, bob)
        whole_reader.recv_type("room_state")
        # The reader drains its socket meanwhile (a client that stops reading would be dropped as slow).
        seen = threading.Event()

        def drain() -> None:
            whole_reader.recv_until(lambda f: f.get("content") == final, 60)
            seen.set()

        draining = threading.Thread(target=drain, daemon=True)
        writer.send({"type": "editor_update", "content": text})
        writer.recv_type("ack")
        time.sleep(1)
        rng = random.Random(3)
        with profiles.phase("whole"), meter.measure(keystrokes, out["whole_document"]):
            draining.start()
            for _ in _paced(keystrokes, rate):
                at = rng.randint(0, len(text))
                text = text[:at] + "x" + text[at:]
                writer.send({"type": "editor_update", "content": text})
                writer.recv_type("ack")
            seen.wait(60)
            time.sleep(1)
        writer.close()
        whole_reader.close()
    out["ratio_yjs_whole_reader_to_whole"] = {
        key: out["yjs_whole_document_reader"][key] / out["whole_document"][key]
        for key in ("cpu_us", "redis_bytes")
    }
    out["ratio_yjs_to_whole"] = {
        key: out["yjs"][key] / out["whole_document"][key] for key in ("cpu_us", "redis_bytes")
    }
    return out


# --- 2. joiners and compaction --------------------------------------------------------------------


def joiner_wait(sizes: list[int]) -> list[dict[str, float]]:
    rows = []
    with _servers(1, {"RELAY_YJS_COMPACT_AFTER": "1000000000"}) as (server, (replica,)):
        for size in sizes:
            ann = token("ann")
            code = create_room(replica.http, ann)
            _write_history(server.url, code, size)
            before = _time_join(replica, code, ann)
            compaction = asyncio.run(_compact(server.url, code))
            after = _time_join(replica, code, ann)
            rows.append(
                {"updates": size, "join_before_s": before, "compaction_s": compaction, "join_after_s": after}
            )
    return rows


def _write_history(url: str, code: str, count: int) -> None:
    """`count` keystroke updates (typing at random places) straight into the room's Yjs stream."""
    writer = RoomDoc()
    rng = random.Random(count)
    client = redis.Redis.from_url(url)
    client.hset(f"relay:{{{code}}}:ydoc", mapping={"snapshot": b"", "snapshot_seq": 0, "seq": count})
    pipe = client.pipeline(transaction=False)
    for n in range(1, count + 1):
        text = writer.content()
        if text and n % 5 == 0:
            at = rng.randrange(len(text))
            update = writer.apply_text_edits([TextEdit(at, at + 1, "")], text)
        else:
            update = writer.apply_text_edits([TextEdit(rng.randint(0, len(text)), 0, "ab"[n % 2])], text)
        pipe.xadd(f"relay:{{{code}}}:yupdates", {"u": update, "o": "bench"}, id=f"{n}-0")
        if n % 1000 == 0:
            pipe.execute()
    pipe.execute()


def _time_join(replica: Replica, code: str, user_token: str) -> float:
    started = time.perf_counter()
    client = YjsClient(replica.ws, code, user_token, name="joiner").connect(timeout=300)
    waited = time.perf_counter() - started
    client.disconnect()
    return waited


async def _compact(url: str, code: str) -> float:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    settings = Settings(redis_url=url, dev_mode=True, yjs_compact_after=10**9)
    rooms = Rooms(client, settings)
    store = YjsStore(client, rooms, settings)
    try:
        done = await store.compact(code)
        assert done is not None
        return done.seconds
    finally:
        await store.aclose()
        await rooms.aclose()
        await client.aclose()


# --- 3. keystrokes lost over a delayed network ----------------------------------------------------


class DelayProxy:
    """A TCP proxy that forwards every chunk `delay` seconds after it arrived, in order, both ways."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.delay = delay
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                inbound, _ = self.listener.accept()
            except OSError:
                return
            outbound = socket.create_connection(("127.0.0.1", self.target_port))
            for source, sink in ((inbound, outbound), (outbound, inbound)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        queue: list[tuple[float, bytes]] = []
        condition = threading.Condition()

        def send() -> None:
            while True:
                with condition:
                    while not queue:
                        condition.wait()
                    due, data = queue.pop(0)
                time.sleep(max(0.0, due - time.monotonic()))
                if not data:
                    with contextlib.suppress(OSError):
                        sink.shutdown(socket.SHUT_WR)
                    return
                try:
                    sink.sendall(data)
                except OSError:
                    return

        threading.Thread(target=send, daemon=True).start()
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            with condition:
                queue.append((time.monotonic() + self.delay, data))
                condition.notify()
            if not data:
                return

    def close(self) -> None:
        self.closed = True
        self.listener.close()


class WholeDocumentTypist(threading.Thread):
    """The old frontend: each keystroke sends the whole text; each remote editor_update replaces it."""

    def __init__(  # noqa: PLR0917
        self, base_ws: str, code: str, user_token: str, chars: str, rate: float, seed: int
    ) -> None:
        super().__init__(daemon=True)
        self.client = Client(base_ws, code, user_token)
        self.text = str(self.client.recv_type("room_state")["content"])
        self.chars, self.rate, self.rng = chars, rate, random.Random(seed)

    def run(self) -> None:
        for char in self.chars:
            deadline = time.monotonic() + 1 / self.rate
            self._take_frames(until=deadline)
            at = self.rng.randint(0, len(self.text))
            self.text = self.text[:at] + char + self.text[at:]
            self.client.send({"type": "editor_update", "content": self.text})
        self._take_frames(until=time.monotonic() + 3)

    def _take_frames(self, until: float) -> None:
        while (left := until - time.monotonic()) > 0:
            try:
                frame = self.client.recv(timeout=left)
            except TimeoutError:
                return
            if frame["type"] == "editor_update":
                self.text = str(frame["content"])


class YjsTypist(threading.Thread):
    def __init__(  # noqa: PLR0917
        self, base_ws: str, code: str, user_token: str, chars: str, rate: float, seed: int
    ) -> None:
        super().__init__(daemon=True)
        self.client = YjsClient(base_ws, code, user_token, name="yjs").connect()
        self.chars, self.rate, self.rng = chars, rate, random.Random(seed)

    def run(self) -> None:
        for char in self.chars:
            self.client.type_random(self.rng, char)
            time.sleep(1 / self.rate)
        self.client.wait_until_acked()


def keystrokes_lost(
    kinds: tuple[str, str], seconds: float, delay: float, merge: str = "yjs"
) -> dict[str, Any]:
    rate = 5.0
    count = int(seconds * rate)
    alphabets = ["".join(chr(0x4E00 + n * 1000 + i) for i in range(count)) for n in range(2)]
    with _servers(2, {"RELAY_WHOLE_DOCUMENT_MERGE": merge}) as (server, replicas):
        proxies = [DelayProxy(replica.port, delay) for replica in replicas]
        try:
            users = [token("ann"), token("bob")]
            code = create_room(replicas[0].http, users[0])
            join_room(replicas[1].http, users[1], code)
            typists: list[threading.Thread] = []
            for n, kind in enumerate(kinds):
                url = f"ws://127.0.0.1:{proxies[n].port}"
                cls = YjsTypist if kind == "yjs" else WholeDocumentTypist
                typists.append(cls(url, code, users[n], alphabets[n], rate, seed=n))
            for typist in typists:
                typist.start()
            for typist in typists:
                typist.join(seconds * 4 + 60)
            room = redis.Redis.from_url(server.url)
            time.sleep(1)
            wait_for(lambda: room.hget(f"relay:{{{code}}}:room", "content") is not None, 10, "the text")
            stored: Any = room.hget(f"relay:{{{code}}}:room", "content")
            final = (stored or b"").decode()
            typed = "".join(alphabets)
            lost = sum(1 for char in typed if char not in final)
            for typist in typists:
                if isinstance(typist, YjsTypist):
                    typist.client.disconnect()
                elif isinstance(typist, WholeDocumentTypist):
                    typist.client.close()
            return {"clients": "+".join(kinds), "merge": merge, "typed": len(typed), "lost": lost}
        finally:
            for proxy in proxies:
                proxy.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke check of the script)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument(
        "--two-replicas", action="store_true", help="also the per-keystroke figures across two replicas"
    )
    parser.add_argument("--profile", help="with --two-replicas: py-spy each replica into this directory")
    parser.add_argument("--only-keystrokes", action="store_true", help="only the per-keystroke figures")
    parser.add_argument("--keystrokes", type=int, help="keystrokes per measured phase (default 300)")
    args = parser.parse_args()
    figures: dict[str, Any] = {}
    keystrokes = args.keystrokes or (50 if args.quick else 300)
    if args.two_replicas:
        figures["per_keystroke_4kb_two_replicas"] = per_keystroke_two_replicas(
            keystrokes, profile=args.profile
        )
        print(
            json.dumps(
                {"per_keystroke_4kb_two_replicas": figures["per_keystroke_4kb_two_replicas"]}, indent=1
            ),
            flush=True,
        )
    figures["per_keystroke_4kb"] = per_keystroke(keystrokes)
    print(json.dumps({"per_keystroke_4kb": figures["per_keystroke_4kb"]}, indent=1), flush=True)
    if args.only_keystrokes:
        _write(args.json, figures)
        return
    figures["joiners"] = joiner_wait([1000] if args.quick else [1000, 10_000, 100_000])
    print(json.dumps({"joiners": figures["joiners"]}, indent=1), flush=True)
    seconds = 6 if args.quick else 30
    figures["lost"] = [
        keystrokes_lost(("whole", "whole"), seconds, 0.05),
        keystrokes_lost(("whole", "yjs"), seconds, 0.05),
        keystrokes_lost(("whole", "whole"), seconds, 0.05, merge="always"),
    ]
    print(json.dumps({"lost": figures["lost"]}, indent=1), flush=True)
    _write(args.json, figures)


def _write(path: str | None, figures: dict[str, Any]) -> None:
    if path:
        with open(path, "w") as out:
            json.dump(figures, out, indent=1)


if __name__ == "__main__":
    main()
