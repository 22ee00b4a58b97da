"""A Yjs client in Python (pycrdt) that speaks y-websocket like a stock WebsocketProvider, for tests.

It holds its own document, so it behaves like a browser tab: edits made while disconnected stay local
and reach relay on the next connect, because each connect runs the two-way sync (it sends sync step 1;
it answers relay's sync step 1 with a step 2 holding whatever relay lacks).

relay answers every sync step 1 with a sync step 2, and every frame carrying an update (sync step 2 or
update) with an empty sync step 2 once the update is stored: the client counts those answers in order
to know which of its updates are acknowledged (`acked_updates`).

    client = YjsClient(replica.ws, code, token("ann")).connect()
    client.insert(0, "hello")
    client.wait_until_acked()
    client.wait_for_text(lambda text: "world" in text)
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from pycrdt import Doc, Text, TransactionEvent
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from relay.yjs_doc import TEXT_NAME
from relay.yjs_protocol import (
    AwarenessEntry,
    AwarenessMessage,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    awareness_message,
    encode_awareness,
    parse_awareness,
    parse_message,
    sync_step1,
    sync_step2,
    sync_update,
)


class Refused(ConnectionError):
    """relay closed the socket during the handshake: `code` and `reason` of its close."""

    def __init__(self, code: int | None, reason: str | None) -> None:
        super().__init__(f"closed with {code}: {reason}")
        self.code = code
        self.reason = reason


class YjsClient:
    def __init__(self, base_ws: str, code: str, user_token: str, *, name: str = "") -> None:
        self.base_ws = base_ws
        self.code = code
        self.token = user_token
        self.name = name
        self.doc: Doc[Any] = Doc(allow_multithreading=True)
        self.text: Text = self.doc.get(TEXT_NAME, type=Text)
        self._lock = threading.RLock()
        self._conn: ClientConnection | None = None
        self._reader: threading.Thread | None = None
        # What each of our frames expects as its answer, in order: "sync" (step 1) or "update".
        self._awaiting: deque[str] = deque()
        self.acked_updates = 0
        self.sent_updates = 0
        self.unanswered_on_old_sockets = 0
        self.synced = threading.Event()  # set by the answer to our sync step 1
        self.awareness: dict[int, AwarenessEntry] = {}  # remote awareness by client id
        self._awareness_clock = 0
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._local: list[bytes] = []
        self.doc.observe(self._on_transaction)
        self._applying_remote = False

    # --- connection ---------------------------------------------------------------------------------

    def connect(self, base_ws: str | None = None, *, timeout: float = 10) -> YjsClient:
        if base_ws is not None:
            self.base_ws = base_ws
        self.synced.clear()
        conn = connect(
            f"{self.base_ws}/yjs/{self.code}?token={self.token}", open_timeout=10, max_size=2**23, legacy=True
        )
        self.close_code = self.close_reason = None
        with self._lock:
            self._conn = conn
            # Updates a previous socket never got answered for are in this connect's sync (relay's sync
            # step 1 asks for everything it lacks), whose step 2 is answered in turn.
            self.unanswered_on_old_sockets += self.sent_updates - self.acked_updates
            self.sent_updates = self.acked_updates
            self._awaiting.clear()
            self._awaiting.append("sync")
            with contextlib.suppress(ConnectionClosed):  # refused: the reader reports the close
                conn.send(sync_step1(self.doc.get_state()))
        self._reader = threading.Thread(target=self._read, args=(conn,), daemon=True, name=f"yjs-{self.name}")
        self._reader.start()
        deadline = time.monotonic() + timeout
        while not self.synced.wait(0.02):
            if not self._reader.is_alive():
                raise Refused(self.close_code, self.close_reason)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: no sync step 2 within {timeout}s")
        return self

    def disconnect(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
        if self._reader is not None:
            self._reader.join(5)

    @property
    def connected(self) -> bool:
        return self._conn is not None

    # --- editing ------------------------------------------------------------------------------------

    def insert(self, index: int, chars: str) -> None:
        """Insert at a code-point index (converted to pycrdt's UTF-8 byte index)."""
        with self._lock:
            current = str(self.text)
            self.text.insert(len(current[:index].encode()), chars)
            self._flush()

    def delete(self, index: int, length: int) -> None:
        with self._lock:
            current = str(self.text)
            start = len(current[:index].encode())
            del self.text[start : start + len(current[index : index + length].encode())]
            self._flush()

    def type_random(self, rng: random.Random, chars: str) -> None:
        """Insert `chars` at a random position (what a typist elsewhere in the text does)."""
        with self._lock:
            self.insert(rng.randint(0, len(str(self.text))), chars)

    def content(self) -> str:
        with self._lock:
            return str(self.text)

    def set_awareness(self, state: str) -> None:
        """Publish this client's awareness state (JSON text)."""
        with self._lock:
            self._awareness_clock += 1
            entry = AwarenessEntry(self.doc.client_id, self._awareness_clock, state)
            if self._conn is not None:
                with contextlib.suppress(ConnectionClosed, OSError):
                    self._conn.send(awareness_message(encode_awareness([entry])))

    # --- waiting ------------------------------------------------------------------------------------

    def wait_for_text(self, predicate: Callable[[str], bool], timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.content()
            if predicate(text):
                return text
            time.sleep(0.02)
        raise TimeoutError(f"{self.name}: text never matched; it is {self.content()[:200]!r}")

    def wait_until_acked(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while self.acked_updates < self.sent_updates:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name}: {self.sent_updates - self.acked_updates} updates unacknowledged"
                )
            time.sleep(0.02)

    def wait_closed(self, timeout: float = 10) -> tuple[int | None, str | None]:
        if self._reader is not None:
            self._reader.join(timeout)
        return self.close_code, self.close_reason

    # --- internals ----------------------------------------------------------------------------------

    def _on_transaction(self, event: TransactionEvent) -> None:
        if not self._applying_remote:
            self._local.append(event.update)

    def _flush(self) -> None:
        """Send local updates now if connected; offline ones reach relay through the next sync."""
        updates, self._local = self._local, []
        if self._conn is None:
            return
        for update in updates:
            try:
                self._conn.send(sync_update(update))
            except (ConnectionClosed, OSError):
                return
            self._awaiting.append("update")
            self.sent_updates += 1

    def _apply_remote(self, update: bytes) -> None:
        self._applying_remote = True
        try:
            self.doc.apply_update(update)
        finally:
            self._applying_remote = False

    def _read(self, conn: ClientConnection) -> None:
        try:
            while True:
                frame = conn.recv()
                if isinstance(frame, str):
                    raise AssertionError(f"relay sent a text frame on the Yjs endpoint: {frame[:200]}")
                self._handle(conn, parse_message(frame))
        except ConnectionClosed:
            self.close_code = conn.close_code
            self.close_reason = conn.close_reason
        finally:
            with self._lock:
                if self._conn is conn:
                    self._conn = None

    def _handle(self, conn: ClientConnection, message: object) -> None:
        with self._lock:
            if isinstance(message, SyncStep1):
                # relay asks for what it lacks: our offline edits, if any
                reply = self.doc.get_update(message.state_vector)
                self._local.clear()  # covered by this step 2
                conn.send(sync_step2(reply))
                self._awaiting.append("update")
                self.sent_updates += 1
            elif isinstance(message, SyncStep2):
                self._apply_remote(message.update)
                answered = self._awaiting.popleft() if self._awaiting else "?"
                if answered == "sync":
                    self.synced.set()
                elif answered == "update":
                    self.acked_updates += 1
                else:
                    raise AssertionError(f"{self.name}: a sync step 2 that answers nothing we sent")
            elif isinstance(message, SyncUpdate):
                self._apply_remote(message.update)
            elif isinstance(message, AwarenessMessage):
                for entry in parse_awareness(message.update):
                    if entry.state == "null":
                        self.awareness.pop(entry.client_id, None)
                    else:
                        self.awareness[entry.client_id] = entry
            elif isinstance(message, QueryAwareness):
                pass
