"""Rooms in Redis: members, the document, cursors, presence and the event history.

Key names are in keys.py. Each change is one Lua script (relay/lua/*.lua): it checks the room, writes,
appends to the stream, PUBLISHes and refreshes every key's TTL in one atomic step. Publishing from the
script that assigns the sequence number is what makes the channel's order the sequence order on every
replica.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

import orjson
import redis.asyncio as aioredis
import redis.exceptions
from redis.commands.core import AsyncScript

from relay.auth import Identity
from relay.config import Settings
from relay.errors import (
    CandidateTaken,
    Forbidden,
    MemberNotFound,
    MemberRemoved,
    NotMember,
    RateLimited,
    RoomClosed,
    RoomFull,
    RoomNotFound,
    Unavailable,
)
from relay.keys import RoomKeys, new_code
from relay.pipeline import ScriptPipeline
from relay.protocol import (
    KIND_CLOSE,
    KIND_EVENT,
    KIND_REMOVE,
    NO_ORIGIN,
    CursorUpdate,
    EditorUpdate,
    Envelope,
    MonitoringFrame,
    cursor_update_frame,
    editor_update_event,
    member_joined_frame,
    member_left_frame,
    member_removed_frame,
    monitoring_event,
    now_ms,
    room_closed_event,
    sweep_templates,
    yjs_update_parts,
)
from relay.redis_errors import redis_unavailable_is_503

if TYPE_CHECKING:
    from relay.cluster import ShardedScripts

logger = logging.getLogger("relay.rooms")

# 31**6 ~ 887 million codes; a collision needs another try only when the space is nearly full.
CREATE_ATTEMPTS: Final = 16

INTERVIEWER: Final = "interviewer"
CANDIDATE: Final = "candidate"


@dataclass(frozen=True, slots=True)
class Member:
    user_id: str
    role: str
    name: str
    joined_at: int
    # From the member's token; shown only to the room's members (in the compatibility fields).
    email: str | None = None

    @classmethod
    def load(cls, user_id: str, raw: bytes | str) -> Member:
        data = orjson.loads(raw)
        email = data.get("email")
        return cls(
            user_id,
            str(data["role"]),
            str(data["name"]),
            int(data["joined_at"]),
            email if isinstance(email, str) else None,
        )

    def dump(self) -> bytes:
        data: dict[str, Any] = {"role": self.role, "name": self.name, "joined_at": self.joined_at}
        if self.email is not None:
            data["email"] = self.email
        return orjson.dumps(data)

    def person(self) -> dict[str, Any]:
        """The old backend's shape of a participant: `{id, name, email}`."""
        return {"id": self.user_id, "name": self.name, "email": self.email}

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

    # --- the old backend's shape, for the frontend written against it (additions to relay's fields) ---

    @property
    def interviewer(self) -> dict[str, Any]:
        """The creator while a member, else the longest-standing interviewer (never None: the old
        frontend renders `interviewer.name` without a guard)."""
        interviewers = [m for m in self.members if m.role == INTERVIEWER]
        creator = next((m for m in interviewers if m.user_id == self.created_by), None)
        chosen = creator or (interviewers[0] if interviewers else None)
        if chosen is None:
            return {"id": self.created_by, "name": "", "email": None}
        return chosen.person()

    @property
    def candidate(self) -> dict[str, Any] | None:
        """The first candidate to join, or None (the old backend had at most one)."""
        return next((m.person() for m in self.members if m.role == CANDIDATE), None)

    @property
    def legacy_status(self) -> str:
        """`room_status` mapped onto the old backend's room states."""
        if self.status != "open":
            return "closed"
        return "active" if self.candidate is not None else "waiting_for_candidate"


class Resume(enum.Enum):
    """What the history can say about the events after a client's last_seq."""

    NOT_ASKED = "none"  # no last_seq: the client wants the whole document
    REPLAYED = "events"  # the missed events, in order (maybe none)
    AHEAD = "ahead"  # the room never reached last_seq: the client's copy is not this room's
    HISTORY_GONE = "gone"  # the history no longer reaches back to last_seq


@dataclass(frozen=True, slots=True)
class Missed:
    """The durable events a socket missed, or why they cannot be replayed."""

    resume: Resume
    events: list[Envelope] = field(default_factory=list)  # empty unless resume is REPLAYED

    @property
    def is_replayable(self) -> bool:
        return self.resume is Resume.REPLAYED


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The room as one atomic read: what a connecting socket is sent first."""

    info: RoomInfo
    content: str
    cursors: dict[str, Any]
    missed: Missed
    # The room's Yjs document has updates `content` does not show yet (yjs_store.YjsStore.snapshot).
    text_behind: bool = False

    def room_info(self) -> dict[str, Any]:
        """The old backend's `room_info` object (room_state frames, join answers)."""
        return {
            "interviewer": self.info.interviewer,
            "candidate": self.info.candidate,
            "status": self.info.legacy_status,
            "editor_content": self.content,
        }


@dataclass(frozen=True, slots=True)
class MonitoringReport:
    """A room's candidate monitoring data, in the old backend's shape plus relay's counts."""

    code: str
    incidents: list[Any]  # focus-loss records, oldest first (the newest RELAY_MONITORING_MAX_RECORDS)
    suspicious: list[Any]  # suspicious key-press records, oldest first (idem)
    focus_lost: int  # every focus loss, kept or not
    keystrokes: int  # every key press reported, suspicious or not (ordinary ones are only counted)
    suspicious_keystrokes: int
    max_records: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "room_code": self.code,
            "monitoring_incidents": self.incidents,
            "keystroke_logs": self.suspicious,
            "total_incidents": self.focus_lost,
            "total_keystrokes": self.keystrokes,
            "total_suspicious_keystrokes": self.suspicious_keystrokes,
            "max_records": self.max_records,
        }


@dataclass(frozen=True, slots=True)
class Accepted:
    """An editor_update the store took: its seq, and whether it was a resend of an accepted edit."""

    seq: int
    was_duplicate: bool
    yjs_unfolded: int = 0  # Yjs updates after the snapshot, when the edit changed the Yjs document


@dataclass(frozen=True, slots=True)
class TextChange:
    """The Yjs side of an editor_update (yjs_store.edit_text): `update` (b"" for none) was made against
    the room's Yjs document at number `based_on`; the edit is stored only if it is still there."""

    based_on: int
    update: bytes


# For append_edit: store the text verbatim, only while the room has no Yjs document.
NO_DOCUMENT: Final = TextChange(-1, b"")


class TextConflict(Exception):
    """The Yjs document moved on since the edit was merged against it: merge again (not a client error)."""


def _lua(name: str) -> str:
    """One script of relay/lua/ (package data, so an installed wheel carries it too)."""
    return resources.files("relay").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _pairs(flat: list[Any]) -> dict[str, bytes]:
    return {_text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}


# Stream entries written before entries recorded their kind (a rolling upgrade meets them until the
# history is trimmed): only room_closed was not a plain event, and its frame starts like this.
_LEGACY_CLOSED_FRAME = re.compile(rb'\{"seq":\d+,"type":"room_closed"')


def _kind_of(kind: bytes | str, frame: bytes) -> str:
    if kind:
        return _text(kind)
    return KIND_CLOSE if _LEGACY_CLOSED_FRAME.match(frame) else KIND_EVENT


def _missed(flat: list[Any]) -> Missed:
    """The scripts' answer ["events", seq, origin, msg, frame, kind, ...] or ["ahead"] / ["gone"]."""
    resume = Resume(_text(flat[0]))
    if resume is not Resume.REPLAYED:
        return Missed(resume)
    rows = flat[1:]
    events = [
        Envelope(
            kind=_kind_of(rows[i + 4], rows[i + 3]),
            origin=_text(rows[i + 1]),
            seq=int(rows[i]),
            msg_id=_text(rows[i + 2]) or None,
            ts=0,  # replayed from history: not a live delivery, no latency to measure
            frame=rows[i + 3],
        )
        for i in range(0, len(rows), 5)
    ]
    return Missed(resume, events)


class Rooms:
    """The room store. Methods raise RelayError subclasses that the HTTP and WebSocket layers map."""

    def __init__(
        self, redis_client: aioredis.Redis, settings: Settings, *, cluster: ShardedScripts | None = None
    ) -> None:
        """`cluster`: the scripts run on the primary of each room's slot and publish with SPUBLISH;
        `redis_client` then only names the scripts."""
        self._redis = redis_client
        self._settings = settings
        self._cluster = cluster
        self._pipeline: ScriptPipeline | ShardedScripts = cluster or ScriptPipeline(
            redis_client,
            wait_replicas=settings.redis_wait_replicas,
            wait_timeout_ms=settings.redis_wait_timeout_ms,
        )

        publish = "SPUBLISH" if cluster is not None else "PUBLISH"
        prelude = f"local PUBLISH = '{publish}'\n" + _lua("prelude")

        def script(name: str) -> AsyncScript:
            return redis_client.register_script(prelude + _lua(name))

        self._create = script("create")
        self._join = script("join")
        self._member = script("member")
        self._edit = script("edit")
        self._cursor = script("cursor")
        self._presence_add = script("presence_add")
        self._presence_remove = script("presence_remove")
        self._remove_member = script("remove_member")
        self._presence_refresh = script("presence_refresh")
        self._close = script("close")
        self._snapshot = script("snapshot")
        self._events_after = script("events_after")
        self._monitor = script("monitor")
        self._monitoring = script("monitoring")
        self._set_text = script("yjs_text")

    # --- REST ------------------------------------------------------------------------------------

    @redis_unavailable_is_503
    async def create(self, identity: Identity, *, title: str = "", language: str = "") -> RoomInfo:
        now = now_ms()
        member = Member(identity.user_id, INTERVIEWER, identity.user_name, now, identity.email)
        unreachable: redis.exceptions.RedisError | None = None
        for _ in range(CREATE_ATTEMPTS):
            code = new_code()
            try:
                created = await self._run(
                    self._create,
                    keys=RoomKeys.of(code).all,
                    args=[
                        identity.user_id,
                        member.dump(),
                        now,
                        self._settings.room_ttl,
                        title,
                        language,
                        self._settings.welcome_text,
                    ],
                )
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                if self._cluster is None:
                    raise
                # The code's shard is down: another code most likely lives on another shard.
                unreachable = exc
                continue
            if created:
                return RoomInfo(code, "open", now, identity.user_id, 0, title, language, [member], set())
        if unreachable is not None:
            raise unreachable
        raise Unavailable("could not find a free room code; retry")

    @redis_unavailable_is_503
    async def join(self, code: str, identity: Identity) -> tuple[Member, bool]:
        """The caller's membership and whether it is new. Joining twice keeps the first role."""
        role = INTERVIEWER if identity.is_interviewer else CANDIDATE
        member = Member(identity.user_id, role, identity.user_name, now_ms(), identity.email)
        result = await self._run(
            self._join,
            keys=RoomKeys.of(code).all,
            args=[
                identity.user_id,
                member.dump(),
                self._settings.room_ttl,
                self._settings.max_members,
                role,
                self._settings.max_candidates,
            ],
        )
        outcome = _text(result[0])
        raise_for_outcome(outcome, code)
        return Member.load(identity.user_id, result[1]), outcome == "joined"

    @redis_unavailable_is_503
    async def member(self, code: str, user_id: str) -> Member:
        """The user's membership of an open room, or the reason there is none."""
        result = await self._run(self._member, keys=RoomKeys.of(code).all, args=[user_id])
        raise_for_outcome(_text(result[0]), code)
        return Member.load(user_id, result[1])

    @redis_unavailable_is_503
    async def info(self, code: str) -> RoomInfo:
        snapshot = await self._read_snapshot(code, None)
        return snapshot.info

    @redis_unavailable_is_503
    async def close(self, code: str) -> int:
        now = now_ms()
        result = await self._run(
            self._close,
            keys=RoomKeys.of(code).all,
            args=[
                now,
                RoomKeys.of(code).channel,
                self._settings.closed_room_ttl,
                self._settings.history_max_events,
                *room_closed_event(code, now).script_args(),
            ],
        )
        outcome = _text(result[0])
        if outcome == "closed":
            raise RoomClosed(f"room {code} is already closed")
        raise_for_outcome(outcome, code)
        return int(result[1])

    # --- events ----------------------------------------------------------------------------------

    @redis_unavailable_is_503
    async def append_edit(
        self,
        code: str,
        identity: Identity,
        edit: EditorUpdate,
        origin: str,
        change: TextChange | None = None,
    ) -> Accepted:
        """Sequence, store and publish one editor_update; with `change`, its Yjs update in the same step
        (raises TextConflict when the Yjs document is no longer at `change.based_on`)."""
        now = now_ms()
        event = editor_update_event(
            user_id=identity.user_id, user_name=identity.user_name, edit=edit, origin=origin, ts=now
        )
        keys = RoomKeys.of(code)
        yjs_args: list[bytes | str | int] = ["", "", "", ""]
        if change is not None:
            head, middle = yjs_update_parts(origin, now)
            yjs_args = [change.based_on, change.update, head, middle]
        result = await self._run(
            self._edit,
            keys=keys.all,
            args=[
                identity.user_id,
                edit.content,
                edit.cursor_json,
                edit.client_msg_id or "",
                now,
                self._settings.room_ttl,
                self._settings.history_max_events,
                now - self._settings.history_max_age * 1000,
                keys.channel,
                *event.script_args(),
                *yjs_args,
            ],
        )
        outcome = _text(result[0])
        if outcome == "conflict":
            raise TextConflict(code)
        raise_for_outcome(outcome, code)
        unfolded = int(result[2]) if outcome == "ok" else 0
        return Accepted(int(result[1]), was_duplicate=outcome == "duplicate", yjs_unfolded=unfolded)

    @redis_unavailable_is_503
    async def set_text(self, code: str, author: tuple[str, str], content: str, yseq: int) -> int | None:
        """The room's text as of Yjs update `yseq` (yjs_store's text mirror): stored, and sent to
        whole-document clients as one editor_update by `author` (user id, name); its seq, or None when
        unchanged (or the room is closed: then only stored)."""
        now = now_ms()
        edit = EditorUpdate(content=content, cursor_position=None, client_msg_id=None)
        event = editor_update_event(
            user_id=author[0], user_name=author[1], edit=edit, origin=NO_ORIGIN, ts=now
        )
        keys = RoomKeys.of(code)
        result = await self._run(
            self._set_text,
            keys=keys.all,
            args=[
                content,
                yseq,
                now,
                self._settings.room_ttl,
                self._settings.history_max_events,
                now - self._settings.history_max_age * 1000,
                keys.channel,
                *event.script_args(),
            ],
        )
        return int(result[1]) if _text(result[0]) == "ok" else None

    def queue_cursor(
        self, code: str, identity: Identity, cursor: CursorUpdate, origin: str
    ) -> asyncio.Future[Any]:
        """Store and publish a cursor, queued now without waiting for Redis (so a socket's reader can
        take its next frame meanwhile; calls keep their order). The future fails with Redis's own
        error: `redis_errors.unavailable_for` says which are the client's "unavailable"."""
        now = now_ms()
        frame = cursor_update_frame(identity.user_id, identity.user_name, cursor.cursor_position, now)
        keys = RoomKeys.of(code)
        envelope = Envelope(KIND_EVENT, origin, 0, None, now, frame).pack()
        return self._pipeline.submit(
            self._cursor,
            keys.all,
            [identity.user_id, cursor.cursor_json, envelope, keys.channel, self._settings.room_ttl],
        )

    @redis_unavailable_is_503
    async def presence_add(self, code: str, identity: Identity, role: str, connection_id: str) -> bool:
        """Mark a connection present (until refreshed again); True when the user just arrived.

        Raises when the connection may not be there: room closed, member removed, or a limit reached.
        """
        now = now_ms()
        keys = RoomKeys.of(code)
        joined = member_joined_frame(identity.user_id, identity.user_name, role, now)
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
                *sweep_templates(now),
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
                *sweep_templates(now),
                *(f"{user_id}\t{connection_id}" for user_id, connection_id in entries),
            ],
        )
        gone = [_text(entry).rpartition("\t") for entry in missing]
        return [(user_id, connection_id) for user_id, _, connection_id in gone]

    @redis_unavailable_is_503
    async def remove_member(self, code: str, user_id: str) -> None:
        """Remove a member for good: their sockets on every replica are closed, and they cannot rejoin."""
        keys = RoomKeys.of(code)
        frame = member_removed_frame(user_id, now_ms())
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
        raise_for_outcome(outcome, code)

    @redis_unavailable_is_503
    async def presence_remove(self, code: str, user_id: str, connection_id: str) -> None:
        now = now_ms()
        keys = RoomKeys.of(code)
        left = member_left_frame(user_id, now)
        await self._run(
            self._presence_remove,
            keys=keys.all,
            args=[
                f"{user_id}\t{connection_id}",
                now,
                user_id,
                keys.channel,
                Envelope(KIND_EVENT, connection_id, 0, None, now, left).pack(),
                *sweep_templates(now),
            ],
        )

    @redis_unavailable_is_503
    async def record_monitoring(
        self, code: str, identity: Identity, frame: MonitoringFrame, origin: str
    ) -> None:
        """Count (and for incidents and suspicious key presses keep and announce) one monitoring frame.

        Raises Forbidden unless the sender is, by the membership record, one of the room's candidates.
        """
        event = monitoring_event(
            frame, user_id=identity.user_id, user_name=identity.user_name, origin=origin, ts=now_ms()
        )
        keys = RoomKeys.of(code)
        outcome = _text(
            await self._run(
                self._monitor,
                keys=keys.all,
                args=[
                    identity.user_id,
                    event.kind,
                    event.record,
                    event.alert,
                    keys.channel,
                    self._settings.monitoring_max_records,
                    self._settings.room_ttl,
                ],
            )
        )
        if outcome == "not_candidate":
            raise Forbidden("only the room's candidate sends monitoring frames")
        raise_for_outcome(outcome, code)

    @redis_unavailable_is_503
    async def monitoring(self, code: str, user_id: str) -> MonitoringReport:
        """The room's monitoring data, for its interviewers only (also once the room is closed)."""
        result = await self._run(self._monitoring, keys=RoomKeys.of(code).all, args=[user_id])
        raise_for_outcome(_text(result[0]), code)
        member = Member.load(user_id, result[1]) if result[1] else None
        if member is None or member.role != INTERVIEWER:
            raise Forbidden("Only the room's interviewer can access monitoring data")
        counts = {name: int(value) for name, value in _pairs(result[2]).items()}
        return MonitoringReport(
            code=code,
            incidents=[orjson.loads(raw) for raw in reversed(result[3])],
            suspicious=[orjson.loads(raw) for raw in reversed(result[4])],
            focus_lost=counts.get("focus_lost", 0),
            keystrokes=counts.get("keystrokes", 0),
            suspicious_keystrokes=counts.get("suspicious_keystrokes", 0),
            max_records=self._settings.monitoring_max_records,
        )

    @redis_unavailable_is_503
    async def snapshot(self, code: str, after_seq: int | None) -> Snapshot:
        return await self._read_snapshot(code, after_seq)

    @redis_unavailable_is_503
    async def events_after(self, code: str, after_seq: int) -> Missed:
        """Durable events after `after_seq`, or why history cannot answer."""
        return _missed(await self._run(self._events_after, keys=RoomKeys.of(code).all, args=[after_seq]))

    @redis_unavailable_is_503
    async def ping(self) -> None:
        if self._cluster is None:
            await self._redis.ping()
            return
        down = {address: problem for address, problem in (await self._cluster.ping()).items() if problem}
        if down:
            raise Unavailable("Redis Cluster shards do not answer: " + ", ".join(sorted(down)))

    @property
    def scripts(self) -> ScriptPipeline | ShardedScripts:
        """The writer that runs script calls (for the quotas, so they batch with the room scripts)."""
        return self._pipeline

    def shard_address(self, code: str) -> str | None:
        """In a cluster: the primary that serves the room, as far as this replica knows."""
        return None if self._cluster is None else self._cluster.shard_address(RoomKeys.of(code).room)

    async def shard_health(self, per_node: float) -> dict[str, str | None] | None:
        """In a cluster: each primary, None when it answers within `per_node` seconds, else the problem.
        None for one Redis."""
        return None if self._cluster is None else await self._cluster.ping(per_node)

    async def aclose(self) -> None:
        await self._pipeline.aclose()

    # --- helpers ---------------------------------------------------------------------------------

    async def _run(self, script: AsyncScript, *, keys: list[str], args: list[Any]) -> Any:
        read_only = script in (self._snapshot, self._events_after, self._member, self._monitoring)
        return await self._pipeline.call(script, keys, args, read_only=read_only)

    async def _read_snapshot(self, code: str, after_seq: int | None) -> Snapshot:
        now = now_ms()
        result = await self._run(
            self._snapshot, keys=RoomKeys.of(code).all, args=[now, "" if after_seq is None else after_seq]
        )
        raise_for_outcome(_text(result[0]), code)
        room = _pairs(result[1])
        members = sorted(
            (Member.load(uid, raw) for uid, raw in _pairs(result[2]).items()),
            key=lambda m: (m.joined_at, m.user_id),
        )
        cursors = {uid: orjson.loads(raw) for uid, raw in _pairs(result[3]).items()}
        connected = {_text(entry).rpartition("\t")[0] for entry in result[4]}
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
        return Snapshot(
            info,
            _text(room.get("content", b"")),
            cursors,
            _missed(result[5]),
            text_behind=bool(int(result[6])),
        )


def raise_for_outcome(outcome: str, code: str) -> None:
    """The refusal a room script's outcome stands for; returns for every outcome that is not one."""
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
    if outcome == "candidate_taken":
        raise CandidateTaken(
            f"Room already has a candidate: room {code} has the most candidates allowed "
            "(RELAY_MAX_CANDIDATES); interviewers may still join"
        )
