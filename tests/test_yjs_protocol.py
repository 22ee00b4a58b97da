"""The y-websocket codec: lib0 numbers and byte strings, one message per frame, awareness entries."""

from __future__ import annotations

import pycrdt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.yjs_protocol import (
    MAX_SAFE_INTEGER,
    AwarenessEntry,
    AwarenessMessage,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    YjsProtocolError,
    awareness_message,
    awareness_removal,
    encode_awareness,
    parse_awareness,
    parse_message,
    query_awareness,
    read_var_uint,
    sync_step1,
    sync_step2,
    sync_update,
    write_var_uint,
)


@given(st.integers(min_value=0, max_value=MAX_SAFE_INTEGER))
def test_varuint_round_trips_and_matches_pycrdt(value: int) -> None:
    """Every safe integer encodes as lib0 does (pycrdt's encoder agrees) and decodes back."""
    encoded = write_var_uint(value)
    assert encoded == pycrdt.write_var_uint(value)
    assert read_var_uint(encoded, 0) == (value, len(encoded))


def test_varuint_edges() -> None:
    """127 fits in one byte, 128 needs two; truncation and over-long numbers are refused."""
    assert write_var_uint(127) == b"\x7f" and write_var_uint(128) == b"\x80\x01"
    with pytest.raises(YjsProtocolError, match="truncated"):
        read_var_uint(b"\x80", 0)
    with pytest.raises(YjsProtocolError, match="longer than"):
        read_var_uint(b"\xff" * 9 + b"\x01", 0)
    with pytest.raises(YjsProtocolError, match="2\\*\\*53"):
        read_var_uint(b"\xff" * 7 + b"\x7f", 0)


@given(st.binary(max_size=300))
def test_messages_round_trip(payload: bytes) -> None:
    """Each builder's frame parses back to the same message; pycrdt builds the same bytes."""
    assert parse_message(sync_step1(payload)) == SyncStep1(payload)
    assert parse_message(sync_step2(payload)) == SyncStep2(payload)
    assert parse_message(sync_update(payload)) == SyncUpdate(payload)
    assert parse_message(awareness_message(payload)) == AwarenessMessage(payload)
    assert sync_update(payload) == pycrdt.create_update_message(payload)
    assert awareness_message(payload) == pycrdt.create_awareness_message(payload)


def test_pycrdt_sync_messages_parse() -> None:
    """A step 1 from pycrdt's own builder parses, and its state vector is the document's."""
    doc: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc()
    doc.get("content", type=pycrdt.Text).insert(0, "hi")
    message = parse_message(pycrdt.create_sync_message(doc))
    assert message == SyncStep1(doc.get_state())
    assert parse_message(query_awareness()) == QueryAwareness()


@pytest.mark.parametrize(
    ("frame", "complaint"),
    [
        (b"", "truncated"),
        (b"\x00", "truncated"),
        (b"\x00\x05\x00", "unknown sync step 5"),
        (b"\x00\x02\x05ab", "only 2 follow"),
        (b"\x02\x00", "unsupported message type 2"),
        (b"\x07", "unsupported message type 7"),
        (b"\x00\x02\x01a\x00", "one message per frame"),
        (b"\x03\x03", "one message per frame"),
    ],
)
def test_malformed_frames_are_refused_with_a_reason(frame: bytes, complaint: str) -> None:
    """Truncation, unknown types and steps, and trailing bytes are refused, saying what was wrong."""
    with pytest.raises(YjsProtocolError, match=complaint):
        parse_message(frame)


@given(
    st.lists(
        st.builds(
            AwarenessEntry,
            st.integers(0, 2**32),
            st.integers(0, 2**40),
            st.text(max_size=40),
        ),
        max_size=5,
    )
)
def test_awareness_round_trips(entries: list[AwarenessEntry]) -> None:
    """Awareness entries (client id, clock, state JSON) encode and decode losslessly."""
    assert parse_awareness(encode_awareness(entries)) == entries


def test_awareness_removal_is_what_a_yjs_peer_reads_as_gone() -> None:
    """The removal message has state null and a clock past the last one, so peers apply it."""
    message = parse_message(awareness_removal({7: 3, 9: 0}))
    assert isinstance(message, AwarenessMessage)
    assert parse_awareness(message.update) == [AwarenessEntry(7, 4, "null"), AwarenessEntry(9, 1, "null")]


def test_awareness_garbage_is_refused() -> None:
    """A truncated entry, invalid UTF-8 in a state, or trailing bytes are refused."""
    for update in (b"\x01\x05", b"\x01\x01\x01\x02\xff\xfe", b"\x00\x00"):
        with pytest.raises(YjsProtocolError):
            parse_awareness(update)
