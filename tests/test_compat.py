"""Pure logic of the old frontend's fields and of candidate monitoring records (no servers)."""

from __future__ import annotations

import orjson
import pytest

from relay.config import ConfigError, Settings
from relay.protocol import (
    KIND_CLOSE,
    KIND_EVENT,
    KIND_INTERVIEWERS,
    KIND_REMOVE,
    Envelope,
    KeystrokeMonitoring,
    WindowFocusLost,
    iso_utc,
    monitoring_event,
)
from relay.rooms import CANDIDATE, INTERVIEWER, Member, RoomInfo

pytestmark = pytest.mark.fast


def room(*members: Member, status: str = "open", created_by: str = "ivy") -> RoomInfo:
    return RoomInfo("K7QF2M", status, 1, created_by, 0, "", "", list(members), set())


IVY = Member("ivy", INTERVIEWER, "Ivy", 1, "ivy@example.test")
IAN = Member("ian", INTERVIEWER, "Ian", 2, None)
CAM = Member("cam", CANDIDATE, "Cam", 3, "cam@example.test")


def test_room_status_in_the_old_words() -> None:
    assert room(IVY).legacy_status == "waiting_for_candidate"
    assert room(IVY, IAN).legacy_status == "waiting_for_candidate"
    assert room(IVY, CAM).legacy_status == "active"
    assert room(IVY, CAM, status="closed").legacy_status == "closed"


def test_interviewer_is_the_creator_else_the_longest_standing_interviewer_never_none() -> None:
    assert room(IAN, IVY).interviewer == {"id": "ivy", "name": "Ivy", "email": "ivy@example.test"}
    # The creator was removed by a colleague: the colleague is shown.
    assert room(IAN, CAM).interviewer == {"id": "ian", "name": "Ian", "email": None}
    # No interviewer left at all: still an object (the old page reads interviewer.name unguarded).
    assert room(CAM).interviewer == {"id": "ivy", "name": "", "email": None}
    assert room(IVY).candidate is None
    assert room(IVY, CAM).candidate == {"id": "cam", "name": "Cam", "email": "cam@example.test"}


def test_member_records_without_email_still_load() -> None:
    """Rooms created before emails were kept have member records without one."""
    old = orjson.dumps({"role": "candidate", "name": "Cam", "joined_at": 3})
    assert Member.load("cam", old) == Member("cam", CANDIDATE, "Cam", 3, None)
    assert Member.load("cam", CAM.dump()) == CAM


def test_timestamps_are_utc_with_a_z() -> None:
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"
    assert iso_utc(1_764_748_800_123) == "2025-12-03T08:00:00.123Z"


def test_ordinary_key_presses_are_only_counted() -> None:
    event = monitoring_event(
        KeystrokeMonitoring("q", "q", is_suspicious=False), user_id="cam", user_name="Cam", origin="c1", ts=0
    )
    assert (event.kind, event.record, event.alert) == ("key", b"", b"")


def test_incidents_and_suspicious_keys_become_a_record_and_an_interviewer_only_alert() -> None:
    focus = monitoring_event(WindowFocusLost(2.0), user_id="cam", user_name="Cam", origin="c1", ts=0)
    assert focus.kind == "focus"
    assert orjson.loads(focus.record) == {
        "type": "window_focus_lost",
        "user_id": "cam",
        "user_name": "Cam",
        "timestamp": "1970-01-01T00:00:00.000Z",
        "duration": 2.0,
    }
    envelope = Envelope.unpack(focus.alert)
    assert (envelope.kind, envelope.origin, envelope.seq, envelope.for_role) == (
        KIND_INTERVIEWERS,
        "c1",
        0,
        "interviewer",
    )
    assert orjson.loads(envelope.frame)["alert_type"] == "window_focus_lost"
    paste = monitoring_event(
        KeystrokeMonitoring("v", "Ctrl+V", is_suspicious=True),
        user_id="cam",
        user_name="Cam",
        origin="c1",
        ts=0,
    )
    assert paste.kind == "key" and orjson.loads(paste.record)["key_combination"] == "Ctrl+V"
    alert = orjson.loads(Envelope.unpack(paste.alert).frame)
    assert alert["alert_type"] == "suspicious_keystroke"
    assert alert["message"] == "Candidate Cam used suspicious key combination: Ctrl+V"


@pytest.mark.parametrize("kind", [KIND_EVENT, KIND_CLOSE, KIND_REMOVE])
def test_other_envelopes_are_for_every_role(kind: str) -> None:
    assert Envelope(kind, "-", 0, None, 0, b'{"user_id":"x"}').for_role is None


def test_compatibility_settings() -> None:
    base = {"RELAY_DEV_MODE": "true"}
    defaults = Settings.from_environ(base)
    assert (defaults.max_candidates, defaults.welcome_text, defaults.token_grace) == (1, "", 0)
    assert (
        Settings.from_environ({**base, "RELAY_WELCOME_TEXT": "# hi\\n# there"}).welcome_text
        == "# hi\n# there"
    )
    with pytest.raises(ConfigError, match="RELAY_TOKEN_GRACE must be between 0 and 43200"):
        Settings.from_environ({**base, "RELAY_TOKEN_GRACE": "86400"})
    with pytest.raises(ConfigError, match="RELAY_MAX_CANDIDATES must be >= 1"):
        Settings.from_environ({**base, "RELAY_MAX_CANDIDATES": "0"})
    with pytest.raises(ConfigError, match="RELAY_WELCOME_TEXT is 11 bytes"):
        Settings.from_environ({**base, "RELAY_WELCOME_TEXT": "x" * 11, "RELAY_MAX_DOCUMENT_BYTES": "10"})
