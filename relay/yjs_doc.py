"""The shared document as a Yjs CRDT: fold stored updates, validate new ones, whole-text edits as Y.Text.

relay keeps no document between events: whoever needs the document (a joiner's sync step 2, the text
that whole-document clients see, a compaction) folds the room's snapshot and the updates after it into
a throwaway pycrdt Doc, applying them one by one. One flat `merge_updates` over thousands of updates
grows faster than linearly (100k updates took 58 s here); applying them in order to one document does
not.

The text lives in the Y.Text named "content", which is what stock editor bindings use.

Whole-document clients send the full text. Diffing that against the *current* document would delete
whatever others typed since that client last synced, so `rebase_edit` diffs the client's text against
the version it was based on, maps each change through what happened meanwhile (base -> current), and
returns edits of the current text. pycrdt indexes text by UTF-8 byte; every position here is a Python
string index (code point) until `apply_text_edits` converts it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import orjson
from diff_match_patch import diff_match_patch
from pycrdt import Doc, Text, TransactionEvent, get_state

from relay.yjs_protocol import YjsProtocolError

TEXT_NAME: Final = "content"
# What Yjs encodes for "no change": zero structs, zero deletions. Clients send it; it is never stored.
EMPTY_UPDATE: Final = b"\x00\x00"

_DIFF_EQUAL: Final = 0
_DIFF_INSERT: Final = 1
_DIFF_DELETE: Final = -1


def validate_update(update: bytes) -> None:
    """Raise YjsProtocolError unless `update` decodes as a Yjs (v1) update."""
    try:
        get_state(update)
    except ValueError as exc:
        raise YjsProtocolError(f"not a Yjs update: {exc}") from None


def is_empty_update(update: bytes) -> bool:
    return update == EMPTY_UPDATE


class RoomDoc:
    """A throwaway document: the snapshot and the updates after it, applied in order."""

    __slots__ = ("doc", "text")

    def __init__(self, snapshot: bytes | None = None, updates: Iterable[bytes] = ()) -> None:
        self.doc: Doc = Doc()  # type: ignore[type-arg]
        self.text: Text = self.doc.get(TEXT_NAME, type=Text)
        if snapshot:
            self.doc.apply_update(snapshot)
        self.apply(updates)

    def apply(self, updates: Iterable[bytes]) -> None:
        for update in updates:
            self.doc.apply_update(update)

    def content(self) -> str:
        return str(self.text)

    def state_vector(self) -> bytes:
        return self.doc.get_state()

    def update_since(self, state_vector: bytes | None = None) -> bytes:
        """Everything the holder of `state_vector` lacks (all of it for None): a sync step 2's payload."""
        return self.doc.get_update(state_vector)

    def apply_text_edits(self, edits: list[TextEdit], current: str) -> bytes:
        """Apply edits of `current` (this document's text) in one transaction; returns its update.

        Positions are converted from code points to the UTF-8 byte offsets pycrdt indexes by. Edits are
        applied from the end so that earlier positions stay valid.
        """
        captured: list[bytes] = []

        def capture(event: TransactionEvent) -> None:
            captured.append(event.update)

        subscription = self.doc.observe(capture)
        try:
            with self.doc.transaction():
                for edit in _descending(edits):
                    start = len(current[: edit.start].encode())
                    if edit.end > edit.start:
                        length = len(current[edit.start : edit.end].encode())
                        del self.text[start : start + length]
                    if edit.insert:
                        self.text.insert(start, edit.insert)
        finally:
            self.doc.unobserve(subscription)
        return captured[0] if captured else EMPTY_UPDATE


def compact(snapshot: bytes | None, updates: Iterable[bytes]) -> bytes:
    """The snapshot that replaces `snapshot` followed by `updates` (garbage-collected, one update)."""
    return RoomDoc(snapshot, updates).update_since(None)


# --- whole-document edits -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextEdit:
    """Replace text[start:end] with `insert` (positions are Python string indexes)."""

    start: int
    end: int
    insert: str


def _descending(edits: list[TextEdit]) -> list[TextEdit]:
    # At one position a deletion goes before an insertion (going backwards), so the insertion is not
    # deleted; insertions at one position keep their order.
    indexed = sorted(
        enumerate(edits), key=lambda pair: (pair[1].start, pair[1].end > pair[1].start, pair[0]), reverse=True
    )
    return [edit for _, edit in indexed]


def _differ() -> diff_match_patch:
    differ = diff_match_patch()
    differ.Diff_Timeout = 0.5  # past it the diff is coarser (still correct), never slower
    return differ


def diff_edits(old: str, new: str) -> list[TextEdit]:
    """The edits that turn `old` into `new`, in `old`'s positions, ascending."""
    if old == new:
        return []
    edits: list[TextEdit] = []
    pos = 0
    for op, chunk in _differ().diff_main(old, new, False):
        if op == _DIFF_EQUAL:
            pos += len(chunk)
        elif op == _DIFF_DELETE:
            edits.append(TextEdit(pos, pos + len(chunk), ""))
            pos += len(chunk)
        else:
            last = edits[-1] if edits else None
            if last is not None and last.end == pos and not last.insert:
                edits[-1] = TextEdit(last.start, last.end, chunk)  # a replacement: delete + insert
            else:
                edits.append(TextEdit(pos, pos, chunk))
    return edits


def rebase_edit(base: str, mine: str, current: str) -> list[TextEdit]:
    """The change base -> mine, as edits of `current` (base plus what others did meanwhile).

    Text that others changed since `base` is kept: a deletion removes only the characters that still
    exist in `current`, and an insertion lands where its neighbour in `base` is now.
    """
    mine_edits = diff_edits(base, mine)
    if base == current or not mine_edits:
        return mine_edits
    differ = _differ()
    changes = differ.diff_main(base, current, False)
    # Segments of base that survive unchanged in current: (base_start, base_end, current_start).
    kept: list[tuple[int, int, int]] = []
    b = c = 0
    for op, chunk in changes:
        if op == _DIFF_EQUAL:
            kept.append((b, b + len(chunk), c))
        if op != _DIFF_INSERT:
            b += len(chunk)
        if op != _DIFF_DELETE:
            c += len(chunk)
    rebased: list[TextEdit] = []
    for edit in mine_edits:
        if edit.insert:
            # diff_xIndex: the same place in current; inside text others deleted, where that text was.
            at = differ.diff_xIndex(changes, edit.start)
            rebased.append(TextEdit(at, at, edit.insert))
        for b0, b1, c0 in kept:
            lo, hi = max(b0, edit.start), min(b1, edit.end)
            if lo < hi:
                rebased.append(TextEdit(c0 + lo - b0, c0 + hi - b0, ""))
    return rebased


def apply_edits(text: str, edits: list[TextEdit]) -> str:
    """`text` with `edits` applied (the same result as the Y.Text edits, for checking and for the mirror)."""
    for edit in _descending(edits):
        text = text[: edit.start] + edit.insert + text[edit.end :]
    return text


def merge_text(base: str, mine: str, current: str) -> str:
    return apply_edits(current, rebase_edit(base, mine, current))


class TextBases:
    """The texts a whole-document client may have based its next edit on.

    Those are the client's own last edit (or its room_state) and every editor_update relay sent it
    since the edit before that one: a frame sent earlier had reached the client before it made its last
    edit. A client's edit crosses relay's frames on the wire, so relay cannot know which of these the
    client had applied when it typed; the one closest to the new text (fewest characters outside a
    common prefix and suffix) is taken: one keystroke away from its true base, further from the others.
    Frames are kept as the frame text the hub shares between sockets, parsed only when an edit needs it.
    """

    __slots__ = ("_items",)

    KEPT: Final = 8

    def __init__(self) -> None:
        # (is the client's own text or its room_state, the text or the frame). A list, not a deque: one
        # per socket, and an empty deque costs 760 bytes against a list's 56.
        self._items: list[tuple[bool, str | _Frame]] = []

    def saw_text(self, text: str) -> None:
        """The client's own edit as it sent it, or the document of its room_state."""
        own = [i for i, (is_own, _) in enumerate(self._items) if is_own]
        if own:
            del self._items[: own[-1] + 1]
        self._add((True, text))

    def saw_frame(self, frame: str) -> None:
        """An editor_update frame's JSON text (its `content` is read only if needed)."""
        self._add((False, _Frame(frame)))

    def _add(self, item: tuple[bool, str | _Frame]) -> None:
        self._items.append(item)
        if len(self._items) > self.KEPT:
            del self._items[0]

    def base_for(self, new: str) -> str | None:
        return self.frozen().base_for(new)

    def frozen(self) -> FrozenBases:
        """The candidates as they are now, for an edit whose base is picked later, if at all."""
        return FrozenBases(tuple(self._items))


class FrozenBases:
    """TextBases' candidates at the moment a client's edit arrived.

    Picking the base parses the frames and compares each with the new text (tens of µs per edit at a
    few hundred bytes); only a merge needs it, and a room without a Yjs document never merges. So the
    edit carries this snapshot (a tuple of references) and the store picks the base only when it
    merges. A snapshot, not the live TextBases: frames the writer sends while the edit is in flight came
    after the client typed it, so they must not become candidates.
    """

    __slots__ = ("_items",)

    def __init__(self, items: tuple[tuple[bool, str | _Frame], ...]) -> None:
        self._items = items

    def base_for(self, new: str) -> str | None:
        """The candidate closest to `new` (None if there is none)."""
        best: str | None = None
        best_distance = -1
        for _, item in reversed(self._items):  # newest first: it wins a tie
            text = item if isinstance(item, str) else item.content()
            if text is None:
                continue
            distance = _distance(text, new)
            if best is None or distance < best_distance:
                best, best_distance = text, distance
        return best


class _Frame:
    __slots__ = ("frame",)

    def __init__(self, frame: str) -> None:
        self.frame = frame

    def content(self) -> str | None:
        try:
            content = orjson.loads(self.frame).get("content")
        except (orjson.JSONDecodeError, AttributeError):
            return None
        return content if isinstance(content, str) else None


def _distance(a: str, b: str) -> int:
    """Characters of a and b outside their common prefix and suffix: 0 for equal texts, 1 per keystroke."""
    limit = min(len(a), len(b))
    prefix = _common_prefix(a, b)
    suffix = min(_common_prefix(a[::-1], b[::-1]), limit - prefix)
    return len(a) + len(b) - 2 * (prefix + suffix)


def _common_prefix(a: str, b: str) -> int:
    """Length of the common prefix, by bisection over slice comparisons (done in C, not per character)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo
