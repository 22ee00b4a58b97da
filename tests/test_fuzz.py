"""Hostile input never hurts anyone: the frame parser and HTTP bodies under hypothesis, thousands of
random frames on a live socket, and room codes in every bad shape in URLs and bodies.

What each bad input got is written to docs/fuzz-findings.md (rendered from the runs below; the last
test fails when the file is stale, RELAY_REGENERATE_DOCS=1 rewrites it).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from relay.errors import RelayError
from relay.keys import CODE_ALPHABET
from relay.protocol import (
    CLIENT_MSG_ID,
    CLIENT_TYPES,
    MAX_CURSOR_BYTES,
    MAX_FOCUS_LOST_SECONDS,
    MAX_KEY_CHARS,
    MAX_KEY_COMBINATION_CHARS,
    MAX_MONITORING_FRAME_CHARS,
    MAX_TOKEN_CHARS,
    CursorUpdate,
    EditorUpdate,
    KeystrokeMonitoring,
    Ping,
    RefreshToken,
    WindowFocusLost,
    parse_client_frame,
)
from tests.security_support import (
    DOCS,
    Listener,
    RedisWatch,
    check_generated_doc,
    checkout_replica,
)
from tests.support import Client, RedisServer, Replica, auth, create_room, join_room, token

MAX_FRAME = 262144  # relay's defaults, which the fuzz replica runs with
MAX_DOCUMENT = 204800
FRAME_ERROR_CODES = {"bad_frame", "too_large"}

# The fuzz replica: rate and abuse limits far out of the way, so every input reaches the parser; a long
# Redis link timeout and presence TTL so the replica's own PINGs and presence refreshes do not blur the per-request Redis command counts.
FUZZ_ENV = {
    "RELAY_RATE_PER_SECOND": "100000",
    "RELAY_RATE_BURST": "100000",
    "RELAY_JOIN_FAILURE_LIMIT": "1000000",
    "RELAY_CREATE_LIMIT": "1000000",
    "RELAY_REDIS_LINK_TIMEOUT": "600",
    "RELAY_PRESENCE_TTL": "3600",
    "RELAY_MAX_CANDIDATES": "2",  # ben listens, the fuzzer sends: both joined as candidates
}


@pytest.fixture(scope="module")
def fuzz_redis() -> Iterator[RedisServer]:
    """A redis-server for this module alone, so key and command counts see only this module's traffic."""
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def watch(fuzz_redis: RedisServer) -> Iterator[RedisWatch]:
    watcher = RedisWatch(fuzz_redis.url)
    yield watcher
    watcher.close()


@pytest.fixture(scope="module")
def fuzz_replica(fuzz_redis: RedisServer) -> Iterator[Replica]:
    replica = checkout_replica({"REDIS_URL": fuzz_redis.url, **FUZZ_ENV}, "fuzz").start()
    yield replica
    replica.stop()


# --- 1. the frame parser, property-based -----------------------------------------------------------


def parse(text: str, limit: int = MAX_DOCUMENT) -> object:
    return parse_client_frame(text, max_document_bytes=limit)


def check_parse(text: str) -> object:
    """Parse; the only exception allowed out is a RelayError with a frame error code and a message."""
    try:
        frame = parse(text)
    except RelayError as error:
        assert error.code in FRAME_ERROR_CODES and error.message, error
        return error
    assert isinstance(
        frame, EditorUpdate | CursorUpdate | Ping | RefreshToken | WindowFocusLost | KeystrokeMonitoring
    )
    return frame


any_char = st.characters(codec=None) | st.characters(categories=["Cs"])  # lone surrogates included
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(any_char, max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=25,
)
frame_objects = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(CLIENT_TYPES) | json_values,
        "content": st.text(any_char) | json_values,
        "cursor_position": json_values,
        "client_msg_id": st.from_regex(CLIENT_MSG_ID, fullmatch=True) | json_values,
        "user_id": json_values,
        "seq": json_values,
        "token": st.text(any_char) | json_values,
        "duration": st.floats() | json_values,
        "key": st.text(any_char, max_size=40) | json_values,
        "key_combination": st.text(any_char, max_size=70) | json_values,
        "is_suspicious": json_values,
    },
)
PARSER = settings(max_examples=400, deadline=None)


@PARSER
@given(st.text(any_char))
def test_parser_takes_any_text(text: str) -> None:
    """Any text, lone surrogates included, parses to a frame or raises RelayError, never anything else."""
    check_parse(text)


@PARSER
@given(frame_objects, st.booleans())
def test_parser_takes_any_frame_shaped_object(obj: dict[str, Any], ascii_only: bool) -> None:
    """Objects with the right field names but any values: a valid frame or a RelayError, nothing else."""
    check_parse(json.dumps(obj, ensure_ascii=ascii_only))


small_cursor = st.recursive(
    st.integers(-(2**53), 2**53) | st.text(max_size=10) | st.booleans() | st.none(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=10,
).filter(lambda v: isinstance(v, dict | list) or (isinstance(v, int) and not isinstance(v, bool)))


@PARSER
@given(
    content=st.text(),
    cursor=st.none() | small_cursor,
    msg_id=st.none() | st.from_regex(CLIENT_MSG_ID, fullmatch=True) | st.integers(0, 10**12),
    spoof=st.dictionaries(st.sampled_from(["user_id", "user_name", "seq", "ts", "role"]), json_scalars),
    ascii_only=st.booleans(),
)
def test_valid_editor_update_round_trips(
    content: str, cursor: Any, msg_id: str | int | None, spoof: dict[str, Any], ascii_only: bool
) -> None:
    """A valid editor_update comes out with its content verbatim, its cursor and id intact, identity claims dropped."""
    obj: dict[str, Any] = {**spoof, "type": "editor_update", "content": content}
    if cursor is not None:
        obj["cursor_position"] = cursor
    if msg_id is not None:
        obj["client_msg_id"] = msg_id
    text = json.dumps(obj, ensure_ascii=ascii_only)
    # A lone surrogate in a spoofed field is not valid Unicode: raw it cannot travel in a text frame (UTF-8
    # only), and escaped (`"\ud800"`) the JSON parser refuses the frame. Either way it is not a valid
    # editor_update; test_parser_takes_any_text and the frame-shaped property cover those cases.
    assume(not any("\ud800" <= char <= "\udfff" for char in json.dumps(obj, ensure_ascii=False)))
    result = check_parse(text)
    if cursor is not None and len(orjson.dumps(cursor)) > MAX_CURSOR_BYTES:
        assert isinstance(result, RelayError)
        return
    assert isinstance(result, EditorUpdate), result
    assert result.content == content
    assert result.cursor_position == cursor
    assert result.client_msg_id == (None if msg_id is None else str(msg_id))


@PARSER
@given(st.text(min_size=1), st.integers(0, 64))
def test_document_limit_counts_utf8_bytes(content: str, limit: int) -> None:
    """content over the document limit in UTF-8 bytes is too_large; at or under it, it is accepted."""
    text = json.dumps({"type": "editor_update", "content": content})
    size = len(content.encode())
    try:
        frame = parse(text, limit)
    except RelayError as error:
        assert error.code == "too_large" and size > limit
    else:
        assert isinstance(frame, EditorUpdate) and size <= limit


@PARSER
@given(
    duration=st.floats(0, MAX_FOCUS_LOST_SECONDS) | st.integers(0, int(MAX_FOCUS_LOST_SECONDS)),
    key=st.text(
        st.characters(categories=["L", "N", "P", "S"], include_characters=" "),
        min_size=1,
        max_size=MAX_KEY_CHARS,
    ),
    combination=st.text(st.characters(categories=["L", "N", "P", "S"]), max_size=MAX_KEY_COMBINATION_CHARS),
    suspicious=st.booleans(),
    spoof=st.dictionaries(
        st.sampled_from(["user_id", "user_name", "timestamp"]), st.none() | st.integers() | st.text()
    ),
)
def test_valid_monitoring_frames_round_trip(
    duration: float, key: str, combination: str, suspicious: bool, spoof: dict[str, Any]
) -> None:
    """Well-formed monitoring frames parse to exactly their values (spoofed identity fields are dropped),
    unless the whole frame is past the monitoring frame limit."""
    focus = json.dumps({"type": "window_focus_lost", "duration": duration, **spoof})
    keys = json.dumps(
        {
            "type": "keystroke_monitoring",
            "key": key,
            "key_combination": combination,
            "is_suspicious": suspicious,
        }
        | spoof
    )
    for text, expected in (
        (focus, WindowFocusLost(float(duration))),
        (keys, KeystrokeMonitoring(key, combination, suspicious)),
    ):
        result = check_parse(text)
        if len(text) > MAX_MONITORING_FRAME_CHARS:
            assert isinstance(result, RelayError) and result.code == "too_large"
        else:
            assert result == expected


# --- 2. HTTP bodies against a live replica, property-based ---------------------------------------


def json_body_bytes() -> st.SearchStrategy[bytes]:
    keys = st.sampled_from(["room_code", "title", "language", "type", "__proto__"]) | st.text(max_size=6)
    objects = st.dictionaries(keys, json_values, max_size=4)
    return (objects | json_values).map(
        lambda value: json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    )


any_body = (
    st.binary(max_size=400)
    | json_body_bytes()
    | st.integers(16 * 1024 - 8, 20 * 1024).map(lambda n: b'{"title":"' + b"x" * n + b'"}')
)


def check_http_answer(response: httpx.Response) -> str:
    """A JSON answer, never a 5xx or a traceback; returns 'status code' for the findings."""
    assert response.status_code < 500, response.text
    assert "Traceback" not in response.text and 'File "' not in response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    if response.status_code >= 400:
        assert body["status"] == "error" and isinstance(body["message"], str) and body["code"], body
        return f"{response.status_code} {body['code']}"
    assert body["status"] == "success", body
    return str(response.status_code)


@pytest.fixture(scope="module")
def api_client(fuzz_replica: Replica) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzz_replica.http, timeout=10) as client:
        yield client


@pytest.mark.parametrize("path", ["/api/create-room", "/api/join-room"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=any_body,
    content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded"]),
)
def test_any_body_gets_a_json_answer(
    api_client: httpx.Client, path: str, body: bytes, content_type: str
) -> None:
    """Any bytes as a create-room or join-room body: a JSON success or a JSON 4xx error, never a 5xx."""
    headers = {**auth(token("body-fuzzer")), "Content-Type": content_type}
    check_http_answer(api_client.post(path, content=body, headers=headers))


BAD_BODIES: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("whitespace", b"  \n\t "),
    ("not JSON", b"{not json"),
    ("truncated object", b'{"room_code": "ABCD'),
    ("JSON array", b"[1, 2]"),
    ("JSON string", b'"ABCDEF"'),
    ("JSON null", b"null"),
    ("number", b"1e400"),
    ("invalid UTF-8", b'{"room_code": "\xff\xfe"}'),
    ("lone surrogate escape", b'{"room_code": "\\ud800BCDEF"}'),
    ("NUL escape", b'{"room_code": "ABCDE\\u0000"}'),
    ("raw NUL", b'{"room_code": "ABC\x00EF"}'),
    ("deep nesting (5000)", b'{"room_code": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
    ("room_code number", b'{"room_code": 123456}'),
    ("room_code null", b'{"room_code": null}'),
    ("room_code object", b'{"room_code": {"$ne": ""}}'),
    ("room_code array", b'{"room_code": ["ABCDEF"]}'),
    ("unknown field", b'{"titel": "typo"}'),
    ("title number", b'{"title": 5}'),
    ("language 41 chars", b'{"language": "' + b"x" * 41 + b'"}'),
    ("duplicate keys", b'{"room_code": "ABCDEF", "room_code": 5}'),
    ("body over 16 KiB", b'{"title": "' + b"x" * 17000 + b'"}'),
]


@pytest.fixture(scope="module")
def body_findings(api_client: httpx.Client) -> list[tuple[str, str, str]]:
    user = token("body-prober")
    found = []
    for label, body in BAD_BODIES:
        answers = [
            check_http_answer(api_client.post(path, content=body, headers=auth(user)))
            for path in ("/api/create-room", "/api/join-room")
        ]
        found.append((label, answers[0], answers[1]))
    return found


def test_bad_bodies_get_clear_refusals(body_findings: list[tuple[str, str, str]]) -> None:
    """Each listed bad body is refused with 413 or 422 by both endpoints (an empty body is a valid create)."""
    for label, create, join in body_findings:
        assert join.split()[0] in {"413", "422"}, (label, join)
        if label not in {"empty", "whitespace"}:
            assert create.split()[0] in {"413", "422"}, (label, create)


# --- 3. thousands of random frames on one live socket --------------------------------------------


Gen = Callable[[random.Random], tuple[str, str | bytes]]  # -> (kind "text" / "binary", payload)


def _text(payload: str) -> tuple[str, str | bytes]:
    return "text", payload


def _obj(value: Any) -> tuple[str, str | bytes]:
    return "text", json.dumps(value)


def _rand_str(rng: random.Random, n: int, alphabet: str = "abcdefghijklmnopqrstuvwxyz_ -") -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _code_point(rng: random.Random) -> str:
    plane = rng.random()
    if plane < 0.4:
        return chr(rng.randint(0x20, 0x7E))
    if plane < 0.7:
        return chr(rng.randint(0x80, 0xD7FF))
    if plane < 0.95:
        return chr(rng.randint(0xE000, 0x10FFFF))
    return chr(rng.choice([0, 0xFEFF, 0xFFFE, 0xFFFF, 0x202E, 0x200B]))


def _wrong_value(rng: random.Random) -> Any:
    return rng.choice([None, True, False, 0, -1, 1.5, 2**70, [], [1, "a"], {}, {"k": "v"}, ""])


def _invalid_json(rng: random.Random) -> tuple[str, str | bytes]:
    good = json.dumps({"type": "editor_update", "content": _rand_str(rng, 8)})
    return _text(
        rng.choice(
            [
                good[: rng.randint(0, len(good) - 1)],  # truncated
                good + rng.choice(["}", ",", "x", "{}"]),  # trailing junk
                good.replace('"', "'"),  # single quotes
                "{type: 'ping'}",
                "NaN",
                "undefined",
                "",
                " ",
                "{,}",
                '{"type":"ping",}',
                _rand_str(rng, rng.randint(1, 40), '{}[]":,0123456789abcdeftrunl\\ '),
            ]
        )
    )


def _random_unicode(rng: random.Random) -> tuple[str, str | bytes]:
    text = "".join(_code_point(rng) for _ in range(rng.randint(1, 60)))
    return _text(
        rng.choice(
            [
                text,
                json.dumps({"type": text}, ensure_ascii=False),
                json.dumps({"type": "editor_update", "content": 5, text: text}, ensure_ascii=False),
            ]
        )
    )


def _binary(rng: random.Random) -> tuple[str, str | bytes]:
    choice = rng.random()
    if choice < 0.3:
        return "binary", b'{"type":"ping"}'
    if choice < 0.5:
        return "binary", json.dumps({"type": "editor_update", "content": "bin"}).encode()
    return "binary", bytes(rng.randint(0, 255) for _ in range(rng.randint(0, 200)))


def _not_an_object(rng: random.Random) -> tuple[str, str | bytes]:
    return _obj(
        rng.choice(
            [
                [],
                [{"type": "ping"}],
                "ping",
                0,
                1.5,
                None,
                True,
                False,
                "editor_update",
                [1, [2, [3]]],
                -(2**63),
            ]
        )
    )


def _missing_type(rng: random.Random) -> tuple[str, str | bytes]:
    return _obj(
        rng.choice(
            [
                {},
                {"content": "x"},
                {"Type": "ping"},
                {"TYPE": "ping"},
                {"kind": "editor_update"},
                {"content": "x", "cursor_position": 1},
                {"type ": "ping"},
            ]
        )
    )


def _type_wrong_kind(rng: random.Random) -> tuple[str, str | bytes]:
    return _obj({"type": rng.choice([None, 0, 1, True, False, [], ["ping"], {}, {"type": "ping"}, 1.5])})


def _unknown_type(rng: random.Random) -> tuple[str, str | bytes]:
    kind = rng.choice(
        [
            _rand_str(rng, rng.randint(0, 30)),
            "Editor_Update",
            "EDITOR_UPDATE",
            "editor_update ",
            " ping",
            "editor-update",
            "cursor",
            "room_state",
            "ack",
            "error",
            "pong",
            "member_joined",
            "room_closed",
            "editor_update\u0000",
            "p\u0456ng",  # Cyrillic i
        ]
    )
    return _obj({"type": kind, "content": "x"})


def _editor_content_wrong(rng: random.Random) -> tuple[str, str | bytes]:
    frame: dict[str, Any] = {"type": "editor_update"}
    if rng.random() < 0.8:
        frame["content"] = _wrong_value(rng)
        if frame["content"] == "":
            frame["content"] = None
    if rng.random() < 0.3:
        frame["Content"] = "x"
    return _obj(frame)


def _cursor_wrong(rng: random.Random) -> tuple[str, str | bytes]:
    value = rng.choice(
        [
            "missing",
            "12:3",
            True,
            False,
            1.5,
            2**53 + 1,
            -(2**60),
            1e300,
            {"line": "x" * 1100},
            list(range(400)),
            None,
        ]
    )
    kind = rng.choice(["cursor_update", "editor_update"])
    frame: dict[str, Any] = {"type": kind}
    if kind == "editor_update":
        frame["content"] = "c"
    if value != "missing" and not (value is None and kind == "editor_update"):
        frame["cursor_position"] = value
    elif kind == "editor_update":
        frame["cursor_position"] = "12:3"
    return _obj(frame)


def _client_msg_id_wrong(rng: random.Random) -> tuple[str, str | bytes]:
    value = rng.choice(
        ["", "has space", "x" * 65, "naïve", "a/b", "a\u0000", "{x}", 1.5, True, [], {}, 1e20, "\u202eevil"]
    )
    return _obj({"type": "editor_update", "content": "m", "client_msg_id": value})


def _deep_nesting(rng: random.Random) -> tuple[str, str | bytes]:
    depth = rng.choice([50, 200, 256, 300, 1000, 1100, 5000, 20000])
    nested = rng.choice(["[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth])
    where = rng.choice(["cursor_update", "editor_update", "ping_extra"])
    if where == "cursor_update":
        return _text('{"type":"cursor_update","cursor_position":' + nested + "}")
    if where == "editor_update":
        return _text('{"type":"editor_update","content":"d","cursor_position":' + nested + "}")
    return _text('{"type":"ping","x":' + nested + "}")


def _lone_surrogates(rng: random.Random) -> tuple[str, str | bytes]:
    escape = rng.choice(
        ["\\ud800", "\\udbff", "\\udc00", "\\udfff", "\\ude00\\ud83d", "\\ud83d\\ud83d", "a\\ud800b"]
    )
    return _text(
        rng.choice(
            [
                '{"type":"editor_update","content":"' + escape + '"}',
                '{"type":"' + escape + '"}',
                '{"' + escape + '":1,"type":"ping"}',
                '{"type":"cursor_update","cursor_position":{"k":"' + escape + '"}}',
                '{"type":"editor_update","content":"x","client_msg_id":"' + escape + '"}',
            ]
        )
    )


def _nul(rng: random.Random) -> tuple[str, str | bytes]:
    return _text(
        rng.choice(
            [
                '{"type":"editor_update","content":"a\\u0000b"}',  # a NUL in the document is fine
                '{"type":"editor_update","content":"a\u0000b"}',  # a raw control character is not JSON
                '{"type":"editor_update\\u0000"}',
                '{"type":"ping"}\u0000',
                "\u0000",
                '{"type":"editor_update","content":"x","client_msg_id":"a\\u0000"}',
                '{"\\u0000":"x","type":"ping"}',
            ]
        )
    )


def _huge(rng: random.Random) -> tuple[str, str | bytes]:
    shape = rng.choice(["content_over_document", "type", "unknown_field", "number", "key_count", "cursor"])
    if shape == "content_over_document":
        return _obj(
            {"type": "editor_update", "content": "x" * rng.randint(MAX_DOCUMENT + 1, MAX_FRAME - 100)}
        )
    if shape == "type":
        return _obj({"type": "t" * rng.randint(10_000, MAX_FRAME - 100)})
    if shape == "unknown_field":
        return _obj({"type": "ping", "padding": "p" * rng.randint(10_000, MAX_FRAME - 100)})
    if shape == "number":
        return _text('{"type":"cursor_update","cursor_position":' + "9" * rng.randint(400, 200_000) + "}")
    if shape == "key_count":
        return _obj({"type": "ping", **{f"k{i}": i for i in range(rng.randint(1000, 12_000))}})
    return _obj({"type": "cursor_update", "cursor_position": {"s": "x" * rng.randint(2000, 100_000)}})


def _refresh_token_wrong(rng: random.Random) -> tuple[str, str | bytes]:
    value = rng.choice(
        ["missing", None, 0, 1.5, True, "", [], {}, ["eyJ.a.b"], {"token": "x"}, "t" * (MAX_TOKEN_CHARS + 1)]
    )
    frame: dict[str, Any] = {"type": "refresh_token"}
    if value != "missing":
        frame["token"] = value
    return _obj(frame)


def _monitoring_wrong(rng: random.Random) -> tuple[str, str | bytes]:
    """Monitoring frames with a wrong, missing or oversized field (the fuzzer is the room's candidate)."""
    if rng.random() < 0.35:
        frame: dict[str, Any] = {"type": "window_focus_lost", "user_id": "ana"}
        duration: Any = rng.choice(
            ["missing", None, "3", True, False, -0.001, -1, MAX_FOCUS_LOST_SECONDS + 1, 1e308, [], {"s": 1}]
        )
        if duration != "missing":
            frame["duration"] = duration
        return _obj(frame)
    frame = {"type": "keystroke_monitoring", "key": "v", "key_combination": "Ctrl+V", "is_suspicious": True}
    field_name = rng.choice(["key", "key_combination", "is_suspicious", "padding"])
    if field_name == "padding":  # a valid frame past the monitoring frame limit
        frame["user_name"] = "x" * rng.randint(MAX_MONITORING_FRAME_CHARS, 4 * MAX_MONITORING_FRAME_CHARS)
        return _obj(frame)
    wrong: list[Any] = [None, 0, 1.5, [], {}, "missing"]
    if field_name == "is_suspicious":
        wrong += ["true", 1, 0]
    else:
        limit = MAX_KEY_CHARS if field_name == "key" else MAX_KEY_COMBINATION_CHARS
        wrong += ["k" * (limit + 1), "Ctrl+\n", "\t", "\u0000", "a\u200bb", "\ud800"]
        if field_name == "key":
            wrong.append("")
    value = rng.choice(wrong)
    if value == "missing":
        del frame[field_name]
        return _obj(frame)
    frame[field_name] = value  # control characters, a zero-width space, a lone surrogate: JSON escapes
    return _obj(frame)


def _monitoring_valid(rng: random.Random) -> tuple[str, str | bytes]:
    """Well-formed monitoring frames with a spoofed identity: accepted silently (the fuzzer is a candidate)."""
    if rng.random() < 0.5:
        return _obj({"type": "window_focus_lost", "duration": rng.uniform(1, 60), "user_id": "ana"})
    suspicious = rng.random() < 0.5
    return _obj(
        {
            "type": "keystroke_monitoring",
            "key": rng.choice("abcxyz"),
            "key_combination": "Ctrl+V" if suspicious else rng.choice("abcxyz"),
            "is_suspicious": suspicious,
            "user_name": "Ana (spoofed)",
        }
    )


def _valid(rng: random.Random) -> tuple[str, str | bytes]:
    choice = rng.random()
    if choice < 0.5:
        content = "".join(_code_point(rng) for _ in range(rng.randint(0, 40))).replace("\x00", "")
        return _obj(
            {
                "type": "editor_update",
                "content": content,
                "user_id": "ana",
                "user_name": "Ana (spoofed)",
                "client_msg_id": f"f{rng.randint(0, 10**9)}",
                "seq": 1,
            }
        )
    if choice < 0.8:
        return _obj(
            {
                "type": "cursor_update",
                "cursor_position": {"lineNumber": rng.randint(1, 99), "column": 1},
                "user_id": "ana",
            }
        )
    return _obj({"type": "ping"})


@dataclass(frozen=True)
class Category:
    name: str
    what: str
    count: int
    gen: Gen
    always_refused: bool  # every input of the category must get an error frame


CATEGORIES = [
    Category(
        "invalid_json",
        "truncated frames, trailing junk, single quotes, NaN, empty text",
        250,
        _invalid_json,
        True,
    ),
    Category(
        "random_unicode",
        "random code points of every plane, as text, as a type, as a key",
        250,
        _random_unicode,
        True,
    ),
    Category("binary", "binary frames (random bytes, or JSON sent as binary)", 200, _binary, True),
    Category("not_an_object", "JSON arrays, strings, numbers, null, booleans", 200, _not_an_object, True),
    Category("missing_type", "objects without `type` (or `Type`, `type `)", 200, _missing_type, True),
    Category(
        "type_wrong_kind", "`type` as null, number, boolean, array, object", 200, _type_wrong_kind, True
    ),
    Category(
        "unknown_type",
        "unknown types, case variants, server-only types, NUL and homoglyph types",
        250,
        _unknown_type,
        True,
    ),
    Category(
        "editor_content_wrong",
        "editor_update with `content` missing, null, number, array, object",
        250,
        _editor_content_wrong,
        True,
    ),
    Category(
        "cursor_wrong",
        "cursor_position missing, string, boolean, float, out-of-range int, over 1 KiB",
        250,
        _cursor_wrong,
        True,
    ),
    Category(
        "client_msg_id_wrong",
        "client_msg_id empty, with spaces, 65 chars, non-ASCII, NUL, float, object",
        200,
        _client_msg_id_wrong,
        True,
    ),
    Category(
        "deep_nesting",
        "arrays / objects nested 50 to 20000 deep in a cursor or an ignored field",
        200,
        _deep_nesting,
        False,
    ),
    Category(
        "refresh_token_wrong",
        "refresh_token without a string token: missing, null, number, empty, list, object, over 8192 chars",
        100,
        _refresh_token_wrong,
        True,
    ),
    Category(
        "lone_surrogates",
        "lone surrogates as JSON escapes in content, type, keys, cursor, id",
        200,
        _lone_surrogates,
        True,
    ),
    Category(
        "nul", "NUL as an escape (valid in content) and raw (not JSON), in types, keys, ids", 150, _nul, False
    ),
    Category(
        "huge",
        "strings up to the frame limit: content over the document limit, huge type / field / number / key count",
        30,
        _huge,
        False,
    ),
    Category(
        "monitoring_wrong",
        "window_focus_lost / keystroke_monitoring with a field missing, of the wrong type, out of range, "
        "too long, with control characters or lone surrogates, or the frame over 2,048 characters",
        200,
        _monitoring_wrong,
        True,
    ),
    # At most the monitoring burst (20), so that none of them can meet the monitoring rate limit.
    Category(
        "monitoring_valid",
        "well-formed monitoring frames from the room's candidate, with a spoofed identity",
        20,
        _monitoring_valid,
        False,
    ),
    Category(
        "valid", "well-formed edits (with a spoofed user_id), cursors and pings, mixed in", 70, _valid, False
    ),
]
SEED = 20240604


def fuzz_frames() -> list[tuple[Category, str, str | bytes]]:
    rng = random.Random(SEED)
    frames = [(cat, *cat.gen(rng)) for cat in CATEGORIES for _ in range(cat.count)]
    rng.shuffle(frames)
    return frames


@dataclass
class FuzzRun:
    code: str
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)
    refused_without_error: list[str] = field(default_factory=list)
    closers: dict[str, str] = field(default_factory=dict)
    fuzzer_acked: list[int] = field(default_factory=list)
    alerts_expected: int = 0  # focus losses and suspicious key presses the fuzzer got accepted


def _send(conn: Any, kind: str, payload: str | bytes) -> None:
    assert isinstance(payload, bytes) == (kind == "binary")
    conn.send(payload)


def _answers_until_sentinel(client: Client, index: int) -> list[dict[str, Any]]:
    """Frames the server sent for one input: everything before the error naming our sentinel."""
    marker = f"'sentinel-{index}'"
    got: list[dict[str, Any]] = []
    while True:
        frame = client.recv(timeout=20)
        if frame.get("type") == "error" and marker in frame.get("message", ""):
            return got
        got.append(frame)


def _summary(answers: list[dict[str, Any]]) -> str:
    if not answers:
        return "accepted, no reply"
    return " + ".join(f"error {a['code']}" if a["type"] == "error" else str(a["type"]) for a in answers)


@pytest.fixture(scope="module")
def room_members(fuzz_replica: Replica) -> Iterator[tuple[str, Listener, Listener]]:
    code = create_room(fuzz_replica.http, token("ana", name="Ana"))
    join_room(fuzz_replica.http, token("ben", name="Ben"), code)
    join_room(fuzz_replica.http, token("fuzzer", name="Fuzzer"), code)
    ana = Listener(Client(fuzz_replica.ws, code, token("ana", name="Ana")))
    ben = Listener(Client(fuzz_replica.ws, code, token("ben", name="Ben")))
    ana.wait_for(lambda f: f["type"] == "room_state")
    ben.wait_for(lambda f: f["type"] == "room_state")
    yield code, ana, ben
    ana.close()
    ben.close()


@pytest.fixture(scope="module")
def fuzz_run(fuzz_replica: Replica, room_members: tuple[str, Listener, Listener]) -> FuzzRun:
    code = room_members[0]
    run = FuzzRun(code)
    fuzzer = Client(fuzz_replica.ws, code, token("fuzzer", name="Fuzzer"))
    assert fuzzer.recv_type("room_state")["you"]["user_id"] == "fuzzer"
    fuzzer.drain(quiet=0.2)
    for index, (cat, kind, payload) in enumerate(fuzz_frames()):
        _send(fuzzer.conn, kind, payload)
        fuzzer.conn.send(json.dumps({"type": f"sentinel-{index}"}))
        answers = _answers_until_sentinel(fuzzer, index)
        outcome = _summary(answers)
        run.outcomes.setdefault(cat.name, Counter())[outcome] += 1
        run.examples.setdefault(cat.name, repr(payload[:70]))
        if cat.always_refused and not outcome.startswith("error "):
            run.refused_without_error.append(f"{cat.name}: {payload[:100]!r} -> {outcome}")
        run.fuzzer_acked += [a["seq"] for a in answers if a["type"] == "ack"]
        if cat.name == "monitoring_valid" and outcome == "accepted, no reply":
            sent = json.loads(payload)
            run.alerts_expected += sent["type"] == "window_focus_lost" or sent.get("is_suspicious") is True
    # The socket is still open and answering after every input.
    fuzzer.send({"type": "ping"})
    assert fuzzer.recv_type("pong", timeout=10)
    fuzzer.close()
    run.closers = _closing_inputs(fuzz_replica, code)
    return run


def _closing_inputs(replica: Replica, code: str) -> dict[str, str]:
    """Inputs the protocol answers with a close: each on its own socket, with the close code it got."""
    got = {}
    oversize = Client(replica.ws, code, token("fuzzer", name="Fuzzer"))
    oversize.recv_type("room_state")
    payload = json.dumps({"type": "editor_update", "content": "x" * MAX_FRAME})
    oversize.conn.send(payload)
    got[f"text frame of {len(payload)} bytes (over RELAY_MAX_FRAME_BYTES)"] = (
        f"close {oversize.wait_closed()[0]}"
    )
    invalid_utf8 = Client(replica.ws, code, token("fuzzer", name="Fuzzer"))
    invalid_utf8.recv_type("room_state")
    with invalid_utf8.conn.send_context():
        invalid_utf8.conn.protocol.send_text(b'{"type":"editor_update","content":"\xff\xfe"}')
    got["text frame that is not UTF-8"] = f"close {invalid_utf8.wait_closed()[0]}"
    for label, value in [
        ("refresh_token with a string that is not a JWT", "not-a-jwt"),
        (
            "refresh_token with a JWT signed with another secret",
            token("fuzzer", secret="another-secret-that-is-at-least-32-bytes-long"),
        ),
        ("refresh_token with another member's valid token", token("ana", name="Ana")),
    ]:
        refresher = Client(replica.ws, code, token("fuzzer", name="Fuzzer"))
        refresher.recv_type("room_state")
        refresher.send({"type": "refresh_token", "token": value})
        got[label] = f"close {refresher.wait_closed()[0]}"
    return got


def test_every_bad_frame_gets_an_error_frame_and_the_socket_stays_open(fuzz_run: FuzzRun) -> None:
    """3000 random frames on one socket: each bad one gets one error frame, the socket answers to the end."""
    assert sum(sum(c.values()) for c in fuzz_run.outcomes.values()) == sum(c.count for c in CATEGORIES)
    assert fuzz_run.refused_without_error == []
    allowed = {"error bad_frame", "error too_large", "ack", "pong", "accepted, no reply"}
    for name, outcomes in fuzz_run.outcomes.items():
        assert set(outcomes) <= allowed, (name, outcomes)


def test_inputs_that_close_get_the_protocol_close_codes(fuzz_run: FuzzRun) -> None:
    """Oversize frame: 1009; non-UTF-8 text: 1007; a refresh_token that is not this user's valid token: 4401."""
    assert sorted(fuzz_run.closers.values()) == [
        "close 1007",
        "close 1009",
        "close 4401",
        "close 4401",
        "close 4401",
    ], fuzz_run.closers


def test_room_still_works_for_everyone_after_the_fuzz(
    fuzz_replica: Replica, fuzz_run: FuzzRun, room_members: tuple[str, Listener, Listener]
) -> None:
    """After the flood the replica is healthy, the others stayed connected, and edits continue the seq."""
    _, ana, ben = room_members
    assert httpx.get(f"{fuzz_replica.http}/api/health", timeout=10).status_code == 200
    assert httpx.get(f"{fuzz_replica.http}/api/ready", timeout=10).status_code == 200
    assert ana.close_code is None and ben.close_code is None
    # Every edit the fuzzer got acknowledged reached Ben once, in order, stamped with the fuzzer's identity.
    seen = [f for f in ben.frames if f["type"] == "editor_update"]
    start = next(f for f in ben.frames if f["type"] == "room_state")["seq"]
    assert [f["seq"] for f in seen] == list(range(start + 1, start + 1 + len(seen)))
    assert fuzz_run.fuzzer_acked and [f["seq"] for f in seen] == fuzz_run.fuzzer_acked
    assert {(f["user_id"], f["user_name"]) for f in seen} == {("fuzzer", "Fuzzer")}
    last = seen[-1]["seq"]
    ana.send({"type": "editor_update", "content": "after the storm", "client_msg_id": "ana-1"})
    assert ana.wait_for(lambda f: f["type"] == "ack" and f.get("client_msg_id") == "ana-1")["seq"] == last + 1
    assert (
        ben.wait_for(lambda f: f["type"] == "editor_update" and f["seq"] == last + 1)["content"]
        == "after the storm"
    )
    ben.send({"type": "editor_update", "content": "still here", "client_msg_id": "ben-1"})
    assert ben.wait_for(lambda f: f["type"] == "ack" and f.get("client_msg_id") == "ben-1")["seq"] == last + 2
    assert ana.wait_for(lambda f: f["type"] == "editor_update" and f["seq"] == last + 2)["user_id"] == "ben"
    late = Client(fuzz_replica.ws, fuzz_run.code, token("fuzzer", name="Fuzzer"))
    state = late.recv_type("room_state")
    assert state["seq"] == last + 2 and state["content"] == "still here"
    late.close()
    # Ana (the interviewer) got one alert per accepted focus loss / suspicious key press, before her own
    # ack above; Ben (a candidate) none. Every alert names the fuzzer, whatever the frame claimed.
    alerts = [f for f in ana.frames if f["type"] == "candidate_monitoring_alert"]
    assert fuzz_run.alerts_expected and len(alerts) == fuzz_run.alerts_expected
    assert {(a["user_id"], a["user_name"]) for a in alerts} == {("fuzzer", "Fuzzer")}
    assert not [f for f in ben.frames if f["type"] == "candidate_monitoring_alert"]


# --- 4. room codes in every bad shape, in URLs and bodies ----------------------------------------


@dataclass(frozen=True)
class BadCode:
    label: str
    segment: str  # as it appears in the URL path, percent-encoded where needed
    body: Any  # as the room_code of a join-room body
    routed: bool = True  # False: the segment does not match /api/room/{code} or /ws/{code} at all


BAD_CODES = [
    BadCode("too short", "ABC", "ABC"),
    BadCode("too long", "ABCDEFG", "ABCDEFG"),
    BadCode("3000 characters", "A" * 3000, "A" * 3000),
    BadCode("lowercase with 0 o 1 i l", "abc0o1", "abc0o1"),
    BadCode("uppercase confusables 0 O 1 I L", "O0I1L2", "O0I1L2"),
    BadCode("glob *", "ABC*EF", "ABC*EF"),
    BadCode("only *", "******", "******"),
    BadCode("brace {", "%7BABCDE", "{ABCDE"),
    BadCode("brace }", "ABCDE%7D", "ABCDE}"),
    BadCode("hash tag {ABCD}", "%7BABCD%7D", "{ABCD}"),
    BadCode("colon", "AB:CDE", "AB:CDE"),
    BadCode("key injection", "A%7D:room", "A}:room"),
    BadCode("%00", "ABCDE%00", "ABCDE\u0000"),
    BadCode("CRLF + command", "AB%0D%0AFLUSHALL", "AB\r\nFLUSHALL"),
    BadCode("space inside", "ABC%20DEF", "ABC DEF"),
    BadCode("? and #", "AB%3FC%23D", "AB?C#D"),
    BadCode("unicode letter", "%C3%84BCDEF", "\u00c4BCDEF"),
    BadCode(
        "fullwidth letters",
        "%EF%BC%A1%EF%BC%A2%EF%BC%A3%EF%BC%A4%EF%BC%A5%EF%BC%A6",
        "\uff21\uff22\uff23\uff24\uff25\uff26",
    ),
    BadCode("Cyrillic lookalikes", "%D0%90%D0%92%D0%A1DEF", "\u0410\u0412\u0421DEF"),
    BadCode("long s (uppercases to S)", "%C5%BF" * 6, "\u017f" * 6),
    BadCode("sharp s (uppercases to SS)", "%C3%9F" * 3, "\u00df" * 3),
    BadCode("emoji", "%F0%9F%98%80ABCDE", "\U0001f600ABCDE"),
    BadCode("path traversal ..%2F", "..%2F..%2Fapi%2Fhealth", "../../api/health", routed=False),
    BadCode("path traversal ..%2FCODE", "..%2FABCDEF", "../ABCDEF", routed=False),
]


# Room keys carry a valid code; quota keys a 32-hex-digit hash of a user id or client address.
KEY_PATTERN = re.compile(
    r"relay:\{["
    + CODE_ALPHABET
    + r"]{6}\}:[a-z]+|relay:limit:(create|joinfail:user|joinfail:addr):[0-9a-f]{32}"
)


def _raw_http(replica: Replica, method: str, path: str, bearer: str) -> str:
    """A request with the path byte for byte (httpx would normalise dot segments and escapes)."""
    conn = http.client.HTTPConnection("127.0.0.1", replica.port, timeout=10)
    try:
        conn.request(method, path, headers=auth(bearer))
        response = conn.getresponse()
        text = response.read().decode()
        assert response.status < 500 and "Traceback" not in text, text
        return f"{response.status} {json.loads(text)['code']}"
    finally:
        conn.close()


def _raw_ws(replica: Replica, segment: str, bearer: str) -> str:
    try:
        conn = connect(f"{replica.ws}/ws/{segment}?token={bearer}", open_timeout=10, legacy=True)
    except InvalidStatus as refused:
        return f"HTTP {refused.response.status_code}"
    try:
        with contextlib.suppress(ConnectionClosed):
            while True:
                frame = json.loads(conn.recv(timeout=10))
                assert frame["type"] == "error", frame
        return f"close {conn.close_code}"
    finally:
        conn.close()


@dataclass
class CodeFinding:
    bad: BadCode
    answers: dict[str, str]
    url_commands: dict[str, int]  # Redis commands run by GET, DELETE and WS together
    join_commands: dict[str, int]  # Redis commands run by the join-room request
    new_keys: set[str]


# join-room validates the code before it reads anything, the caller's failed-join counters included.
JOIN_QUOTA_READS: set[str] = set()


def _ran(watch: RedisWatch, before: dict[str, int]) -> dict[str, int]:
    after = watch.calls()
    return {
        name: calls - before.get(name, 0) for name, calls in after.items() if calls != before.get(name, 0)
    }


@pytest.fixture(scope="module")
def code_findings(fuzz_replica: Replica, watch: RedisWatch) -> list[CodeFinding]:
    bearer = token("code-prober")
    found = []
    keys_before = watch.keys()
    for bad in BAD_CODES:
        calls = watch.calls()
        answers = {
            "GET": _raw_http(fuzz_replica, "GET", f"/api/room/{bad.segment}", bearer),
            "DELETE": _raw_http(fuzz_replica, "DELETE", f"/api/room/{bad.segment}", bearer),
            "WS": _raw_ws(fuzz_replica, bad.segment, bearer),
        }
        url_commands = _ran(watch, calls)
        calls = watch.calls()
        answers["join body"] = check_http_answer(
            httpx.post(
                f"{fuzz_replica.http}/api/join-room",
                headers=auth(bearer),
                json={"room_code": bad.body},
                timeout=10,
            )
        )
        join_commands = _ran(watch, calls)
        keys_after = watch.keys()
        found.append(CodeFinding(bad, answers, url_commands, join_commands, keys_after - keys_before))
        keys_before = keys_after
    return found


@pytest.mark.parametrize("index", range(len(BAD_CODES)), ids=[bad.label for bad in BAD_CODES])
def test_bad_room_code_is_refused_before_any_redis_access(
    code_findings: list[CodeFinding], index: int
) -> None:
    """A bad code gets 422 / close 4400 (an unroutable path 404 / a refused handshake) and touches no room key."""
    finding = code_findings[index]
    if finding.bad.routed:
        expected = {
            "GET": "422 bad_request",
            "DELETE": "422 bad_request",
            "WS": "close 4400",
            "join body": "422 bad_request",
        }
    else:
        expected = {
            "GET": "404 not_found",
            "DELETE": "404 not_found",
            "WS": "HTTP 403",
            "join body": "422 bad_request",
        }
    assert finding.answers == expected
    assert finding.url_commands == {}
    assert set(finding.join_commands) <= JOIN_QUOTA_READS
    assert finding.new_keys == set()


def test_every_key_is_named_by_a_valid_code(
    code_findings: list[CodeFinding], watch: RedisWatch, room_members: tuple[str, Listener, Listener]
) -> None:
    """After all the bad codes, every relay key is named by a valid code or by a quota's hash, never by input."""
    keys = watch.keys()
    assert keys, "the probes ran against an empty Redis: the fuzz room should be there"
    strange = sorted(key for key in keys if not KEY_PATTERN.fullmatch(key))
    assert strange == []


def test_unknown_room_codes_do_not_create_keys(fuzz_replica: Replica, watch: RedisWatch) -> None:
    """A well-formed but unknown code is looked up and answered 404 without leaving any key behind."""
    before = watch.keys()
    bearer = token(f"looker-{uuid.uuid4().hex[:6]}")
    for code in ("ZZZZZZ", "zzzzzz", "222222"):
        assert _raw_http(fuzz_replica, "GET", f"/api/room/{code}", bearer) == "404 room_not_found"
        assert _raw_ws(fuzz_replica, code, bearer) == "close 4404"
    assert watch.keys() == before


# --- the findings document ---------------------------------------------------------------------------


def _commands(ran: dict[str, int]) -> str:
    return (
        ", ".join(f"{name.removeprefix('cmdstat_')} x{count}" for name, count in sorted(ran.items()))
        or "none"
    )


def render_findings(run: FuzzRun, codes: list[CodeFinding], bodies: list[tuple[str, str, str]]) -> str:
    total = sum(cat.count for cat in CATEGORIES)
    lines = [
        "# Fuzz findings: every bad input tried, and what each got",
        "",
        "Generated by `tests/test_fuzz.py` against a live replica (relay's default frame and document",
        "limits, rate limits lifted so every input reaches the parser). Regenerate with",
        "`RELAY_REGENERATE_DOCS=1 python -m pytest tests/test_fuzz.py`.",
        "",
        f"## {total} random frames on one WebSocket (seed {SEED})",
        "",
        "Each input was followed by a sentinel frame, so every answer is attributed to its input. The",
        "socket stayed open through all of them; two other members of the room stayed connected, got the",
        "fuzzer's accepted edits in `seq` order stamped with the fuzzer's identity (spoofed `user_id`s",
        "ignored), then edited on with `seq` continuing.",
        "",
        "| category | inputs | what they got | first input (truncated) |",
        "|---|---|---|---|",
    ]
    for cat in CATEGORIES:
        got = ", ".join(
            f"{outcome} x{count}" for outcome, count in sorted(run.outcomes.get(cat.name, Counter()).items())
        )
        example = run.examples.get(cat.name, "").replace("|", "\\|").replace("`", "'")
        lines.append(f"| {cat.name}: {cat.what} | {cat.count} | {got} | `{example}` |")
    lines += ["", "## Inputs that end the connection", "", "| input | got |", "|---|---|"]
    lines += [f"| {what} | {got} |" for what, got in sorted(run.closers.items())]
    lines += [
        "",
        "## Room codes in every bad shape",
        "",
        "The same bad code in `GET /api/room/<code>`, `DELETE /api/room/<code>`, `/ws/<code>` and as",
        "`room_code` in a `POST /api/join-room` body, with a valid token. The last two columns count the",
        "Redis commands run (`INFO commandstats` before and after): by the three URL requests together, and",
        "by the join (none: the code is checked before the failed-join counters are read).",
        "",
        "| bad code | URL segment sent | GET | DELETE | WS | join body | Redis (URLs) | Redis (join) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for finding in codes:
        segment = (
            finding.bad.segment
            if len(finding.bad.segment) <= 40
            else f"{finding.bad.segment[:12]}... ({len(finding.bad.segment)} chars)"
        )
        a = finding.answers
        lines.append(
            f"| {finding.bad.label} | `{segment}` | {a['GET']} | {a['DELETE']} | {a['WS']} | {a['join body']} "
            f"| {_commands(finding.url_commands)} | {_commands(finding.join_commands)} |"
        )
    lines += ["", "## Bad HTTP bodies", "", "| body | create-room | join-room |", "|---|---|---|"]
    lines += [f"| {label} | {create} | {join} |" for label, create, join in bodies]
    lines += [
        "",
        "## Property-based (hypothesis)",
        "",
        "- `parse_client_frame` on any text (lone surrogates included) and on any object with the frame's",
        "  field names and any values: a frame, or a `RelayError` with code `bad_frame` / `too_large`.",
        "- A valid `editor_update` round-trips: `content` verbatim, cursor and `client_msg_id` intact.",
        "- The document limit counts UTF-8 bytes.",
        "- Any bytes (and any JSON) as a create-room / join-room body, with any of three content types:",
        "  a JSON answer, a 4xx JSON error at worst, never a 5xx or a traceback.",
        "",
    ]
    return "\n".join(lines)


def test_findings_document_is_current(
    fuzz_run: FuzzRun, code_findings: list[CodeFinding], body_findings: list[tuple[str, str, str]]
) -> None:
    """docs/fuzz-findings.md lists exactly what this run's bad inputs got."""
    check_generated_doc(
        DOCS / "fuzz-findings.md",
        render_findings(fuzz_run, code_findings, body_findings),
        "tests/test_fuzz.py",
    )
