"""Wire formats: client frames in, server frames out, and the envelope replicas exchange over Redis.

Client frames are JSON text objects with a `type`; `parse_client_frame` validates them completely
(types, sizes) so the layers above only ever see well-formed values. Server frames are encoded once
with orjson and the same bytes go to every socket.

Envelope (a pub/sub message):
    kind "|" origin "|" seq "|" msg_id "|" ts "|" frame
kind is `e` (an event to deliver), `c` (deliver, then close the room's sockets), `r` (deliver, then
close the sockets of the user named in the frame's `user_id`) or `i` (deliver to the room's interviewer
sockets only: candidate monitoring alerts); for the Yjs endpoint (yjs_ws.py) `y` (a Yjs update,
numbered in the room's Yjs order; frame = the update's bytes), `a` (an awareness message), `q` (a query
for awareness) and `g` (the connection named as origin is gone with its replica: clear its awareness;
empty frame). origin is the id of
the connection that caused it (`-` for none); seq is the room sequence number (0 for volatile events
such as cursors and presence); msg_id is the sender's optional `client_msg_id` (empty for none); ts is
when the publishing replica stamped the event (ms since the epoch), for the delivery-latency metric.
The header is fixed-position so a replica routes a message without parsing its JSON. The Lua scripts
never spell this format out: where only a script knows a value (the `seq` it assigns, the user whose
presence expired), it joins parts built here (`SequencedEnvelope`, `member_left_template`).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

import orjson

from relay.errors import BadFrame, TooLarge

EDITOR_UPDATE: Final = "editor_update"
CURSOR_UPDATE: Final = "cursor_update"
PING: Final = "ping"
REFRESH_TOKEN: Final = "refresh_token"  # noqa: S105 - a frame type, not a secret
WINDOW_FOCUS_LOST: Final = "window_focus_lost"
KEYSTROKE_MONITORING: Final = "keystroke_monitoring"
CLIENT_TYPES: Final = (
    EDITOR_UPDATE,
    CURSOR_UPDATE,
    PING,
    REFRESH_TOKEN,
    WINDOW_FOCUS_LOST,
    KEYSTROKE_MONITORING,
)
MAX_TOKEN_CHARS: Final = 8192

# Monitoring frames are a few short fields (the old frontend adds its user_id / user_name, which relay
# replaces): anything longer is not one.
MAX_MONITORING_FRAME_CHARS: Final = 2048
MAX_KEY_CHARS: Final = 32
MAX_KEY_COMBINATION_CHARS: Final = 64
# A focus loss longer than a day is not a measurement from a live interview page.
MAX_FOCUS_LOST_SECONDS: Final = 86400.0

# A cursor is a handful of numbers (Monaco: lineNumber/column, maybe a selection); 1 KiB is generous.
MAX_CURSOR_BYTES: Final = 1024
CLIENT_MSG_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")

KIND_EVENT: Final = "e"
KIND_CLOSE: Final = "c"
KIND_REMOVE: Final = "r"
KIND_INTERVIEWERS: Final = "i"
KIND_YJS_UPDATE: Final = "y"
KIND_AWARENESS: Final = "a"
KIND_AWARENESS_QUERY: Final = "q"
KIND_CONNECTION_GONE: Final = "g"
YJS_KINDS: Final = frozenset((KIND_YJS_UPDATE, KIND_AWARENESS, KIND_AWARENESS_QUERY, KIND_CONNECTION_GONE))
_KINDS: Final = frozenset(
    kind.encode() for kind in (KIND_EVENT, KIND_CLOSE, KIND_REMOVE, KIND_INTERVIEWERS, *YJS_KINDS)
)
NO_ORIGIN: Final = "-"
INTERVIEWER_ROLE: Final = "interviewer"


@dataclass(frozen=True, slots=True)
class EditorUpdate:
    content: str
    cursor_position: Any  # already validated: small JSON value or None
    client_msg_id: str | None
    # cursor_position as JSON, encoded once by the validation (b"" for none) and stored as is
    cursor_json: bytes = field(default=b"", compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class CursorUpdate:
    cursor_position: Any
    cursor_json: bytes = field(default=b"", compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class RefreshToken:
    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class WindowFocusLost:
    """The candidate's page lost focus for `duration` seconds (sent on refocus)."""

    duration: float


@dataclass(frozen=True, slots=True)
class KeystrokeMonitoring:
    """One key press on the candidate's page; `is_suspicious` is the page's verdict (copy, paste, ...)."""

    key: str
    key_combination: str
    is_suspicious: bool


MonitoringFrame = WindowFocusLost | KeystrokeMonitoring
ClientFrame = EditorUpdate | CursorUpdate | Ping | RefreshToken | WindowFocusLost | KeystrokeMonitoring


def parse_client_frame(text: str, *, max_document_bytes: int) -> ClientFrame:
    """A validated client frame, or `BadFrame` / `TooLarge` saying what was wrong."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise BadFrame(f"frame is not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise BadFrame(f"frame must be a JSON object with a 'type', got {type(data).__name__}")
    kind = data.get("type")
    if kind == EDITOR_UPDATE:
        content = data.get("content")
        if not isinstance(content, str):
            raise BadFrame(f"editor_update needs 'content' as a string, got {_json_type(content)}")
        size = _utf8_size(content)
        if size > max_document_bytes:
            raise TooLarge(f"document is {size} bytes; the limit is {max_document_bytes}")
        cursor, cursor_json = _cursor(data.get("cursor_position"), required=False)
        return EditorUpdate(
            content=content,
            cursor_position=cursor,
            client_msg_id=_client_msg_id(data.get("client_msg_id")),
            cursor_json=cursor_json,
        )
    if kind == CURSOR_UPDATE:
        cursor, cursor_json = _cursor(data.get("cursor_position"), required=True)
        return CursorUpdate(cursor_position=cursor, cursor_json=cursor_json)
    if kind == PING:
        return Ping()
    if kind == REFRESH_TOKEN:
        token = data.get("token")
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise BadFrame(f"refresh_token needs 'token' as a non-empty string of at most {MAX_TOKEN_CHARS}")
        return RefreshToken(token)
    if kind in (WINDOW_FOCUS_LOST, KEYSTROKE_MONITORING):
        if len(text) > MAX_MONITORING_FRAME_CHARS:
            raise TooLarge(f"{kind} frames are at most {MAX_MONITORING_FRAME_CHARS} characters")
        return _monitoring_frame(kind, data)
    if not isinstance(kind, str):
        raise BadFrame(f"frame needs a string 'type' (one of {', '.join(CLIENT_TYPES)})")
    raise BadFrame(f"unknown frame type {kind[:40]!r}; expected one of {', '.join(CLIENT_TYPES)}")


def _monitoring_frame(kind: str, data: dict[str, Any]) -> MonitoringFrame:
    if kind == WINDOW_FOCUS_LOST:
        duration = data.get("duration")
        if (
            isinstance(duration, bool)
            or not isinstance(duration, int | float)
            or not 0 <= duration <= MAX_FOCUS_LOST_SECONDS  # also refuses NaN
        ):
            raise BadFrame(
                "window_focus_lost needs 'duration' as a number of seconds "
                f"from 0 to {MAX_FOCUS_LOST_SECONDS:g}"
            )
        return WindowFocusLost(duration=float(duration))
    key = _short_text(data.get("key"), "key", MAX_KEY_CHARS, allow_empty=False)
    combination = _short_text(data.get("key_combination"), "key_combination", MAX_KEY_COMBINATION_CHARS)
    suspicious = data.get("is_suspicious")
    if not isinstance(suspicious, bool):
        raise BadFrame(
            f"keystroke_monitoring needs 'is_suspicious' as true or false, got {_json_type(suspicious)}"
        )
    return KeystrokeMonitoring(key=key, key_combination=combination, is_suspicious=suspicious)


def _short_text(value: Any, name: str, limit: int, *, allow_empty: bool = True) -> str:
    if (
        not isinstance(value, str)
        or len(value) > limit
        or (not value and not allow_empty)
        or not value.isprintable()
    ):
        raise BadFrame(
            f"keystroke_monitoring needs {name!r} as a printable string of at most {limit} characters"
        )
    _utf8_size(value)  # a lone surrogate is not text
    return value


def _cursor(value: Any, *, required: bool) -> tuple[Any, bytes]:
    """The validated cursor and its JSON encoding (which the size check needs anyway)."""
    if value is None:
        if required:
            raise BadFrame("cursor_update needs 'cursor_position'")
        return None, b""
    if isinstance(value, bool) or not isinstance(value, dict | int | list):
        raise BadFrame(f"cursor_position must be an object, array or integer, got {_json_type(value)}")
    if isinstance(value, int) and not -(2**53) <= value <= 2**53:
        raise BadFrame("cursor_position integer is out of range")
    try:
        encoded = orjson.dumps(value)
    except orjson.JSONEncodeError:
        # orjson refuses nesting past 255 levels and integers past 64 bits
        raise BadFrame("cursor_position is nested too deeply or holds an out-of-range number") from None
    if len(encoded) > MAX_CURSOR_BYTES:
        raise BadFrame(f"cursor_position is {len(encoded)} bytes encoded; the limit is {MAX_CURSOR_BYTES}")
    return value, encoded


def _client_msg_id(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not CLIENT_MSG_ID.fullmatch(value):
        raise BadFrame("client_msg_id must be 1-64 characters of A-Z a-z 0-9 _ . : -, or an integer")
    return value


def _utf8_size(text: str) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise BadFrame("content holds a lone surrogate, which is not valid Unicode text") from None


def _json_type(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


# --- server frames ---------------------------------------------------------------------------------
# Every frame relay sends is built here. Durable frames (editor_update, room_closed) start with the
# `seq` the store assigns, so they are built as a SequencedEnvelope (below) that the Lua script completes.

REASON_HISTORY_EXPIRED: Final = "history_expired"
REASON_RESUME_INVALID: Final = "resume_invalid"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _encode(frame: dict[str, Any]) -> bytes:
    return orjson.dumps(frame)


def room_state_frame(
    *,
    room_code: str,
    seq: int,
    members: list[dict[str, Any]],
    cursors: dict[str, Any],
    you: dict[str, Any],
    replayed: int | None = None,
    content: str | None = None,
    reason: str | None = None,
    room_info: dict[str, Any] | None = None,
) -> bytes:
    """The first frame of a socket: `replayed` events follow it (a resume), or it carries `content`
    (and `room_info`, the old frontend's room object, as an addition)."""
    frame: dict[str, Any] = {
        "type": "room_state",
        "room_code": room_code,
        "seq": seq,
        "members": members,
        "cursors": cursors,
        "you": you,
    }
    if replayed is not None:
        frame.update(resumed=True, replayed=replayed)
    else:
        frame.update(resumed=False, content=content)
        if reason is not None:
            frame["reason"] = reason
        if room_info is not None:
            frame["room_info"] = room_info
    return _encode(frame)


def error_frame(
    code: str, message: str, client_msg_id: str | None = None, *, retry_after: int | None = None
) -> bytes:
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if client_msg_id is not None:
        frame["client_msg_id"] = client_msg_id
    if retry_after is not None:
        frame["retry_after"] = retry_after
    return _encode(frame)


def ack_frame(seq: int, client_msg_id: str | None, *, duplicate: bool = False) -> bytes:
    if client_msg_id is None:
        return b'{"type":"ack","seq":%d}' % seq
    frame: dict[str, Any] = {"type": "ack", "seq": seq, "client_msg_id": client_msg_id}
    if duplicate:
        frame["duplicate"] = True
    return _encode(frame)


PONG_FRAME: Final = b'{"type":"pong"}'


def cursor_update_frame(user_id: str, user_name: str, cursor_position: Any, ts: int) -> bytes:
    return _encode(
        {
            "type": "cursor_update",
            "user_id": user_id,
            "user_name": user_name,
            "cursor_position": cursor_position,
            "ts": ts,
        }
    )


def member_joined_frame(user_id: str, user_name: str, role: str, ts: int) -> bytes:
    return _encode(
        {"type": "member_joined", "user_id": user_id, "user_name": user_name, "role": role, "ts": ts}
    )


def member_left_frame(user_id: str, ts: int) -> bytes:
    return _encode({"type": "member_left", "user_id": user_id, "ts": ts})


def member_removed_frame(user_id: str, ts: int) -> bytes:
    return _encode({"type": "member_removed", "user_id": user_id, "ts": ts})


def redis_status_frame(*, available: bool) -> bytes:
    if available:
        return _encode({"type": "redis_status", "available": True})
    return _encode(
        {
            "type": "redis_status",
            "available": False,
            "message": "relay lost its connection to Redis; edits wait until it is back",
        }
    )


def reconnect_frame(reason: str) -> bytes:
    return _encode({"type": "reconnect", "reason": reason})


def token_expiring_frame(expires_at: int, closes_at: int) -> bytes:
    """`closes_at` is `expires_at` plus RELAY_TOKEN_GRACE: when the socket is closed unless refreshed."""
    return _encode(
        {
            "type": "token_expiring",
            "expires_at": expires_at,
            "closes_at": closes_at,
            "message": 'send {"type": "refresh_token", "token": ...} to stay connected',
        }
    )


def token_refreshed_frame(expires_at: int) -> bytes:
    return _encode({"type": "token_refreshed", "expires_at": expires_at})


# --- candidate monitoring ------------------------------------------------------------------------


def iso_utc(ms: int) -> str:
    """ISO 8601 in UTC with a `Z`, to the millisecond (browsers' `new Date()` reads it as UTC)."""
    stamp = datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class MonitoringEvent:
    """What one accepted monitoring frame becomes: the record kept (if any) and the alert (if any)."""

    kind: str  # "focus" (a focus-loss incident) or "key" (a key press, counted)
    record: bytes  # JSON kept in the room's capped list; b"" for an ordinary key press (only counted)
    alert: bytes  # the packed `i` envelope of the interviewers' alert; b"" for none


def monitoring_event(
    frame: MonitoringFrame, *, user_id: str, user_name: str, origin: str, ts: int
) -> MonitoringEvent:
    """The old backend's incident / keystroke records and `candidate_monitoring_alert`, with the token's
    identity and the server's time. Ordinary key presses are neither kept nor announced: only counted."""
    timestamp = iso_utc(ts)
    who = {"user_id": user_id, "user_name": user_name, "timestamp": timestamp}
    if isinstance(frame, WindowFocusLost):
        record = {"type": WINDOW_FOCUS_LOST, **who, "duration": frame.duration}
        alert = {
            "type": "candidate_monitoring_alert",
            "alert_type": WINDOW_FOCUS_LOST,
            **who,
            "duration": frame.duration,
            "message": f"Candidate {user_name} lost window focus for {frame.duration:.1f} seconds",
            "ts": ts,
        }
        return MonitoringEvent("focus", _encode(record), _alert_envelope(alert, origin, ts))
    if not frame.is_suspicious:
        return MonitoringEvent("key", b"", b"")
    record = {
        **who,
        "key": frame.key,
        "key_combination": frame.key_combination,
        "is_suspicious": True,
    }
    alert = {
        "type": "candidate_monitoring_alert",
        "alert_type": "suspicious_keystroke",
        **who,
        "key_combination": frame.key_combination,
        "message": f"Candidate {user_name} used suspicious key combination: {frame.key_combination}",
        "ts": ts,
    }
    return MonitoringEvent("key", _encode(record), _alert_envelope(alert, origin, ts))


def _alert_envelope(alert: dict[str, Any], origin: str, ts: int) -> bytes:
    return Envelope(KIND_INTERVIEWERS, origin, 0, None, ts, _encode(alert)).pack()


# --- envelope -------------------------------------------------------------------------------------


def _envelope_head(kind: str, origin: str) -> bytes:
    return b"%s|%s|" % (kind.encode(), origin.encode())


def _envelope_middle(msg_id: str | None, ts: int) -> bytes:
    return b"|%s|%d|" % ((msg_id or "").encode(), ts)


@dataclass(frozen=True, slots=True)
class Envelope:
    kind: str
    origin: str
    seq: int
    msg_id: str | None
    ts: int
    frame: bytes

    @property
    def closes_room(self) -> bool:
        return self.kind == KIND_CLOSE

    @property
    def for_role(self) -> str | None:
        """The only role whose sockets get this envelope's frame (None: every socket of the room)."""
        return INTERVIEWER_ROLE if self.kind == KIND_INTERVIEWERS else None

    @property
    def is_yjs(self) -> bool:
        """For Yjs sockets only (binary frames); the others never see it."""
        return self.kind in YJS_KINDS

    @property
    def removes_member(self) -> str | None:
        """The user id a `r` envelope removes (parsed only for this rare kind)."""
        if self.kind != KIND_REMOVE:
            return None
        user_id = orjson.loads(self.frame).get("user_id")
        return user_id if isinstance(user_id, str) else None

    def pack(self) -> bytes:
        return b"%s%d%s%s" % (
            _envelope_head(self.kind, self.origin),
            self.seq,
            _envelope_middle(self.msg_id, self.ts),
            self.frame,
        )

    @classmethod
    def unpack(cls, data: bytes) -> Envelope:
        """Raises ValueError on anything that is not an envelope (the bus logs and drops it)."""
        kind, origin, seq, msg_id, ts, frame = data.split(b"|", 5)
        if kind not in _KINDS:
            raise ValueError(f"unknown envelope kind {kind[:10]!r}")
        return cls(kind.decode(), origin.decode(), int(seq), msg_id.decode() or None, int(ts), frame)


@dataclass(frozen=True, slots=True)
class SequencedEnvelope:
    """A durable event before the store numbers it, in the parts its Lua script joins around the number.

    lua/prelude.lua's `record_sequenced` builds `frame_head .. seq .. frame_tail` (the frame clients get
    and the stream keeps) and `envelope_head .. seq .. envelope_middle .. frame` (what it publishes),
    which is `Envelope(kind, origin, seq, msg_id, ts, frame).pack()`: the format is written only here.
    """

    kind: str
    origin: str
    msg_id: str | None
    envelope_head: bytes
    envelope_middle: bytes
    frame_tail: bytes

    FRAME_HEAD: ClassVar[bytes] = b'{"seq":'

    @classmethod
    def of(
        cls, kind: str, origin: str, msg_id: str | None, ts: int, fields: dict[str, Any]
    ) -> SequencedEnvelope:
        """`fields` is the frame without its `seq`, which comes first."""
        return cls(
            kind=kind,
            origin=origin,
            msg_id=msg_id,
            envelope_head=_envelope_head(kind, origin),
            envelope_middle=_envelope_middle(msg_id, ts),
            frame_tail=b"," + _encode(fields)[1:],
        )

    def script_args(self) -> list[bytes | str]:
        """ARGV for `record_sequenced`, in its order."""
        return [
            self.kind,
            self.origin,
            self.msg_id or "",
            self.envelope_head,
            self.envelope_middle,
            self.FRAME_HEAD,
            self.frame_tail,
        ]


def editor_update_event(
    *,
    user_id: str,
    user_name: str,
    edit: EditorUpdate,
    origin: str,
    ts: int,
) -> SequencedEnvelope:
    fields: dict[str, Any] = {
        "type": "editor_update",
        "user_id": user_id,
        "user_name": user_name,
        "content": edit.content,
        "cursor_position": edit.cursor_position,
        "ts": ts,
    }
    if edit.client_msg_id is not None:
        # Lets a client that resumes recognise its own accepted edits among the replayed ones.
        fields["client_msg_id"] = edit.client_msg_id
    return SequencedEnvelope.of(KIND_EVENT, origin, edit.client_msg_id, ts, fields)


def room_closed_event(room_code: str, ts: int) -> SequencedEnvelope:
    fields = {"type": "room_closed", "room_code": room_code, "reason": "closed by the interviewer", "ts": ts}
    return SequencedEnvelope.of(KIND_CLOSE, NO_ORIGIN, None, ts, fields)


def member_left_template(ts: int) -> tuple[bytes, bytes]:
    """member_left's envelope split where the user id goes, for the scripts that find who left.

    lua/prelude.lua's `sweep` publishes `head .. cjson.encode(user_id) .. tail`.
    """
    hole = "\x00"  # encodes as "\u0000": the only such string in this envelope
    packed = Envelope(KIND_EVENT, NO_ORIGIN, 0, None, ts, member_left_frame(hole, ts)).pack()
    head, tail = packed.split(orjson.dumps(hole))
    return head, tail


def yjs_update_parts(origin: str, ts: int) -> tuple[bytes, bytes]:
    """A Yjs update's envelope around its number (lua/yjs_append.lua): head .. seq .. middle .. update."""
    return _envelope_head(KIND_YJS_UPDATE, origin), _envelope_middle(None, ts)


def connection_gone_template(ts: int) -> tuple[bytes, bytes]:
    """The `g` envelope split where the connection id goes."""
    hole = "\x00"
    head, tail = Envelope(KIND_CONNECTION_GONE, hole, 0, None, ts, b"").pack().split(hole.encode())
    return head, tail


def sweep_templates(ts: int) -> tuple[bytes, bytes, bytes, bytes]:
    """What lua/prelude.lua's `sweep` publishes for dead presence entries: member_left's envelope
    around a user id, then the connection-gone envelope around a connection id."""
    return (*member_left_template(ts), *connection_gone_template(ts))
