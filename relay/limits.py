"""Rate limits: a token bucket per connection (in process) and quotas shared by all replicas (Redis).

Quota keys never contain user input as such: user ids and client addresses are hashed, so a crafted
`sub` cannot name or collide with another key.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import redis.asyncio as aioredis

from relay.config import Settings
from relay.errors import RateLimited
from relay.redis_errors import redis_unavailable_is_503

CREATE_WINDOW_SECONDS: Final = 3600
JOIN_FAILURE_WINDOW_SECONDS: Final = 600

_COUNT = r"""
-- KEYS: counters; ARGV[1]: window seconds. Counts one event on every key; returns {count, ttl} per key.
local out = {}
for i = 1, #KEYS do
  local n = redis.call('INCR', KEYS[i])
  if n == 1 then redis.call('EXPIRE', KEYS[i], ARGV[1]) end
  table.insert(out, n)
  table.insert(out, redis.call('TTL', KEYS[i]))
end
return out
"""


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

    def __init__(self, redis_client: aioredis.Redis, settings: Settings) -> None:
        self._redis = redis_client
        self._settings = settings
        self._count: Callable[..., Awaitable[Any]] = redis_client.register_script(_COUNT)

    @redis_unavailable_is_503
    async def count_room_creation(self, user_id: str) -> None:
        """Counts one creation; raises RateLimited past RELAY_CREATE_LIMIT per hour."""
        count, ttl = await self._count(
            keys=[f"relay:limit:create:{_digest(user_id)}"], args=[CREATE_WINDOW_SECONDS]
        )
        if int(count) > self._settings.create_limit:
            raise RateLimited(
                f"you created {self._settings.create_limit} rooms in the last hour; try again later",
                retry_after=max(int(ttl), 1),
            )

    def _join_keys(self, user_id: str, address: str | None) -> list[str]:
        keys = [f"relay:limit:joinfail:user:{_digest(user_id)}"]
        if address:
            keys.append(f"relay:limit:joinfail:addr:{_digest(address)}")
        return keys

    @redis_unavailable_is_503
    async def check_join(self, user_id: str, address: str | None) -> None:
        """Refuses a join while the user or its address has too many recent failed joins."""
        keys = self._join_keys(user_id, address)
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.get(key)
                pipe.ttl(key)
            replies = await pipe.execute()
        for index in range(0, len(replies), 2):
            failures, ttl = replies[index], replies[index + 1]
            if failures is not None and int(failures) >= self._settings.join_failure_limit:
                raise RateLimited(
                    "too many joins of unknown rooms; check the code and try again later",
                    retry_after=max(int(ttl), 1),
                )

    @redis_unavailable_is_503
    async def count_join_failure(self, user_id: str, address: str | None) -> None:
        await self._count(keys=self._join_keys(user_id, address), args=[JOIN_FAILURE_WINDOW_SECONDS])
