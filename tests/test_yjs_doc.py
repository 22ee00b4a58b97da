"""The document side of Yjs editing: folding stored updates, validation, compaction, whole-text edits."""

from __future__ import annotations

import json
import random

import pycrdt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.yjs_doc import (
    EMPTY_UPDATE,
    FrozenBases,
    RoomDoc,
    TextBases,
    TextEdit,
    apply_edits,
    compact,
    diff_edits,
    merge_text,
    rebase_edit,
    validate_update,
)
from relay.yjs_protocol import YjsProtocolError


def _typed(doc: RoomDoc, index: int, chars: str) -> bytes:
    return doc.apply_text_edits([TextEdit(index, index, chars)], doc.content())


def test_fold_applies_updates_in_order_and_answers_a_state_vector() -> None:
    """Snapshot + updates fold into the text; the update since a state vector is exactly what it lacks."""
    writer = RoomDoc()
    first = _typed(writer, 0, "hello")
    second = _typed(writer, 5, " world")
    folded = RoomDoc(None, [first, second])
    assert folded.content() == "hello world"
    behind = RoomDoc(None, [first])
    behind.apply([folded.update_since(behind.state_vector())])
    assert behind.content() == "hello world"


def test_apply_text_edits_counts_code_points_not_bytes() -> None:
    """pycrdt indexes by UTF-8 byte; edits are Python indexes and land between the right characters."""
    doc = RoomDoc()
    _typed(doc, 0, "a😀b")
    doc.apply_text_edits([TextEdit(2, 2, "X"), TextEdit(0, 1, "é")], doc.content())
    assert doc.content() == "é😀Xb"
    assert apply_edits("a😀b", [TextEdit(2, 2, "X"), TextEdit(0, 1, "é")]) == "é😀Xb"


def test_an_edit_produces_only_its_own_update() -> None:
    """The update of a whole-text edit carries that edit, not the whole document again."""
    doc = RoomDoc()
    _typed(doc, 0, "x" * 4000)
    keystroke = _typed(doc, 2000, "y")
    assert len(keystroke) < 40
    assert doc.apply_text_edits([], doc.content()) == EMPTY_UPDATE


def test_validate_update_refuses_garbage() -> None:
    """Bytes that do not decode as a Yjs update are refused; a real update passes."""
    validate_update(_typed(RoomDoc(), 0, "ok"))
    validate_update(EMPTY_UPDATE)
    for garbage in (b"", b"\x00", b"hello world", b"\xff\xff\xff"):
        with pytest.raises(YjsProtocolError, match="not a Yjs update"):
            validate_update(garbage)


def test_compaction_keeps_the_document_and_syncs_old_clients() -> None:
    """A compacted snapshot has the same text, and a client that saw part of the history catches up from it."""
    writer = RoomDoc()
    rng = random.Random(4)
    updates = []
    for n in range(300):
        updates.append(_typed(writer, rng.randint(0, len(writer.content())), chr(97 + n % 26)))
        if n % 7 == 0:
            text = writer.content()
            updates.append(writer.apply_text_edits([TextEdit(0, 1, "")], text))
    snapshot = compact(compact(None, updates[:100]), updates[100:])
    assert RoomDoc(snapshot).content() == writer.content()
    client = RoomDoc(None, updates[:50])
    client.apply([RoomDoc(snapshot).update_since(client.state_vector())])
    assert client.content() == writer.content()


def test_diff_edits_reproduce_the_new_text() -> None:
    """The edits of a diff, applied to the old text, give the new text."""
    for old, new in [
        ("", "abc"),
        ("abc", ""),
        ("hello world", "hello brave new world"),
        ("abcdef", "abXdeYf"),
    ]:
        assert apply_edits(old, diff_edits(old, new)) == new


def test_rebase_keeps_concurrent_typing_on_other_lines() -> None:
    """A whole-text client that edits line 1 while someone else edits line 3 erases nothing."""
    base = "line one\nline two\nline three\n"
    mine = "line ONE!\nline two\nline three\n"
    theirs = "line one\nline two\nline three, extended\nline four\n"
    assert merge_text(base, mine, theirs) == "line ONE!\nline two\nline three, extended\nline four\n"


def test_rebase_deletes_only_what_still_exists() -> None:
    """Deleting a range part of which others already deleted or changed removes only the rest."""
    assert merge_text("abcdef", "af", "abXdef") == "aXf"
    assert merge_text("abcdef", "abcdef!", "abcdef") == "abcdef!"
    assert merge_text("same", "same", "changed") == "changed"
    assert rebase_edit("x", "x", "y") == []


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_rebase_keeps_both_sides_when_they_touch_different_lines(data: st.DataObject) -> None:
    """Two writers changing different lines of the same base: the merge holds both lines' new text."""
    lines = data.draw(st.lists(st.text("abc xyz", min_size=1, max_size=12), min_size=3, max_size=8))
    i, j = data.draw(st.lists(st.integers(0, len(lines) - 1), min_size=2, max_size=2, unique=True))
    new_i = data.draw(st.text("ABC!? ", max_size=10))
    new_j = data.draw(st.text("QRS#% ", max_size=10))
    mine_lines, their_lines, both = list(lines), list(lines), list(lines)
    mine_lines[i] = both[i] = new_i
    their_lines[j] = both[j] = new_j
    base, mine, theirs = ("\n".join(x) for x in (lines, mine_lines, their_lines))
    assert merge_text(base, mine, theirs) == "\n".join(both)


def test_rebased_edits_as_yjs_update_merge_with_concurrent_crdt_edits() -> None:
    """The update made from a rebased whole-text edit merges with updates made concurrently elsewhere."""
    base_doc = RoomDoc()
    seed = _typed(base_doc, 0, "alpha\nbeta\ngamma\n")
    server = RoomDoc(None, [seed])
    other = RoomDoc(None, [seed])
    theirs = _typed(other, len("alpha\nbeta\ngamma\n"), "delta\n")
    server.apply([theirs])
    current = server.content()
    mine = server.apply_text_edits(
        rebase_edit("alpha\nbeta\ngamma\n", "ALPHA\nbeta\ngamma\n", current), current
    )
    other.apply([mine])
    assert server.content() == other.content() == "ALPHA\nbeta\ngamma\ndelta\n"


def test_pycrdt_doc_is_what_the_fold_reads() -> None:
    """An update written by a plain pycrdt client into Y.Text "content" is read by RoomDoc."""
    doc: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc()
    doc.get("content", type=pycrdt.Text).insert(0, "from pycrdt")
    assert RoomDoc(doc.get_update()).content() == "from pycrdt"


def test_text_bases_pick_the_version_the_client_typed_on() -> None:
    """The base is the candidate closest to the new text, even when a remote frame crossed the edit."""
    bases = TextBases()
    assert bases.base_for("anything") is None
    bases.saw_text("hello world")  # room_state
    bases.saw_frame(json.dumps({"type": "editor_update", "seq": 2, "content": "hello brave world"}))
    # The client typed "!" on "hello world" before it applied the frame: that is its base.
    assert bases.base_for("hello world!") == "hello world"
    # Having applied the frame, it typed on that.
    assert bases.base_for("hello brave world!") == "hello brave world"
    for n in range(10):
        bases.saw_text(f"v{n}")
    assert bases.base_for("v9x") == "v9"
    bases.saw_frame("not json")
    assert bases.base_for("v9x") == "v9"
    # A replacement of the whole text is based on the client's last edit, not on an older state.
    bases = TextBases()
    bases.saw_text("")
    bases.saw_text("before")
    assert bases.base_for("during 2") == "before"


def test_frozen_bases_keep_the_candidates_of_the_moment_the_edit_arrived() -> None:
    """The store picks an edit's base after awaiting Redis, if at all: frames sent to the client while
    the edit was in flight, and its own later edits, must not become that edit's candidates."""
    bases = TextBases()
    bases.saw_text("hello world")
    frozen = bases.frozen()
    assert isinstance(frozen, FrozenBases)
    bases.saw_frame(json.dumps({"type": "editor_update", "seq": 3, "content": "hello world!!"}))
    bases.saw_text("hello world!")
    assert frozen.base_for("hello world!") == "hello world"
    assert bases.base_for("hello world!") == "hello world!"
    assert TextBases().frozen().base_for("x") is None
