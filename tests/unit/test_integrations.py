"""logbus.integrations without a broker: what a log call becomes, and what each policy keeps.

The engine publishes through a fake sender here (:class:`FakeSender`): it records what it
is given, can be held (a broker that does not answer) and can fail (a broker away).
"""

from __future__ import annotations

import logging
import logging.config
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
import structlog

from logbus.errors import BrokerUnavailable, ConfigError, RecordTooLarge
from logbus.integrations import (
    LogbusHandler,
    LogbusProcessor,
    Shipper,
    severity_for_level,
    severity_for_method,
)
from logbus.integrations._fields import json_safe
from logbus.integrations._shipper import Event
from logbus.record import LogRecord, Severity
from logbus.topology import default, dumps


class FakeSender:
    """Stands in for the Emitter: keeps every record it was given, in order."""

    def __init__(self, fail: int = 0, too_large: str | None = None) -> None:
        self.records: list[LogRecord] = []
        self.attempts = 0
        self.batches: list[list[str]] = []  # the ids of every attempt, failed ones too
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()  # set once a publish is under way
        self._fail = fail
        self._too_large = too_large
        self.closed = False

    def emit_many(self, records: Iterable[LogRecord]) -> int:
        batch = list(records)
        self.attempts += 1
        self.batches.append([record.id for record in batch])
        self.entered.set()
        self.gate.wait()
        if self._fail:
            self._fail -= 1
            raise BrokerUnavailable("the fake broker is away")
        for record in batch:
            if record.message == self._too_large:
                raise RecordTooLarge("too large", size=10, limit=1)
        self.records.extend(batch)
        return len(batch)

    def close(self) -> None:
        self.closed = True


def event(n: int) -> Event:
    return Event(Severity.INFO, f"line {n}", 1_700_000_000.0, {"n": n}, 42)


@pytest.fixture
def sender() -> Iterator[FakeSender]:
    fake = FakeSender()
    yield fake
    fake.gate.set()  # never leave a listener held


def shipper(sender: FakeSender, **options: object) -> Shipper:
    return Shipper(facility="local0", app="unit", sender=lambda: sender, **options)  # type: ignore[arg-type]


# -- levels ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "severity"),
    [
        (logging.DEBUG, Severity.DEBUG),
        (logging.INFO, Severity.INFO),
        (logging.WARNING, Severity.WARNING),
        (logging.ERROR, Severity.ERROR),
        (logging.CRITICAL, Severity.CRITICAL),
        (0, Severity.DEBUG),
        (5, Severity.DEBUG),  # TRACE-like levels below DEBUG
        (22, Severity.INFO),
        (15, Severity.INFO),  # a tie goes to the more severe
        (25, Severity.WARNING),
        (35, Severity.ERROR),
        (44, Severity.ERROR),
        (46, Severity.CRITICAL),
        (100, Severity.CRITICAL),
    ],
)
def test_levels_map_to_the_nearest_severity(level: int, severity: Severity) -> None:
    """The five standard levels map one to one; custom ones to the nearest, ties upwards."""
    assert severity_for_level(level) is severity


@pytest.mark.parametrize(
    ("name", "severity"),
    [
        ("debug", Severity.DEBUG),
        ("warn", Severity.WARNING),
        ("exception", Severity.ERROR),
        ("CRITICAL", Severity.CRITICAL),
        ("fatal", Severity.CRITICAL),
        ("notice", Severity.NOTICE),
        ("msg", Severity.INFO),
        ("whatever", Severity.INFO),
        (30, Severity.INFO),
    ],
)
def test_structlog_methods_map_to_severities(name: object, severity: Severity) -> None:
    """structlog's level names and method names become severities; unknown ones info."""
    assert severity_for_method(name) is severity


# -- what a logging call becomes -----------------------------------------------------------


class Odd:
    def __repr__(self) -> str:
        return "<Odd>"


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no")


def test_odd_values_become_json_data_and_never_raise() -> None:
    """Objects, NaN, bytes, sets and non-str keys become text; nothing raises."""
    value = {1: [Odd(), float("nan"), b"x", (1, 2.5)], "s": {3}, "bad": BadRepr()}
    safe = json_safe(value)
    assert safe == {
        "1": ["<Odd>", "nan", "b'x'", [1, 2.5]],
        "s": "{3}",
        "bad": "<BadRepr whose repr failed: RuntimeError>",
    }
    LogRecord(facility="user", severity="info", message="m", fields=safe)  # a record takes it


def test_deep_nesting_is_cut_to_its_repr() -> None:
    """A structure nested deeper than a record allows is cut, not refused."""
    deep: list[object] = []
    for _ in range(200):
        deep = [deep]
    LogRecord(facility="user", severity="info", message="m", fields={"d": json_safe(deep)})


def make_record(logger: logging.Logger, *args: object, **kwargs: object) -> logging.LogRecord:
    captured: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(record)

    capture = Capture()
    logger.setLevel(logging.DEBUG)
    logger.addHandler(capture)
    try:
        logger.log(*args, **kwargs)  # type: ignore[arg-type]
    finally:
        logger.removeHandler(capture)
    return captured[0]


def test_extra_and_exc_info_become_fields(sender: FakeSender) -> None:
    """extra= attributes, the exception's traceback and the logger's name are fields."""
    handler = LogbusHandler(shipper=shipper(sender))
    logger = logging.getLogger("unit.integrations.extra")
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        record = make_record(
            logger, logging.ERROR, "failed %s", "job", exc_info=True, extra={"user": Odd(), "n": 3}
        )
    got = handler.event(record)
    assert got.severity is Severity.ERROR
    assert got.message == "failed job"
    assert got.fields["user"] == "<Odd>"
    assert got.fields["n"] == 3
    assert got.fields["logger"] == "unit.integrations.extra"
    assert got.fields["level"] == "ERROR"
    assert got.fields["exception"].startswith("Traceback (most recent call last):")
    assert got.fields["exception"].endswith("ZeroDivisionError: division by zero")
    assert "stack" not in got.fields
    assert not {"args", "msg", "exc_info", "created", "levelno"} & set(got.fields)
    handler.close()


def test_stack_info_and_a_formatter(sender: FakeSender) -> None:
    """stack_info becomes the field stack; a formatter set on the handler makes the message."""
    handler = LogbusHandler(shipper=shipper(sender))
    handler.setFormatter(logging.Formatter("[%(name)s] %(message)s"))
    record = make_record(logging.getLogger("unit.fmt"), logging.INFO, "hi", stack_info=True)
    got = handler.event(record)
    assert got.message.startswith("[unit.fmt] hi\nStack (most recent call last):")
    assert got.fields["stack"].startswith("Stack (most recent call last):")
    handler.close()


def test_records_carry_the_handlers_facility_and_app_and_the_calls_time(
    sender: FakeSender,
) -> None:
    """What the listener publishes: facility/app of the handler, ts and pid of the call."""
    handler = LogbusHandler(shipper=shipper(sender))
    logger = logging.getLogger("unit.integrations.sent")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        logger.warning("disk %s", "full", extra={"disk": "sda1"})
        logger.debug("noise")
        assert handler.shipper.flush(10)
    finally:
        logger.removeHandler(handler)
        handler.close()
    first, second = sender.records
    assert first.routing_key == "local0.warning"
    assert (first.app, first.message, first.fields["disk"]) == ("unit", "disk full", "sda1")
    assert second.routing_key == "local0.debug"
    assert handler.sent == 2 and handler.dropped == 0


def test_logbus_own_loggers_are_not_shipped(sender: FakeSender) -> None:
    """What logbus's publishing path logs (its loggers, pika's, its I/O thread) is not
    shipped: under "block" it would wait for a buffer only that path can empty."""
    handler = LogbusHandler(shipper=shipper(sender))

    def record(name: str, thread: str = "MainThread") -> logging.LogRecord:
        made = logging.LogRecord(name, logging.WARNING, "p", 1, "m", None, None)
        made.threadName = thread
        return made

    for own in ("logbus.transports.amqp", "pika.adapters.utils", "aiormq.connection"):
        handler.handle(record(own))
    handler.handle(record("app.db", thread="logbus-amqp:logbus-host-1-abc"))  # pika's I/O thread
    handler.handle(record("logbusiness"))
    handler.close()
    assert [r.fields["logger"] for r in sender.records] == ["logbusiness"]


# -- policies ----------------------------------------------------------------------------


def test_drop_policy_counts_exactly_what_it_did_not_keep(sender: FakeSender) -> None:
    """Broker held: the buffer fills, the rest is dropped; kept + dropped is everything."""
    sender.gate.clear()
    ship = shipper(sender, buffer_size=10, batch_size=5)
    kept = [n for n in range(100) if ship.put(event(n))]
    assert sender.entered.wait(10)
    assert ship.dropped == 100 - len(kept)
    assert 10 <= len(kept) <= 15  # the buffer, and at most one batch in the listener's hands
    sender.gate.set()
    assert ship.flush(10)
    ship.close()
    assert [r.fields["n"] for r in sender.records] == kept
    assert (ship.sent, ship.dropped, ship.failed) == (len(kept), 100 - len(kept), 0)


def test_block_policy_gives_up_after_its_timeout_and_counts_it(sender: FakeSender) -> None:
    """A full buffer under "block" makes the caller wait; after block_timeout it is dropped."""
    sender.gate.clear()
    ship = shipper(sender, policy="block", buffer_size=2, batch_size=1, block_timeout=0.05)
    results = [ship.put(event(n)) for n in range(6)]
    assert results.count(False) == ship.dropped >= 1
    sender.gate.set()
    ship.close()
    assert ship.sent == results.count(True)


def test_block_policy_keeps_everything_once_the_broker_answers(sender: FakeSender) -> None:
    """Callers blocked on a full buffer go on when the broker takes records again: no loss."""
    sender.gate.clear()
    ship = shipper(sender, policy="block", buffer_size=3, batch_size=2, block_timeout=60)
    done = threading.Event()

    def log_many() -> None:
        for n in range(50):
            ship.put(event(n))
        done.set()

    thread = threading.Thread(target=log_many)
    thread.start()
    assert sender.entered.wait(10)
    assert not done.is_set()  # the buffer is full and the broker holds: the caller waits
    sender.gate.set()
    thread.join(30)
    assert done.is_set()
    ship.close()
    assert [r.fields["n"] for r in sender.records] == list(range(50))
    assert (ship.sent, ship.dropped) == (50, 0)


def test_a_batch_the_broker_refused_is_sent_again_with_the_same_ids() -> None:
    """Recoverable failures keep the batch: retried until it goes, ids unchanged."""
    sender = FakeSender(fail=2)
    ship = shipper(sender)
    for n in range(3):
        ship.put(event(n))
    assert ship.flush(30)
    ship.close()
    assert sender.attempts >= 3
    assert [r.fields["n"] for r in sender.records] == [0, 1, 2]
    tried = {record_id for batch in sender.batches for record_id in batch}
    assert tried == {r.id for r in sender.records}  # a retry is the same records, not new ones
    assert ship.sent == 3


def test_a_record_too_large_fails_alone(sender: FakeSender) -> None:
    """A record the broker can never take is counted failed; its batch mates are sent."""
    sender = FakeSender(too_large="line 1")
    sender.gate.clear()
    ship = shipper(sender)
    for n in range(3):
        ship.put(event(n))
    sender.gate.set()
    assert ship.flush(10)
    ship.close()
    assert [r.fields["n"] for r in sender.records] == [0, 2]
    assert (ship.sent, ship.failed, ship.dropped) == (2, 1, 0)


def test_close_gives_up_at_its_deadline_and_says_so_once(
    sender: FakeSender, caplog: pytest.LogCaptureFixture
) -> None:
    """A broker that never answers: close returns, counts what is lost, logs it one time."""
    sender.gate.clear()
    ship = shipper(sender, flush_timeout=0.1)
    for n in range(5):
        ship.put(event(n))
    assert sender.entered.wait(10)
    with caplog.at_level(logging.WARNING, logger="logbus.integrations"):
        ship.close()
        ship.close()
    assert ship.dropped == 5 and ship.sent == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "logbus.integrations"]
    assert len(lines) == 1 and "5 log records were dropped" in lines[0]
    assert not ship.put(event(6))  # after close: dropped, counted
    assert ship.dropped == 6


def test_a_flush_that_timed_out_is_not_waited_for_again_by_close(sender: FakeSender) -> None:
    """logging.shutdown() flushes then closes: one deadline, not two, when nothing moves.

    close's own deadline here is longer than the test's timeout: a close that waited
    again would fail the test."""
    sender.gate.clear()
    ship = shipper(sender, flush_timeout=600)
    ship.put(event(0))
    assert sender.entered.wait(10)
    assert not ship.flush(0.05)
    ship.close()  # with the flush's deadline spent and nothing sent, close waits no more
    assert ship.dropped == 1


def test_bad_options_fail_at_configuration() -> None:
    """A policy, size or facility that cannot work is refused when the handler is made."""
    with pytest.raises(ConfigError, match="policy"):
        Shipper(policy="maybe", sender=FakeSender)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        Shipper(buffer_size=0, sender=FakeSender)
    with pytest.raises(ConfigError):
        Shipper(facility="Not A Facility", sender=FakeSender)


# -- dictConfig and structlog -------------------------------------------------------------


def test_dictconfig_builds_the_handler_with_its_keywords(tmp_path: Path) -> None:
    """dictConfig's class entry passes url, facility, policy, sizes and the topology file.

    Built through dictConfig's own configurator (``configure_handler``), so that this
    process's logging is left alone; the integration tier runs ``dictConfig`` itself."""
    topology = tmp_path / "topology.toml"
    topology.write_text(dumps(default()))
    entry = {
        "class": "logbus.integrations.LogbusHandler",
        "url": "memory://unit-dictconfig",
        "facility": "local3",
        "policy": "block",
        "buffer_size": 123,
        "flush_timeout": 1.5,
        "topology": str(topology),
        "level": "WARNING",
    }
    configurator = logging.config.DictConfigurator({"version": 1})
    handler = configurator.configure_handler(dict(entry))
    assert isinstance(handler, LogbusHandler)
    ship = handler.shipper
    assert (ship.policy, ship.buffer_size, ship.flush_timeout) == ("block", 123, 1.5)
    assert handler.level == logging.WARNING
    handler.close()
    with pytest.raises(ConfigError, match="policy"):
        configurator.configure_handler({**entry, "policy": "maybe"})
    with pytest.raises(ConfigError, match="no such topology file"):
        configurator.configure_handler({**entry, "topology": str(tmp_path / "missing.toml")})


def test_the_structlog_processor_passes_the_event_through(sender: FakeSender) -> None:
    """The processor ships a copy and returns the event dict itself, for the renderer."""
    processor = LogbusProcessor(shipper=shipper(sender))
    log = structlog.wrap_logger(
        structlog.ReturnLogger(),
        processors=[
            structlog.processors.add_log_level,
            processor,
            structlog.processors.JSONRenderer(),
        ],
    )
    rendered = log.warning("disk full", disk="sda1", obj=Odd())
    assert '"event": "disk full"' in rendered and '"disk": "sda1"' in rendered
    try:
        raise KeyError("k")
    except KeyError:
        log.exception("lookup failed")
    log.info("plain")
    assert processor.flush(10)
    processor.close()
    first, second, third = sender.records
    assert (first.routing_key, first.message, first.fields) == (
        "local0.warning",
        "disk full",
        {"disk": "sda1", "obj": "<Odd>"},
    )
    assert second.routing_key == "local0.error"
    assert second.fields["exception"].endswith("KeyError: 'k'")
    assert third.routing_key == "local0.info"
    assert processor.sent == 3 and processor.dropped == 0


def test_a_handler_and_a_processor_share_one_engine(sender: FakeSender) -> None:
    """One shipper, one listener and one connection for both front ends."""
    handler = LogbusHandler(shipper=shipper(sender))
    processor = LogbusProcessor(shipper=handler.shipper)
    processor(None, "error", {"event": "from structlog"})
    handler.handle(logging.LogRecord("app", logging.INFO, "p", 1, "from logging", None, None))
    handler.close()
    assert [r.message for r in sender.records] == ["from structlog", "from logging"]
