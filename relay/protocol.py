"""Wire formats: client frames in, server frames out, and the envelope replicas exchange over Redis.

Client frames are JSON text objects with a `type`; `parse_client_frame` validates them completely
(types, sizes) so the layers above only ever see well-formed values. Server frames are encoded once
with orjson and the same bytes go to every socket.

Envelope (a pub/sub message):
    kind "|" origin "|" seq "|" msg_id "|" ts "|" frame
kind is `e` (an event to deliver), `c` (deliver, then close the room's sockets) or `r` (deliver, then
close the sockets of the user named in the frame's `user_id`); origin is the id of
the connection that caused it (`-` for none); seq is the room sequence number (0 for volatile events
such as cursors and presence); msg_id is the sender's optional `client_msg_id` (empty for none); ts is
when the publishing replica stamped the event (ms since the epoch), for the delivery-latency metric.
The header is fixed-position so a replica routes a message without parsing its JSON.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from relay.errors import BadFrame, TooLarge

EDITOR_UPDATE: Final = "editor_update"
CURSOR_UPDATE: Final = "cursor_update"
PING: Final = "ping"
REFRESH_TOKEN: Final = "refresh_token"  # noqa: S105 - a frame type, not a secret
CLIENT_TYPES: Final = (EDITOR_UPDATE, CURSOR_UPDATE, PING, REFRESH_TOKEN)
MAX_TOKEN_CHARS: Final = 8192

# A cursor is a handful of numbers (Monaco: lineNumber/column, maybe a selection); 1 KiB is generous.
MAX_CURSOR_BYTES: Final = 1024
CLIENT_MSG_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")

KIND_EVENT: Final = "e"
KIND_CLOSE: Final = "c"
KIND_REMOVE: Final = "r"
NO_ORIGIN: Final = "-"


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


ClientFrame = EditorUpdate | CursorUpdate | Ping | RefreshToken


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
    if not isinstance(kind, str):
        raise BadFrame(f"frame needs a string 'type' (one of {', '.join(CLIENT_TYPES)})")
    raise BadFrame(f"unknown frame type {kind[:40]!r}; expected one of {', '.join(CLIENT_TYPES)}")


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


# --- server frames -------------------------------------------------------------------------------


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def encode(frame: dict[str, Any]) -> bytes:
    return orjson.dumps(frame)


def frame_tail(frame: dict[str, Any]) -> bytes:
    """A frame without its opening brace, so the store can put `{"seq":N,` in front atomically."""
    return orjson.dumps(frame)[1:]


def error_frame(code: str, message: str, client_msg_id: str | None = None) -> bytes:
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if client_msg_id is not None:
        frame["client_msg_id"] = client_msg_id
    return encode(frame)


def ack_frame(seq: int, client_msg_id: str | None, *, duplicate: bool = False) -> bytes:
    if client_msg_id is None:
        return b'{"type":"ack","seq":%d}' % seq
    frame: dict[str, Any] = {"type": "ack", "seq": seq, "client_msg_id": client_msg_id}
    if duplicate:
        frame["duplicate"] = True
    return encode(frame)


PONG_FRAME: Final = b'{"type":"pong"}'


# --- envelope -------------------------------------------------------------------------------------


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
    def removes_member(self) -> str | None:
        """The user id a `r` envelope removes (parsed only for this rare kind)."""
        if self.kind != KIND_REMOVE:
            return None
        user_id = orjson.loads(self.frame).get("user_id")
        return user_id if isinstance(user_id, str) else None

    def pack(self) -> bytes:
        return b"%s|%s|%d|%s|%d|%s" % (
            self.kind.encode(),
            self.origin.encode(),
            self.seq,
            (self.msg_id or "").encode(),
            self.ts,
            self.frame,
        )

    @classmethod
    def unpack(cls, data: bytes) -> Envelope:
        """Raises ValueError on anything that is not an envelope (the bus logs and drops it)."""
        kind, origin, seq, msg_id, ts, frame = data.split(b"|", 5)
        if kind not in (b"e", b"c", b"r"):
            raise ValueError(f"unknown envelope kind {kind[:10]!r}")
        return cls(kind.decode(), origin.decode(), int(seq), msg_id.decode() or None, int(ts), frame)
