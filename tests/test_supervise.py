"""Pure logic: relay's background loops are restarted after a failure instead of dying silently."""

from __future__ import annotations

import asyncio

from relay.lifecycle import supervise


def test_a_failing_loop_is_restarted_until_it_returns() -> None:
    runs: list[int] = []

    async def flaky() -> None:
        runs.append(len(runs))
        if len(runs) < 3:
            raise RuntimeError("a bug")

    asyncio.run(asyncio.wait_for(supervise("flaky", flaky, restart_delay=0.01), 5))
    assert runs == [0, 1, 2]


def test_cancellation_is_not_swallowed() -> None:
    async def forever() -> None:
        await asyncio.sleep(3600)

    async def scenario() -> bool:
        task = asyncio.create_task(supervise("forever", forever))
        await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return task.cancelled()

    assert asyncio.run(scenario())
