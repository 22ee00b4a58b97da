"""Pure logic: client frame parsing, envelopes, room codes and settings (no servers)."""

from __future__ import annotations

import dataclasses

import pytest

from relay.config import ConfigError, InterviewerClaim, Settings, own_settings
from relay.errors import BadFrame, BadRequest, TooLarge
from relay.keys import CODE_PATTERN, RoomKeys, code_of_channel, new_code, normalize_code
from relay.protocol import CursorUpdate, EditorUpdate, Envelope, Ping, ack_frame, parse_client_frame


def parse(text: str) -> object:
    return parse_client_frame(text, max_document_bytes=100)


def test_editor_update_keeps_content_verbatim() -> None:
    # Identity claimed in a frame is replaced by the token's: tests/test_store.py checks what is stored.
    frame = parse('{"type":"editor_update","content":"a\\u0000\\n\\ud83d\\ude00","cursor_position":{"l":1}}')
    assert frame == EditorUpdate(content="a\x00\n\U0001f600", cursor_position={"l": 1}, client_msg_id=None)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("nope", "not valid JSON"),
        ("[1]", "JSON object"),
        ('{"content":"x"}', "string 'type'"),
        ('{"type":"shout"}', "unknown frame type 'shout'"),
        ('{"type":"editor_update"}', "'content' as a string, got null"),
        ('{"type":"editor_update","content":5}', "got number"),
        ('{"type":"cursor_update"}', "needs 'cursor_position'"),
        ('{"type":"cursor_update","cursor_position":"x"}', "object, array or integer"),
        ('{"type":"cursor_update","cursor_position":true}', "object, array or integer"),
        ('{"type":"cursor_update","cursor_position":{"a":"' + "x" * 2000 + '"}}', "limit is 1024"),
        ('{"type":"editor_update","content":"x","client_msg_id":"has space"}', "client_msg_id"),
        ('{"type":"editor_update","content":"\\ud800"}', "surrogate"),
    ],
)
def test_bad_frames_say_what_is_wrong(text: str, needle: str) -> None:
    with pytest.raises(BadFrame) as caught:
        parse(text)
    assert needle in caught.value.message


def test_document_size_limit_counts_utf8_bytes() -> None:
    with pytest.raises(TooLarge):
        parse('{"type":"editor_update","content":"' + "é" * 51 + '"}')
    assert isinstance(parse('{"type":"editor_update","content":"' + "é" * 50 + '"}'), EditorUpdate)


def test_deep_nesting_is_refused_not_crashing() -> None:
    deep = "[" * 300 + "]" * 300
    with pytest.raises(BadFrame):
        parse('{"type":"cursor_update","cursor_position":' + deep + "}")


def test_cursor_and_ping_frames() -> None:
    assert parse('{"type":"cursor_update","cursor_position":{"lineNumber":2}}') == CursorUpdate(
        {"lineNumber": 2}
    )
    assert parse('{"type":"ping"}') == Ping()


def test_envelope_round_trip_and_garbage() -> None:
    envelope = Envelope("e", "abc123", 7, "m-1", 1700000000000, b'{"seq":7,"x":"a|b"}')
    assert Envelope.unpack(envelope.pack()) == envelope
    for garbage in (b"", b"x|y", b"z|-|0||0|{}", b"e|-|notanumber||0|{}", b"e|-|0||{}"):
        with pytest.raises(ValueError):
            Envelope.unpack(garbage)


def test_ack_frame() -> None:
    assert ack_frame(3, None) == b'{"type":"ack","seq":3}'
    assert ack_frame(3, "m") == b'{"type":"ack","seq":3,"client_msg_id":"m"}'


def test_room_codes() -> None:
    codes = {new_code() for _ in range(1000)}
    assert all(CODE_PATTERN.fullmatch(code) for code in codes) and len(codes) > 990
    assert normalize_code(" abc234 ") == "ABC234"
    for bad in ("ABC23", "ABC2345", "ABCDE0", "ABCDEI", "*", "ABC{}D", 123, None, "ÀBCDEF"):
        with pytest.raises(BadRequest):
            normalize_code(bad)
    keys = RoomKeys.of("ABC234")
    assert keys.room == "relay:{ABC234}:room" and code_of_channel(keys.channel.encode()) == "ABC234"


def test_interviewer_claim() -> None:
    claim = InterviewerClaim.parse("app_metadata.role=interviewer")
    assert claim.matches({"app_metadata": {"role": "interviewer"}})
    assert claim.matches({"app_metadata": {"role": ["candidate", "interviewer"]}})
    assert not claim.matches({"app_metadata": {"role": "candidate"}})
    assert not claim.matches({"app_metadata": "interviewer"})
    with pytest.raises(ConfigError):
        InterviewerClaim.parse("role")


def test_settings_defaults_and_errors() -> None:
    settings = Settings.from_environ({"RELAY_DEV_MODE": "true"})
    assert settings.is_embedded and settings.jwt_secret is not None and settings.port == 8000
    settings = Settings.from_environ({"SUPABASE_URL": "https://ref.supabase.co/", "PORT": "9000"})
    assert settings.jwks_url == "https://ref.supabase.co/auth/v1/.well-known/jwks.json"
    assert settings.jwt_issuer == "https://ref.supabase.co/auth/v1" and settings.port == 9000
    with pytest.raises(ConfigError, match="PORT must be between 1 and 65535, got 0"):
        Settings.from_environ({"RELAY_DEV_MODE": "true", "PORT": "0"})
    with pytest.raises(ConfigError, match="RELAY_CREATE_REQUIRES_INTERVIEWER"):
        # Production settings: development mode has a default claim.
        Settings.from_environ(
            {"SUPABASE_URL": "https://ref.supabase.co/", "RELAY_CREATE_REQUIRES_INTERVIEWER": "true"}
        )


def test_settings_keep_only_relays_own_values() -> None:
    environ = {"RELAY_DEV_MODE": "true", "AWS_SECRET_ACCESS_KEY": "s3cr3t-of-another-service"}
    settings = Settings.from_environ(environ)
    assert "s3cr3t" not in repr(dataclasses.astuple(settings))
    values = {
        "RELAY_ROOM_TTL": "60",
        "SUPABASE_URL": "https://ref.supabase.co",
        "REDIS_URL": "redis://r:6379",
        "PORT": "9000",
        "FORWARDED_ALLOW_IPS": "10.0.0.1",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t",
        "PATH": "/usr/bin",
    }
    assert own_settings(values) == {
        key: value for key, value in values.items() if key not in ("AWS_SECRET_ACCESS_KEY", "PATH")
    }
