"""Admission control: how long work waits on this replica, and whether to take more of it.

A replica offered more than it can carry must say no rather than queue: queued work only ever comes out
later (seconds, at saturation), and clients that get no answer cannot tell "slow" from "lost". So the
replica measures its own queueing, continuously and cheaply, and while it is too long it refuses work
explicitly:

- a new socket is closed with 1013 ("try again later") after an `unavailable` error frame carrying
  `retry_after` (seconds, randomised so that the refused clients do not all come back at once);
- an `editor_update` is answered with `unavailable` carrying its `client_msg_id` and `retry_after`:
  nothing was stored, the client resends it (an edit that was accepted is acked and delivered as usual);
- cursor and monitoring frames are dropped with an `unavailable` notice at most once a second per
  socket (a cursor is superseded by the next one anyway);
- pings, token refreshes and the delivery of what was already accepted are never refused.

Queueing is measured, not guessed from a count of sockets or frames (which depends on the machine, the
payloads and what else runs there). Two kinds of samples feed one figure:

- **event-loop lag**: a timer asks to run every SAMPLE_INTERVAL and records how late it ran. Every
  frame read, script reply and send waits in the same loop, so the lag is the wait of all of them;
- **store round trips**: how long a frame's script call took (the pipeline writer's queue plus Redis),
  and how long an event this replica stamped took to come back from Redis pub/sub to the hub (the
  pub/sub backlog). Both are measured on this process's own clock.

Each kind is a moving average that decays while no samples arrive (so a replica that sheds everything
does not stay "overloaded" for want of new measurements); the replica's queueing is the larger of the
two. Sockets are refused from RELAY_SHED_SOCKETS_MS on and frames from RELAY_SHED_FRAMES_MS on: new
sockets first, since a new socket brings more work than one frame.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable

from relay import metrics

SAMPLE_INTERVAL = 0.05  # seconds between two event-loop lag samples
LAG_WEIGHT = 0.3  # of each lag sample in its moving average (20 samples a second: about 0.15 s memory)
ROUND_TRIP_WEIGHT = 0.05  # of each round-trip sample (one per frame: the last few dozen frames)
DECAY_AFTER = 0.1  # seconds without samples before an average starts to decay...
HALF_LIFE = 0.5  # ...halving every this many seconds

_SHED_SOCKETS = metrics.SHED.labels("socket")
_SHED_EDITS = metrics.SHED.labels("editor_update")
_SHED_OTHER = metrics.SHED.labels("other_frame")


class MovingAverage:
    """An exponentially weighted average of samples that decays towards 0 while no samples come."""

    __slots__ = ("_at", "_value", "_weight")

    def __init__(self, weight: float) -> None:
        self._weight = weight
        self._value = 0.0
        self._at = -math.inf

    def read(self, now: float) -> float:
        idle = now - self._at - DECAY_AFTER
        if idle <= 0:
            return self._value
        decay: float = 0.5 ** (idle / HALF_LIFE)
        return self._value * decay

    def add(self, sample: float, now: float) -> None:
        value = self.read(now)
        self._value = value + self._weight * (sample - value)
        self._at = now


class Admission:
    """This replica's measured queueing and the decisions taken from it (see the module's docstring).

    Thresholds are in seconds; 0 refuses everything of that kind (a drill for clients' retry paths).
    """

    def __init__(
        self,
        *,
        shed_sockets_at: float,
        shed_frames_at: float,
        retry_after: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.shed_sockets_at = shed_sockets_at
        self.shed_frames_at = shed_frames_at
        self._retry_after = retry_after
        self._clock = clock
        self._lag = MovingAverage(LAG_WEIGHT)
        self._round_trip = MovingAverage(ROUND_TRIP_WEIGHT)
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0

    # --- measuring ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start sampling the event loop's lag (call from the running loop; stop() ends it)."""
        self.stop()
        self._schedule()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        self._due = self._clock() + SAMPLE_INTERVAL
        self._timer = loop.call_later(SAMPLE_INTERVAL, self._sample_lag)

    def _sample_lag(self) -> None:
        now = self._clock()
        self._lag.add(max(0.0, now - self._due), now)
        metrics.QUEUEING.set(self.queueing)
        self._schedule()

    def observe_round_trip(self, seconds: float) -> None:
        """A measured wait of work through the store: a script call, or an event back from pub/sub."""
        self._round_trip.add(max(0.0, seconds), self._clock())

    @property
    def queueing(self) -> float:
        """Seconds that work currently waits on this replica (the larger of the two measures)."""
        now = self._clock()
        return max(self._lag.read(now), self._round_trip.read(now))

    # --- deciding ----------------------------------------------------------------------------------

    def admits_socket(self) -> bool:
        if self.queueing < self.shed_sockets_at:
            return True
        _SHED_SOCKETS.inc()
        return False

    def admits_edit(self) -> bool:
        if self.queueing < self.shed_frames_at:
            return True
        _SHED_EDITS.inc()
        return False

    def admits_frame(self) -> bool:
        """Cursor and monitoring frames (volatile: dropped with a notice, not answered one by one)."""
        if self.queueing < self.shed_frames_at:
            return True
        _SHED_OTHER.inc()
        return False

    def socket_retry_after(self) -> int:
        """Whole seconds for a refused socket: spread over [retry_after, 2 x retry_after] so that the
        clients refused together do not all come back together."""
        return max(1, round(self._retry_after * (1 + random.random())))  # noqa: S311 - jitter, not a secret

    def frame_retry_after(self) -> int:
        return max(1, round(self._retry_after))
