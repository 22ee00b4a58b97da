"""Token expiry of the open sockets: warn each before its token expires, close it when it has.

A socket's token expires at the `exp` of the last token it presented (at connect, or in a
`refresh_token` frame); `token_expiring` goes out RELAY_TOKEN_EXPIRY_WARNING seconds before, and the
socket is kicked (4401) at expiry, or RELAY_TOKEN_GRACE seconds later (for frontends that cannot
refresh; the warning moves by as much).

All sockets of a replica share one heap of deadlines and one loop timer (`TokenClock`); each socket
holds one `TokenWatch`. A loop TimerHandle per socket, with its bound method and arguments, was about
0.68 KB under uvloop, and every idle socket had one; a heap entry and a watch are about 0.15 KB.
"""

from __future__ import annotations

import asyncio
import heapq
import time

from relay.errors import TokenExpired
from relay.protocol import token_expiring_frame
from relay.session import Connection, VolatileFrame


class TokenWatch:
    """One socket's place in the clock: its next deadline (the warning's, then the kick's)."""

    __slots__ = ("_clock", "connection", "due", "is_warned")

    def __init__(self, clock: TokenClock, connection: Connection) -> None:
        self._clock = clock
        self.connection: Connection | None = connection
        # Loop time of the next deadline; None once cancelled. A heap entry whose time is not `due` is
        # stale (the watch was rescheduled or cancelled since) and is dropped when it comes up.
        self.due: float | None = None
        self.is_warned = False
        self.schedule()

    def __lt__(self, other: TokenWatch) -> bool:
        return id(self) < id(other)  # only to break ties between equal deadlines in the heap

    def schedule(self) -> None:
        """From the connection's current identity: at connect, and after each refresh_token."""
        if self.connection is not None:
            self.is_warned = False
            self._clock.set(self, self._clock.warning_at(self.connection))

    def cancel(self) -> None:
        """The socket is closing: forget it (its heap entry, if any, no longer holds the connection)."""
        self.connection = None
        self._clock.unset(self)


class TokenClock:
    """Every socket's token deadline on this replica: one heap, one loop timer for its earliest entry."""

    __slots__ = ("_grace", "_heap", "_stale", "_timer", "_timer_at", "_warning")

    def __init__(self, warning_seconds: int, grace_seconds: int) -> None:
        self._warning = warning_seconds
        self._grace = grace_seconds
        self._heap: list[tuple[float, TokenWatch]] = []
        self._stale = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def __len__(self) -> int:
        """Entries in the heap, stale ones included (tests: they must not pile up)."""
        return len(self._heap)

    def closes_at(self, connection: Connection) -> float:
        """Loop time at which the connection is kicked. Loop time and wall time differ by a constant."""
        loop = asyncio.get_running_loop()
        return loop.time() + (connection.identity.expires_at + self._grace - time.time())

    def warning_at(self, connection: Connection) -> float:
        return self.closes_at(connection) - self._warning

    def set(self, watch: TokenWatch, at: float) -> None:
        if watch.due is not None:
            self._stale += 1
        watch.due = at
        heapq.heappush(self._heap, (at, watch))
        self._compact()
        self._arm()

    def unset(self, watch: TokenWatch) -> None:
        if watch.due is not None:
            watch.due = None
            self._stale += 1
            self._compact()

    def _compact(self) -> None:
        # Stale entries go when their time comes; until then they are small (the watch no longer holds
        # its connection once cancelled), and never more than the live ones.
        if self._stale > 64 and self._stale * 2 > len(self._heap):
            self._heap = [(at, watch) for at, watch in self._heap if watch.due == at]
            heapq.heapify(self._heap)
            self._stale = 0

    def _arm(self) -> None:
        if not self._heap:
            return
        at = self._heap[0][0]
        if self._timer is not None:
            if self._timer_at <= at:
                return
            self._timer.cancel()
        self._timer_at = at
        self._timer = asyncio.get_running_loop().call_at(at, self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = asyncio.get_running_loop().time()
        while self._heap and self._heap[0][0] <= now:
            at, watch = heapq.heappop(self._heap)
            if watch.due != at:
                self._stale -= 1
                continue
            connection = watch.connection
            assert connection is not None  # a cancelled watch has no due
            if watch.is_warned:
                watch.due = watch.connection = None
                connection.kick(TokenExpired("token expired: send a refresh_token frame before it does"))
                continue
            watch.is_warned = True
            expires_at = connection.identity.expires_at
            frame = token_expiring_frame(int(expires_at), int(expires_at + self._grace))
            connection.offer(VolatileFrame(frame.decode()))
            watch.due = closes_at = self.closes_at(connection)
            heapq.heappush(self._heap, (closes_at, watch))
        self._arm()
