"""The replica's life around its requests: supervised background loops, presence refresh, SIGTERM drain.

app.py's lifespan calls `start` once the services exist and `stop` before it releases Redis.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from types import FrameType

from relay.errors import RelayError, Unavailable
from relay.protocol import reconnect_frame
from relay.services import Services

logger = logging.getLogger("relay.lifecycle")

# Longest wait between telling clients to reconnect and uvicorn's 1012 close (the wait ends as soon as
# every socket's writer has sent the notice; a socket that stopped reading is not waited for longer).
DRAIN_NOTICE_SECONDS = 1.0


def start(services: Services) -> list[asyncio.Task[None]]:
    """Start the hub and the presence refresh, each supervised, the admission control's measurements,
    and chain the SIGTERM drain."""
    services.admission.start()
    tasks = [
        asyncio.create_task(supervise("hub", services.hub.run), name="hub"),
        asyncio.create_task(supervise("presence", lambda: refresh_presence(services)), name="presence"),
    ]
    drain_on_sigterm(services)
    return tasks


async def stop(services: Services, tasks: list[asyncio.Task[None]]) -> None:
    """Refuse new sockets and end the background loops (the lifespan then releases Redis)."""
    services.is_draining = True
    services.admission.stop()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def supervise(name: str, run: Callable[[], Awaitable[None]], restart_delay: float = 1.0) -> None:
    """Keep a background loop alive: a bug that escapes it is logged and the loop restarted, rather
    than leaving a replica that answers probes but no longer delivers anything."""
    while True:
        try:
            await run()
            return
        except Exception:
            logger.exception("background task %s failed; restarting it in %.1f s", name, restart_delay)
            await asyncio.sleep(restart_delay)


def drain_on_sigterm(services: Services) -> None:
    """Put relay's first drain stage in front of uvicorn's SIGTERM handling.

    uvicorn closes every socket with 1012 as soon as it sees SIGTERM and runs the lifespan shutdown only
    after the handlers returned, so the lifespan is too late to warn anyone. This handler marks the
    replica not ready, sends every socket a `reconnect` frame, and hands the signal to uvicorn once every
    writer has sent it (at most DRAIN_NOTICE_SECONDS later), so the frames precede the 1012 close.
    """
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous):
        return  # not under uvicorn's signal capture (tests, embedding): nothing to chain to
    loop = asyncio.get_running_loop()
    hand_overs: set[asyncio.Task[None]] = set()  # a reference, so the task is not collected mid-way

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if services.is_draining:
            previous(signum, frame)
            return
        services.is_draining = True
        logger.info("SIGTERM: draining %d connections", services.hub.connection_count)
        sent = services.hub.broadcast_and_confirm(
            reconnect_frame("this replica is shutting down; reconnect with last_seq")
        )

        async def hand_over() -> None:
            # uvicorn closes every socket once it has the signal: first let the writers send the notice.
            if sent:
                await asyncio.wait(sent, timeout=DRAIN_NOTICE_SECONDS)
            previous(signum, frame)

        hand_overs.add(loop.create_task(hand_over()))

    signal.signal(signal.SIGTERM, on_sigterm)


# Rooms refreshed together: their scripts leave in one pipeline batch (one write to Redis, not one per
# room; with 1,000 rooms on a replica the per-room writes were ~5 % of a core while every socket was idle).
PRESENCE_ROOMS_PER_STEP = 32


async def refresh_presence(services: Services) -> None:
    """Re-mark this replica's connections present before their entries expire (a dead replica's don't).

    One script per room, PRESENCE_ROOMS_PER_STEP rooms at a time, the steps spread over the interval so
    the refresh never arrives as one burst; entries that expired meanwhile (Redis was away) are added
    again, which re-checks membership and limits.
    """
    interval = services.settings.presence_ttl / 3
    while True:
        codes = services.hub.room_codes
        if not codes:
            await asyncio.sleep(interval)
            continue
        size = PRESENCE_ROOMS_PER_STEP
        steps = [codes[i : i + size] for i in range(0, len(codes), size)]
        pause = interval / len(steps)
        for step in steps:
            await asyncio.sleep(pause)
            await asyncio.gather(*(_refresh_room(services, code) for code in step))


async def _refresh_room(services: Services, code: str) -> None:
    connections = {c.id: c for c in services.hub.connections(code)}
    if not connections:
        return
    try:
        expired = await services.rooms.presence_refresh(
            code, [(c.identity.user_id, c.id) for c in connections.values()]
        )
        for _, connection_id in expired:
            connection = connections[connection_id]
            try:
                await services.rooms.presence_add(code, connection.identity, connection.role, connection.id)
            except Unavailable:
                raise
            except RelayError as refusal:  # removed, or the room filled up while Redis was away
                connection.kick(refusal)
    except Unavailable:
        return  # Redis is away; the bus reports it, and the next round retries
