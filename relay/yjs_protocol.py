"""The y-websocket wire protocol: one binary message per WebSocket frame, lib0-encoded.

    frame          = varuint(message type) payload
    sync (0)       = varuint(step) varbytes            step 0: state vector, 1: update (reply), 2: update
    awareness (1)  = varbytes(awareness update)
    auth (2)       = (not used by relay; a client never sends it)
    query aw. (3)  = (empty)

    awareness update = varuint(count) { varuint(client id) varuint(clock) varstring(state JSON) }*count

lib0's varuint is little-endian base-128 (7 bits a byte, high bit "more follows"). pycrdt ships
message builders, but its decoder does not check bounds (a truncated frame raises IndexError or
returns a short slice), and every frame here comes from an untrusted socket: this module decodes
strictly and says what was wrong. Updates themselves are opaque here; yjs_doc.py validates them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

MESSAGE_SYNC: Final = 0
MESSAGE_AWARENESS: Final = 1
MESSAGE_AUTH: Final = 2
MESSAGE_QUERY_AWARENESS: Final = 3

SYNC_STEP1: Final = 0
SYNC_STEP2: Final = 1
SYNC_UPDATE: Final = 2

# lib0 reads varuints into JavaScript numbers: nothing above 2**53 - 1 is meaningful to a peer.
MAX_SAFE_INTEGER: Final = 2**53 - 1
_MAX_VARUINT_BYTES: Final = 8  # 8 * 7 = 56 bits covers every safe integer


class YjsProtocolError(ValueError):
    """A frame that is not a y-websocket message; the message says what was expected."""


@dataclass(frozen=True, slots=True)
class SyncStep1:
    state_vector: bytes


@dataclass(frozen=True, slots=True)
class SyncStep2:
    update: bytes


@dataclass(frozen=True, slots=True)
class SyncUpdate:
    update: bytes


@dataclass(frozen=True, slots=True)
class AwarenessMessage:
    update: bytes


@dataclass(frozen=True, slots=True)
class QueryAwareness:
    pass


YjsMessage = SyncStep1 | SyncStep2 | SyncUpdate | AwarenessMessage | QueryAwareness


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    """One client's awareness state; `state` is its JSON text, "null" when the client went away."""

    client_id: int
    clock: int
    state: str


# --- lib0 primitives ------------------------------------------------------------------------------


def write_var_uint(value: int) -> bytes:
    if not 0 <= value <= MAX_SAFE_INTEGER:
        raise ValueError(f"varuint out of range: {value}")
    out = bytearray()
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def write_var_bytes(data: bytes) -> bytes:
    return write_var_uint(len(data)) + data


def write_var_string(text: str) -> bytes:
    return write_var_bytes(text.encode())


def read_var_uint(data: bytes, pos: int) -> tuple[int, int]:
    """(value, position after it); YjsProtocolError when truncated or longer than a safe integer."""
    value = 0
    shift = 0
    for _ in range(_MAX_VARUINT_BYTES):
        if pos >= len(data):
            raise YjsProtocolError("truncated varuint: the frame ends inside a number")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if value > MAX_SAFE_INTEGER:
                raise YjsProtocolError("varuint larger than 2**53 - 1")
            return value, pos
        shift += 7
    raise YjsProtocolError(f"varuint longer than {_MAX_VARUINT_BYTES} bytes")


def read_var_bytes(data: bytes, pos: int) -> tuple[bytes, int]:
    length, pos = read_var_uint(data, pos)
    end = pos + length
    if end > len(data):
        raise YjsProtocolError(f"length prefix says {length} bytes, only {len(data) - pos} follow")
    return data[pos:end], end


def read_var_string(data: bytes, pos: int) -> tuple[str, int]:
    raw, pos = read_var_bytes(data, pos)
    try:
        return raw.decode(), pos
    except UnicodeDecodeError:
        raise YjsProtocolError("string is not valid UTF-8") from None


# --- messages -------------------------------------------------------------------------------------


def parse_message(frame: bytes) -> YjsMessage:
    """One frame as one message; anything else (unknown type, truncation, trailing bytes) is refused."""
    kind, pos = read_var_uint(frame, 0)
    message: YjsMessage
    if kind == MESSAGE_SYNC:
        step, pos = read_var_uint(frame, pos)
        payload, pos = read_var_bytes(frame, pos)
        if step == SYNC_STEP1:
            message = SyncStep1(payload)
        elif step == SYNC_STEP2:
            message = SyncStep2(payload)
        elif step == SYNC_UPDATE:
            message = SyncUpdate(payload)
        else:
            raise YjsProtocolError(f"unknown sync step {step}; expected 0 (step 1), 1 (step 2) or 2 (update)")
    elif kind == MESSAGE_AWARENESS:
        payload, pos = read_var_bytes(frame, pos)
        message = AwarenessMessage(payload)
    elif kind == MESSAGE_QUERY_AWARENESS:
        message = QueryAwareness()
    else:
        raise YjsProtocolError(
            f"unsupported message type {kind}; expected 0 (sync), 1 (awareness) or 3 (query awareness)"
        )
    if pos != len(frame):
        raise YjsProtocolError(f"{len(frame) - pos} bytes after the message: send one message per frame")
    return message


def sync_step1(state_vector: bytes) -> bytes:
    return bytes((MESSAGE_SYNC, SYNC_STEP1)) + write_var_bytes(state_vector)


def sync_step2(update: bytes) -> bytes:
    return bytes((MESSAGE_SYNC, SYNC_STEP2)) + write_var_bytes(update)


def sync_update(update: bytes) -> bytes:
    return bytes((MESSAGE_SYNC, SYNC_UPDATE)) + write_var_bytes(update)


def awareness_message(update: bytes) -> bytes:
    return bytes((MESSAGE_AWARENESS,)) + write_var_bytes(update)


def query_awareness() -> bytes:
    return bytes((MESSAGE_QUERY_AWARENESS,))


# --- awareness ------------------------------------------------------------------------------------


def parse_awareness(update: bytes) -> list[AwarenessEntry]:
    count, pos = read_var_uint(update, 0)
    entries = []
    for _ in range(count):
        client_id, pos = read_var_uint(update, pos)
        clock, pos = read_var_uint(update, pos)
        state, pos = read_var_string(update, pos)
        entries.append(AwarenessEntry(client_id, clock, state))
    if pos != len(update):
        raise YjsProtocolError(f"{len(update) - pos} bytes after the awareness entries")
    return entries


def encode_awareness(entries: list[AwarenessEntry]) -> bytes:
    parts = [write_var_uint(len(entries))]
    for entry in entries:
        parts += (write_var_uint(entry.client_id), write_var_uint(entry.clock), write_var_string(entry.state))
    return b"".join(parts)


def awareness_removal(clocks: dict[int, int]) -> bytes:
    """The awareness message that tells peers these clients left: state null, clock one past the last seen."""
    return awareness_message(
        encode_awareness(
            [AwarenessEntry(client_id, clock + 1, "null") for client_id, clock in clocks.items()]
        )
    )
