"""One writer per process: script calls from any number of sockets reach Redis as one pipeline per batch.

Each socket awaiting its own EVALSHA would cost one round trip and one pooled connection per event;
under a burst that means hundreds of connections (redis-py's pool then fails with "Too many
connections") and as many syscalls. Instead every call is queued here, and a single task sends
whatever has accumulated as one pipeline, while the next batch accumulates behind it (group commit).
A quiet replica pays no extra latency: a call that finds the writer idle goes out at once.

Commands keep their order within a batch and batches are sent one after another, so calls a socket
makes in sequence reach Redis in that sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from redis.commands.core import AsyncScript

logger = logging.getLogger("relay.pipeline")

MAX_BATCH = 512


@dataclass(slots=True)
class _Call:
    script: AsyncScript
    keys: list[str]
    args: list[Any]
    future: asyncio.Future[Any]


class ScriptPipeline:
    def __init__(self, redis_client: aioredis.Redis) -> None:
        self._redis = redis_client
        self._pending: deque[_Call] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def call(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        """Run `script` in the next batch; returns its reply or raises its error."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="redis-pipeline")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append(_Call(script, keys, args, future))
        self._wakeup.set()
        return await future

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while self._pending:
            call = self._pending.popleft()
            if not call.future.done():
                call.future.set_exception(redis.exceptions.ConnectionError("relay is shutting down"))

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch = [self._pending.popleft() for _ in range(min(MAX_BATCH, len(self._pending)))]
                await self._send(batch)

    async def _send(self, batch: list[_Call], *, reloads: int = 0) -> None:
        try:
            replies = await self._execute(batch)
        except Exception as error:
            for call in batch:
                if not call.future.done():
                    call.future.set_exception(error)
            return
        retry = []
        for call, reply in zip(batch, replies, strict=True):
            if isinstance(reply, redis.exceptions.NoScriptError):
                retry.append(call)  # Redis restarted or flushed its script cache
            elif isinstance(reply, Exception):
                call.future.set_exception(reply)
            else:
                call.future.set_result(reply)
        if retry:
            if reloads >= 2:  # the scripts vanish as fast as we load them: give up on this batch
                for call in retry:
                    call.future.set_exception(redis.exceptions.NoScriptError("Lua scripts keep disappearing"))
                return
            try:
                await self._load_scripts({call.script for call in retry})
            except Exception as error:
                for call in retry:
                    call.future.set_exception(error)
                return
            await self._send(retry, reloads=reloads + 1)

    async def _execute(self, batch: list[_Call]) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for call in batch:
                pipe.execute_command("EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
            return replies

    async def _load_scripts(self, scripts: set[AsyncScript]) -> None:
        for script in scripts:
            script.sha = await self._redis.script_load(script.script)
        logger.info("loaded %d Lua scripts into Redis", len(scripts))
