"""Room codes and the Redis names of a room: its keys and its pub/sub channel.

Every key of a room carries the code in a hash tag, so one room lives in one Redis Cluster slot:

    relay:{CODE}:room       hash    status, created_at, created_by, seq, content, title, language, ...
    relay:{CODE}:members    hash    user_id -> {"role", "name", "joined_at", "email"} (JSON)
    relay:{CODE}:cursors    hash    user_id -> latest cursor_position (JSON)
    relay:{CODE}:presence   zset    "user_id<TAB>connection_id" scored by expiry (ms since epoch)
    relay:{CODE}:events     stream  recent durable events: seq, origin, msg, frame, kind
    relay:{CODE}:acks       hash    user_id -> "<client_msg_id> <seq>" of the user's last accepted edit
    relay:{CODE}:removed    set     user_ids an interviewer removed: they cannot join again
    relay:{CODE}:monitoring hash    counts: focus_lost, keystrokes, suspicious_keystrokes
    relay:{CODE}:incidents  list    focus-loss incidents (JSON), newest first, capped
    relay:{CODE}:suspicious list    suspicious key presses (JSON), newest first, capped; ordinary keys are
                                    only counted, never kept
    relay:{CODE}:pubsub     channel envelopes (see protocol.py) for every replica with sockets in the room
    relay:{CODE}:ydoc       hash    the Yjs document: snapshot, snapshot_seq, seq (see yjs_store.py)
    relay:{CODE}:yupdates   stream  Yjs updates after the snapshot, id "<seq>-0"
    relay:{CODE}:ylock      string  the Yjs compaction lock

The room store (rooms.py) and the fan-out (hub.py) both need these names; neither imports the other.
"""

from __future__ import annotations

import functools
import re
import secrets
from dataclasses import dataclass
from typing import Final

from relay.errors import BadRequest

# No 0/O, 1/I/L: a code read aloud over a call or copied by eye must not be ambiguous.
CODE_ALPHABET: Final = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH: Final = 6
CODE_PATTERN: Final = re.compile(f"[{CODE_ALPHABET}]{{{CODE_LENGTH}}}")

_CHANNEL_PREFIX: Final = "relay:{"


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
    monitoring: str
    incidents: str
    suspicious: str
    ydoc: str
    yupdates: str
    ylock: str
    channel: str

    @classmethod
    def of(cls, code: str) -> RoomKeys:
        return _room_keys(code)

    @classmethod
    def _build(cls, code: str) -> RoomKeys:
        prefix = f"relay:{{{code}}}"
        return cls(
            room=f"{prefix}:room",
            members=f"{prefix}:members",
            cursors=f"{prefix}:cursors",
            presence=f"{prefix}:presence",
            events=f"{prefix}:events",
            acks=f"{prefix}:acks",
            removed=f"{prefix}:removed",
            monitoring=f"{prefix}:monitoring",
            incidents=f"{prefix}:incidents",
            suspicious=f"{prefix}:suspicious",
            ydoc=f"{prefix}:ydoc",
            yupdates=f"{prefix}:yupdates",
            ylock=f"{prefix}:ylock",
            channel=f"{prefix}:pubsub",
        )

    @property
    def all(self) -> list[str]:
        """The keys every script receives, in the order relay/lua/*.lua name them (KEYS[1..12]).

        Every script refreshes all of them (prelude's `touch`), so monitoring data and the Yjs document
        live exactly as long as their room (and the edit script can change the text and the document).
        """
        return [
            self.room,
            self.members,
            self.cursors,
            self.presence,
            self.events,
            self.acks,
            self.removed,
            self.monitoring,
            self.incidents,
            self.suspicious,
            self.ydoc,
            self.yupdates,
        ]


# Every event needs its room's names: built once per room (a few thousand rooms a replica at most).
_room_keys = functools.lru_cache(maxsize=4096)(RoomKeys._build)


def code_of_channel(channel: bytes | str) -> str:
    """The room code of a channel name from RoomKeys.channel (the bus hands channels over as bytes)."""
    text = channel.decode() if isinstance(channel, bytes) else channel
    return text[len(_CHANNEL_PREFIX) : len(_CHANNEL_PREFIX) + CODE_LENGTH]
