"""Rooms in Redis: codes, members, the document, cursors, presence and the event history.

Every key of a room carries the code in a hash tag, so one room lives in one Redis Cluster slot:

    relay:{CODE}:room       hash    status, created_at, created_by, seq, content, title, language, ...
    relay:{CODE}:members    hash    user_id -> {"role", "name", "joined_at"} (JSON)
    relay:{CODE}:cursors    hash    user_id -> latest cursor_position (JSON)
    relay:{CODE}:presence   zset    "user_id<TAB>connection_id" scored by expiry (ms since epoch)
    relay:{CODE}:events     stream  recent durable events: seq, origin, msg, frame
    relay:{CODE}:acks       hash    user_id -> "<client_msg_id> <seq>" of the user's last accepted edit
    relay:{CODE}:removed    set     user_ids an interviewer removed: they cannot join again
    relay:{CODE}:pubsub     channel envelopes (see protocol.py) for every replica with sockets in the room

Each change is one Lua script: it checks the room, writes, appends to the stream, PUBLISHes and
refreshes every key's TTL in one atomic step. Publishing from the script that assigns the sequence
number is what makes the channel's order the sequence order on every replica.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from typing import Any, Final

import orjson
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from relay.auth import Identity
from relay.config import Settings
from relay.errors import (
    BadRequest,
    MemberNotFound,
    MemberRemoved,
    NotMember,
    RateLimited,
    RoomClosed,
    RoomFull,
    RoomNotFound,
    Unavailable,
)
from relay.pipeline import ScriptPipeline
from relay.protocol import (
    KIND_CLOSE,
    KIND_EVENT,
    KIND_REMOVE,
    NO_ORIGIN,
    CursorUpdate,
    EditorUpdate,
    Envelope,
    encode,
    frame_tail,
    now_ms,
)
from relay.redis_errors import redis_unavailable_is_503

logger = logging.getLogger("relay.rooms")

# No 0/O, 1/I/L: a code read aloud over a call or copied by eye must not be ambiguous.
CODE_ALPHABET: Final = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH: Final = 6
CODE_PATTERN: Final = re.compile(f"[{CODE_ALPHABET}]{{{CODE_LENGTH}}}")
# 31**6 ~ 887 million codes; a collision needs another try only when the space is nearly full.
CREATE_ATTEMPTS: Final = 16

INTERVIEWER: Final = "interviewer"
CANDIDATE: Final = "candidate"


def normalize_code(raw: object) -> str:
    """The canonical room code, or BadRequest. Runs before any Redis access: user input never picks a key."""
    if not isinstance(raw, str):
        raise BadRequest("room_code must be a string of 6 characters")
    # ASCII first: str.upper() maps some other letters onto ASCII (long s U+017F -> "S", "ß" -> "SS").
    code = raw.strip().upper() if raw.isascii() else ""
    if not CODE_PATTERN.fullmatch(code):
        raise BadRequest(
            f"room_code must be {CODE_LENGTH} characters from {CODE_ALPHABET} (no 0, O, 1, I or L)"
        )
    return code


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


@dataclass(frozen=True, slots=True)
class RoomKeys:
    room: str
    members: str
    cursors: str
    presence: str
    events: str
    acks: str
    removed: str
    channel: str

    @classmethod
    def of(cls, code: str) -> RoomKeys:
        prefix = f"relay:{{{code}}}"
        return cls(
            room=f"{prefix}:room",
            members=f"{prefix}:members",
            cursors=f"{prefix}:cursors",
            presence=f"{prefix}:presence",
            events=f"{prefix}:events",
            acks=f"{prefix}:acks",
            removed=f"{prefix}:removed",
            channel=f"{prefix}:pubsub",
        )

    @property
    def all(self) -> list[str]:
        """The keys every script receives, in the order the Lua below names them (KEYS[1..7])."""
        return [self.room, self.members, self.cursors, self.presence, self.events, self.acks, self.removed]


def code_of_channel(channel: bytes | str) -> str:
    text = channel.decode() if isinstance(channel, bytes) else channel
    return text[len("relay:{") : len("relay:{") + CODE_LENGTH]


def channel_pattern() -> str:
    return "relay:{*}:pubsub"


@dataclass(frozen=True, slots=True)
class Member:
    user_id: str
    role: str
    name: str
    joined_at: int

    @classmethod
    def load(cls, user_id: str, raw: bytes | str) -> Member:
        data = orjson.loads(raw)
        return cls(user_id, str(data["role"]), str(data["name"]), int(data["joined_at"]))

    def dump(self) -> bytes:
        return orjson.dumps({"role": self.role, "name": self.name, "joined_at": self.joined_at})

    def as_dict(self, *, connected: bool) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "user_name": self.name,
            "role": self.role,
            "joined_at": self.joined_at,
            "connected": connected,
        }


@dataclass(frozen=True, slots=True)
class RoomInfo:
    code: str
    status: str
    created_at: int
    created_by: str
    seq: int
    title: str
    language: str
    members: list[Member]
    connected: set[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "room_code": self.code,
            "room_status": self.status,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "seq": self.seq,
            "title": self.title,
            "language": self.language,
            "members": [m.as_dict(connected=m.user_id in self.connected) for m in self.members],
        }


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The room as one atomic read: what a connecting socket is sent first."""

    info: RoomInfo
    content: str
    cursors: dict[str, Any]
    # None: no resume asked. "ahead"/"gone": resume impossible. Else the missed events, in order.
    missed: list[Envelope] | str | None


# --- Lua ----------------------------------------------------------------------------------------
# KEYS[1] room, KEYS[2] members, KEYS[3] cursors, KEYS[4] presence, KEYS[5] events, KEYS[6] acks,
# KEYS[7] removed (RoomKeys.all).

_LUA_PRELUDE = r"""
local function touch(ttl)
  for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ttl) end
end
local function user_of(entry)
  return string.match(entry, '^(.*)\t')
end
local function user_present(uid)
  for _, entry in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
    if user_of(entry) == uid then return true end
  end
  return false
end
-- Drop presence entries whose replica stopped refreshing them (it died) and tell the room.
local function sweep(now, channel)
  local expired = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now)
  if #expired == 0 then return end
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  local gone = {}
  for _, entry in ipairs(expired) do gone[user_of(entry)] = true end
  for _, entry in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do gone[user_of(entry)] = nil end
  for uid, _ in pairs(gone) do
    local frame = cjson.encode({type = 'member_left', user_id = uid, ts = tonumber(now)})
    redis.call('PUBLISH', channel, 'e|-|0||' .. now .. '|' .. frame)
  end
end
-- Durable events after `after`, oldest first, as {seq, origin, msg, frame, ...};
-- 'ahead' when the room never reached `after`, 'gone' when history no longer covers the gap.
local function events_after(after)
  local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
  if after > seq then return 'ahead' end
  if after == seq then return {} end
  local wanted = seq - after
  local entries = redis.call('XREVRANGE', KEYS[5], '+', '-', 'COUNT', wanted)
  if #entries < wanted then return 'gone' end
  local out = {}
  for i = #entries, 1, -1 do
    local fields = entries[i][2]
    local row = {}
    for j = 1, #fields, 2 do row[fields[j]] = fields[j + 1] end
    table.insert(out, row['seq']); table.insert(out, row['origin'])
    table.insert(out, row['msg']); table.insert(out, row['frame'])
  end
  if tonumber(out[1]) ~= after + 1 then return 'gone' end
  return out
end
"""

_CREATE = r"""
-- ARGV: user_id, member_json, now_ms, ttl, title, language
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'status', 'open', 'created_at', ARGV[3], 'created_by', ARGV[1],
  'seq', 0, 'content', '', 'title', ARGV[5], 'language', ARGV[6], 'updated_at', ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
touch(ARGV[4])
return 1
"""

_JOIN = r"""
-- ARGV: user_id, member_json, ttl, max_members
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
if status ~= 'open' then return {'closed'} end
if redis.call('SISMEMBER', KEYS[7], ARGV[1]) == 1 then return {'removed'} end
local existing = redis.call('HGET', KEYS[2], ARGV[1])
if existing then return {'existing', existing} end
if redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[4]) then return {'full'} end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
touch(ARGV[3])
return {'joined', ARGV[2]}
"""

_MEMBER = r"""
-- ARGV: user_id. Status and membership in one read, for the WebSocket handshake.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
if status ~= 'open' then return {'closed'} end
local member = redis.call('HGET', KEYS[2], ARGV[1])
if not member then
  if redis.call('SISMEMBER', KEYS[7], ARGV[1]) == 1 then return {'removed'} end
  return {'not_member'}
end
return {'ok', member}
"""

_EDIT = r"""
-- ARGV: user_id, content, cursor_json|'', frame_tail, origin, msg_id|'', now_ms, ttl, maxlen, minid, channel
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
if status ~= 'open' then return {'closed'} end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return {'not_member'} end
-- A client that did not see its ack resends with the same client_msg_id: answer, don't apply twice.
if ARGV[6] ~= '' then
  local last = redis.call('HGET', KEYS[6], ARGV[1])
  if last then
    local msg, seq = string.match(last, '^(.*) (%d+)$')
    if msg == ARGV[6] then return {'duplicate', tonumber(seq)} end
  end
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('HSET', KEYS[1], 'content', ARGV[2], 'updated_at', ARGV[7])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[3], ARGV[1], ARGV[3]) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[6], ARGV[1], ARGV[6] .. ' ' .. seq) end
local frame = '{"seq":' .. seq .. ',' .. ARGV[4]
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[9], '*',
  'seq', seq, 'origin', ARGV[5], 'msg', ARGV[6], 'frame', frame)
redis.call('XTRIM', KEYS[5], 'MINID', '~', ARGV[10])
local envelope = 'e|' .. ARGV[5] .. '|' .. seq .. '|' .. ARGV[6] .. '|' .. ARGV[7] .. '|' .. frame
redis.call('PUBLISH', ARGV[11], envelope)
touch(ARGV[8])
return {'ok', seq}
"""

_CURSOR = r"""
-- ARGV: user_id, cursor_json, envelope, channel. Volatile: no sequence number, no history.
if redis.call('HGET', KEYS[1], 'status') ~= 'open' then return 0 end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('PUBLISH', ARGV[4], ARGV[3])
return 1
"""

_PRESENCE_ADD = r"""
-- ARGV: entry, expires_ms, now_ms, user_id, channel, joined_envelope, ttl, max_per_user, max_per_room
-- Returns 1 (user arrived), 0 (refreshed / another tab), -1 room not open, -2 too many connections of
-- this user, -3 too many connections in the room, -4 no longer a member.
if redis.call('HGET', KEYS[1], 'status') ~= 'open' then return -1 end
if redis.call('HEXISTS', KEYS[2], ARGV[4]) == 0 then return -4 end
sweep(ARGV[3], ARGV[5])
if not redis.call('ZSCORE', KEYS[4], ARGV[1]) then
  local entries = redis.call('ZRANGE', KEYS[4], 0, -1)
  local mine = 0
  for _, entry in ipairs(entries) do
    if user_of(entry) == ARGV[4] then mine = mine + 1 end
  end
  if mine >= tonumber(ARGV[8]) then return -2 end
  if #entries >= tonumber(ARGV[9]) then return -3 end
end
local was_present = user_present(ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
if not was_present then redis.call('PUBLISH', ARGV[5], ARGV[6]) end
touch(ARGV[7])
if was_present then return 0 end
return 1
"""

_PRESENCE_REFRESH = r"""
-- ARGV: expires_ms, now_ms, channel, entry... Extends this replica's live entries of one room in one
-- call and sweeps the dead ones (a dead replica's); returns the entries that had expired meanwhile.
if redis.call('HGET', KEYS[1], 'status') ~= 'open' then return {} end
local missing = {}
for i = 4, #ARGV do
  if redis.call('ZSCORE', KEYS[4], ARGV[i]) then
    redis.call('ZADD', KEYS[4], 'XX', ARGV[1], ARGV[i])
  else
    table.insert(missing, ARGV[i])
  end
end
sweep(ARGV[2], ARGV[3])
return missing
"""

_REMOVE_MEMBER = r"""
-- ARGV: user_id, removed_envelope, channel, ttl. The user's sockets are told and closed by their replicas.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status ~= 'open' then return 'closed' end
if redis.call('HDEL', KEYS[2], ARGV[1]) == 0 then return 'not_found' end
redis.call('SADD', KEYS[7], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[6], ARGV[1])
for _, entry in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
  if user_of(entry) == ARGV[1] then redis.call('ZREM', KEYS[4], entry) end
end
redis.call('PUBLISH', ARGV[3], ARGV[2])
touch(ARGV[4])
return 'ok'
"""

_PRESENCE_REMOVE = r"""
-- ARGV: entry, now_ms, user_id, channel, left_envelope
local removed = redis.call('ZREM', KEYS[4], ARGV[1])
sweep(ARGV[2], ARGV[4])
if removed == 1 and not user_present(ARGV[3]) then
  redis.call('PUBLISH', ARGV[4], ARGV[5])
  redis.call('HDEL', KEYS[3], ARGV[3])
  return 1
end
return 0
"""

_CLOSE = r"""
-- ARGV: now_ms, frame_tail, channel, closed_ttl, maxlen
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
if status ~= 'open' then return {'closed'} end
redis.call('HSET', KEYS[1], 'status', 'closed', 'closed_at', ARGV[1], 'updated_at', ARGV[1])
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local frame = '{"seq":' .. seq .. ',' .. ARGV[2]
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[5], '*', 'seq', seq, 'origin', '-', 'msg', '', 'frame', frame)
redis.call('PUBLISH', ARGV[3], 'c|-|' .. seq .. '||' .. ARGV[1] .. '|' .. frame)
redis.call('DEL', KEYS[3], KEYS[4], KEYS[6], KEYS[7])
touch(ARGV[4])
return {'ok', seq}
"""

_SNAPSHOT = r"""
-- ARGV: now_ms, after_seq|''. One atomic read of everything a connecting socket needs.
local room = redis.call('HGETALL', KEYS[1])
if #room == 0 then return {'missing'} end
local missed = 'none'
if ARGV[2] ~= '' then missed = events_after(tonumber(ARGV[2])) end
if type(missed) == 'string' then missed = {missed} else table.insert(missed, 1, 'events') end
return {'ok', room, redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3]),
  redis.call('ZRANGEBYSCORE', KEYS[4], '(' .. ARGV[1], '+inf'), missed}
"""

_EVENTS_AFTER = r"""
-- ARGV: after_seq
local missed = events_after(tonumber(ARGV[1]))
if type(missed) == 'string' then return {missed} end
table.insert(missed, 1, 'events')
return missed
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _pairs(flat: list[Any]) -> dict[str, bytes]:
    return {_text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}


_CLOSED_FRAME_PREFIX = re.compile(rb'\{"seq":\d+,"type":"room_closed"')


def _envelopes(flat: list[Any]) -> list[Envelope]:
    """History rows (seq, origin, msg, frame) as envelopes; only room_closed is not a plain event."""
    return [
        Envelope(
            kind=KIND_CLOSE if _CLOSED_FRAME_PREFIX.match(flat[i + 3]) else KIND_EVENT,
            origin=_text(flat[i + 1]),
            seq=int(flat[i]),
            msg_id=_text(flat[i + 2]) or None,
            ts=0,  # replayed from history: not a live delivery, no latency to measure
            frame=flat[i + 3],
        )
        for i in range(0, len(flat), 4)
    ]


class Rooms:
    """The room store. Methods raise RelayError subclasses that the HTTP and WebSocket layers map."""

    def __init__(self, redis_client: aioredis.Redis, settings: Settings) -> None:
        self._redis = redis_client
        self._settings = settings

        self._pipeline = ScriptPipeline(redis_client)

        def script(body: str) -> AsyncScript:
            return redis_client.register_script(_LUA_PRELUDE + body)

        self._create = script(_CREATE)
        self._join = script(_JOIN)
        self._member = script(_MEMBER)
        self._edit = script(_EDIT)
        self._cursor = script(_CURSOR)
        self._presence_add = script(_PRESENCE_ADD)
        self._presence_remove = script(_PRESENCE_REMOVE)
        self._remove_member = script(_REMOVE_MEMBER)
        self._presence_refresh = script(_PRESENCE_REFRESH)
        self._close = script(_CLOSE)
        self._snapshot = script(_SNAPSHOT)
        self._events_after = script(_EVENTS_AFTER)

    # --- REST ------------------------------------------------------------------------------------

    @redis_unavailable_is_503
    async def create(self, identity: Identity, *, title: str = "", language: str = "") -> RoomInfo:
        now = now_ms()
        member = Member(identity.user_id, INTERVIEWER, identity.user_name, now)
        for _ in range(CREATE_ATTEMPTS):
            code = new_code()
            created = await self._run(
                self._create,
                keys=RoomKeys.of(code).all,
                args=[identity.user_id, member.dump(), now, self._settings.room_ttl, title, language],
            )
            if created:
                return RoomInfo(code, "open", now, identity.user_id, 0, title, language, [member], set())
        raise Unavailable("could not find a free room code; retry")

    @redis_unavailable_is_503
    async def join(self, code: str, identity: Identity) -> tuple[Member, bool]:
        """The caller's membership and whether it is new. Joining twice keeps the first role."""
        role = INTERVIEWER if identity.is_interviewer else CANDIDATE
        member = Member(identity.user_id, role, identity.user_name, now_ms())
        result = await self._run(
            self._join,
            keys=RoomKeys.of(code).all,
            args=[identity.user_id, member.dump(), self._settings.room_ttl, self._settings.max_members],
        )
        outcome = _text(result[0])
        self._raise_for(outcome, code)
        return Member.load(identity.user_id, result[1]), outcome == "joined"

    @redis_unavailable_is_503
    async def member(self, code: str, user_id: str) -> Member:
        """The user's membership of an open room, or the reason there is none."""
        result = await self._run(self._member, keys=RoomKeys.of(code).all, args=[user_id])
        self._raise_for(_text(result[0]), code)
        return Member.load(user_id, result[1])

    @redis_unavailable_is_503
    async def info(self, code: str) -> RoomInfo:
        snapshot = await self._read_snapshot(code, None)
        return snapshot.info

    @redis_unavailable_is_503
    async def close(self, code: str) -> int:
        tail = frame_tail(
            {"type": "room_closed", "room_code": code, "reason": "closed by the interviewer", "ts": now_ms()}
        )
        result = await self._run(
            self._close,
            keys=RoomKeys.of(code).all,
            args=[
                now_ms(),
                tail,
                RoomKeys.of(code).channel,
                self._settings.closed_room_ttl,
                self._settings.history_max_events,
            ],
        )
        outcome = _text(result[0])
        if outcome == "closed":
            raise RoomClosed(f"room {code} is already closed")
        self._raise_for(outcome, code)
        return int(result[1])

    # --- events ----------------------------------------------------------------------------------

    @redis_unavailable_is_503
    async def append_edit(
        self, code: str, identity: Identity, edit: EditorUpdate, origin: str
    ) -> tuple[int, bool]:
        """Sequence, store and publish one editor_update: (its seq, whether it was a resent duplicate)."""
        now = now_ms()
        tail = frame_tail(
            {
                "type": "editor_update",
                "user_id": identity.user_id,
                "user_name": identity.user_name,
                "content": edit.content,
                "cursor_position": edit.cursor_position,
                "ts": now,
                # Lets a client that resumes recognise its own accepted edits among the replayed ones.
                **({"client_msg_id": edit.client_msg_id} if edit.client_msg_id is not None else {}),
            }
        )
        keys = RoomKeys.of(code)
        result = await self._run(
            self._edit,
            keys=keys.all,
            args=[
                identity.user_id,
                edit.content,
                edit.cursor_json,
                tail,
                origin,
                edit.client_msg_id or "",
                now,
                self._settings.room_ttl,
                self._settings.history_max_events,
                now - self._settings.history_max_age * 1000,
                keys.channel,
            ],
        )
        outcome = _text(result[0])
        self._raise_for(outcome, code)
        return int(result[1]), outcome == "duplicate"

    @redis_unavailable_is_503
    async def publish_cursor(self, code: str, identity: Identity, cursor: CursorUpdate, origin: str) -> None:
        frame = encode(
            {
                "type": "cursor_update",
                "user_id": identity.user_id,
                "user_name": identity.user_name,
                "cursor_position": cursor.cursor_position,
                "ts": now_ms(),
            }
        )
        keys = RoomKeys.of(code)
        envelope = Envelope(KIND_EVENT, origin, 0, None, now_ms(), frame).pack()
        await self._run(
            self._cursor,
            keys=keys.all,
            args=[identity.user_id, cursor.cursor_json, envelope, keys.channel],
        )

    @redis_unavailable_is_503
    async def presence_add(self, code: str, identity: Identity, role: str, connection_id: str) -> bool:
        """Mark a connection present (until refreshed again); True when the user just arrived.

        Raises when the connection may not be there: room closed, member removed, or a limit reached.
        """
        now = now_ms()
        keys = RoomKeys.of(code)
        joined = encode(
            {
                "type": "member_joined",
                "user_id": identity.user_id,
                "user_name": identity.user_name,
                "role": role,
                "ts": now,
            }
        )
        result = await self._run(
            self._presence_add,
            keys=keys.all,
            args=[
                f"{identity.user_id}\t{connection_id}",
                now + self._settings.presence_ttl * 1000,
                now,
                identity.user_id,
                keys.channel,
                Envelope(KIND_EVENT, connection_id, 0, None, now, joined).pack(),
                self._settings.room_ttl,
                self._settings.max_connections_per_user,
                self._settings.max_connections_per_room,
            ],
        )
        outcome = int(result)
        if outcome == -1:
            raise RoomClosed(f"room {code} has been closed by its interviewer")
        if outcome == -2:
            raise RateLimited(
                f"you already have {self._settings.max_connections_per_user} connections to room {code}; "
                "close a tab"
            )
        if outcome == -3:
            limit = self._settings.max_connections_per_room
            raise RateLimited(f"room {code} already has {limit} connections")
        if outcome == -4:
            raise NotMember(f"you are no longer a member of room {code}")
        return outcome == 1

    @redis_unavailable_is_503
    async def presence_refresh(self, code: str, entries: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Extend the presence of (user_id, connection_id) entries; returns those that had expired."""
        now = now_ms()
        keys = RoomKeys.of(code)
        missing = await self._run(
            self._presence_refresh,
            keys=keys.all,
            args=[
                now + self._settings.presence_ttl * 1000,
                now,
                keys.channel,
                *(f"{user_id}\t{connection_id}" for user_id, connection_id in entries),
            ],
        )
        gone = [_text(entry).rpartition("\t") for entry in missing]
        return [(user_id, connection_id) for user_id, _, connection_id in gone]

    @redis_unavailable_is_503
    async def remove_member(self, code: str, user_id: str) -> None:
        """Remove a member for good: their sockets on every replica are closed, and they cannot rejoin."""
        keys = RoomKeys.of(code)
        frame = encode({"type": "member_removed", "user_id": user_id, "ts": now_ms()})
        outcome = _text(
            await self._run(
                self._remove_member,
                keys=keys.all,
                args=[
                    user_id,
                    Envelope(KIND_REMOVE, NO_ORIGIN, 0, None, now_ms(), frame).pack(),
                    keys.channel,
                    self._settings.room_ttl,
                ],
            )
        )
        if outcome == "not_found":
            raise MemberNotFound(f"{user_id[:64]!r} is not a member of room {code}")
        self._raise_for(outcome, code)

    @redis_unavailable_is_503
    async def presence_remove(self, code: str, user_id: str, connection_id: str) -> None:
        now = now_ms()
        keys = RoomKeys.of(code)
        left = encode({"type": "member_left", "user_id": user_id, "ts": now})
        await self._run(
            self._presence_remove,
            keys=keys.all,
            args=[
                f"{user_id}\t{connection_id}",
                now,
                user_id,
                keys.channel,
                Envelope(KIND_EVENT, connection_id, 0, None, now, left).pack(),
            ],
        )

    @redis_unavailable_is_503
    async def snapshot(self, code: str, after_seq: int | None) -> Snapshot:
        return await self._read_snapshot(code, after_seq)

    @redis_unavailable_is_503
    async def events_after(self, code: str, after_seq: int) -> list[Envelope] | str:
        """Durable events after `after_seq`, or "ahead" / "gone" when history cannot answer."""
        result = await self._run(self._events_after, keys=RoomKeys.of(code).all, args=[after_seq])
        head = _text(result[0])
        return _envelopes(result[1:]) if head == "events" else head

    @redis_unavailable_is_503
    async def ping(self) -> None:
        await self._redis.ping()

    async def aclose(self) -> None:
        await self._pipeline.aclose()

    # --- helpers ---------------------------------------------------------------------------------

    async def _run(self, script: AsyncScript, *, keys: list[str], args: list[Any]) -> Any:
        return await self._pipeline.call(script, keys, args)

    async def _read_snapshot(self, code: str, after_seq: int | None) -> Snapshot:
        now = now_ms()
        result = await self._run(
            self._snapshot, keys=RoomKeys.of(code).all, args=[now, "" if after_seq is None else after_seq]
        )
        self._raise_for(_text(result[0]), code)
        room = _pairs(result[1])
        members = sorted(
            (Member.load(uid, raw) for uid, raw in _pairs(result[2]).items()),
            key=lambda m: (m.joined_at, m.user_id),
        )
        cursors = {uid: orjson.loads(raw) for uid, raw in _pairs(result[3]).items()}
        connected = {_text(entry).rpartition("\t")[0] for entry in result[4]}
        missed_raw = result[5]
        head = _text(missed_raw[0])
        missed: list[Envelope] | str | None
        if head == "none":
            missed = None
        elif head == "events":
            missed = _envelopes(missed_raw[1:])
        else:
            missed = head
        info = RoomInfo(
            code=code,
            status=_text(room.get("status", b"open")),
            created_at=int(room.get("created_at", 0)),
            created_by=_text(room.get("created_by", b"")),
            seq=int(room.get("seq", 0)),
            title=_text(room.get("title", b"")),
            language=_text(room.get("language", b"")),
            members=members,
            connected=connected,
        )
        return Snapshot(info, _text(room.get("content", b"")), cursors, missed)

    @staticmethod
    def _raise_for(outcome: str, code: str) -> None:
        if outcome == "missing":
            raise RoomNotFound(f"no room {code}: check the code, or the room may have expired")
        if outcome == "closed":
            raise RoomClosed(f"room {code} has been closed by its interviewer")
        if outcome == "not_member":
            raise NotMember(f"you are not a member of room {code}: join it first (POST /api/join-room)")
        if outcome == "removed":
            raise MemberRemoved(f"an interviewer removed you from room {code}")
        if outcome == "full":
            raise RoomFull(f"room {code} is full: it has the most members allowed (RELAY_MAX_MEMBERS)")
