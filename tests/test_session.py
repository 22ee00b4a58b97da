"""Pure logic: one socket's delivery state (send queue, the send / skip / catch-up rule, connection)."""

from __future__ import annotations

import asyncio

import pytest

from relay.auth import Identity
from relay.errors import MemberRemoved, RoomClosed, SlowConsumer
from relay.protocol import KIND_CLOSE, KIND_EVENT, KIND_REMOVE, NO_ORIGIN, Envelope
from relay.session import (
    RESYNC,
    CatchUp,
    Connection,
    DurableEvent,
    EarlyAck,
    QueueItem,
    Send,
    SendQueue,
    Skip,
    VolatileFrame,
    decide,
    item_of,
)

ME = "conn-me"
ALICE = Identity("alice", "Alice", None, is_interviewer=False, expires_at=2e9)


def event(seq: int, origin: str = "conn-other", msg_id: str | None = None) -> DurableEvent:
    return DurableEvent(seq, f'{{"seq":{seq},"type":"editor_update"}}', origin, msg_id)


def test_the_next_durable_event_is_sent_and_the_senders_own_is_acked() -> None:
    assert decide(event(5), last_seq=4, connection_id=ME) == Send('{"seq":5,"type":"editor_update"}')
    own = decide(event(5, origin=ME, msg_id="m1"), last_seq=4, connection_id=ME)
    assert own == Send('{"type":"ack","seq":5,"client_msg_id":"m1"}')
    assert decide(EarlyAck(5, None), last_seq=4, connection_id=ME) == Send('{"type":"ack","seq":5}')


@pytest.mark.parametrize("item", [event(3), event(4), event(4, origin=ME), EarlyAck(4, "m")])
def test_what_was_already_sent_is_skipped(item: QueueItem) -> None:
    assert isinstance(decide(item, last_seq=4, connection_id=ME), Skip)
    assert isinstance(decide(item, last_seq=4, connection_id=ME, caught_up=True), Skip)


def test_a_gap_is_filled_from_history_before_the_event_that_revealed_it() -> None:
    assert decide(event(9), last_seq=4, connection_id=ME) == CatchUp(upto=8)
    # After the catch-up: sent if history did not already cover it, skipped if it did, and a gap history
    # could not fill is not asked for again.
    assert decide(event(9), last_seq=8, connection_id=ME, caught_up=True) == Send(event(9).text)
    assert isinstance(decide(event(9), last_seq=9, connection_id=ME, caught_up=True), Skip)
    assert decide(event(9), last_seq=4, connection_id=ME, caught_up=True) == Send(event(9).text)


def test_an_early_ack_ahead_of_events_in_flight_waits_for_its_events_own_copy() -> None:
    assert isinstance(decide(EarlyAck(9, "m"), last_seq=4, connection_id=ME), Skip)


def test_volatile_frames_go_out_whatever_the_sequence_and_a_resync_catches_up_once() -> None:
    frame = VolatileFrame('{"type":"cursor_update"}')
    assert decide(frame, last_seq=0, connection_id=ME) == Send(frame.text)
    assert decide(frame, last_seq=100, connection_id=ME) == Send(frame.text)
    assert decide(RESYNC, last_seq=4, connection_id=ME) == CatchUp(upto=None)
    assert isinstance(decide(RESYNC, last_seq=4, connection_id=ME, caught_up=True), Skip)


def test_items_from_envelopes_keep_what_the_writer_needs() -> None:
    durable = item_of(Envelope(KIND_CLOSE, NO_ORIGIN, 7, None, 1, b'{"seq":7}'))
    assert durable == DurableEvent(7, '{"seq":7}', NO_ORIGIN, None, closes_room=True)
    edit = item_of(Envelope(KIND_EVENT, "c1", 3, "m", 1, b'{"seq":3}'))
    assert edit == DurableEvent(3, '{"seq":3}', "c1", "m", closes_room=False)
    removal = item_of(
        Envelope(KIND_REMOVE, NO_ORIGIN, 0, None, 1, b'{"type":"member_removed","user_id":"bob"}')
    )
    assert removal == VolatileFrame(
        '{"type":"member_removed","user_id":"bob"}', NO_ORIGIN, removes_user="bob"
    )


def test_fifo_bound_and_wakeup() -> None:
    async def scenario() -> list[int]:
        queue = SendQueue(3)
        assert all(queue.put_nowait(EarlyAck(n, None)) for n in (1, 2, 3))
        assert not queue.put_nowait(EarlyAck(4, None)), "a full queue must refuse"
        got = [await queue.get() for _ in range(3)]
        waiter = asyncio.create_task(queue.get())
        await asyncio.sleep(0)
        assert not waiter.done()
        assert queue.put_nowait(EarlyAck(5, None))
        got.append(await asyncio.wait_for(waiter, 1))
        return [item.seq for item in got if isinstance(item, EarlyAck)]

    assert asyncio.run(scenario()) == [1, 2, 3, 5]


def test_a_cancelled_consumer_leaves_the_queue_usable() -> None:
    async def scenario() -> QueueItem:
        queue = SendQueue(2)
        waiter = asyncio.create_task(queue.get())
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        queue.put_nowait(EarlyAck(7, None))
        return await asyncio.wait_for(queue.get(), 1)

    assert asyncio.run(scenario()) == EarlyAck(7, None)


def test_a_connection_that_stops_reading_is_dropped_not_waited_for() -> None:
    async def scenario() -> Connection:
        connection = Connection("ABC234", ALICE, "candidate", queue_size=2)
        for n in range(3):
            connection.offer(EarlyAck(n + 1, None))
        return connection

    connection = asyncio.run(scenario())
    assert isinstance(connection.closing, SlowConsumer)
    assert len(connection.queue) == 2


def test_what_was_sent_moves_the_connection_on() -> None:
    async def scenario() -> tuple[Connection, Connection, bool]:
        confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        closing = Connection("ABC234", ALICE, "candidate", queue_size=8)
        assert closing.has_sent(VolatileFrame("{}", sent=confirmed)) and confirmed.done()
        assert closing.has_sent(event(3)) and closing.last_seq == 3 and closing.closing is None
        assert closing.has_sent(DurableEvent(4, "{}", NO_ORIGIN, None, closes_room=True))
        removed = Connection("ABC234", ALICE, "candidate", queue_size=8)
        assert removed.has_sent(VolatileFrame("{}", removes_user="bob")), "another user's removal"
        goes_on = removed.has_sent(VolatileFrame("{}", removes_user="alice"))
        return closing, removed, goes_on

    closing, removed, goes_on = asyncio.run(scenario())
    assert closing.last_seq == 4 and isinstance(closing.closing, RoomClosed)
    assert not goes_on and isinstance(removed.closing, MemberRemoved)
