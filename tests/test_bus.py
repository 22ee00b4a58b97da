"""The pub/sub link against a real redis-server: a failure of its own reader restarts it at once."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis

from relay.bus import Bus, BusEvent, Disconnected, Message, Reconnected
from tests.support import RedisServer

CHANNEL = "bus-test:{ABCDEF}:pubsub"


def test_a_reader_bug_restarts_the_link_instead_of_stalling_delivery(redis_server: RedisServer) -> None:
    """get_message raising a non-Redis error once: the bus reports Disconnected, reconnects,
    resubscribes and delivers the next message, long before the link timeout (60 s here) would."""

    async def scenario() -> list[BusEvent]:
        client = aioredis.Redis.from_url(redis_server.url, protocol=2)
        publisher = aioredis.Redis.from_url(redis_server.url, protocol=2)
        bus = Bus(client, link_timeout=60)
        events: asyncio.Queue[BusEvent] = asyncio.Queue()

        async def consume() -> None:
            async for event in bus.events():
                await events.put(event)

        consumer = asyncio.create_task(consume())
        seen: list[BusEvent] = []

        async def next_event() -> BusEvent:
            event = await asyncio.wait_for(events.get(), 20)
            seen.append(event)
            return event

        try:
            assert isinstance(await next_event(), Reconnected)
            await bus.subscribe(CHANNEL)
            real_get_message = bus._pubsub.get_message
            calls = 0

            async def get_message(**kwargs: Any) -> Any:
                nonlocal calls
                calls += 1
                if calls == 1:
                    raise ValueError("a reply the parser did not expect")
                return await real_get_message(**kwargs)

            bus._pubsub.get_message = get_message  # type: ignore[method-assign,assignment]
            await publisher.publish(CHANNEL, b"first")  # wakes the reader, whose next read fails
            while not isinstance(await next_event(), Reconnected):
                pass
            await publisher.publish(CHANNEL, b"second")
            while not (isinstance(event := await next_event(), Message) and event.data == b"second"):
                pass
        finally:
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)
            await bus.aclose()
            await client.aclose()
            await publisher.aclose()
        return seen

    seen = asyncio.run(scenario())
    assert any(isinstance(event, Disconnected) and "ValueError" in event.reason for event in seen), seen
