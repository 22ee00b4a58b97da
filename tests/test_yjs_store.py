"""The room's Yjs document in a real redis-server: append, fold-on-read, seeding, compaction and its lock."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from relay.auth import Identity
from relay.config import Settings
from relay.rooms import Rooms
from relay.yjs_doc import RoomDoc, TextEdit
from relay.yjs_store import YjsKeys, YjsStore
from tests.support import RedisServer

ANN = Identity("ann", "Ann", None, True, 2**40)


def _run(
    redis_server: RedisServer, scenario: Callable[[YjsStore, Rooms, aioredis.Redis], Awaitable[Any]]
) -> Any:
    async def main() -> Any:
        client = aioredis.Redis.from_url(redis_server.url)
        # Compaction only when a test asks for it (not the automatic one, debounced by a second).
        settings = Settings(redis_url=redis_server.url, dev_mode=True, yjs_compact_after=10**9)
        rooms = Rooms(client, settings)
        store = YjsStore(client, rooms, settings)
        try:
            return await scenario(store, rooms, client)
        finally:
            await store.aclose()
            await rooms.aclose()
            await client.aclose()

    return asyncio.run(main())


def _keystrokes(count: int, seed: int = 1) -> tuple[list[bytes], str]:
    writer = RoomDoc()
    rng = random.Random(seed)
    updates = []
    for n in range(count):
        text = writer.content()
        updates.append(
            writer.apply_text_edits([TextEdit(rng.randint(0, len(text)), 0, chr(97 + n % 26))], text)
        )
    return updates, writer.content()


def test_appended_updates_fold_back_in_order_with_numbers(redis_server: RedisServer) -> None:
    """Each append gets the next number; a read folds snapshot + tail (longer than one chunk) into the text."""

    async def scenario(store: YjsStore, rooms: Rooms, client: aioredis.Redis) -> None:
        room = await rooms.create(ANN)
        updates, text = _keystrokes(2500)
        seqs = [(await store.append(room.code, ANN, update, "c1")).seq for update in updates]
        assert seqs == list(range(1, 2501))
        loaded = await store.load(room.code)
        assert loaded.seq == 2500 and loaded.doc.content() == text
        assert await store.updates_after(room.code, 2497, 2500) == [
            (n, updates[n - 1]) for n in (2498, 2499, 2500)
        ]

    _run(redis_server, scenario)


def test_a_room_with_text_from_before_yjs_is_seeded_once(redis_server: RedisServer) -> None:
    """A room whose document keys are missing starts its Yjs document from its text, exactly once."""

    async def scenario(store: YjsStore, rooms: Rooms, client: aioredis.Redis) -> None:
        room = await rooms.create(ANN)
        await client.hset(YjsKeys.of(room.code).room, "content", "print('hi')\n")
        first, second = await asyncio.gather(store.load(room.code), store.load(room.code))
        assert first.doc.content() == second.doc.content() == "print('hi')\n"
        assert (await store.load(room.code)).doc.content() == "print('hi')\n"

    _run(redis_server, scenario)


def test_compaction_folds_trims_exactly_and_keeps_the_newest(redis_server: RedisServer) -> None:
    """Compaction folds all but `keep` updates, trims only folded entries, and the text is unchanged."""

    async def scenario(store: YjsStore, rooms: Rooms, client: aioredis.Redis) -> None:
        room = await rooms.create(ANN)
        keys = YjsKeys.of(room.code)
        updates, text = _keystrokes(1200, seed=2)
        for update in updates:
            await store.append(room.code, ANN, update, "c1")
        done = await store.compact(room.code, keep=100)
        assert done is not None and done.folded == 1100 and done.updates == 1100
        assert await client.xlen(keys.updates) == 100
        first: Any = await client.xrange(keys.updates, count=1)
        assert first[0][0] == b"1101-0"
        assert (await store.load(room.code)).doc.content() == text
        assert await store.updates_after(room.code, 1000, 1200) is None  # folded: the caller resyncs
        assert await store.compact(room.code, keep=100) is None  # nothing new to fold
        assert (await store.append(room.code, ANN, updates[0], "c1")).unfolded == 101

    _run(redis_server, scenario)


def test_one_compactor_at_a_time(redis_server: RedisServer) -> None:
    """While a replica holds a room's lock, another's compaction does nothing; a stale lock holder's write is refused."""

    async def scenario(store: YjsStore, rooms: Rooms, client: aioredis.Redis) -> None:
        room = await rooms.create(ANN)
        keys = YjsKeys.of(room.code)
        updates, text = _keystrokes(300, seed=4)
        for update in updates:
            await store.append(room.code, ANN, update, "c1")
        await client.set(keys.lock, "someone-else", px=60_000)
        assert await store.compact(room.code) is None
        assert await client.get(keys.lock) == b"someone-else"
        await client.delete(keys.lock)
        results = await asyncio.gather(*(store.compact(room.code) for _ in range(4)))
        assert sum(r is not None for r in results) == 1
        assert (await store.load(room.code)).doc.content() == text
        assert await client.get(keys.lock) is None

    _run(redis_server, scenario)


def test_appends_during_compaction_are_kept(redis_server: RedisServer) -> None:
    """Updates appended while a compaction folds stay in the stream and in the document."""

    async def scenario(store: YjsStore, rooms: Rooms, client: aioredis.Redis) -> None:
        room = await rooms.create(ANN)
        updates, text = _keystrokes(3000, seed=5)
        for update in updates[:2000]:
            await store.append(room.code, ANN, update, "c1")

        async def typing() -> None:
            for update in updates[2000:]:
                await store.append(room.code, ANN, update, "c1")

        compaction, _ = await asyncio.gather(store.compact(room.code), typing())
        assert compaction is not None and compaction.folded >= 2000
        loaded = await store.load(room.code)
        assert loaded.seq == 3000 and loaded.doc.content() == text

    _run(redis_server, scenario)


def test_the_text_brought_forward_from_an_earlier_fold_matches_a_fresh_fold(
    redis_server: RedisServer,
) -> None:
    """update_text from the mirror's kept fold applies only the updates after it (longer than a chunk
    too), stores the same text a fresh fold gives, and falls back to a fresh fold when compaction trimmed
    updates the kept fold lacks."""

    async def scenario(store: YjsStore, rooms: Rooms, client: aioredis.Redis) -> None:
        room = await rooms.create(ANN)
        code, keys = room.code, YjsKeys.of(room.code)
        updates, text = _keystrokes(2600, seed=3)
        for update in updates[:100]:
            await store.append(code, ANN, update, "c1")
        folded = await store.update_text(code)
        assert folded.seq == 100
        for update in updates[100:1400]:  # more than one READ_CHUNK after the kept fold
            await store.append(code, ANN, update, "c1")
        kept_doc = folded.doc
        folded = await store.update_text(code, folded)
        assert folded.doc is kept_doc and folded.seq == 1400 and folded.author == ("ann", "Ann")
        assert folded.doc.content() == (await store.load(code)).doc.content()
        assert _text_of(await client.hget(keys.room, "content")) == folded.doc.content()

        for update in updates[1400:]:
            await store.append(code, ANN, update, "c1")
        assert await store.compact(code, keep=10) is not None  # trims 1401..2590, which the fold lacks
        fresh = await store.update_text(code, folded)
        assert fresh.doc is not kept_doc and fresh.seq == 2600 and fresh.doc.content() == text
        assert _text_of(await client.hget(keys.room, "content")) == text

    _run(redis_server, scenario)


def _text_of(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
