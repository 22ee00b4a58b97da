"""The process's one Redis pub/sub connection: subscribe, unsubscribe, and one stream of events.

`Bus.events()` is the only way data comes up from Redis: messages, plus `Disconnected` / `Reconnected`
markers so the hub can tell clients and repair gaps from history. The bus keeps one PubSub for the life
of the process; redis-py resubscribes its channels when the connection is re-established, and the bus
retries with capped, jittered backoff for as long as Redis stays away.

A pub/sub connection that the network silently dropped sends nothing and raises nothing (and redis-py's
health_check_interval does not notice), so the bus PINGs through it every third of `link_timeout` and
declares the link dead when nothing at all came back for `link_timeout` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.client import PubSub
from redis.crc import key_slot

from relay import metrics
from relay.errors import Unavailable

logger = logging.getLogger("relay.bus")

SUBSCRIBE_TIMEOUT = 5.0
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
_REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


@dataclass(frozen=True, slots=True)
class Message:
    channel: bytes
    data: bytes


@dataclass(frozen=True, slots=True)
class Disconnected:
    reason: str
    shard: str | None = None  # in a cluster: the primary whose link was lost
    rooms: frozenset[str] | None = None  # the rooms that may miss messages; None: every room


@dataclass(frozen=True, slots=True)
class Reconnected:
    shard: str | None = None
    rooms: frozenset[str] | None = None  # the rooms to resync from history; None: every room


@dataclass(frozen=True, slots=True)
class SlotMoved:
    """A sharded link only: the server dropped a subscription because the channel's slot left the node."""

    channel: bytes


BusEvent = Message | Disconnected | Reconnected | SlotMoved


class PubSubBus(Protocol):
    """What the hub drives: a Bus (one Redis), or a ClusterBus (one sharded Bus per primary)."""

    @property
    def has_redis(self) -> bool: ...

    async def subscribe(self, channel: str) -> None: ...

    async def unsubscribe(self, channel: str) -> None: ...

    def shard_status(self) -> dict[str, bool]: ...

    def events(self) -> AsyncIterator[BusEvent]: ...

    async def aclose(self) -> None: ...


class _SlotwisePubSub(PubSub):
    """A PubSub that resubscribes shard channels one slot at a time after a reconnection.

    redis-py resends every shard channel in one SSUBSCRIBE, which a cluster node refuses (CROSSSLOT)
    as soon as the channels span two slots; redis-py's own ClusterPubSub overrides the same method.
    """

    async def _resubscribe_shard_channels(self) -> None:
        by_slot: defaultdict[int, list[Any]] = defaultdict(list)
        for channel in self.shard_channels:
            by_slot[key_slot(self.encoder.encode(channel))].append(channel)
        for channels in by_slot.values():
            await self.ssubscribe(*channels)


def _link_failed(part: str, error: Exception) -> redis.exceptions.ConnectionError:
    """A failure of the link's own tasks, reported like a broken connection so the link restarts."""
    return redis.exceptions.ConnectionError(f"pub/sub {part} failed ({type(error).__name__}: {error})")


class Bus:
    def __init__(
        self, redis_client: aioredis.Redis, *, link_timeout: float = 10.0, sharded: bool = False
    ) -> None:
        # `redis_client` should not retry on its own (see make_redis): a link that redis-py silently
        # re-established would lose the messages published meanwhile without the hub ever resyncing.
        # sharded: one node of a Redis Cluster, with SSUBSCRIBE (the scripts SPUBLISH; see cluster.py).
        self._sharded = sharded
        self._pubsub = (
            _SlotwisePubSub(connection_pool=redis_client.connection_pool)
            if sharded
            else redis_client.pubsub()
        )
        self._link_timeout = link_timeout
        self._ping_interval = link_timeout / 3
        self._waiters: defaultdict[bytes, list[asyncio.Future[None]]] = defaultdict(list)
        self._last_traffic = 0.0
        self.has_redis = False

    async def subscribe(self, channel: str) -> None:
        """Returns once Redis confirmed the subscription: no later PUBLISH on it can be missed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[channel.encode()].append(future)
        try:
            if not self.has_redis:
                raise Unavailable("relay has no connection to Redis right now; retry shortly")
            if self._sharded:
                await self._pubsub.ssubscribe(channel)
            else:
                await self._pubsub.subscribe(channel)
            await asyncio.wait_for(asyncio.shield(future), SUBSCRIBE_TIMEOUT)
        except (*_REDIS_DOWN, TimeoutError):
            self._subscriptions.pop(channel.encode(), None)
            raise Unavailable("could not subscribe to the room's channel; retry shortly") from None
        finally:
            waiters = self._waiters.get(channel.encode())
            if waiters and future in waiters:
                waiters.remove(future)
                if not waiters:
                    del self._waiters[channel.encode()]

    async def unsubscribe(self, channel: str) -> None:
        try:
            if self._sharded:
                await self._pubsub.sunsubscribe(channel)
            else:
                await self._pubsub.unsubscribe(channel)
        except _REDIS_DOWN:
            # Gone with the connection anyway; drop it so a reconnect does not resubscribe it.
            self.forget(channel)

    def shard_status(self) -> dict[str, bool]:
        """Per cluster shard (see ClusterBus); one Redis has none."""
        return {}

    def forget(self, channel: str) -> None:
        """Drop a channel without telling the server (its node is gone, or no longer serves the slot)."""
        self._subscriptions.pop(channel.encode(), None)
        self._pubsub.pending_unsubscribe_channels.discard(channel.encode())
        self._pubsub.pending_unsubscribe_shard_channels.discard(channel.encode())

    @property
    def _subscriptions(self) -> dict[Any, Any]:
        """What redis-py resubscribes after a reconnection."""
        return self._pubsub.shard_channels if self._sharded else self._pubsub.channels

    async def events(self) -> AsyncIterator[BusEvent]:
        """Messages of every subscribed channel, for as long as the process lives."""
        loop = asyncio.get_running_loop()
        backoff = BACKOFF_FIRST
        ever_connected = False
        while True:
            inbox: asyncio.Queue[dict[str, Any] | Exception] = asyncio.Queue()
            helpers: list[asyncio.Task[None]] = []
            try:
                await self._pubsub.connect()  # type: ignore[no-untyped-call]
                if not self.has_redis:
                    self.has_redis = True
                    self._last_traffic = loop.time()
                    logger.info("pub/sub connected (%d channels)", len(self._pubsub.channels))
                    if not self._sharded:  # a cluster's links: ClusterBus sets it for all shards
                        metrics.REDIS_UP.set(1)
                    if ever_connected:
                        metrics.REDIS_RECONNECTS.inc()
                    ever_connected = True
                    yield Reconnected()
                backoff = BACKOFF_FIRST
                # The read blocks without a timeout (a timeout per message costs CPU at high rates) in a
                # task of its own, so that the watchdog can report a silent link at once: redis-py would
                # otherwise try to reconnect inside the read and keep it blocked for a socket timeout.
                helpers = [
                    asyncio.create_task(self._pump(inbox), name="pubsub-reader"),
                    asyncio.create_task(self._watch_link(inbox), name="pubsub-watchdog"),
                ]
                while True:
                    item = await inbox.get()
                    if isinstance(item, Exception):
                        raise item
                    event = self._handle(item)
                    if event is not None:
                        yield event
            except _REDIS_DOWN as exc:
                if self.has_redis:
                    self.has_redis = False
                    logger.warning("pub/sub connection lost: %s", str(exc) or type(exc).__name__)
                    if not self._sharded:
                        metrics.REDIS_UP.set(0)
                    metrics.REDIS_ERRORS.inc()
                    yield Disconnected(str(exc) or type(exc).__name__)
                for task in helpers:
                    task.cancel()
                await self._drop_connection()
                delay = random.uniform(backoff / 2, backoff)  # noqa: S311 - jitter, not security
                await asyncio.sleep(delay)
                backoff = min(backoff * 2, BACKOFF_MAX)
            finally:
                for task in helpers:
                    task.cancel()

    async def _pump(self, inbox: asyncio.Queue[dict[str, Any] | Exception]) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                message = await self._pubsub.get_message(timeout=None)
                self._last_traffic = loop.time()  # any traffic proves the link is alive
                if message is not None:
                    inbox.put_nowait(message)
        except _REDIS_DOWN as exc:
            inbox.put_nowait(exc)
        except Exception as exc:
            # A bug, or a reply redis-py could not parse: the link's state is unknown. Restart it now
            # instead of letting delivery stall until the watchdog's timeout; the reconnection resyncs
            # every room from history, so nothing published meanwhile is lost.
            logger.exception("pub/sub reader failed; restarting the link")
            inbox.put_nowait(_link_failed("reader", exc))

    async def _watch_link(self, inbox: asyncio.Queue[dict[str, Any] | Exception]) -> None:
        """PING through the link; when nothing came back for link_timeout, report it dead."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._ping_interval)
            silent_for = loop.time() - self._last_traffic
            if silent_for > self._link_timeout:
                inbox.put_nowait(
                    redis.exceptions.ConnectionError(
                        f"no reply from Redis on the pub/sub link for {silent_for:.1f}s"
                    )
                )
                return
            try:
                await self._pubsub.ping()
            except _REDIS_DOWN:
                pass  # the reader reports a broken link itself
            except Exception as exc:
                logger.exception("pub/sub watchdog failed; restarting the link")
                inbox.put_nowait(_link_failed("watchdog", exc))
                return

    def _handle(self, message: dict[str, Any]) -> BusEvent | None:
        kind = message["type"]
        if kind in ("message", "smessage"):
            return Message(message["channel"], message["data"])
        if kind in ("subscribe", "ssubscribe"):
            for future in self._waiters.pop(message["channel"], []):
                if not future.done():
                    future.set_result(None)
        elif kind == "sunsubscribe" and message["channel"] in self._pubsub.shard_channels:
            # Not asked for (redis-py forgets the channels we unsubscribed): the slot migrated away.
            del self._pubsub.shard_channels[message["channel"]]
            return SlotMoved(message["channel"])
        return None

    async def _drop_connection(self) -> None:
        connection = self._pubsub.connection
        if connection is not None:
            try:
                # nowait: on a silent link, waiting for the close to complete would wait for the peer
                await connection.disconnect(nowait=True)
            except Exception:
                logger.debug("error while dropping a broken pub/sub connection", exc_info=True)

    async def aclose(self) -> None:
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]
