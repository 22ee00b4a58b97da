"""Pure logic: the per-socket send queue (bounded, FIFO, one waiting consumer)."""

from __future__ import annotations

import asyncio

from relay.hub import Delivery, SendQueue


def test_fifo_bound_and_wakeup() -> None:
    async def scenario() -> list[int]:
        queue = SendQueue(3)
        assert all(queue.put_nowait(Delivery(seq=n, text=None)) for n in (1, 2, 3))
        assert not queue.put_nowait(Delivery(seq=4, text=None)), "a full queue must refuse"
        got = [(await queue.get()).seq for _ in range(3)]
        waiter = asyncio.create_task(queue.get())
        await asyncio.sleep(0)
        assert not waiter.done()
        assert queue.put_nowait(Delivery(seq=5, text=None))
        got.append((await asyncio.wait_for(waiter, 1)).seq)
        return got

    assert asyncio.run(scenario()) == [1, 2, 3, 5]


def test_a_cancelled_consumer_leaves_the_queue_usable() -> None:
    async def scenario() -> int:
        queue = SendQueue(2)
        waiter = asyncio.create_task(queue.get())
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        queue.put_nowait(Delivery(seq=7, text=None))
        return (await asyncio.wait_for(queue.get(), 1)).seq

    assert asyncio.run(scenario()) == 7
