"""``Subscriber(since=..., from_start=..., offset=..., until=...)`` on the in-process broker."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from logbus import Emitter, Subscriber
from logbus._history import History
from logbus.errors import ConfigError, InputError
from logbus.message import Message, Properties
from logbus.topology import Topology, default, loads
from logbus.transports.base import Delivery


@pytest.fixture
def url() -> str:
    """A broker of this test's own."""
    return f"memory://history-{secrets.token_hex(4)}"


@pytest.fixture
def emitter(url: str) -> Iterator[Emitter]:
    """An emitter on the test's broker (the default topology, history stream included)."""
    with Emitter(url) as emitter:
        yield emitter


def messages(sub: Subscriber, timeout: float = 0.5) -> list[str]:
    """Every record the subscriber hands out until none comes within ``timeout``."""
    out = []
    while (record := sub.get(timeout)) is not None:
        out.append(record.message)
    sub.close()
    return out


def test_from_start_replays_only_what_the_keys_select(url, emitter):
    """From the start, 'kern.*' gets the kern records in order and nothing else."""
    for key, text in [("kern.info", "k1"), ("mail.info", "m1"), ("kern.error", "k2")]:
        emitter.emit(key, text)
    assert messages(Subscriber(url, keys=["kern.*"], from_start=True)) == ["k1", "k2"]


def test_every_selector_applies_to_the_history(url, emitter):
    """Severities, exact keys, headers and all select from the stream as their exchanges do."""
    for key, text in [("kern.info", "k1"), ("mail.critical", "m1"), ("auth.error", "a1")]:
        emitter.emit(key, text)
    assert messages(Subscriber(url, severities=["critical"], from_start=True)) == ["m1"]
    assert messages(Subscriber(url, exact=["auth.error"], from_start=True)) == ["a1"]
    assert messages(Subscriber(url, headers={"facility": "kern"}, from_start=True)) == ["k1"]
    assert messages(Subscriber(url, all=True, from_start=True)) == ["k1", "m1", "a1"]


def test_since_shows_records_stamped_since_then_follows_live(url, emitter):
    """Records before the point are left out; those after it, and new ones, are shown."""
    emitter.emit("kern.info", "before")
    point = datetime.now(UTC)
    emitter.emit("kern.info", "after")
    sub = Subscriber(url, keys=["kern.#"], since=point)
    first = sub.get(2)
    assert first is not None and first.message == "after"
    emitter.emit("kern.warning", "live")
    emitter.emit("mail.warning", "not kern")
    emitter.emit("kern.error", "live 2")
    assert messages(sub) == ["live", "live 2"]


def test_until_ends_the_replay_at_the_first_record_after_it(url, emitter):
    """until=point shows what was stamped before it, then get() returns None: done."""
    emitter.emit("kern.info", "one")
    point = datetime.now(UTC)
    emitter.emit("kern.info", "two")
    sub = Subscriber(url, keys=["#"], from_start=True, until=point)
    assert messages(sub, timeout=30) == ["one"]
    assert sub.history is not None and sub.history.done


def test_until_in_the_past_ends_once_the_stream_is_quiet(url, emitter):
    """With nothing stamped after until, the replay still ends: the time has passed."""
    emitter.emit("kern.info", "one")
    sub = Subscriber(url, keys=["#"], since="1h", until=datetime.now(UTC))
    assert messages(sub, timeout=30) == ["one"]
    assert sub.history is not None and sub.history.done


def test_an_offset_starts_the_replay_there(url, emitter):
    """offset=2 skips the first two records of the stream."""
    for i in range(4):
        emitter.emit("kern.info", f"r{i}")
    assert messages(Subscriber(url, keys=["#"], offset=2)) == ["r2", "r3"]


def test_a_topology_without_a_stream_says_so(url):
    """History from a topology with no stream queue: a ConfigError naming the fix."""
    topology = loads('[[exchanges]]\nname = "t"\ntype = "topic"\n')
    with pytest.raises(ConfigError, match="this topology has no history stream"):
        Subscriber(url, keys=["#"], since="10m", topology=topology)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"since": "10m", "offset": 3}, "not since and offset"),
        ({"until": "1m"}, "until needs a place to start"),
        ({"from_start": True, "queue": "mine"}, "takes no queue of its own"),
        ({"since": "10 minutes"}, "is neither an RFC 3339 time"),
    ],
)
def test_history_options_that_do_not_fit_are_refused(url, options, words):
    """Two starting points, until alone, a queue of its own, a bad time: one clear error."""
    with pytest.raises((ConfigError, InputError), match=words):
        Subscriber(url, keys=["#"], **options)


def test_an_offset_seen_already_is_not_shown_again():
    """A consumer restored after a reconnect replays from its start: repeats are skipped."""
    history = History([("logbus.topic", "#", {})], default(), since=None, until=None)

    def delivery(offset: int) -> Delivery:
        message = Message(b"x", Properties(headers={"x-stream-offset": offset}), "t", "kern.info")
        return Delivery(
            message,
            delivery_tag=offset + 1,
            redelivered=False,
            consumer_tag="c",
            queue="s",
            settle=lambda *_: None,
        )

    shown = [history.admit(delivery(o)) is not None for o in (0, 1, 0, 1, 2)]
    assert shown == [True, True, False, False, True]


def test_the_history_stream_is_the_one_an_emit_exchange_feeds():
    """Of two streams, the one bound from the emit exchange is the history."""
    from logbus._history import history_stream
    from logbus.topology import Binding, Queue

    base = default()
    other = Queue(name="other", queue_type="stream")
    topology = Topology(
        exchanges=base.exchanges,
        queues=(other, *base.queues),
        bindings=base.bindings,
        emit=base.emit,
    )
    assert history_stream(topology) == "logbus.history"
    assert Binding  # the default binds logbus.history from logbus.topic


def test_closing_with_requeue_on_history_acks_what_a_stream_would_refuse(url, emitter):
    """close(requeue=True) after a history record does not nack (a stream answers 540)."""
    emitter.emit("kern.info", "one")
    sub = Subscriber(url, keys=["#"], from_start=True)
    assert sub.get(2) is not None
    sub.close(requeue=True)  # a nack here would raise NotImplementedByBroker
