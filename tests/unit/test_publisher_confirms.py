"""The pika publisher's confirm matching: a multiple confirm settles exactly the messages in
flight up to its tag, whatever single confirms came before it, and a new channel starts the
tags again."""

from __future__ import annotations

from types import SimpleNamespace

from pika import spec

from logbus.transports.amqp.pika_publish import Outgoing, PublishBatch, Publisher


def _publisher(count: int) -> tuple[Publisher, PublishBatch, list[int]]:
    """A publisher with ``count`` messages in flight (tags 1..count) of one stream."""
    confirmed: list[int] = []
    batch = PublishBatch(confirmed.append)
    batch.add(count)
    publisher = Publisher(SimpleNamespace(closing=False, ready=False), window=10_000)
    for seq in range(count):
        publisher.inflight[seq + 1] = Outgoing(batch, "x", "k", b"", None, False, seq=seq)
    publisher._next_tag = count + 1
    return publisher, batch, confirmed


def _ack(tag: int, *, multiple: bool, nack: bool = False) -> SimpleNamespace:
    method = (spec.Basic.Nack if nack else spec.Basic.Ack)(delivery_tag=tag, multiple=multiple)
    return SimpleNamespace(method=method)


def test_a_multiple_confirm_settles_what_is_left_up_to_its_tag() -> None:
    publisher, batch, confirmed = _publisher(10)
    publisher._confirmed(_ack(3, multiple=False))
    publisher._confirmed(_ack(5, multiple=False))
    publisher._confirmed(_ack(6, multiple=True))
    assert sorted(publisher.inflight) == [7, 8, 9, 10]
    assert batch.outstanding == 4
    assert sum(confirmed) == 6  # the prefix 0..5, told as it became gapless
    publisher._confirmed(_ack(8, multiple=False))
    publisher._confirmed(_ack(10, multiple=True))
    assert publisher.inflight == {}
    assert batch.outstanding == 0 and batch.failed == 0
    assert sum(confirmed) == 10


def test_a_multiple_nack_fails_only_what_it_covers() -> None:
    publisher, batch, _ = _publisher(6)
    publisher._confirmed(_ack(2, multiple=True))
    publisher._confirmed(_ack(4, multiple=True, nack=True))
    assert sorted(publisher.inflight) == [5, 6]
    assert batch.failed == 2
    publisher._confirmed(_ack(4, multiple=True))  # a stale repeat settles nothing
    assert batch.outstanding == 2


def test_many_multiple_confirms_over_a_wide_window_each_settle_their_own() -> None:
    """20,000 in flight confirmed 7 at a time: every message settled once, in order."""
    publisher, batch, confirmed = _publisher(20_000)
    for tag in range(7, 20_001, 7):
        publisher._confirmed(_ack(tag, multiple=True))
    publisher._confirmed(_ack(20_000, multiple=True))
    assert publisher.inflight == {}
    assert batch.outstanding == 0
    assert sum(confirmed) == 20_000


def test_a_new_channel_numbers_its_confirms_from_one_again() -> None:
    publisher, batch, confirmed = _publisher(5)
    publisher._confirmed(_ack(5, multiple=True))
    channel = SimpleNamespace(is_open=True)
    publisher._latest = channel
    publisher._confirming(channel)  # the next channel is in confirm mode
    batch.add(3)
    for seq in range(5, 8):
        publisher.inflight[seq - 4] = Outgoing(batch, "x", "k", b"", None, False, seq=seq)
    publisher._confirmed(_ack(3, multiple=True))
    assert publisher.inflight == {}
    assert sum(confirmed) == 8


def test_a_confirm_refills_the_window_once_an_eighth_of_it_is_free() -> None:
    """Publishes waiting for room go out as soon as confirms free an eighth of the window,
    not only once it drained to half: a durable queue confirms a few thousand at a time,
    and waiting for half a deep window left the broker idle between its batches."""
    publisher, batch, _ = _publisher(800)
    sent: list[bytes] = []
    channel = SimpleNamespace(is_open=True, basic_publish=lambda *args: sent.append(args[2]))
    publisher.channel = channel
    publisher.core = SimpleNamespace(closing=False, ready=True)
    publisher.window = SimpleNamespace(limit=800, confirmed=lambda *_a, **_k: None)  # type: ignore[assignment]
    batch.add(500)
    publisher.unsent.extend(Outgoing(batch, "x", "k", b"w", None, False) for _ in range(500))
    publisher._confirmed(_ack(50, multiple=True))  # 50 free: under an eighth, no write yet
    assert sent == [] and len(publisher.inflight) == 750
    publisher._confirmed(_ack(100, multiple=True))  # 100 free: the window fills again
    assert len(sent) == 100 and len(publisher.inflight) == 800
    assert len(publisher.unsent) == 400
