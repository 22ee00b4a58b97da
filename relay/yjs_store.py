"""A room's Yjs document in Redis: append updates, read snapshot + tail, compact; no replica keeps a copy.

    relay:{CODE}:ydoc      hash    snapshot (a Yjs update), snapshot_seq (the last update it folds),
                                   seq (the last update's number)
    relay:{CODE}:yupdates  stream  one entry per update after the snapshot, id "<seq>-0": u (update),
                                   o (the connection that sent it)
    relay:{CODE}:ylock     string  the compaction lock (a random token, with an expiry)

Why a stream of its own rather than the room's event history: that history is capped by count and age
and must stay gapless for whole-document clients, while an update may only leave Redis once it is
folded into the snapshot. The entry id is the update's number, so "everything after N" is one XRANGE.

Reading folds the snapshot and the tail into a throwaway document, a chunk of the stream at a time
(one flat merge over thousands of updates grows faster than linearly). Compaction runs on one replica
at a time per room (a lock with an expiry), folds everything but the newest `keep` updates into a new
snapshot and trims exactly the folded entries, by number: an update nobody folded is never dropped.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from relay.config import Settings
from relay.errors import MemberRemoved, NotMember, RelayError, RoomClosed, RoomNotFound, Unavailable
from relay.keys import RoomKeys
from relay.pipeline import ScriptPipeline
from relay.protocol import Envelope, now_ms, yjs_update_parts
from relay.redis_errors import redis_unavailable_is_503
from relay.yjs_doc import RoomDoc, TextEdit

logger = logging.getLogger("relay.yjs")

READ_CHUNK: Final = 1000  # updates per round trip when reading a tail
LOAD_ATTEMPTS: Final = 5  # a compaction that trims while we read a long tail makes us start over
LOCK_MS: Final = 60_000


@dataclass(frozen=True, slots=True)
class YjsKeys:
    room: str
    members: str
    ydoc: str
    updates: str
    lock: str
    channel: str

    @classmethod
    def of(cls, code: str) -> YjsKeys:
        room = RoomKeys.of(code)
        prefix = f"relay:{{{code}}}"
        return cls(
            room=room.room,
            members=room.members,
            ydoc=f"{prefix}:ydoc",
            updates=f"{prefix}:yupdates",
            lock=f"{prefix}:ylock",
            channel=room.channel,
        )

    @property
    def all(self) -> list[str]:
        """KEYS of yjs_append / yjs_read / yjs_seed (relay/lua/yjs_*.lua)."""
        return [self.room, self.members, self.ydoc, self.updates]


@dataclass(frozen=True, slots=True)
class Appended:
    seq: int
    unfolded: int  # updates in the stream after the snapshot, this one included


@dataclass(slots=True)
class LoadedDoc:
    """The room's document folded at `seq`, and the room's status then."""

    doc: RoomDoc
    seq: int
    status: str


@dataclass(frozen=True, slots=True)
class Compaction:
    folded: int  # the snapshot now covers updates 1..folded
    updates: int  # how many updates this run folded into it
    seconds: float
    snapshot_bytes: int


def _lua(name: str) -> str:
    return resources.files("relay").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


def _seq_of(entry_id: bytes | str) -> int:
    return int(_text(entry_id).partition("-")[0])


def _entries(raw: Any) -> list[tuple[int, bytes]]:
    """XRANGE rows of the updates stream as (number, update)."""
    return [(_seq_of(entry_id), _bytes(fields[b"u"])) for entry_id, fields in raw or ()]


class YjsStore:
    """Raises RelayError subclasses (RoomNotFound, RoomClosed, NotMember, Unavailable) like Rooms."""

    def __init__(self, redis_client: aioredis.Redis, pipeline: ScriptPipeline, settings: Settings) -> None:
        self._redis = redis_client
        self._pipeline = pipeline
        self._settings = settings
        self._append = redis_client.register_script(_lua("yjs_append"))
        self._read = redis_client.register_script(_lua("yjs_read"))
        self._seed = redis_client.register_script(_lua("yjs_seed"))
        self._compact = redis_client.register_script(_lua("yjs_compact"))
        self._unlock = redis_client.register_script(_lua("yjs_unlock"))
        self._publish = redis_client.register_script(_lua("yjs_publish"))

    async def _run(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        return await self._pipeline.call(script, keys, args)

    @redis_unavailable_is_503
    async def append(self, code: str, user_id: str, update: bytes, origin: str) -> Appended:
        """Number, store and publish one update. Returns once Redis has it (what relay acknowledges)."""
        keys = YjsKeys.of(code)
        for _ in range(LOAD_ATTEMPTS):
            head, middle = yjs_update_parts(origin, now_ms())
            result = await self._run(
                self._append,
                keys.all,
                [user_id, update, origin, self._settings.room_ttl, keys.channel, head, middle],
            )
            outcome = _text(result[0])
            if outcome == "ok":
                return Appended(int(result[1]), int(result[2]))
            if outcome != "unseeded":
                _raise_for(outcome, code)
            await self.load(code)  # seeds the document, then the append goes through
        raise Unavailable("the room's document could not be started; retry")

    @redis_unavailable_is_503
    async def publish_volatile(self, code: str, kind: str, origin: str, message: bytes) -> None:
        """Awareness and awareness queries: published to the room's replicas, never stored."""
        keys = YjsKeys.of(code)
        envelope = Envelope(kind, origin, 0, None, now_ms(), message).pack()
        await self._run(self._publish, [keys.room], [keys.channel, envelope])

    @redis_unavailable_is_503
    async def load(self, code: str) -> LoadedDoc:
        """The document: snapshot and every update after it, folded a chunk at a time."""
        keys = YjsKeys.of(code)
        for _ in range(LOAD_ATTEMPTS):
            result = await self._run(self._read, keys.all, [READ_CHUNK])
            outcome = _text(result[0])
            if outcome == "unseeded":
                await self._seed_from(code, _text(result[1]))
                continue
            _raise_for(outcome, code)
            snapshot, folded, seq, status = (
                _bytes(result[1]),
                int(result[2]),
                int(result[3]),
                _text(result[4]),
            )
            doc = RoomDoc(snapshot or None)
            entries = result[5:]
            expected = folded + 1
            complete = True
            while True:
                for i in range(0, len(entries), 2):
                    if _seq_of(entries[i]) != expected:
                        complete = False  # trimmed under us by a compaction: start over
                        break
                    doc.apply((_bytes(entries[i + 1]),))
                    expected += 1
                if not complete or expected > seq or not entries:
                    break
                entries = await self._xrange(keys.updates, expected, seq)
            if complete and expected > seq:
                return LoadedDoc(doc, seq, status)
        raise Unavailable("the room's document kept changing shape while being read; retry")

    @redis_unavailable_is_503
    async def updates_after(self, code: str, after: int, upto: int) -> list[tuple[int, bytes]] | None:
        """Updates after..upto, in order; None when some of them were folded into the snapshot meanwhile."""
        key = YjsKeys.of(code).updates
        out: list[tuple[int, bytes]] = []
        expected = after + 1
        while expected <= upto:
            rows = _entries(await self._redis.xrange(key, f"{expected}-0", f"{upto}-0", count=READ_CHUNK))
            if not rows:
                break
            for seq, update in rows:
                if seq != expected:
                    return None
                out.append((seq, update))
                expected += 1
        return out if expected > upto else None

    @redis_unavailable_is_503
    async def current_seq(self, code: str) -> int:
        return int(await self._redis.hget(YjsKeys.of(code).ydoc, "seq") or 0)

    async def _xrange(self, key: str, first: int, last: int) -> list[Any]:
        flat: list[Any] = []
        for seq, update in _entries(
            await self._redis.xrange(key, f"{first}-0", f"{last}-0", count=READ_CHUNK)
        ):
            flat += (f"{seq}-0", update)
        return flat

    async def _seed_from(self, code: str, content: str) -> None:
        seed = RoomDoc()
        if content:
            seed.apply_text_edits([TextEdit(0, 0, content)], "")
        outcome = await self._run(
            self._seed, YjsKeys.of(code).all, [seed.update_since(None), content, self._settings.room_ttl]
        )
        if int(outcome) == 1:
            logger.info("room %s: Yjs document started from its text (%d characters)", code, len(content))

    @redis_unavailable_is_503
    async def compact(self, code: str, *, keep: int = 0) -> Compaction | None:
        """Fold all but the newest `keep` updates into the snapshot; None when another replica holds
        the lock or there is nothing to fold."""
        keys = YjsKeys.of(code)
        token = secrets.token_hex(8)
        if not await self._redis.set(keys.lock, token, nx=True, px=LOCK_MS):
            return None
        started = time.perf_counter()
        try:
            snapshot, folded, last = await self._redis.hmget(keys.ydoc, ["snapshot", "snapshot_seq", "seq"])
            if last is None:
                await self._release(keys, token)
                return None
            first, target = int(folded or 0) + 1, int(last) - keep
            if target < first:
                await self._release(keys, token)
                return None
            doc = RoomDoc(_bytes(snapshot) if snapshot else None)
            expected = first
            while expected <= target:
                chunk = _entries(
                    await self._redis.xrange(keys.updates, f"{expected}-0", f"{target}-0", count=READ_CHUNK)
                )
                if not chunk:
                    break
                for number, update in chunk:
                    if number != expected:
                        raise RuntimeError(f"room {code}: update {expected} is missing from the stream")
                    doc.apply((update,))
                    expected += 1
                await asyncio.sleep(0)  # a long fold must not starve the replica's sockets
            if expected <= target:
                raise RuntimeError(f"room {code}: the stream ends at {expected - 1}, expected {target}")
            new_snapshot = doc.update_since(None)
            outcome = _text(
                await self._run(
                    self._compact, [keys.ydoc, keys.updates, keys.lock], [token, new_snapshot, target]
                )
            )
        except BaseException:
            await self._release(keys, token)
            raise
        if outcome != "ok":
            logger.info("room %s: compaction not stored (%s)", code, outcome)
            return None
        return Compaction(target, target - first + 1, time.perf_counter() - started, len(new_snapshot))

    async def _release(self, keys: YjsKeys, token: str) -> None:
        await self._unlock(keys=[keys.lock], args=[token])


def _raise_for(outcome: str, code: str) -> None:
    if outcome == "ok":
        return
    if outcome == "missing":
        raise RoomNotFound(f"no room {code}: check the code, or the room may have expired")
    if outcome == "closed":
        raise RoomClosed(f"room {code} has been closed by its interviewer")
    if outcome == "not_member":
        raise NotMember(f"you are not a member of room {code}: join it first (POST /api/join-room)")
    if outcome == "removed":
        raise MemberRemoved(f"an interviewer removed you from room {code}")
    raise Unavailable(f"unexpected answer from the room's document store: {outcome[:40]}")


class Compactor:
    """Compacts rooms whose stream grew past `after` unfolded updates, at most one run per room at a
    time on this replica (debounced by `delay`), and one replica at a time (the store's lock)."""

    def __init__(self, store: YjsStore, *, after: int, keep: int, delay: float = 1.0) -> None:
        self._store = store
        self._after = after
        self._keep = keep
        self._delay = delay
        self._pending: dict[str, asyncio.Task[None]] = {}

    def appended(self, code: str, appended: Appended) -> None:
        if appended.unfolded > self._after and code not in self._pending:
            self._pending[code] = asyncio.create_task(self._run(code), name=f"yjs-compact-{code}")

    async def _run(self, code: str) -> None:
        try:
            await asyncio.sleep(self._delay)
            done = await self._store.compact(code, keep=self._keep)
            if done is not None:
                logger.info(
                    "room %s: compacted %d updates in %.3fs (snapshot %d bytes, covers 1..%d)",
                    code,
                    done.updates,
                    done.seconds,
                    done.snapshot_bytes,
                    done.folded,
                )
        except RelayError as error:
            logger.warning("room %s: compaction skipped: %s", code, error.message)
        except Exception:
            logger.exception("room %s: compaction failed; the next update retries", code)
        finally:
            self._pending.pop(code, None)

    async def aclose(self) -> None:
        tasks = list(self._pending.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
