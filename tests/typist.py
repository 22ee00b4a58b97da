"""A client that behaves like relay's documented reconnecting client, and checks what it receives.

It sends a numbered series of edits, one at a time, each with a client_msg_id; after a dropped socket
it reconnects to any replica with `last_seq` and resends an edit only if it never learned that the
edit was accepted (from an ack, or from its own edit among the replayed events). Every frame with a
`seq` is checked against the documented guarantee: seq N+1 follows seq N, exactly once.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import ClientConnection, connect


@dataclass
class Figures:
    reconnects: int = 0
    replayed: int = 0
    resends: int = 0
    unavailable_errors: int = 0
    resume_seconds: list[float] = field(default_factory=list)


class Typist(threading.Thread):
    def __init__(
        self,
        name: str,
        user_token: str,
        code: str,
        urls: Callable[[], list[str]],
        count: int,
        *,
        pause: float = 0.01,
    ) -> None:
        super().__init__(name=f"typist-{name}", daemon=True)
        self.user = name
        self.token = user_token
        self.code = code
        self.urls = urls
        self.count = count
        self.pause = pause
        self.last_seq = 0
        self.joined_at_seq = 0  # the room's seq in the first room_state: events before it are in `content`
        self.seqs: list[int] = []  # every seq received or acked, in arrival order
        self.document = ""
        self.acked: dict[str, int] = {}
        self.violations: list[str] = []
        self.figures = Figures()
        self.sent = 0
        self.done = threading.Event()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self._conn: ClientConnection | None = None
        self._pending: dict[str, str] = {}

    # --- thread ----------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._connect()
            for number in range(self.count):
                msg_id = f"{self.user}-{number}"
                content = f"{self.user}:{number}"
                self._pending[msg_id] = content
                self._deliver(msg_id, content)
                self.sent = number + 1
                time.sleep(self.pause)
            self.done.set()
            while not self.stop.is_set():
                self._read_for(0.2)
        except BaseException as error:
            self.error = error
            self.done.set()
        finally:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.close()

    def _deliver(self, msg_id: str, content: str) -> None:
        deadline = time.monotonic() + 90
        while msg_id not in self.acked:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.user}: {msg_id} never acknowledged")
            try:
                assert self._conn is not None
                self._conn.send(
                    json.dumps({"type": "editor_update", "content": content, "client_msg_id": msg_id})
                )
                answered = self._read_until(lambda: msg_id in self.acked or self._refused == msg_id, 10)
                if self._refused == msg_id:
                    self._refused = None
                    self.figures.resends += 1
                    time.sleep(0.2)  # Redis is away; the replica says when it is back
                elif not answered:
                    self.figures.resends += 1
            except (ConnectionClosed, OSError):
                self._connect()
                if msg_id not in self.acked:
                    self.figures.resends += 1

    _refused: str | None = None

    def _read_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._read_for(remaining)
        return True

    def _read_for(self, timeout: float) -> None:
        assert self._conn is not None
        try:
            raw = self._conn.recv(timeout=timeout)
        except TimeoutError:
            return
        except (ConnectionClosed, OSError):
            if self.stop.is_set() or self.done.is_set():
                self._connect()
                return
            raise
        self._handle(json.loads(raw))

    def _connect(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        started = time.monotonic()
        deadline = started + 60
        while True:
            for url in self.urls():
                query = f"?token={self.token}" + (f"&last_seq={self.last_seq}" if self.seqs else "")
                try:
                    conn = connect(f"{url}/ws/{self.code}{query}", open_timeout=3, legacy=True)
                except (
                    OSError,
                    InvalidHandshake,
                    TimeoutError,
                    ConnectionClosed,
                ):  # e.g. killed mid-handshake
                    continue
                try:
                    first = json.loads(conn.recv(timeout=5))
                except (ConnectionClosed, OSError, TimeoutError):
                    first = {}
                if first.get("type") != "room_state":  # refused (draining, Redis away): try another
                    with contextlib.suppress(Exception):
                        conn.close()
                    continue
                self._conn = conn
                if self.seqs:
                    self.figures.reconnects += 1
                    self.figures.resume_seconds.append(time.monotonic() - started)
                self._handle(first)
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.user}: no replica accepted a connection for 60s")
            time.sleep(0.1)

    # --- checking --------------------------------------------------------------------------------

    def _sequenced(self, seq: int, what: str) -> bool:
        if seq <= self.last_seq:
            self.violations.append(f"{what}: duplicate or old seq {seq} after {self.last_seq}")
            return False
        if seq != self.last_seq + 1:
            self.violations.append(f"{what}: gap, seq {seq} after {self.last_seq}")
        self.last_seq = seq
        self.seqs.append(seq)
        return True

    def _handle(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "room_state":
            if frame.get("resumed"):
                self.figures.replayed += int(frame["replayed"])
            elif self.seqs:
                self.violations.append(f"full state instead of resume: {frame.get('reason')}")
                self.last_seq = frame["seq"]
                self.document = frame["content"]
            else:
                self.last_seq = self.joined_at_seq = frame["seq"]
                self.document = frame["content"]
        elif kind == "editor_update":
            if self._sequenced(frame["seq"], "editor_update"):
                self.document = frame["content"]
                if frame["user_id"] == self.user and "client_msg_id" in frame:
                    self.acked.setdefault(frame["client_msg_id"], frame["seq"])
        elif kind == "ack":
            if frame.get("duplicate"):
                self.acked.setdefault(frame["client_msg_id"], frame["seq"])
                return
            if self._sequenced(frame["seq"], "ack"):
                msg_id = frame["client_msg_id"]
                self.acked[msg_id] = frame["seq"]
                self.document = self._pending.get(msg_id, self.document)
        elif kind == "error":
            if frame.get("code") == "unavailable" and "client_msg_id" in frame:
                self.figures.unavailable_errors += 1
                self._refused = frame["client_msg_id"]
            elif frame.get("code") not in ("unavailable",):
                self.violations.append(f"error frame: {frame}")
