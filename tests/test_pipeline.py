"""The process's script pipeline against a real redis-server: batching, order, NOSCRIPT, failures."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
import redis.exceptions

from relay.pipeline import ScriptPipeline
from tests.support import RedisServer

APPEND = "redis.call('RPUSH', KEYS[1], ARGV[1]); return redis.call('LLEN', KEYS[1])"


def test_concurrent_calls_share_round_trips_and_keep_each_callers_order(redis_server: RedisServer) -> None:
    """500 concurrent callers x 4 sequential calls: every reply right, each caller's calls in order."""

    async def scenario() -> tuple[list[list[int]], int]:
        client = aioredis.Redis.from_url(redis_server.url)
        pipeline = ScriptPipeline(client)
        script = client.register_script(APPEND)
        key = "pipeline-test:order"
        await client.delete(key)

        async def caller(n: int) -> list[int]:
            lengths = []
            for step in range(4):
                lengths.append(await pipeline.call(script, [key], [f"{n}:{step}"]))
            return lengths

        results = await asyncio.gather(*(caller(n) for n in range(500)))
        items = [
            item.decode() if isinstance(item, bytes) else item for item in await client.lrange(key, 0, -1)
        ]
        positions = {item: index for index, item in enumerate(items)}
        for n in range(500):
            steps = [positions[f"{n}:{step}"] for step in range(4)]
            assert steps == sorted(steps), f"caller {n}'s calls were reordered"
        connections = len(client.connection_pool._available_connections) + len(
            client.connection_pool._in_use_connections
        )
        await client.delete(key)
        await pipeline.aclose()
        await client.aclose()
        return results, connections

    results, connections = asyncio.run(scenario())
    assert sorted(length for lengths in results for length in lengths) == list(range(1, 2001))
    assert connections <= 2, "a burst must not open a connection per call"


def test_scripts_are_reloaded_after_redis_forgets_them(redis_server: RedisServer) -> None:
    async def scenario() -> int:
        client = aioredis.Redis.from_url(redis_server.url)
        pipeline = ScriptPipeline(client)
        script = client.register_script("return 42")
        assert await pipeline.call(script, [], []) == 42
        await client.script_flush()
        value = int(await pipeline.call(script, [], []))
        await pipeline.aclose()
        await client.aclose()
        return value

    assert asyncio.run(scenario()) == 42


def test_every_caller_of_a_failed_batch_gets_the_error() -> None:
    """Redis unreachable: every pending call raises ConnectionError (which relay answers with 503 / error frames)."""
    server = RedisServer().start()
    url = server.url
    server.cleanup()

    async def scenario() -> list[BaseException | None]:
        client = aioredis.Redis.from_url(url, socket_connect_timeout=1)
        pipeline = ScriptPipeline(client)
        script = client.register_script("return 1")
        outcomes = await asyncio.gather(
            *(pipeline.call(script, [], []) for _ in range(20)), return_exceptions=True
        )
        await pipeline.aclose()
        await client.aclose()
        return list(outcomes)

    outcomes = asyncio.run(scenario())
    assert all(isinstance(outcome, redis.exceptions.ConnectionError) for outcome in outcomes), outcomes


def test_script_errors_reach_only_their_caller(redis_server: RedisServer) -> None:
    async def scenario() -> tuple[object, object]:
        client = aioredis.Redis.from_url(redis_server.url)
        pipeline = ScriptPipeline(client)
        good = client.register_script("return 'ok'")
        bad = client.register_script("return redis.error_reply('nope')")
        outcomes = await asyncio.gather(
            pipeline.call(bad, [], []), pipeline.call(good, [], []), return_exceptions=True
        )
        await pipeline.aclose()
        await client.aclose()
        return outcomes[0], outcomes[1]

    bad_outcome, good_outcome = asyncio.run(scenario())
    assert isinstance(bad_outcome, redis.exceptions.ResponseError)
    assert good_outcome == b"ok"


def test_works_on_the_embedded_store() -> None:
    """The embedded mode (fakeredis) runs the same pipeline."""
    import fakeredis

    async def scenario() -> list[int]:
        client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        pipeline = ScriptPipeline(client)
        script = client.register_script(APPEND)
        results = [await pipeline.call(script, ["k"], [str(n)]) for n in range(3)]
        await pipeline.aclose()
        return results

    assert asyncio.run(scenario()) == [1, 2, 3]
