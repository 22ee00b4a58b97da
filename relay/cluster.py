"""Redis Cluster: which shard serves a room, one script writer and one sharded pub/sub link per shard.

Chosen by the URL scheme: `REDIS_URL=redis+cluster://host:port,host:port` (`rediss+cluster://` for TLS,
`redis+cluster://user:password@host:port,...` with ACLs). The addresses are seeds: relay asks every node
it knows for the slot map (CLUSTER SLOTS) and believes the one with the newest view of the cluster.

Every key of a room carries the room code as its hash tag, so a room lives in one slot and each room
script runs on the one primary that serves it; the scripts publish with SPUBLISH, which Redis routes to
the subscribers of that shard only (classic PUBLISH is broadcast to every node of a cluster).

Why not redis-py's RedisCluster, ClusterPipeline and ClusterPubSub (checked in redis-py 8.1):
- ClusterPipeline sends a batch to every node at once and, when one node cannot be reached, raises for
  the whole batch and closes the client before it retries: one shard's outage would fail the edits of
  every room. Here each primary has its own ScriptPipeline, so a shard that is down fails its rooms only.
- ClusterPubSub reads the shards round robin with a poll timeout and reconnects inside redis-py; the hub
  would not learn that a shard's link was lost and could not resync the rooms that missed messages.
  Here each primary has its own Bus, whose Disconnected / Reconnected markers name the shard's rooms.
So relay keeps the slot map itself (a MOVED reply updates its slot at once; the whole map is re-read
after a MOVED, a shard's connection error, a server `sunsubscribe` after a slot migration, and every
REFRESH_INTERVAL), and uses redis-py's key_slot, its error classes and plain per-node clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.crc import key_slot

from relay import metrics
from relay.bus import Bus, BusEvent, Disconnected, Message, Reconnected, SlotMoved
from relay.config import MultiNodeURL
from relay.errors import Unavailable
from relay.keys import code_of_channel
from relay.pipeline import ScriptPipeline

logger = logging.getLogger("relay.cluster")

SLOTS: Final = 16384
# The slot map is re-read at least this often (a failover or reshard that relay did not trip over).
REFRESH_INTERVAL: Final = 10.0
# ... and at most this often when errors keep asking for it.
REFRESH_MIN_GAP: Final = 0.25
# How long one script call follows MOVED / ASK / TRYAGAIN / CLUSTERDOWN before it gives up (503).
REDIRECT_DEADLINE: Final = 3.0
NODE_TIMEOUT: Final = 2.0
# While a shard is down or a room waits for its new primary, the slot map is re-read after this pause,
# doubling up to the maximum.
UNSETTLED_FIRST_PAUSE: Final = 0.1
UNSETTLED_MAX_PAUSE: Final = 2.0
MAX_CONNECTIONS_PER_NODE: Final = 32


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    url: MultiNodeURL

    @classmethod
    def from_url(cls, url: str) -> ClusterConfig:
        return cls(MultiNodeURL.parse(url))

    @property
    def seeds(self) -> tuple[str, ...]:
        return self.url.seeds

    def client(self, address: str, *, for_pubsub: bool = False) -> aioredis.Redis:
        """A client of one node. The pub/sub one never retries inside redis-py (see app.make_redis)."""
        host, _, port = address.rpartition(":")
        common: dict[str, Any] = {
            "host": host,
            "port": int(port),
            "username": self.url.username,
            "password": self.url.password,
            "protocol": 2,  # RESP2 + hiredis, as for a single node (app.make_redis says why)
            "socket_connect_timeout": NODE_TIMEOUT,
            "socket_timeout": 5,
            "socket_keepalive": True,
        }
        if self.url.tls:
            common["connection_class"] = aioredis.SSLConnection
        if for_pubsub:
            return aioredis.Redis(
                connection_pool=aioredis.ConnectionPool(
                    max_connections=2, retry=Retry(NoBackoff(), 0), **common
                )
            )
        return aioredis.Redis(
            connection_pool=aioredis.BlockingConnectionPool(
                max_connections=MAX_CONNECTIONS_PER_NODE, timeout=5, **common
            )
        )


@dataclass(frozen=True, slots=True)
class Shard:
    """One primary and the slots it serves, as CLUSTER SLOTS reported them."""

    address: str
    ranges: tuple[tuple[int, int], ...]
    replicas: tuple[str, ...]

    def describe(self) -> str:
        ranges = ",".join(f"{low}-{high}" if low != high else str(low) for low, high in self.ranges)
        return f"{self.address} (slots {ranges})"


def slot_of(key: str | bytes) -> int:
    return int(key_slot(key.encode() if isinstance(key, str) else key))


class Topology:
    """The slot map: slot -> address of the primary serving it, as the most up-to-date node sees it."""

    def __init__(self, config: ClusterConfig) -> None:
        self._config = config
        self._owner: list[str | None] = [None] * SLOTS
        self.shards: dict[str, Shard] = {}
        self._clients: dict[str, aioredis.Redis] = {}
        self._refresh: asyncio.Task[None] | None = None
        self._last_refresh = 0.0
        self.version = 0  # bumped whenever the map changed
        self._on_change: list[Callable[[], None]] = []

    def client(self, address: str) -> aioredis.Redis:
        client = self._clients.get(address)
        if client is None:
            client = self._clients[address] = self._config.client(address)
        return client

    def on_change(self, callback: Callable[[], None]) -> None:
        self._on_change.append(callback)

    @property
    def primaries(self) -> list[str]:
        return sorted(self.shards)

    def address_of(self, key: str | bytes) -> str:
        owner = self._owner[slot_of(key)]
        if owner is None:
            self.refresh_soon()
            raise Unavailable("no Redis Cluster node is known to serve this room yet; retry shortly")
        return owner

    def shard_of(self, key: str | bytes) -> Shard | None:
        owner = self._owner[slot_of(key)]
        return None if owner is None else self.shards.get(owner)

    def moved(self, slot: int, address: str) -> None:
        """A MOVED reply: `address` serves `slot` now. Applied at once; a full refresh follows."""
        if self._owner[slot] != address:
            self._owner[slot] = address
            if address not in self.shards:
                self.shards[address] = Shard(address, ((slot, slot),), ())
            logger.info("slot %d moved to %s", slot, address)
        self.refresh_soon()

    async def refresh(self) -> None:
        """Re-read the slot map now (one refresh at a time; concurrent callers share it)."""
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.create_task(self._load(), name="cluster-slots")
        await asyncio.shield(self._refresh)

    def refresh_soon(self) -> None:
        """Ask for a refresh without waiting for it (at most one per REFRESH_MIN_GAP)."""
        if self._refresh is not None and not self._refresh.done():
            return
        if time.monotonic() - self._last_refresh < REFRESH_MIN_GAP:
            return
        self._refresh = asyncio.create_task(self._load(), name="cluster-slots")
        self._refresh.add_done_callback(_log_failure)

    async def _load(self) -> None:
        """Ask every known node at once; believe the one with the newest view of the cluster.

        A primary that restarts after its replica took over still claims its old slots until gossip
        tells it otherwise, so the first answer is not good enough: each answer comes with the node's
        `cluster_current_epoch` (every failover and slot move raises it), and the highest wins.
        """
        self._last_refresh = time.monotonic()
        candidates = [*self.primaries, *(r for s in self.shards.values() for r in s.replicas)]
        candidates += [seed for seed in self._config.seeds if seed not in candidates]
        answers = await asyncio.gather(*(self._ask(address) for address in candidates))
        views = [(answer, address) for address, answer in zip(candidates, answers, strict=True)]
        good = [(epoch, address, slots) for (epoch, slots), address in views if not isinstance(slots, str)]
        if not good:
            problems = "; ".join(f"{address}: {slots}" for (_, slots), address in views)
            raise redis.exceptions.ConnectionError(
                f"no Redis Cluster node answered CLUSTER SLOTS: {problems}"
            )
        _, address, slots = max(good, key=lambda view: view[0])
        self._apply(address, slots)

    async def _ask(self, address: str) -> tuple[int, Any]:
        """(current epoch, CLUSTER SLOTS reply) of one node, or (-1, what went wrong)."""
        try:
            async with asyncio.timeout(NODE_TIMEOUT):
                async with self.client(address).pipeline(transaction=False) as pipe:
                    pipe.execute_command("CLUSTER", "INFO")
                    pipe.execute_command("CLUSTER", "SLOTS")
                    info, slots = await pipe.execute()
        except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
            return -1, str(exc) or type(exc).__name__
        text = info.decode() if isinstance(info, bytes) else str(info)
        epochs = [
            int(line.split(":", 1)[1])
            for line in text.splitlines()
            if line.startswith("cluster_current_epoch:")
        ]
        return (epochs[0] if epochs else 0), slots

    def _apply(self, asked: str, reply: list[Any]) -> None:
        owner: list[str | None] = [None] * SLOTS
        ranges: dict[str, list[tuple[int, int]]] = {}
        replicas: dict[str, set[str]] = {}
        for entry in reply:
            low, high, primary, *others = entry
            address = _address(primary, asked)
            for slot in range(int(low), int(high) + 1):
                owner[slot] = address
            ranges.setdefault(address, []).append((int(low), int(high)))
            replicas.setdefault(address, set()).update(_address(node, asked) for node in others)
        shards = {
            address: Shard(address, tuple(sorted(spans)), tuple(sorted(replicas[address])))
            for address, spans in ranges.items()
        }
        if owner == self._owner and shards == self.shards:
            return
        before = set(self.shards)
        self._owner, self.shards = owner, shards
        self.version += 1
        logger.info(
            "cluster slot map %d: %s%s",
            self.version,
            "; ".join(shard.describe() for shard in shards.values()),
            "" if set(shards) == before else f" (primaries were {', '.join(sorted(before)) or 'unknown'})",
        )
        for callback in self._on_change:
            callback()

    async def aclose(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(BaseException):
                await self._refresh
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                await client.aclose()
        self._clients.clear()


def _address(node: list[Any], asked: str) -> str:
    host = node[0].decode() if isinstance(node[0], bytes) else str(node[0])
    if host in ("", "?"):  # "the node you asked", per CLUSTER SLOTS
        host = asked.rpartition(":")[0]
    return f"{host}:{int(node[1])}"


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("could not refresh the cluster slot map: %s", task.exception())


class ShardedScripts:
    """Script calls routed to the primary of their keys' slot: one ScriptPipeline (batching) per primary.

    A MOVED reply refreshes the slot map and resends; ASK resends to the importing node with ASKING on
    the same connection; TRYAGAIN (a room's keys split by a migration in progress) and CLUSTERDOWN
    (a failover in progress) wait and resend; all of it for at most REDIRECT_DEADLINE. A connection error
    is the caller's 503 at once (the script may or may not have run: clients resend with the same
    client_msg_id, which the edit script answers without applying twice) and triggers a map refresh, so
    the next call reaches a promoted replica.
    """

    def __init__(self, topology: Topology, *, wait_replicas: int = 0, wait_timeout_ms: int = 0) -> None:
        self._topology = topology
        self._wait = {"wait_replicas": wait_replicas, "wait_timeout_ms": wait_timeout_ms}
        self._pipelines: dict[str, ScriptPipeline] = {}

    def _pipeline(self, address: str) -> ScriptPipeline:
        pipeline = self._pipelines.get(address)
        if pipeline is None:
            pipeline = self._pipelines[address] = ScriptPipeline(self._topology.client(address), **self._wait)
        return pipeline

    def take_longest_wait(self) -> float:
        """The longest queue wait of any primary's pipeline (ScriptPipeline.take_longest_wait)."""
        return max((pipeline.take_longest_wait() for pipeline in self._pipelines.values()), default=0.0)

    async def call(
        self,
        script: AsyncScript,
        keys: list[str],
        args: list[Any],
        *,
        read_only: bool = False,
        first_attempt: asyncio.Future[Any] | None = None,
    ) -> Any:
        """Run `script` on its keys' primary, following redirects; `first_attempt`: already queued
        there by `submit`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REDIRECT_DEADLINE
        pause = 0.02
        while True:
            address = self._topology.address_of(keys[0])
            attempt = first_attempt or self._pipeline(address).submit(script, keys, args, read_only=read_only)
            first_attempt = None
            try:
                return await attempt
            except redis.exceptions.MovedError as moved:
                retry: BaseException = Unavailable("the room's slot keeps moving; retry shortly")
                # Authoritative for this slot, even while a node that restarted with an old view of the
                # cluster still hands out a stale map; the whole map is re-read meanwhile.
                self._topology.moved(moved.slot_id, f"{moved.host}:{moved.port}")
            except redis.exceptions.AskError as ask:
                try:
                    return await self._asking(f"{ask.host}:{ask.port}", script, keys, args)
                except (redis.exceptions.TryAgainError, redis.exceptions.AskError) as exc:
                    retry = exc
            except (redis.exceptions.TryAgainError, redis.exceptions.ClusterDownError) as exc:
                retry = exc
                self._topology.refresh_soon()
            except redis.exceptions.ReadOnlyError as exc:
                retry = exc  # a demoted primary: the map is stale
                await _quietly(self._topology.refresh())
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                metrics.REDIS_SHARD_ERRORS.labels(address).inc()
                self._topology.refresh_soon()
                raise
            if loop.time() + pause > deadline:
                if isinstance(retry, Unavailable):
                    raise retry
                raise redis.exceptions.ConnectionError(f"Redis Cluster did not settle: {retry}") from retry
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)

    def submit(
        self, script: AsyncScript, keys: list[str], args: list[Any], *, read_only: bool = False
    ) -> asyncio.Future[Any]:
        """ScriptPipeline.submit through the cluster: the first attempt is queued now on the keys'
        primary (so calls keep the order they were made in); redirects are followed by a task."""
        first_attempt = self._pipeline(self._topology.address_of(keys[0])).submit(
            script, keys, args, read_only=read_only
        )
        return asyncio.ensure_future(
            self.call(script, keys, args, read_only=read_only, first_attempt=first_attempt)
        )

    async def _asking(self, address: str, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        # EVAL, not EVALSHA: the importing node may not have the script yet, and this path is rare.
        async with self._topology.client(address).pipeline(transaction=False) as pipe:
            pipe.execute_command("ASKING")
            pipe.execute_command("EVAL", script.script, len(keys), *keys, *args)
            _, reply = await pipe.execute()
        return reply

    def shard_address(self, key: str) -> str | None:
        shard = self._topology.shard_of(key)
        return None if shard is None else shard.address

    async def ping(self, per_node: float = NODE_TIMEOUT) -> dict[str, str | None]:
        """Each primary: None when it answered within `per_node` seconds, else what went wrong (a primary that
        does not answer is reported on its own; the others' answers still count)."""

        async def one(address: str) -> str | None:
            try:
                await asyncio.wait_for(self._topology.client(address).ping(), per_node)
            except TimeoutError:
                return f"no answer within {per_node:g} s"
            except (redis.exceptions.RedisError, OSError) as exc:
                return str(exc) or type(exc).__name__
            return None

        primaries = self._topology.primaries
        answers = await asyncio.gather(*(one(address) for address in primaries))
        return dict(zip(primaries, answers, strict=True))

    async def aclose(self) -> None:
        for pipeline in self._pipelines.values():
            await pipeline.aclose()


async def _quietly(refresh: Any) -> None:
    with contextlib.suppress(redis.exceptions.RedisError, OSError):
        await refresh


class ClusterBus:
    """One sharded pub/sub link (a Bus in SSUBSCRIBE mode) per primary, seen as one stream of events.

    A room's channel is subscribed on the primary serving its slot. A link's Disconnected / Reconnected
    markers name the rooms homed on that shard, so the hub tells and resyncs those rooms only. When the
    slot map changes (failover, reshard) or a server drops a subscription because its slot left the node
    (`sunsubscribe`), the channel is subscribed on its new primary and its room resynced from history.
    """

    def __init__(self, topology: Topology, config: ClusterConfig, *, link_timeout: float = 10.0) -> None:
        self._topology = topology
        self._config = config
        self._link_timeout = link_timeout
        self._links: dict[str, Bus] = {}
        self._pumps: dict[str, asyncio.Task[None]] = {}
        self._home: dict[str, str] = {}  # channel -> address of the link it is subscribed on
        self._lost: set[str] = set()  # channels whose subscription the server dropped, to re-home
        self._inbox: asyncio.Queue[BusEvent] = asyncio.Queue()
        self._reconcile_wanted = asyncio.Event()
        self._reconcile_lock = asyncio.Lock()
        topology.on_change(self._reconcile_wanted.set)

    @property
    def has_redis(self) -> bool:
        """True while every shard's link is up (the replica serves every room)."""
        return bool(self._links) and all(self.shard_status().values())

    def shard_status(self) -> dict[str, bool]:
        """Each primary of the slot map: is this replica's pub/sub link to it up?"""
        return {
            address: (link := self._links.get(address)) is not None and link.has_redis
            for address in self._topology.primaries
        }

    def rooms_of(self, address: str) -> frozenset[str]:
        return frozenset(_code(channel) for channel, home in self._home.items() if home == address)

    async def subscribe(self, channel: str) -> None:
        address = self._topology.address_of(channel)
        link = self._link(address)
        await link.subscribe(channel)
        self._home[channel] = address
        self._lost.discard(channel)

    async def unsubscribe(self, channel: str) -> None:
        address = self._home.pop(channel, None)
        self._lost.discard(channel)
        if address is not None and address in self._links:
            await self._links[address].unsubscribe(channel)

    async def events(self) -> AsyncIterator[BusEvent]:
        keeper = asyncio.create_task(self._keep_in_shape(), name="cluster-bus-keeper")
        try:
            while True:
                yield await self._inbox.get()
        finally:
            keeper.cancel()
            for pump in self._pumps.values():
                pump.cancel()
            self._pumps.clear()

    def _link(self, address: str) -> Bus:
        link = self._links.get(address)
        if link is None:
            link = Bus(
                self._config.client(address, for_pubsub=True), link_timeout=self._link_timeout, sharded=True
            )
            self._links[address] = link
        if address not in self._pumps or self._pumps[address].done():
            self._pumps[address] = asyncio.create_task(self._pump(address, link), name=f"pubsub-{address}")
        return link

    async def _pump(self, address: str, link: Bus) -> None:
        gauge = metrics.REDIS_SHARD_UP.labels(address)
        async for event in link.events():
            if isinstance(event, Message):
                self._inbox.put_nowait(event)
            elif isinstance(event, Disconnected):
                gauge.set(0)
                metrics.REDIS_UP.set(0)
                self._topology.refresh_soon()  # a failover moves this shard's slots elsewhere
                self._reconcile_wanted.set()
                self._inbox.put_nowait(
                    Disconnected(event.reason, shard=address, rooms=self.rooms_of(address))
                )
            elif isinstance(event, Reconnected):
                gauge.set(1)
                metrics.REDIS_UP.set(1 if self.has_redis else 0)
                self._inbox.put_nowait(Reconnected(shard=address, rooms=self.rooms_of(address)))
            elif isinstance(event, SlotMoved):
                logger.info("%s dropped %s: its slot moved", address, event.channel.decode())
                self._lost.add(event.channel.decode())
                self._topology.refresh_soon()
                self._reconcile_wanted.set()

    async def _keep_in_shape(self) -> None:
        """Links for every primary; channels on the primary of their slot. Runs until events() ends."""
        pause = UNSETTLED_FIRST_PAUSE
        while True:
            try:
                await self._topology.refresh()
                await self._reconcile()
            except (redis.exceptions.RedisError, OSError) as exc:
                logger.warning("cluster: %s", exc)
            except Unavailable:
                pass  # a slot without a known primary: the next round retries
            # Quick rounds while something is out of place (a shard down, a channel to re-home), slowing
            # down while it stays so; the usual pace once everything is in place.
            if self._lost or not all(self.shard_status().values()):
                wait, pause = pause, min(pause * 2, UNSETTLED_MAX_PAUSE)
            else:
                wait, pause = REFRESH_INTERVAL, UNSETTLED_FIRST_PAUSE
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reconcile_wanted.wait(), wait)
            self._reconcile_wanted.clear()

    async def _reconcile(self) -> None:
        async with self._reconcile_lock:
            primaries = self._topology.primaries
            for address in primaries:
                self._link(address)
            for channel, home in list(self._home.items()):
                target = self._topology.address_of(channel)
                if target == home and channel not in self._lost:
                    continue
                old = self._links.get(home)
                if old is not None and old is not self._links.get(target):
                    if old.has_redis:
                        await old.unsubscribe(channel)
                    else:
                        old.forget(channel)
                try:
                    await self._link(target).subscribe(channel)
                except Unavailable:
                    # The new primary is not reachable yet: keep the channel out of place and retry.
                    self._home[channel] = target
                    self._lost.add(channel)
                    continue
                if self._home.get(channel) is None:
                    await self._link(target).unsubscribe(channel)  # the room was left meanwhile
                    continue
                self._home[channel] = target
                self._lost.discard(channel)
                logger.info("room %s now subscribed on %s", _code(channel), target)
                self._inbox.put_nowait(Reconnected(shard=target, rooms=frozenset({_code(channel)})))
            for address in list(self._links):
                if address not in primaries and address not in self._home.values():
                    await self._drop_link(address)

    async def _drop_link(self, address: str) -> None:
        pump = self._pumps.pop(address, None)
        if pump is not None:
            pump.cancel()
        link = self._links.pop(address)
        with contextlib.suppress(Exception):
            await link.aclose()
        metrics.REDIS_SHARD_UP.remove(address)
        logger.info("closed the pub/sub link to %s: it serves no slots any more", address)

    async def aclose(self) -> None:
        for pump in self._pumps.values():
            pump.cancel()
        for link in self._links.values():
            with contextlib.suppress(Exception):
                await link.aclose()


def _code(channel: str | bytes) -> str:
    return code_of_channel(channel)
