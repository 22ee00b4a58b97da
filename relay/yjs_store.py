"""A room's Yjs document in Redis: append updates, read snapshot + tail, compact; no replica keeps a copy
(but for the text mirror's cache of its last fold, checked against the stream's numbers).

    relay:{CODE}:ydoc      hash    snapshot (a Yjs update), snapshot_seq (the last update it folds),
                                   seq (the last update's number)
    relay:{CODE}:yupdates  stream  one entry per update after the snapshot, id "<seq>-0": u (update),
                                   o (the connection that sent it)
    relay:{CODE}:ylock     string  the compaction lock (a random token, with an expiry)

Why a stream of its own rather than the room's event history: that history is capped by count and age
and must stay gapless for whole-document clients, while an update may only leave Redis once it is
folded into the snapshot. The entry id is the update's number, so "everything after N" is one XRANGE.

Reading folds the snapshot and the tail into a throwaway document, a chunk of the stream at a time
(one flat merge over thousands of updates grows faster than linearly). Compaction runs on one replica
at a time per room (a lock with an expiry), folds everything but the newest `keep` updates into a new
snapshot and trims exactly the folded entries, by number: an update nobody folded is never dropped.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any, Final, Protocol

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from relay import metrics
from relay.auth import Identity
from relay.config import Settings
from relay.errors import RelayError, Unavailable
from relay.keys import RoomKeys
from relay.protocol import NO_ORIGIN, EditorUpdate, Envelope, now_ms, yjs_update_parts
from relay.redis_errors import redis_unavailable_is_503
from relay.rooms import NO_DOCUMENT, Accepted, Rooms, Snapshot, TextChange, TextConflict, raise_for_outcome
from relay.yjs_doc import FrozenBases, RoomDoc, TextEdit, apply_edits, rebase_edit

logger = logging.getLogger("relay.yjs")

READ_CHUNK: Final = 1000  # updates per round trip when reading a tail
LOAD_ATTEMPTS: Final = 5  # a compaction that trims while we read a long tail makes us start over
LOCK_MS: Final = 60_000
EDIT_ATTEMPTS: Final = 8  # merges of one whole-document edit racing other edits before giving up
ROOMS_REMEMBERED: Final = 10_000  # room codes this replica knows to have a Yjs document (a hint)
MIRRORED_DOCS: Final = 32  # documents the text mirror keeps folded between its runs (rooms it follows)
MIRRORED_IDLE_SECONDS: Final = 30.0  # ... and for how long after a room's last run


@dataclass(frozen=True, slots=True)
class YjsKeys:
    room: str
    members: str
    ydoc: str
    updates: str
    lock: str
    presence: str
    channel: str

    @classmethod
    def of(cls, code: str) -> YjsKeys:
        return _yjs_keys(code)

    @classmethod
    def _build(cls, code: str) -> YjsKeys:
        room = RoomKeys.of(code)
        prefix = f"relay:{{{code}}}"
        return cls(
            room=room.room,
            members=room.members,
            ydoc=f"{prefix}:ydoc",
            updates=f"{prefix}:yupdates",
            lock=f"{prefix}:ylock",
            presence=room.presence,
            channel=room.channel,
        )

    @property
    def all(self) -> list[str]:
        """KEYS of yjs_append / yjs_read / yjs_seed (relay/lua/yjs_*.lua)."""
        return [self.room, self.members, self.ydoc, self.updates, self.presence]


# Every update needs its room's names (2.6 % of a typist's replica when built each time): once per room.
_yjs_keys = functools.lru_cache(maxsize=4096)(YjsKeys._build)


@dataclass(frozen=True, slots=True)
class Appended:
    seq: int
    unfolded: int  # updates in the stream after the snapshot, this one included


@dataclass(slots=True)
class LoadedDoc:
    """The room's document folded at `seq`, and the room's status then."""

    doc: RoomDoc
    seq: int
    status: str
    has_yjs_edits: bool = False  # a Yjs client has edited the room
    author: tuple[str, str] = ("", "")  # the last Yjs update's author: user id, name


@dataclass(slots=True)
class Folded:
    """The room's document folded at `seq` (the text mirror keeps one per room it follows)."""

    doc: RoomDoc
    seq: int
    author: tuple[str, str]


@dataclass(frozen=True, slots=True)
class TextEdited:
    """A whole-document edit as stored: `content` is the room's text after it; `kept` when that is
    exactly what the client sent (its edit crossed nobody's)."""

    accepted: Accepted
    content: str
    kept: bool


@dataclass(frozen=True, slots=True)
class Compaction:
    folded: int  # the snapshot now covers updates 1..folded
    updates: int  # how many updates this run folded into it
    seconds: float
    snapshot_bytes: int


def _lua(name: str) -> str:
    return resources.files("relay").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


def _seq_of(entry_id: bytes | str) -> int:
    return int(_text(entry_id).partition("-")[0])


def _rows(flat: list[Any]) -> list[tuple[int, bytes]]:
    """{id, update, ...} from a script as (number, update)."""
    return [(_seq_of(flat[i]), _bytes(flat[i + 1])) for i in range(0, len(flat), 2)]


class ScriptRunner(Protocol):
    """The room store's script writer (pipeline.ScriptPipeline, or cluster.ShardedScripts)."""

    async def call(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any: ...


class YjsStore:
    """Raises RelayError subclasses (RoomNotFound, RoomClosed, NotMember, Unavailable) like Rooms.

    Every Redis access is a script run through `scripts` (the room store's writer: one batching
    pipeline, or one per shard in a Redis Cluster, where a room's keys share a slot).
    """

    def __init__(
        self, redis_client: aioredis.Redis, rooms: Rooms, settings: Settings, *, sharded_publish: bool = False
    ) -> None:
        self._rooms = rooms
        self._scripts: ScriptRunner = rooms.scripts
        self._settings = settings
        self._with_document: OrderedDict[str, None] = OrderedDict()
        self.compactor = Compactor(self, after=settings.yjs_compact_after, keep=settings.yjs_compact_keep)
        self.mirror = TextMirror(self, delay=settings.yjs_text_delay)
        publish = f"local PUBLISH = '{'SPUBLISH' if sharded_publish else 'PUBLISH'}'\n"

        def script(name: str) -> AsyncScript:
            return redis_client.register_script(publish + _lua(name))

        self._append = script("yjs_append")
        self._read = script("yjs_read")
        self._range = script("yjs_range")
        self._seed = script("yjs_seed")
        self._lock = script("yjs_lock")
        self._compact = script("yjs_compact")
        self._unlock = script("yjs_unlock")
        self._publish = script("yjs_publish")

    async def _run(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        return await self._scripts.call(script, keys, args)

    @redis_unavailable_is_503
    async def append(self, code: str, author: Identity, update: bytes, origin: str) -> Appended:
        """Number, store and publish one update. Returns once Redis has it (what relay acknowledges).

        Then the room's text follows (TextMirror) if a whole-document client is connected to the room
        (else it is brought up to date when read: `snapshot`), and the stream is compacted when it grew
        long."""
        keys = YjsKeys.of(code)
        for _ in range(LOAD_ATTEMPTS):
            head, middle = yjs_update_parts(origin, now_ms())
            result = await self._run(
                self._append,
                keys.all,
                [
                    author.user_id,
                    update,
                    origin,
                    self._settings.room_ttl,
                    keys.channel,
                    head,
                    middle,
                    author.user_name,
                ],
            )
            outcome = _text(result[0])
            if outcome == "ok":
                appended = Appended(int(result[1]), int(result[2]))
                if int(result[3]):
                    self.mirror.changed(code)
                self.compactor.appended(code, appended.unfolded)
                return appended
            if outcome != "unseeded":
                _raise_for(outcome, code)
            await self.load(code)  # seeds the document, then the append goes through
        raise Unavailable("the room's document could not be started; retry")

    @redis_unavailable_is_503
    async def edit_text(
        self, code: str, identity: Identity, edit: EditorUpdate, origin: str, bases: FrozenBases
    ) -> TextEdited:
        """A whole-document client's edit, as an edit of the shared text that keeps others' typing.

        The change base -> edit.content (the base picked from `bases`) is rebased onto the current
        document (yjs_doc.rebase_edit), stored as a Yjs update and as an editor_update carrying the
        merged text, in one step that holds only if nobody changed the document meanwhile (else it
        merges again).

        Merging happens in rooms where a Yjs client edits, or in every room with
        RELAY_WHOLE_DOCUMENT_MERGE=always. Otherwise, and without a known base, the client's text
        replaces the document verbatim (last writer wins, what every edit did before Yjs). A room no
        Yjs client has joined has no Yjs document at all: its edits cost what they did before Yjs, and
        the first Yjs client starts the document from the room's text. The base is picked only when
        the edit merges (picking it parses and compares the candidates; see yjs_doc.FrozenBases).
        """
        has_document = self._settings.whole_document_merge == "always" or code in self._with_document
        for _ in range(EDIT_ATTEMPTS):
            if not has_document:
                try:
                    accepted = await self._rooms.append_edit(code, identity, edit, origin, NO_DOCUMENT)
                except TextConflict:  # a Yjs client started the room's document
                    has_document = True
                    self._remember(code)
                    continue
                return TextEdited(accepted, edit.content, kept=True)
            loaded = await self.load(code)
            current = loaded.doc.content()
            merges = loaded.has_yjs_edits or self._settings.whole_document_merge == "always"
            base = bases.base_for(edit.content) if merges else None
            edits = rebase_edit(base if base is not None else current, edit.content, current)
            merged = apply_edits(current, edits)
            update = loaded.doc.apply_text_edits(edits, current) if edits else b""
            kept = merged == edit.content
            try:
                accepted = await self._rooms.append_edit(
                    code,
                    identity,
                    edit if kept else replace(edit, content=merged),
                    # A merged edit goes back to its sender as a full editor_update, not as an ack.
                    origin if kept else NO_ORIGIN,
                    TextChange(loaded.seq, update),
                )
            except TextConflict:
                continue
            self.compactor.appended(code, accepted.yjs_unfolded)
            return TextEdited(accepted, merged, kept)
        raise Unavailable("the document kept changing while your edit was merged into it; resend it")

    @redis_unavailable_is_503
    async def publish_volatile(self, code: str, kind: str, origin: str, message: bytes) -> None:
        """Awareness and awareness queries: published to the room's replicas, never stored."""
        keys = YjsKeys.of(code)
        envelope = Envelope(kind, origin, 0, None, now_ms(), message).pack()
        await self._run(self._publish, [keys.room], [keys.channel, envelope])

    @redis_unavailable_is_503
    async def load(self, code: str) -> LoadedDoc:
        """The document: snapshot and every update after it, folded a chunk at a time."""
        keys = YjsKeys.of(code)
        for _ in range(LOAD_ATTEMPTS):
            result = await self._run(self._read, keys.all, [READ_CHUNK])
            outcome = _text(result[0])
            if outcome == "unseeded":
                await self._seed_from(code, _text(result[1]))
                continue
            _raise_for(outcome, code)
            snapshot, folded, seq, status = (
                _bytes(result[1]),
                int(result[2]),
                int(result[3]),
                _text(result[4]),
            )
            has_yjs_edits = bool(int(result[5]))
            author = (_text(result[6]), _text(result[7]))
            doc = RoomDoc(snapshot or None)
            rows = _rows(result[8:])
            expected = folded + 1
            while rows and expected <= seq:
                if rows[0][0] != expected:
                    break  # trimmed under us by a compaction: start over
                for number, update in rows:
                    if number != expected:
                        break
                    doc.apply((update,))
                    expected += 1
                if expected <= seq:
                    rows = await self._chunk(keys, expected, seq)
            if expected > seq:
                self._remember(code)
                return LoadedDoc(doc, seq, status, has_yjs_edits, author)
        raise Unavailable("the room's document kept changing shape while being read; retry")

    async def snapshot(self, code: str, after_seq: int | None) -> Snapshot:
        """rooms.snapshot, with the room's text brought up to date first when Yjs updates are newer
        than it (they were typed while no whole-document client was connected, so nobody folded them)."""
        snapshot = await self._rooms.snapshot(code, after_seq)
        if not snapshot.text_behind:
            return snapshot
        await self.update_text(code)
        return await self._rooms.snapshot(code, after_seq)

    async def update_text(self, code: str, folded: Folded | None = None) -> Folded:
        """Fold the document and store its text (sent as an editor_update when the room is open).

        `folded`, the document as an earlier call returned it, is brought forward with the updates after
        it (the text mirror's cache: it then reads a few updates, not the snapshot and the whole tail);
        when compaction trimmed some of those, the document is loaded afresh. Returns the new fold."""
        if folded is None or not await self._fold_forward(code, folded):
            loaded = await self.load(code)
            folded = Folded(loaded.doc, loaded.seq, loaded.author)
        await self._rooms.set_text(code, folded.author, folded.doc.content(), folded.seq)
        return folded

    async def _fold_forward(self, code: str, folded: Folded) -> bool:
        """Apply the updates after folded.seq to folded.doc; False when the stream no longer has them
        (folded.doc may then hold some of them: the caller drops it)."""
        keys = YjsKeys.of(code)
        expected = folded.seq + 1
        while True:
            result = await self._run(self._range, [keys.ydoc, keys.updates], [expected, "+", READ_CHUNK])
            last = int(result[1])
            if last < folded.seq:
                return False  # a new document (the old one's keys expired and it was started again)
            for number, update in _rows(result[4:]):
                if number != expected:
                    return False
                folded.doc.apply((update,))
                expected += 1
            if expected > last:
                folded.seq, folded.author = last, (_text(result[2]), _text(result[3]))
                return True
            if len(result) == 4:
                return False  # the updates after `expected` are no longer in the stream: compacted

    @redis_unavailable_is_503
    async def updates_after(self, code: str, after: int, upto: int) -> list[tuple[int, bytes]] | None:
        """Updates after..upto, in order; None when some of them were folded into the snapshot meanwhile."""
        keys = YjsKeys.of(code)
        out: list[tuple[int, bytes]] = []
        expected = after + 1
        while expected <= upto:
            rows = await self._chunk(keys, expected, upto)
            if not rows:
                break
            for number, update in rows:
                if number != expected:
                    return None
                out.append((number, update))
                expected += 1
        return out if expected > upto else None

    @redis_unavailable_is_503
    async def current_seq(self, code: str) -> int:
        keys = YjsKeys.of(code)
        result = await self._run(self._range, [keys.ydoc, keys.updates], [1, 0, 0])
        return int(result[1])

    async def _chunk(self, keys: YjsKeys, first: int, last: int) -> list[tuple[int, bytes]]:
        result = await self._run(self._range, [keys.ydoc, keys.updates], [first, last, READ_CHUNK])
        return _rows(result[4:])

    async def _seed_from(self, code: str, content: str) -> None:
        seed = RoomDoc()
        if content:
            seed.apply_text_edits([TextEdit(0, 0, content)], "")
        outcome = await self._run(
            self._seed, YjsKeys.of(code).all, [seed.update_since(None), content, self._settings.room_ttl]
        )
        if int(outcome) == 1:
            logger.info("room %s: Yjs document started from its text (%d characters)", code, len(content))

    @redis_unavailable_is_503
    async def compact(self, code: str, *, keep: int = 0) -> Compaction | None:
        """Fold all but the newest `keep` updates into the snapshot; None when another replica holds
        the lock or there is nothing to fold."""
        keys = YjsKeys.of(code)
        token = secrets.token_hex(8)
        taken = await self._run(self._lock, [keys.ydoc, keys.lock], [token, LOCK_MS])
        if not taken:
            return None
        started = time.perf_counter()
        try:
            snapshot, folded, last = _bytes(taken[0]), int(taken[1]), int(taken[2])
            first, target = folded + 1, last - keep
            if target < first:
                await self._release(keys, token)
                return None
            doc = RoomDoc(snapshot or None)
            expected = first
            while expected <= target:
                rows = await self._chunk(keys, expected, target)
                if not rows:
                    break
                for number, update in rows:
                    if number != expected:
                        raise RuntimeError(f"room {code}: update {expected} is missing from the stream")
                    doc.apply((update,))
                    expected += 1
                await asyncio.sleep(0)  # a long fold must not starve the replica's sockets
            if expected <= target:
                raise RuntimeError(f"room {code}: the stream ends at {expected - 1}, expected {target}")
            new_snapshot = doc.update_since(None)
            outcome = _text(
                await self._run(
                    self._compact, [keys.ydoc, keys.updates, keys.lock], [token, new_snapshot, target]
                )
            )
        except BaseException:
            await self._release(keys, token)
            raise
        if outcome != "ok":
            logger.info("room %s: compaction not stored (%s)", code, outcome)
            return None
        return Compaction(target, target - first + 1, time.perf_counter() - started, len(new_snapshot))

    def _remember(self, code: str) -> None:
        """A hint that the room has a Yjs document (the edit script checks it; a wrong hint costs a retry)."""
        self._with_document[code] = None
        self._with_document.move_to_end(code)
        if len(self._with_document) > ROOMS_REMEMBERED:
            self._with_document.popitem(last=False)

    async def _release(self, keys: YjsKeys, token: str) -> None:
        await self._run(self._unlock, [keys.lock], [token])

    async def aclose(self) -> None:
        await self.mirror.aclose()
        await self.compactor.aclose()


def _raise_for(outcome: str, code: str) -> None:
    if outcome == "ok":
        return
    raise_for_outcome(outcome, code)
    raise Unavailable(f"unexpected answer from the room's document store: {outcome[:40]}")


class Compactor:
    """Compacts rooms whose stream grew past `after` unfolded updates, at most one run per room at a
    time on this replica (debounced by `delay`), and one replica at a time (the store's lock)."""

    def __init__(self, store: YjsStore, *, after: int, keep: int, delay: float = 1.0) -> None:
        self._store = store
        self._after = after
        self._keep = keep
        self._delay = delay
        self._pending: dict[str, asyncio.Task[None]] = {}

    def appended(self, code: str, unfolded: int) -> None:
        if unfolded > self._after and code not in self._pending:
            self._pending[code] = asyncio.create_task(self._run(code), name=f"yjs-compact-{code}")

    async def _run(self, code: str) -> None:
        try:
            await asyncio.sleep(self._delay)
            done = await self._store.compact(code, keep=self._keep)
            if done is not None:
                metrics.YJS_COMPACTIONS.observe(done.seconds)
                logger.info(
                    "room %s: compacted %d updates in %.3fs (snapshot %d bytes, covers 1..%d)",
                    code,
                    done.updates,
                    done.seconds,
                    done.snapshot_bytes,
                    done.folded,
                )
        except RelayError as error:
            logger.warning("room %s: compaction skipped: %s", code, error.message)
        except Exception:
            logger.exception("room %s: compaction failed; the next update retries", code)
        finally:
            self._pending.pop(code, None)

    async def aclose(self) -> None:
        tasks = list(self._pending.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class TextMirror:
    """Keeps the room's text (what whole-document clients see) in step with Yjs edits while a
    whole-document client is connected: a while (`delay`) after a Yjs update, the document is folded and
    its text stored and sent as one editor_update, coalescing every keystroke in between. Any replica may
    run it; the script keeps only the newest text.

    The fold of each run is kept for the next one (at most MIRRORED_DOCS rooms, each until
    MIRRORED_IDLE_SECONDS after its last run), which then reads and applies only the updates since: a
    cache checked against the stream's numbers, not a copy anything else reads."""

    def __init__(self, store: YjsStore, *, delay: float) -> None:
        self._store = store
        self._delay = delay
        self._dirty: set[str] = set()
        self._pending: dict[str, asyncio.Task[None]] = {}
        self._folds: OrderedDict[str, tuple[Folded, float]] = OrderedDict()

    def changed(self, code: str) -> None:
        self._dirty.add(code)
        if code not in self._pending:
            self._pending[code] = asyncio.create_task(self._run(code), name=f"yjs-text-{code}")

    async def _run(self, code: str) -> None:
        try:
            await asyncio.sleep(self._delay)
            self._dirty.discard(code)
            # Popped while folding: a run that fails leaves no half-applied document behind.
            cached = self._folds.pop(code, None)
            folded = await self._store.update_text(code, cached[0] if cached is not None else None)
            self._keep(code, folded)
        except RelayError as error:
            logger.warning("room %s: text not updated: %s", code, error.message)
        except Exception:
            logger.exception("room %s: text update failed", code)
        finally:
            self._pending.pop(code, None)
            if code in self._dirty:  # changed while this run folded: one more run covers it
                self.changed(code)

    def _keep(self, code: str, folded: Folded) -> None:
        now = time.monotonic()
        self._folds[code] = (folded, now)
        while self._folds:
            oldest, (_, used) = next(iter(self._folds.items()))
            if len(self._folds) <= MIRRORED_DOCS and now - used < MIRRORED_IDLE_SECONDS:
                break
            del self._folds[oldest]

    async def aclose(self) -> None:
        tasks = list(self._pending.values())
        self._dirty.clear()
        self._folds.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
