"""The process's script pipeline against a real redis-server: batching, order, NOSCRIPT, failures."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from relay.pipeline import NotReplicated, PipelineFailed, ScriptPipeline
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


def test_a_script_new_to_redis_keeps_its_place_in_its_batch(redis_server: RedisServer) -> None:
    """A batch holding a call of a script Redis has not loaded yet, then a call of one it has: they run
    in the order queued (a NOSCRIPT resent after the batch would run after the second: a socket's
    cursor after its own next edit)."""

    async def scenario() -> list[str]:
        client = aioredis.Redis.from_url(redis_server.url)
        pipeline = ScriptPipeline(client)
        nonce = secrets.token_hex(8)  # script texts no earlier run loaded
        first = client.register_script(f"-- {nonce} first\n{APPEND}")
        second = client.register_script(f"-- {nonce} second\n{APPEND}")
        key = f"pipeline-test:new-script:{nonce}"
        try:
            await pipeline.call(second, [key], ["second, alone"])
            queued = [pipeline.submit(first, [key], ["first"]), pipeline.submit(second, [key], ["second"])]
            assert await asyncio.gather(*queued) == [2, 3]
            return [
                item.decode() if isinstance(item, bytes) else item for item in await client.lrange(key, 0, -1)
            ]
        finally:
            await client.delete(key)
            await pipeline.aclose()
            await client.aclose()

    assert asyncio.run(scenario()) == ["second, alone", "first", "second"]


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


def test_a_cancelled_caller_does_not_stop_the_others(redis_server: RedisServer) -> None:
    """Callers cancelled while their call is queued or in flight (a socket kicked mid-edit) lose their
    reply; every other caller of the same batches still gets its own, and the writer keeps serving."""

    async def scenario() -> tuple[list[object], int]:
        client = aioredis.Redis.from_url(redis_server.url)
        pipeline = ScriptPipeline(client)
        # Slow enough that the first batch is still in flight when the cancellations happen.
        script = client.register_script(
            "local t = redis.call('TIME'); local start = t[1] * 1e6 + t[2]; "
            "repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] - start > 20000; return ARGV[1]"
        )
        callers = [asyncio.create_task(pipeline.call(script, [], [str(n)])) for n in range(60)]
        await asyncio.sleep(0.005)  # the first caller's batch is on its way
        callers += [asyncio.create_task(pipeline.call(script, [], [str(n)])) for n in range(60, 120)]
        await asyncio.sleep(0)
        for index in range(0, 120, 3):
            callers[index].cancel()
        async with asyncio.timeout(30):
            outcomes = await asyncio.gather(*callers, return_exceptions=True)
            after = int(await pipeline.call(script, [], ["7"]))
        await pipeline.aclose()
        await client.aclose()
        return list(outcomes), after

    outcomes, after = asyncio.run(scenario())
    for index, outcome in enumerate(outcomes):
        if index % 3 == 0:
            assert isinstance(outcome, asyncio.CancelledError), (index, outcome)
        else:
            assert outcome == str(index).encode(), (index, outcome)
    assert after == 7


def test_a_writer_that_fails_answers_every_call_and_is_replaced(redis_server: RedisServer) -> None:
    """A bug inside the writer (here: an unexpected exception after the round trip) fails the batch in flight
    and the queued calls with a clear error instead of leaving them waiting; the next call works."""

    async def scenario() -> tuple[list[object], bytes]:
        client = aioredis.Redis.from_url(redis_server.url)
        pipeline = ScriptPipeline(client)
        script = client.register_script("return 'ok'")
        real_execute = pipeline._execute
        broken = True

        async def execute(batch: list[Any]) -> list[Any]:
            replies = await real_execute(batch)
            if broken:
                raise KeyError("a bug in the writer")  # not a Redis error: nothing maps it to a reply
            return replies

        pipeline._execute = execute  # type: ignore[method-assign]
        async with asyncio.timeout(10):
            outcomes = await asyncio.gather(
                *(pipeline.call(script, [], []) for _ in range(10)), return_exceptions=True
            )
        broken = False
        async with asyncio.timeout(10):
            after = await pipeline.call(script, [], [])
        await pipeline.aclose()
        await client.aclose()
        return list(outcomes), after

    outcomes, after = asyncio.run(scenario())
    assert all(isinstance(outcome, PipelineFailed) for outcome in outcomes), outcomes
    assert "writer failed" in str(outcomes[0])
    assert after == b"ok"


def test_aclose_answers_the_batch_in_flight(redis_server: RedisServer) -> None:
    """Shutting down while a batch is in flight: its callers get PipelineFailed, not a hang."""

    async def scenario() -> list[object]:
        client = aioredis.Redis.from_url(redis_server.url)
        pipeline = ScriptPipeline(client)
        script = client.register_script(
            "local t = redis.call('TIME'); local start = t[1] * 1e6 + t[2]; "
            "repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] - start > 200000; return 1"
        )
        callers = [asyncio.create_task(pipeline.call(script, [], [])) for _ in range(5)]
        await asyncio.sleep(0.05)
        await pipeline.aclose()
        async with asyncio.timeout(10):
            outcomes = await asyncio.gather(*callers, return_exceptions=True)
        with contextlib.suppress(Exception):
            await client.aclose()
        return list(outcomes)

    outcomes = asyncio.run(scenario())
    assert all(isinstance(outcome, PipelineFailed) for outcome in outcomes), outcomes


def test_wait_replicas_refuses_writes_no_replica_confirmed_but_not_reads(redis_server: RedisServer) -> None:
    """With wait_replicas=1 on a Redis without replicas, a write is reported as NotReplicated (it ran, but
    must not be acked), a read-only call in the same batch still gets its reply, and without the option
    the same write succeeds."""

    async def scenario() -> tuple[Any, Any, Any]:
        client = aioredis.Redis.from_url(redis_server.url)
        waiting = ScriptPipeline(client, wait_replicas=1, wait_timeout_ms=50)
        plain = ScriptPipeline(client)
        write = client.register_script(APPEND)
        read = client.register_script("return redis.call('LLEN', KEYS[1])")
        key = "pipeline-test:wait"
        await client.delete(key)
        outcomes = await asyncio.gather(
            waiting.call(write, [key], ["x"]),
            waiting.call(read, [key], [], read_only=True),
            return_exceptions=True,
        )
        unwaited = await plain.call(write, [key], ["y"])
        for pipeline in (waiting, plain):
            await pipeline.aclose()
        await client.aclose()
        return outcomes[0], outcomes[1], unwaited

    written, read_back, unwaited = asyncio.run(scenario())
    assert isinstance(written, NotReplicated) and "0 of 1 replicas" in str(written)
    assert read_back == 1  # the write ran: WAIT only says no replica confirmed it
    assert unwaited == 2


def test_a_wait_refused_by_a_replica_fails_the_writes_not_the_batch(redis_server: RedisServer) -> None:
    """WAIT on a node that is a replica is an error reply (a primary that restarted as a replica): the
    batch's writes are NotReplicated, each call keeps its own reply, and nothing else is raised."""

    async def scenario() -> tuple[Any, Any]:
        replica = RedisServer().start()
        client = aioredis.Redis.from_url(replica.url)
        try:
            await client.replicaof("127.0.0.1", redis_server.port)
            pipeline = ScriptPipeline(client, wait_replicas=1, wait_timeout_ms=50)
            write = client.register_script(APPEND)
            read = client.register_script("return redis.call('LLEN', KEYS[1])")
            outcomes = await asyncio.gather(
                pipeline.call(write, ["pipeline-test:replica"], ["x"]),
                pipeline.call(read, ["pipeline-test:replica"], [], read_only=True),
                return_exceptions=True,
            )
            await pipeline.aclose()
            return outcomes[0], outcomes[1]
        finally:
            await client.aclose()
            replica.cleanup()

    written, read_back = asyncio.run(scenario())
    # The write itself is refused by the replica (READONLY) and keeps that reply; the read succeeds.
    assert isinstance(written, redis.exceptions.ReadOnlyError), written
    assert read_back == 0


def test_a_connection_the_server_closed_between_batches_is_replaced_before_the_next(
    redis_server: RedisServer,
) -> None:
    """The writer keeps its connection between batches; one that Redis closed meanwhile (a restart, a
    failover, CLIENT KILL) is replaced before the next batch is sent, so that call succeeds."""

    async def scenario() -> list[object]:
        client = aioredis.Redis.from_url(redis_server.url)
        killer = aioredis.Redis.from_url(redis_server.url)
        pipeline = ScriptPipeline(client)
        script = client.register_script("return 'ok'")
        replies: list[object] = [await pipeline.call(script, [], [])]
        assert await killer.client_kill_filter(_type="normal", skipme=True) >= 1
        await asyncio.sleep(0.2)  # the close reaches the writer's idle connection
        async with asyncio.timeout(10):
            replies.append(await pipeline.call(script, [], []))
        await pipeline.aclose()
        await client.aclose()
        await killer.aclose()
        return replies

    assert asyncio.run(scenario()) == [b"ok", b"ok"]


async def _next_users_reply(client: aioredis.Redis) -> object:
    """What the pool's next user gets from an ECHO on the client's only connection (then closes it)."""
    try:
        async with asyncio.timeout(10):
            return await client.echo("mine")
    finally:
        await client.aclose()


def test_a_writer_stopped_mid_batch_hands_no_unread_reply_to_the_pools_next_user(
    redis_server: RedisServer,
) -> None:
    """The writer keeps one pooled connection; stopped while its batch's replies are still coming, that
    connection must not go back to the pool as it is, or the next command would read the batch's reply."""

    async def scenario() -> object:
        client = aioredis.Redis.from_url(redis_server.url, max_connections=1)
        pipeline = ScriptPipeline(client)
        script = client.register_script(
            "local t = redis.call('TIME'); local start = t[1] * 1e6 + t[2]; "
            "repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] - start > 200000; return 7"
        )
        caller = asyncio.create_task(pipeline.call(script, [], []))
        await asyncio.sleep(0.05)  # the batch is sent; its reply comes in 150 ms
        await pipeline.aclose()
        with contextlib.suppress(PipelineFailed):
            await caller
        return await _next_users_reply(client)

    assert asyncio.run(scenario()) == b"mine"


def test_a_writer_stopped_mid_write_hands_no_half_command_to_the_pools_next_user() -> None:
    """Stopped while Redis is not taking its batch (here: SIGSTOPped), the writer's connection still has the
    batch to send and its reply to come; handed back to the pool as it is, the next user reads that reply."""
    server = RedisServer().start()
    try:

        async def scenario() -> object:
            client = aioredis.Redis.from_url(server.url, max_connections=1)
            pipeline = ScriptPipeline(client)
            script = client.register_script("return 1")
            server.send_signal(signal.SIGSTOP)
            try:
                # Far more than the socket buffers hold: the write waits for Redis to read.
                caller = asyncio.create_task(pipeline.call(script, [], ["x" * (32 << 20)]))
                await asyncio.sleep(0.3)
                await pipeline.aclose()
                with contextlib.suppress(PipelineFailed):
                    await caller
            finally:
                server.send_signal(signal.SIGCONT)
            return await _next_users_reply(client)

        assert asyncio.run(scenario()) == b"mine"
    finally:
        server.cleanup()
