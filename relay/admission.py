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
payloads and what else runs there). Every SAMPLE_INTERVAL the replica takes one measure of it, the
larger of:

- **event-loop lag**: a timer asks to run every SAMPLE_INTERVAL and records how late it ran. Every
  frame read, script reply and send waits in the same loop, so the lag is the wait of all of them;
- **the store queue's head sojourn**: the longest time a script call waited in the pipeline writer's
  queue before its batch left for Redis during the interval (pipeline.py, `take_longest_wait`), as
  CoDel measures a queue: where work waits when Redis, or the replica's share of the CPU, is short.

(Round trips, a script call's or an event's way back through pub/sub, are not measured: when calls
leave in batches of hundreds, a round trip says which batch a call fell in more than how long the queue
stands, and averaging them made the shedding flip between "all" and "nothing" second by second.)

Frames are shed in a proportion, not all or nothing: a proportional-integral law, PIE's form for packet
queues. Each interval the proportion rises by GAIN per target of queueing above the target
RELAY_SHED_FRAMES_MS (falls by as much below it), plus DAMPING per target the queueing rose since the
previous interval (falls: a pause that has ended takes its shedding with it). So the queueing is held
near the target by refusing as much as it takes (if refusing were free, half of twice what the replica
can carry), instead of refusing everything while a measure is high and taking everything (and a queue
with it) while it is low. New sockets are refused while the queueing is at least RELAY_SHED_SOCKETS_MS
or more than half of the frames are shed: a new socket brings more work than one frame, but a storm of
connections alone (a load balancer moving a thousand sockets here) must not turn every newcomer away.

Nothing is shed during a burst allowance (PIE's, RFC 8033 section 4.4): from a calm state, the first
MAX_BURST seconds of queueing are let through whatever the law says, so a garbage-collection pause or
a moment without the CPU does not bounce edits that the replica clears as soon as it runs again (a
refused edit comes back seconds later: worse than the pause). Only queueing that stands longer sheds.

What shedding cannot do: a refused frame has still been received, parsed and answered. When reading
the offered frames alone takes the replica's CPU (twice the load it carries, on a small machine), the
law sheds nearly everything while the queueing stays near the target, and accepted work still waits a
few loop iterations of reading (docs/performance.md, round four). Capacity is the remedy there; a
shed proportion above 0 on `/metrics` is the sign that a replica is past it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from relay import metrics

SAMPLE_INTERVAL = 0.05  # seconds between two measures of the queueing (and two updates of the shedding)
GAIN = 0.04  # of the shed proportion per interval, per target of queueing above (below) the target
DAMPING = 0.04  # of the shed proportion per target the queueing rose (fell) since the previous interval
MAX_ERROR = 5.0  # targets: one very late interval (a GC pause, a stopped process) moves it at most this far
SOCKETS_SHED_PROPORTION = 0.5  # new sockets are refused while more than this share of frames is shed
MAX_BURST = 0.15  # seconds of queueing, from a calm state, during which nothing is shed

_SHED_SOCKETS = metrics.SHED.labels("socket")
_SHED_EDITS = metrics.SHED.labels("editor_update")
_SHED_OTHER = metrics.SHED.labels("other_frame")


def _clamp(value: float, low: float, high: float) -> float:
    return min(high, max(low, value))


class Admission:
    """This replica's measured queueing and the decisions taken from it (see the module's docstring).

    Thresholds are in seconds; 0 refuses everything of that kind (a drill for clients' retry paths).
    `store_wait` is the store queue's head sojourn since its previous call (pipeline.py's
    take_longest_wait); `chance` draws the number that decides whether a frame is shed.
    """

    def __init__(
        self,
        *,
        shed_sockets_at: float,
        shed_frames_at: float,
        retry_after: float,
        store_wait: Callable[[], float] = lambda: 0.0,
        clock: Callable[[], float] = time.monotonic,
        chance: Callable[[], float] = random.random,
    ) -> None:
        self.shed_sockets_at = shed_sockets_at
        self.shed_frames_at = shed_frames_at
        self._retry_after = retry_after
        self._store_wait = store_wait
        self._clock = clock
        self._chance = chance
        self._queueing = 0.0  # measured over the last interval
        self._shed = 0.0  # the proportion of frames refused
        self._burst_allowance = MAX_BURST
        # Calm: queueing below half of the lower threshold (RFC 8033 resets its allowance there).
        self._calm_below = min((t for t in (shed_sockets_at, shed_frames_at) if t > 0), default=0.0) / 2
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0

    # --- measuring ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start measuring once per interval (call from the running loop; stop() ends it)."""
        self.stop()
        self._schedule()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        self._due = self._clock() + SAMPLE_INTERVAL
        self._timer = loop.call_later(SAMPLE_INTERVAL, self._end_interval_on_time)

    def _end_interval_on_time(self) -> None:
        try:
            self.end_interval(lag=self._clock() - self._due)
        finally:
            self._schedule()  # whatever happened, measuring goes on (the loop logs an error)

    def end_interval(self, lag: float) -> None:
        """Close one interval, whose timer ran `lag` seconds late: measure the queueing, then move the
        shed proportion by the control law."""
        queueing = max(lag, self._store_wait(), 0.0)
        target = self.shed_frames_at
        if target > 0:
            error = _clamp((queueing - target) / target, -1.0, MAX_ERROR)
            trend = _clamp((queueing - self._queueing) / target, -MAX_ERROR, MAX_ERROR)
            self._shed = _clamp(self._shed + GAIN * error + DAMPING * trend, 0.0, 1.0)
        if self._shed == 0 and max(queueing, self._queueing) < self._calm_below:
            self._burst_allowance = MAX_BURST  # calm for two intervals: the next burst is let through
        else:
            self._burst_allowance = max(0.0, self._burst_allowance - SAMPLE_INTERVAL)
        self._queueing = queueing
        metrics.QUEUEING.set(queueing)
        metrics.SHED_PROPORTION.set(self._shed)

    @property
    def queueing(self) -> float:
        """Seconds that work waited on this replica, measured over the last interval."""
        return self._queueing

    @property
    def shed_proportion(self) -> float:
        """The proportion of frames currently refused (0 to 1; 1 when RELAY_SHED_FRAMES_MS is 0)."""
        return 1.0 if self.shed_frames_at == 0 else self._shed

    # --- deciding ----------------------------------------------------------------------------------

    @property
    def in_burst_allowance(self) -> bool:
        """True while queueing is let through as a passing burst (nothing is shed; see the module)."""
        return self._burst_allowance > 0

    def admits_socket(self) -> bool:
        if self.shed_sockets_at > 0 and (
            self._burst_allowance > 0
            or (self._queueing < self.shed_sockets_at and self._shed <= SOCKETS_SHED_PROPORTION)
        ):
            return True
        _SHED_SOCKETS.inc()
        return False

    def _admits(self) -> bool:
        if self.shed_frames_at == 0:
            return False
        return self._burst_allowance > 0 or self._shed == 0 or self._chance() >= self._shed

    def admits_edit(self) -> bool:
        if self._admits():
            return True
        _SHED_EDITS.inc()
        return False

    def admits_frame(self) -> bool:
        """Cursor and monitoring frames (volatile: dropped with a notice, not answered one by one)."""
        if self._admits():
            return True
        _SHED_OTHER.inc()
        return False

    def socket_retry_after(self) -> int:
        """Whole seconds for a refused socket: spread over [retry_after, 2 x retry_after] so that the
        clients refused together do not all come back together."""
        return max(1, round(self._retry_after * (1 + random.random())))  # noqa: S311 - jitter, not a secret

    def frame_retry_after(self) -> int:
        return max(1, round(self._retry_after))
