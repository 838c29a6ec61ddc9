"""The ingest publisher: batches confirmed in order, held or spooled while the broker is away."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from time import monotonic

import pytest

import logbus.ingest.pipeline as pipeline_module
from logbus.errors import BrokerUnavailable, InputError, NotConfirmed
from logbus.ingest.pipeline import Outcome, Pending, Pipeline
from logbus.record import LogRecord
from logbus.spool import Spool
from tests.ingest_support import stream_in_batches


class FakeLink:
    """A broker that takes records while ``up`` is set, and refuses any message 'poison'."""

    def __init__(self) -> None:
        self.up = threading.Event()
        self.up.set()
        self.taken: list[str] = []
        self.attempts = 0

    @property
    def connected(self) -> bool:
        return self.up.is_set()

    def emit_many(self, records: Iterable[LogRecord]) -> int:
        batch = list(records)
        self.attempts += 1
        if not self.up.is_set():
            raise NotConfirmed("broker away", unconfirmed=len(batch))
        if any(r.message == "poison" for r in batch):
            raise InputError("refused")
        self.taken += [r.message for r in batch]
        return len(batch)

    def emit_stream(
        self,
        take: Callable[[int], tuple[list[LogRecord], bool]],
        progress: Callable[[int], None],
    ) -> int:
        return stream_in_batches(self.emit_many, take, progress)

    def close(self) -> None:
        pass


class Settled:
    """Collects the pipeline's settlements."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.outcomes: list[tuple[str, Outcome]] = []

    def __call__(self, items: list[Pending], outcome: Outcome) -> None:
        with self.lock:
            self.outcomes += [(p.record.message, outcome) for p in items]
            self.lock.notify_all()

    def wait_for(self, count: int, timeout: float = 20.0) -> None:
        deadline = monotonic() + timeout
        with self.lock:
            while len(self.outcomes) < count:
                left = deadline - monotonic()
                assert left > 0, f"only {len(self.outcomes)} of {count} settled"
                self.lock.wait(left)


def _records(*messages: str) -> list[Pending]:
    return [Pending(LogRecord(facility="user", severity="info", message=m)) for m in messages]


def test_records_are_confirmed_in_the_order_they_were_put() -> None:
    """Every record is settled confirmed, in order, through the link."""
    link, settled = FakeLink(), Settled()
    pipeline = Pipeline(lambda: link, settled, batch_size=3)
    pipeline.start()
    pipeline.put(_records(*(str(n) for n in range(10))))
    settled.wait_for(10)
    assert pipeline.stop(monotonic() + 5)
    assert link.taken == [str(n) for n in range(10)]
    assert {o for _, o in settled.outcomes} == {"confirmed"}


def test_without_a_spool_a_refused_batch_is_held_and_sent_again_first() -> None:
    """While the broker is away nothing settles; once back, everything goes, in order."""
    link, settled = FakeLink(), Settled()
    link.up.clear()
    pipeline = Pipeline(lambda: link, settled, batch_size=2)
    pipeline.start()
    pipeline.put(_records("a", "b", "c"))
    while link.attempts < 2:
        threading.Event().wait(0.01)
    assert settled.outcomes == []
    link.up.set()
    settled.wait_for(3)
    pipeline.stop(monotonic() + 5)
    assert link.taken == ["a", "b", "c"]


def test_with_a_spool_records_wait_on_disk_and_replay_in_order(tmp_path: Path) -> None:
    """Spooled while away (settled as such), then replayed in order once the broker is back."""
    link, settled = FakeLink(), Settled()
    link.up.clear()
    spool = Spool(tmp_path, fsync="never")
    pipeline = Pipeline(lambda: link, settled, spool=spool, batch_size=2)
    pipeline.start()
    pipeline.put(_records("a", "b", "c"))
    settled.wait_for(3)
    assert [o for _, o in settled.outcomes] == ["spooled"] * 3
    link.up.set()
    pipeline.put(_records("d"))
    deadline = monotonic() + 20
    while link.taken != ["a", "b", "c", "d"]:
        assert monotonic() < deadline, link.taken
        threading.Event().wait(0.01)
    pipeline.stop(monotonic() + 5)
    assert len(Spool(tmp_path)) == 0


def test_a_record_refused_as_input_costs_only_itself() -> None:
    """A batch refused as input is published record by record; only the bad one fails."""
    link, settled = FakeLink(), Settled()
    pipeline = Pipeline(lambda: link, settled, batch_size=10)
    pipeline.start()
    pipeline.put(_records("x", "poison", "y"))
    settled.wait_for(3)
    pipeline.stop(monotonic() + 5)
    assert dict(settled.outcomes) == {"x": "confirmed", "poison": "failed", "y": "confirmed"}


def test_a_link_that_cannot_connect_is_asked_again() -> None:
    """BrokerUnavailable from the link factory is waited out, not fatal."""
    link, settled = FakeLink(), Settled()
    calls = 0

    def factory() -> FakeLink:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise BrokerUnavailable("no broker")
        return link

    pipeline = Pipeline(factory, settled)
    pipeline.start()
    pipeline.put(_records("late"))
    settled.wait_for(1)
    pipeline.stop(monotonic() + 5)
    assert link.taken == ["late"] and pipeline.fatal is None


def test_stop_settles_what_could_not_be_sent_as_failed() -> None:
    """At the drain deadline, records the broker never took are reported, not forgotten."""
    link, settled = FakeLink(), Settled()
    link.up.clear()
    pipeline = Pipeline(lambda: link, settled)
    pipeline.start()
    pipeline.put(_records("lost1", "lost2"))
    assert not pipeline.stop(monotonic() + 0.3)
    assert sorted(settled.outcomes) == [("lost1", "failed"), ("lost2", "failed")]


def test_stop_spools_what_could_not_be_sent(tmp_path: Path) -> None:
    """With a spool, the drain deadline moves what is left to disk."""
    link, settled = FakeLink(), Settled()
    link.up.clear()
    pipeline = Pipeline(lambda: link, settled, spool=Spool(tmp_path, fsync="never"))
    pipeline.put(_records("kept"))
    assert pipeline.stop(monotonic() + 0.1)
    assert settled.outcomes == [("kept", "spooled")]
    assert len(Spool(tmp_path)) == 1


class HalfwayLink(FakeLink):
    """A stream whose confirms stop after ``confirm`` records, the first time: it raises
    NotConfirmed for the rest, and a confirm of the ended stream comes in late."""

    def __init__(self, confirm: int) -> None:
        super().__init__()
        self.confirm = confirm
        self.late: Callable[[int], None] | None = None

    def emit_stream(
        self,
        take: Callable[[int], tuple[list[LogRecord], bool]],
        progress: Callable[[int], None],
    ) -> int:
        if self.late is not None:
            self.late(1)  # the first stream's straggler: must settle nothing now
            return stream_in_batches(self.emit_many, take, progress)
        records, _more = take(1000)
        self.taken += [r.message for r in records[: self.confirm]]
        progress(self.confirm)
        self.late = progress
        raise NotConfirmed("broker away", unconfirmed=len(records) - self.confirm)


def test_a_stream_settles_its_confirmed_prefix_and_holds_the_rest_first_in_line() -> None:
    """Records confirmed before a stream failed are settled confirmed, once; the rest are sent
    again ahead of anything newer, in order; a late confirm of the failed stream settles none."""
    link, settled = HalfwayLink(confirm=4), Settled()
    pipeline = Pipeline(lambda: link, settled, batch_size=10)
    pipeline.start()
    pipeline.put(_records(*(str(n) for n in range(10))))
    settled.wait_for(10)
    assert pipeline.stop(monotonic() + 5)
    assert link.taken == [str(n) for n in range(10)]
    assert settled.outcomes == [(str(n), "confirmed") for n in range(10)]


class SlowConfirmLink(FakeLink):
    """Confirms each take ``delay`` seconds after taking it (a broker that syncs to disk
    before confirming), or never once ``confirming`` is cleared; counts the streams, and
    how many records were unconfirmed when each take came back with records."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.confirming = threading.Event()
        self.confirming.set()
        self.streams = 0
        self.in_flight_at_take: list[int] = []
        self.returned = threading.Event()

    def emit_stream(
        self,
        take: Callable[[int], tuple[list[LogRecord], bool]],
        progress: Callable[[int], None],
    ) -> int:
        self.streams += 1
        lock = threading.Lock()
        in_flight = [0]
        timers: list[threading.Timer] = []

        def confirm(count: int) -> None:
            with lock:
                in_flight[0] -= count
            progress(count)

        count, more = 0, True
        while more:
            records, more = take(1000)
            if records:
                with lock:
                    self.in_flight_at_take.append(in_flight[0])
                    in_flight[0] += len(records)
                self.taken += [r.message for r in records]
                count += len(records)
                if self.confirming.is_set():
                    timer = threading.Timer(self.delay, confirm, (len(records),))
                    timers.append(timer)
                    timer.start()
        for timer in timers:
            timer.join()
        self.returned.set()
        return count


def test_a_stream_goes_on_taking_while_its_records_wait_for_confirms() -> None:
    """A pause in arrivals longer than the stream's idle wait does not end a stream whose
    records are still in flight: ending it would wait for all of them to be confirmed
    (the broker idle meanwhile) before anything newer was sent."""
    link, settled = SlowConfirmLink(delay=0.5), Settled()
    pipeline = Pipeline(lambda: link, settled)
    pipeline.start()
    pipeline.put(_records("a", "b"))
    threading.Event().wait(0.25)  # five times the idle wait, half the confirm delay
    pipeline.put(_records("c", "d"))
    settled.wait_for(4)
    assert pipeline.stop(monotonic() + 5)
    assert link.streams == 1
    assert link.in_flight_at_take == [0, 2]
    assert settled.outcomes == [(m, "confirmed") for m in "abcd"]


def test_a_stream_whose_confirms_stall_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    """With records in flight and no confirm coming, the stream stops taking after
    ``_STALL`` seconds (not at once, not never), so its end and the confirm timeout
    there are reached."""
    monkeypatch.setattr(pipeline_module, "_STALL", 0.4)
    link, settled = SlowConfirmLink(delay=0.1), Settled()
    link.confirming.clear()
    pipeline = Pipeline(lambda: link, settled)
    pipeline.start()
    started = monotonic()
    pipeline.put(_records("a"))
    assert link.returned.wait(5), "the stream kept waiting without confirms"
    assert monotonic() - started >= 0.4
    pipeline.stop(monotonic() + 1)
