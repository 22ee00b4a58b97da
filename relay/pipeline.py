"""One writer per process: script calls from any number of sockets reach Redis as one pipeline per batch.

Each socket awaiting its own EVALSHA would cost one round trip and one pooled connection per event;
under a burst that means hundreds of connections (redis-py's pool then fails with "Too many
connections") and as many syscalls. Instead every call is queued here, and a single task sends
whatever has accumulated as one pipeline, while the next batch accumulates behind it (group commit).
A quiet replica pays no extra latency: a call that finds the writer idle goes out at once.

Commands keep their order within a batch and batches are sent one after another, so calls a socket
makes in sequence reach Redis in that sequence.

The writer speaks RESP itself on a connection of the client's pool instead of going through redis-py's
Pipeline: each call's keys and arguments are encoded once, when it is queued (redis-py's pack_command
cost about 40 us per event here, a tenth of a replica's CPU at 2,000 events/s), a batch is one write,
and its replies are read under one timeout instead of one per reply. Connection failures, timeouts and
cancellation leave the connection disconnected (redis-py's read and write do that), and the
connection's own retry policy applies as it did through Pipeline.execute.

Scripts are loaded ahead of their first use: a batch starts with SCRIPT LOAD for every script the
writer has not loaded yet, and for all of them again on a new connection (Redis may have restarted).
Otherwise a script new to Redis would fail with NOSCRIPT and be resent after later calls of its batch
had already run, and a socket's calls (a cursor and the edit after it) would reach Redis out of order.
(A NOSCRIPT is still handled, for a SCRIPT FLUSH behind relay's back: the calls are resent behind a
SCRIPT LOAD of their scripts, at most MAX_SCRIPT_RELOADS times.)

The writer is shared by every socket, HTTP request and background loop of the process, so no caller's
fate may affect another's: a caller that was cancelled while waiting (its socket was closed or kicked)
has its reply dropped, not set on a future nobody can take it from; a call cancelled before its batch
left is not sent at all; and if the writer itself fails, every call in flight or queued is answered
with `PipelineFailed` (a connection error, which callers report as "unavailable, retry") and the next
call starts a new writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from redis.commands.core import AsyncScript

logger = logging.getLogger("relay.pipeline")

MAX_BATCH = 512
MAX_SCRIPT_RELOADS = 2
_REDIS_FAILURES = (redis.exceptions.RedisError, OSError, TimeoutError)


class PipelineFailed(redis.exceptions.ConnectionError):
    """The writer stopped (a bug or shutdown) before this call's reply arrived: it may or may not have run."""


class NotReplicated(redis.exceptions.ConnectionError):
    """The call ran, but WAIT could not confirm its batch on enough replicas in time: the caller must not
    report it as accepted (a failover could still lose it). A resend with the same client_msg_id is
    answered from the acks, without applying the edit twice."""


def _bulk(values: list[Any] | tuple[Any, ...], encode: Callable[[Any], bytes]) -> bytes:
    """RESP bulk strings of `values`, each made bytes by `encode`: the client's own redis-py Encoder (its
    encoding; bools and unknown types refused, which fails that call only, never its batch)."""
    return b"".join([b"$%d\r\n%s\r\n" % (len(encoded), encoded) for encoded in map(encode, values)])


# A room's scripts all take the same twelve keys: encoded once per room, not once per call.
_bulk_keys = functools.lru_cache(maxsize=4096)(_bulk)


@dataclass(slots=True)
class _Call:
    script: AsyncScript
    # RESP of the keys and arguments (everything after EVALSHA sha numkeys), encoded once when queued:
    # the sha may change (a script reload) before the call is sent.
    tail: bytes
    numkeys: int
    numargs: int
    future: asyncio.Future[Any]
    queued_at: float  # time.monotonic() when queued: how long the queue held it (admission control)
    read_only: bool = False  # needs no WAIT: a read is valid whether or not a replica has caught up

    def packed(self) -> bytes:
        sha = self.script.sha.encode() if isinstance(self.script.sha, str) else self.script.sha
        numkeys = b"%d" % self.numkeys
        return b"*%d\r\n$7\r\nEVALSHA\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n%s" % (
            3 + self.numargs,
            len(sha),
            sha,
            len(numkeys),
            numkeys,
            self.tail,
        )

    def resolve(self, reply: Any) -> None:
        # The caller may be gone (cancelled): its future is then done and takes nothing more.
        if self.future.done():
            return
        if isinstance(reply, BaseException):
            self.future.set_exception(reply)
        else:
            self.future.set_result(reply)


async def _write(connection: Any, packed: bytes) -> None:
    """redis-py's send_packed_command without its wait_for (the caller holds the timeout)."""
    try:
        connection._writer.writelines((packed,))
        await connection._writer.drain()
    except OSError as error:
        await connection.disconnect(nowait=True)
        raise redis.exceptions.ConnectionError(f"Error while writing to Redis: {error}") from error
    except BaseException:
        # A write cut short leaves part of a command on the socket: the connection cannot be reused.
        await connection.disconnect(nowait=True)
        raise


def _bulk_command(encode: Callable[[Any], bytes], *parts: Any) -> bytes:
    return b"*%d\r\n%s" % (len(parts), _bulk(parts, encode))


class ScriptPipeline:
    def __init__(
        self, redis_client: aioredis.Redis, *, wait_replicas: int = 0, wait_timeout_ms: int = 0
    ) -> None:
        """wait_replicas > 0: every batch ends with `WAIT wait_replicas wait_timeout_ms` (one WAIT covers
        the whole batch's writes), and no call of a batch that fewer replicas confirmed succeeds."""
        self._redis = redis_client
        self._encode = redis_client.connection_pool.get_encoder().encode  # type: ignore[no-untyped-call]
        self._wait = (wait_replicas, wait_timeout_ms)
        self._pending: deque[_Call] = deque()
        self._in_flight: list[_Call] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._is_closed = False
        # Held by the writer while it runs (one batch at a time needs one connection; taking it from
        # the pool per batch cost a lock and a timer each time), released when the writer stops.
        self._connection: Any = None
        self._longest_wait = 0.0  # see take_longest_wait
        # Every script this writer has run, and those to load before the next batch.
        self._scripts: set[AsyncScript] = set()
        self._unloaded: set[AsyncScript] = set()

    def take_longest_wait(self) -> float:
        """The longest time a call waited in this queue for its batch to leave, since the previous take
        (seconds; 0 if nothing waited): the sojourn of the queue's head, as CoDel measures a standing
        queue. A head still waiting counts with its wait so far, so a writer stuck on a batch that Redis
        does not answer shows its queue growing. Admission control reads it once per interval."""
        longest, self._longest_wait = self._longest_wait, 0.0
        if self._pending:
            longest = max(longest, time.monotonic() - self._pending[0].queued_at)
        return longest

    async def call(
        self, script: AsyncScript, keys: list[str], args: list[Any], *, read_only: bool = False
    ) -> Any:
        """Run `script` in the next batch; returns its reply or raises its error."""
        return await self.submit(script, keys, args, read_only=read_only)

    def submit(
        self, script: AsyncScript, keys: list[str], args: list[Any], *, read_only: bool = False
    ) -> asyncio.Future[Any]:
        """Queue `script` for the next batch now, and return the future of its reply (or error).

        Calls run in the order they were queued, so a caller may queue several before it waits for
        any. Cancelling the future before its batch leaves keeps the call from being sent.
        """
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self._is_closed:
            future.set_exception(PipelineFailed("relay is shutting down"))
            return future
        try:
            tail = _bulk_keys(tuple(keys), self._encode) + _bulk(args, self._encode)
        except (redis.exceptions.DataError, TypeError) as error:  # an argument Redis cannot take
            future.set_exception(error)
            return future
        if script not in self._scripts:
            self._scripts.add(script)
            self._unloaded.add(script)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="redis-pipeline")
            self._task.add_done_callback(self._writer_stopped)
        self._pending.append(
            _Call(script, tail, len(keys), len(keys) + len(args), future, time.monotonic(), read_only)
        )
        self._wakeup.set()
        return future

    async def aclose(self) -> None:
        """Stop the writer; the batch in flight and every queued call are answered with PipelineFailed."""
        self._is_closed = True
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._fail_everything(PipelineFailed("relay is shutting down"))

    def _writer_stopped(self, task: asyncio.Task[None]) -> None:
        """Done-callback of the writer: whatever ended it, no call may be left waiting."""
        if task.cancelled():
            error = PipelineFailed("relay is shutting down")
        else:
            failure = task.exception()  # retrieving it also keeps "never retrieved" out of the log
            if failure is None:
                return
            logger.error(
                "the Redis pipeline writer failed; a new one starts with the next call", exc_info=failure
            )
            error = PipelineFailed(f"the Redis pipeline writer failed ({type(failure).__name__}); retry")
        # This callback runs before any newer writer's first step, so the batch in flight is this
        # writer's; queued calls are too, unless a call already started a newer writer for them.
        self._fail_everything(error, queued_too=self._task is task)

    def _fail_everything(self, error: Exception, *, queued_too: bool = True) -> None:
        calls = self._in_flight
        self._in_flight = []
        if queued_too:
            calls = [*calls, *self._pending]
            self._pending.clear()
        for call in calls:
            call.resolve(error)

    async def _run(self) -> None:
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._pending:
                    batch: list[_Call] = []
                    while self._pending and len(batch) < MAX_BATCH:
                        call = self._pending.popleft()
                        if not call.future.done():  # its caller was cancelled before it was sent
                            batch.append(call)
                    if not batch:
                        continue
                    # Calls leave in order: the batch's first call is the one that waited longest.
                    self._longest_wait = max(self._longest_wait, time.monotonic() - batch[0].queued_at)
                    self._in_flight = batch
                    await self._send(batch)
                    self._in_flight = []
        finally:
            connection, self._connection = self._connection, None
            if connection is not None:
                await self._redis.connection_pool.release(connection)

    async def _send(self, batch: list[_Call]) -> None:
        reloads = 0
        while True:
            try:
                replies = await self._execute(batch)
            except _REDIS_FAILURES as error:
                # Anything else is a bug: it ends this writer, whose done-callback answers every call.
                for call in batch:
                    call.resolve(error)
                return
            retry = []
            for call, reply in zip(batch, replies, strict=True):
                if isinstance(reply, redis.exceptions.NoScriptError):
                    retry.append(call)  # Redis restarted or flushed its script cache
                else:
                    call.resolve(reply)
            if not retry:
                return
            if reloads >= MAX_SCRIPT_RELOADS:  # the scripts vanish as fast as we load them
                for call in retry:
                    call.resolve(redis.exceptions.NoScriptError("Lua scripts keep disappearing"))
                return
            # Loaded again in front of the resent calls, on the same connection (see _round_trip).
            lost = {call.script for call in retry}
            logger.info("Redis had lost %d Lua scripts (a SCRIPT FLUSH?): loading them again", len(lost))
            self._unloaded.update(lost)
            batch = [call for call in retry if not call.future.done()]
            reloads += 1
            if not batch:
                return

    async def _execute(self, batch: list[_Call]) -> list[Any]:
        replicas, timeout_ms = self._wait
        if all(call.read_only for call in batch):
            replicas = 0
        packed = [call.packed() for call in batch]
        if replicas:
            packed.append(_bulk_command(self._encode, "WAIT", replicas, timeout_ms))
        replies = await self._round_trip(b"".join(packed), len(packed))
        if replicas:
            confirmed = replies.pop()
            if isinstance(confirmed, Exception):
                # e.g. a node that became a replica: the calls' own replies (MOVED) say where to go; a
                # write that succeeded here is still not confirmed anywhere.
                error = NotReplicated(f"Redis could not WAIT for replicas: {confirmed}")
            elif int(confirmed) < replicas:
                error = NotReplicated(
                    f"Redis confirmed the write on {confirmed} of {replicas} replicas within {timeout_ms} ms"
                )
            else:
                return replies
            replies = [
                reply if isinstance(reply, Exception) or call.read_only else error
                for call, reply in zip(batch, replies, strict=True)
            ]
        return replies

    async def _round_trip(self, packed: bytes, count: int) -> list[Any]:
        """Send `count` packed commands in one write and read their replies (a command's error reply
        is its reply, as with raise_on_error=False); on the connection's retry policy, like redis-py."""
        pool = self._redis.connection_pool
        if self._connection is None:
            self._connection = await pool.get_connection()  # type: ignore[no-untyped-call]
            self._unloaded.update(self._scripts)  # this writer's first connection: load them all once
        connection = self._connection

        async def exchange() -> list[Any]:
            # What the pool checks when it hands a connection out (no syscall): connected, nothing
            # unread, not closed by the server meanwhile (a restart, a failover); else reconnect now,
            # before anything is sent, as a connection taken from the pool per batch would.
            if not connection.is_connected or await connection.can_read():
                if connection.is_connected:
                    await connection.disconnect()
                await connection.connect()
                self._unloaded.update(self._scripts)  # a new connection: maybe a restarted Redis
            loading = list(self._unloaded)
            preamble = b"".join(_bulk_command(self._encode, "SCRIPT", "LOAD", s.script) for s in loading)
            replies: list[Any] = []
            try:
                # One timer for the write and the batch's replies: redis-py's send_packed_command wraps
                # each write in wait_for (a task per write), its reads each in a timeout of their own
                # (math.inf: none). Whatever cuts a write or a read short disconnects the connection.
                async with asyncio.timeout(connection.socket_timeout):
                    await _write(connection, preamble + packed)
                    for _ in loading:
                        # A script Redis refused to load fails its calls with NOSCRIPT, handled there.
                        with contextlib.suppress(redis.exceptions.ResponseError):
                            await connection.read_response(timeout=math.inf)
                    self._unloaded.difference_update(loading)
                    for _ in range(count):
                        try:
                            replies.append(await connection.read_response(timeout=math.inf))
                        except redis.exceptions.ResponseError as error:
                            replies.append(error)
            except TimeoutError:
                await connection.disconnect(nowait=True)
                raise redis.exceptions.TimeoutError("Timeout talking to Redis") from None
            return replies

        async def failed(error: Exception) -> None:
            await connection.disconnect()

        replies: list[Any] = await connection.retry.call_with_retry(exchange, failed)
        return replies
