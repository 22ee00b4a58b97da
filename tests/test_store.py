"""In-process: the room store's Lua scripts (relay/lua/) on fakeredis, against protocol.py's formats.

The scripts never spell the envelope out; these tests prove that what they publish and keep is exactly
what protocol.py builds, and that history written before stream entries recorded their kind still reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import fakeredis
import orjson

from relay.auth import Identity
from relay.config import Settings
from relay.keys import RoomKeys
from relay.protocol import (
    KIND_CLOSE,
    KIND_CONNECTION_GONE,
    KIND_EVENT,
    NO_ORIGIN,
    CursorUpdate,
    EditorUpdate,
    Envelope,
    member_left_frame,
    parse_client_frame,
)
from relay.rooms import Resume, Rooms

ALICE = Identity("alice", "Alice", None, is_interviewer=True, expires_at=2e9)
BOB = Identity("bob/1", 'Bob "B"', None, is_interviewer=False, expires_at=2e9)


def run(scenario: Callable[[fakeredis.FakeAsyncRedis, Rooms], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        rooms = Rooms(redis, Settings.from_environ({"RELAY_DEV_MODE": "true"}))
        try:
            return await scenario(redis, rooms)
        finally:
            await rooms.aclose()
            await redis.aclose()

    return asyncio.run(main())


async def published(redis: fakeredis.FakeAsyncRedis, channel: str, count: int) -> list[bytes]:
    """The next `count` messages on `channel` (subscribe before causing them)."""
    pubsub = redis.pubsub()
    await pubsub.subscribe(channel)
    out: list[bytes] = []
    try:
        async with asyncio.timeout(5):
            while len(out) < count:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is not None:
                    out.append(message["data"])
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
    return out


def test_scripts_publish_and_keep_what_protocol_builds() -> None:
    async def scenario(redis: fakeredis.FakeAsyncRedis, rooms: Rooms) -> None:
        room = await rooms.create(ALICE)
        await rooms.join(room.code, BOB)
        channel = RoomKeys.of(room.code).channel
        listener = asyncio.create_task(published(redis, channel, 2))
        await asyncio.sleep(0.05)
        edit = parse_client_frame(
            '{"type":"editor_update","content":"a|b\\u00e9","client_msg_id":"m-1","cursor_position":[1],'
            '"user_id":"mallory","user_name":"Mallory"}',
            max_document_bytes=1000,
        )
        assert isinstance(edit, EditorUpdate)
        accepted = await rooms.append_edit(room.code, BOB, edit, "conn1")
        closed_seq = await rooms.close(room.code)
        raw = await listener
        live = [Envelope.unpack(data) for data in raw]

        assert (accepted.seq, accepted.was_duplicate, closed_seq) == (1, False, 2)
        assert [(e.kind, e.origin, e.seq, e.msg_id) for e in live] == [
            (KIND_EVENT, "conn1", 1, "m-1"),
            (KIND_CLOSE, NO_ORIGIN, 2, None),
        ]
        edit_frame = orjson.loads(live[0].frame)
        assert edit_frame == {
            "seq": 1,
            "type": "editor_update",
            "user_id": "bob/1",
            "user_name": 'Bob "B"',
            "content": "a|bé",
            "cursor_position": [1],
            "ts": live[0].ts,
            "client_msg_id": "m-1",
        }
        assert orjson.loads(live[1].frame)["type"] == "room_closed"
        # What the scripts published is byte for byte what Envelope.pack builds from the same fields.
        assert raw == [e.pack() for e in live]

        entries: list[Any] = await redis.xrange(RoomKeys.of(room.code).events)  # type: ignore[assignment]
        assert [fields[b"kind"] for _, fields in entries] == [b"e", b"c"]

        replay = await rooms.events_after(room.code, 0)
        assert replay.resume is Resume.REPLAYED
        assert [(e.kind, e.seq, e.frame) for e in replay.events] == [(e.kind, e.seq, e.frame) for e in live]
        assert (await rooms.events_after(room.code, 5)).resume is Resume.AHEAD

    run(scenario)


def test_history_written_before_entries_had_a_kind_still_reads() -> None:
    async def scenario(redis: fakeredis.FakeAsyncRedis, rooms: Rooms) -> None:
        room = await rooms.create(ALICE)
        keys = RoomKeys.of(room.code)
        # What the previous release wrote: no `kind` field.
        edit = b'{"seq":1,"type":"editor_update","user_id":"alice","content":"x","ts":1}'
        close = b'{"seq":2,"type":"room_closed","room_code":"%s","ts":2}' % room.code.encode()
        for seq, frame in ((1, edit), (2, close)):
            await redis.xadd(keys.events, {"seq": seq, "origin": "-", "msg": "", "frame": frame})
        await redis.hset(keys.room, "seq", 2)

        replay = await rooms.events_after(room.code, 0)
        assert [(e.kind, e.seq, e.frame) for e in replay.events] == [
            (KIND_EVENT, 1, edit),
            (KIND_CLOSE, 2, close),
        ]

    run(scenario)


def test_a_swept_presence_entry_publishes_protocols_member_left() -> None:
    async def scenario(redis: fakeredis.FakeAsyncRedis, rooms: Rooms) -> None:
        room = await rooms.create(ALICE)
        await rooms.join(room.code, BOB)
        keys = RoomKeys.of(room.code)
        # A dead replica's entry: it expired long ago and nobody refreshes it.
        await redis.zadd(keys.presence, {"bob/1\tdeadconn": 1})
        listener = asyncio.create_task(published(redis, keys.channel, 2))
        await asyncio.sleep(0.05)
        await rooms.presence_add(room.code, ALICE, "interviewer", "liveconn")
        envelopes = [Envelope.unpack(data) for data in await listener]
        left = next(e for e in envelopes if e.kind == KIND_EVENT)
        assert (left.kind, left.origin, left.seq, left.msg_id) == (KIND_EVENT, NO_ORIGIN, 0, None)
        assert orjson.loads(left.frame) == orjson.loads(member_left_frame("bob/1", left.ts))
        # ...and the dead connection itself, so Yjs sockets clear the awareness it had published
        gone = next(e for e in envelopes if e.kind == KIND_CONNECTION_GONE)
        assert (gone.origin, gone.seq, gone.frame) == ("deadconn", 0, b"")

    run(scenario)


def test_every_key_the_hot_path_writes_expires() -> None:
    """A room whose first cursor or edit creates the cursors, acks and events keys: each of them gets a
    TTL at once (before, a room's first cursor_update left a cursors hash that never expired), and an
    edit does not rewrite every key's TTL while the room's is fresh."""

    async def scenario(redis: fakeredis.FakeAsyncRedis, rooms: Rooms) -> None:
        room = await rooms.create(ALICE)
        await rooms.join(room.code, BOB)
        keys = RoomKeys.of(room.code)
        cursor = parse_client_frame('{"type":"cursor_update","cursor_position":[3]}', max_document_bytes=100)
        assert isinstance(cursor, CursorUpdate)
        await rooms.queue_cursor(room.code, BOB, cursor, "conn1")
        assert 0 < await redis.ttl(keys.cursors) <= 24 * 3600
        await redis.expire(keys.members, 1000)  # fresh room TTL: an edit leaves other keys' TTLs alone
        edit = parse_client_frame(
            '{"type":"editor_update","content":"x","client_msg_id":"m1"}', max_document_bytes=100
        )
        assert isinstance(edit, EditorUpdate)
        await rooms.append_edit(room.code, BOB, edit, "conn1")
        for key in (keys.room, keys.cursors, keys.acks, keys.events):
            assert 0 < await redis.ttl(key) <= 24 * 3600, key
        assert await redis.ttl(keys.members) <= 1000
        await redis.expire(keys.room, 100)  # the room's TTL fell: the next edit refreshes every key
        await rooms.append_edit(room.code, BOB, parse_edit("m2"), "conn1")
        assert await redis.ttl(keys.members) > 1000

    def parse_edit(msg_id: str) -> EditorUpdate:
        frame = parse_client_frame(
            f'{{"type":"editor_update","content":"y","client_msg_id":"{msg_id}"}}', max_document_bytes=100
        )
        assert isinstance(frame, EditorUpdate)
        return frame

    run(scenario)
