"""Rate limits: a token bucket per connection (in process) and quotas shared by all replicas (Redis).

Quota keys never contain user input as such: user ids and client addresses are hashed, so a crafted
`sub` cannot name or collide with another key.

Every counter is its own key without a hash tag, and every command touches one key: on a Redis Cluster
the counters spread over the shards by their hash and no command is cross-slot. There, a counter whose
shard is down is skipped (logged): one shard's outage must not stop room creation and joins on the
shards that are up, and a quota that lapses during an outage costs less than refusing everyone.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any, Final, Protocol

import redis.asyncio as aioredis
import redis.exceptions
from redis.commands.core import AsyncScript

from relay.config import Settings
from relay.errors import RateLimited
from relay.redis_errors import redis_unavailable_is_503

logger = logging.getLogger("relay.limits")

CREATE_WINDOW_SECONDS: Final = 3600
JOIN_FAILURE_WINDOW_SECONDS: Final = 600

_COUNT = r"""
-- KEYS[1]: a counter; ARGV[1]: window seconds. Counts one event; returns {count, ttl}.
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return {n, redis.call('TTL', KEYS[1])}
"""

_PEEK = r"""
-- KEYS[1]: a counter. Returns {count, ttl} without counting.
return {tonumber(redis.call('GET', KEYS[1]) or '0'), redis.call('TTL', KEYS[1])}
"""


class ScriptRunner(Protocol):
    """ScriptPipeline (one Redis) or cluster.ShardedScripts (the key's shard)."""

    async def call(
        self, script: AsyncScript, keys: list[str], args: list[Any], *, read_only: bool = False
    ) -> Any: ...


class TokenBucket:
    """`rate` tokens per second up to `burst`: a burst of typing passes, a sustained flood does not."""

    __slots__ = ("_level", "_rate", "_stamp", "burst")

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self.burst = burst
        self._level = float(burst)
        self._stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self._level = min(self.burst, self._level + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._level >= 1.0:
            self._level -= 1.0
            return True
        return False


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class Quotas:
    """Per-user and per-address quotas counted in Redis, so they hold across every replica."""

    def __init__(
        self,
        redis_client: aioredis.Redis,
        settings: Settings,
        scripts: ScriptRunner,
        *,
        sharded: bool = False,
    ) -> None:
        """`redis_client` names the scripts; `scripts` runs them (batched with the room scripts);
        `sharded`: a Redis Cluster, where a counter on a shard that is down is skipped."""
        self._settings = settings
        self._scripts = scripts
        self._sharded = sharded
        self._count_script = redis_client.register_script(_COUNT)
        self._peek_script = redis_client.register_script(_PEEK)

    async def _count(self, key: str, window: int) -> tuple[int, int]:
        count, ttl = await self._call(self._count_script, key, [window])
        return int(count), int(ttl)

    async def _call(self, script: AsyncScript, key: str, args: list[Any], *, read_only: bool = False) -> Any:
        try:
            return await self._scripts.call(script, [key], args, read_only=read_only)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            if not self._sharded:
                raise
            logger.warning("quota counter skipped: its Redis Cluster shard is unreachable (%s)", exc)
            return [0, -2]

    @redis_unavailable_is_503
    async def count_room_creation(self, user_id: str) -> None:
        """Counts one creation; raises RateLimited past RELAY_CREATE_LIMIT per hour."""
        count, ttl = await self._count(f"relay:limit:create:{_digest(user_id)}", CREATE_WINDOW_SECONDS)
        if count > self._settings.create_limit:
            raise RateLimited(
                f"you created {self._settings.create_limit} rooms in the last hour; try again later",
                retry_after=max(ttl, 1),
            )

    def _join_keys(self, user_id: str, address: str | None) -> list[str]:
        keys = [f"relay:limit:joinfail:user:{_digest(user_id)}"]
        if address:
            keys.append(f"relay:limit:joinfail:addr:{_digest(address)}")
        return keys

    @redis_unavailable_is_503
    async def check_join(self, user_id: str, address: str | None) -> None:
        """Refuses a join while the user or its address has too many recent failed joins."""
        replies = await asyncio.gather(
            *(
                self._call(self._peek_script, key, [], read_only=True)
                for key in self._join_keys(user_id, address)
            )
        )
        for failures, ttl in replies:
            if int(failures) >= self._settings.join_failure_limit:
                raise RateLimited(
                    "too many joins of unknown rooms; check the code and try again later",
                    retry_after=max(int(ttl), 1),
                )

    @redis_unavailable_is_503
    async def count_join_failure(self, user_id: str, address: str | None) -> None:
        await asyncio.gather(
            *(self._count(key, JOIN_FAILURE_WINDOW_SECONDS) for key in self._join_keys(user_id, address))
        )
