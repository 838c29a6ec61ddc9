"""Service files, the tee of several sinks, and the alerter's gate."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from logbus.errors import ConfigError
from logbus.record import LogRecord
from logbus.service import TeeSink, loads_service, run_service, service_topology
from logbus.sinks import is_recoverable
from logbus.sinks._partial import PartlyStored
from logbus.topology import default
from services.alerter.alerts import AlertGate, AlertSettings, alert_settings

MINIMAL = """
[service]
name = "archiver"
[queue]
name = "svc.q"
[sink]
type = "console"
"""


class Recorder:
    """A sink that remembers what it stored and can be told to fail."""

    max_batch = 50
    max_wait = 0.5

    def __init__(self, fail: Exception | None = None) -> None:
        self.stored: list[LogRecord] = []
        self.fail = fail
        self.opened = self.closed = 0

    def open(self) -> None:
        self.opened += 1

    def write(self, batch: Sequence[LogRecord]) -> Sequence[Exception | None]:
        if self.fail is not None:
            return [self.fail] * len(batch)
        self.stored.extend(batch)
        return [None] * len(batch)

    def close(self) -> None:
        self.closed += 1


def record(message: str = "disk failed", host: str = "web1") -> LogRecord:
    return LogRecord(facility="kern", severity="critical", host=host, message=message)


def test_a_minimal_service_file_gets_the_defaults():
    """Only [service], [queue] and [sink] are required; the rest has defaults."""
    config = loads_service(MINIMAL)
    assert config.queue.bindings == ("#",)
    assert config.queue.exchange == "logbus.topic"
    assert config.worker.pool == "thread"
    assert config.retry.max_attempts == 5
    assert config.metrics.port is None
    assert config.sink_tables() == ({"type": "console"},)


def test_an_unknown_key_names_its_section_and_the_file():
    """A misspelt key is one line: file, section.key, what to do."""
    with pytest.raises(ConfigError, match=r"^svc\.toml: worker\.concurency: unknown key"):
        loads_service(MINIMAL + "[worker]\nconcurency = 2\n", source="svc.toml")


def test_a_service_without_a_sink_is_refused():
    """No [sink] and no [[sinks]] is a configuration error that says what to add."""
    with pytest.raises(ConfigError, match="no sink"):
        loads_service('[service]\nname = "a"\n[queue]\nname = "q"\n')


def test_sink_and_sinks_together_are_refused():
    """One way to name the sinks, not both."""
    text = MINIMAL + '[[sinks]]\ntype = "console"\n'
    with pytest.raises(ConfigError, match="either"):
        loads_service(text)


def test_invalid_toml_names_the_file():
    """A TOML syntax error says which file."""
    with pytest.raises(ConfigError, match=r"^a\.toml: invalid TOML"):
        loads_service("[service\n", source="a.toml")


def test_the_service_queue_is_added_to_the_topology_with_its_bindings():
    """The service's queue is declared durable and bound with each of its keys."""
    config = loads_service(
        MINIMAL.replace('name = "svc.q"', 'name = "svc.q"\nbindings = ["*.critical", "*.alert"]')
    )
    topology = service_topology(config, default())
    assert "svc.q" in {q.name for q in topology.queues}
    keys = {b.routing_key for b in topology.bindings if b.destination == "svc.q"}
    assert keys == {"*.critical", "*.alert"}


def test_a_service_queue_on_an_unknown_exchange_is_a_config_error():
    """Binding to an exchange the topology lacks is refused before anything is declared."""
    config = loads_service(MINIMAL.replace('name = "svc.q"', 'name = "svc.q"\nexchange = "nope"'))
    with pytest.raises(ConfigError, match="does not fit the topology"):
        service_topology(config, default())


def test_tee_stores_when_every_sink_stored_and_fails_with_the_first_failure():
    """A record is stored only when all sinks stored it; else the first failure is its result."""
    first, second = Recorder(fail=OSError("first")), Recorder(fail=ValueError("second"))
    [result] = TeeSink([first, second]).write([record()])
    assert isinstance(result, OSError) and str(result) == "first"
    assert TeeSink([Recorder(), Recorder()]).write([record()]) == [None]


def test_tee_batch_hints_are_the_strictest_of_its_sinks():
    """The smallest max_batch and the longest max_wait of the sinks."""
    small = Recorder()
    small.max_batch, small.max_wait = 10, 0.0
    tee = TeeSink([Recorder(), small])
    assert (tee.max_batch, tee.max_wait) == (10, 0.5)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_identical_alert_within_the_window_goes_out_once():
    """Repeats inside the window are held back; the next distinct alert reports them."""
    clock, inner = Clock(), Recorder()
    gate = AlertGate(inner, AlertSettings(window=60, rate=100, per=60), clock=clock)
    assert gate.write([record(), record(), record()]) == [None, None, None]
    assert len(inner.stored) == 1
    gate.write([record(message="fan failed")])
    assert inner.stored[-1].fields["suppressed_repeats"] == 2


def test_an_identical_alert_after_the_window_goes_out_again():
    """Once the window has passed, the same alert is news again."""
    clock, inner = Clock(), Recorder()
    gate = AlertGate(inner, AlertSettings(window=60, rate=100, per=60), clock=clock)
    gate.write([record()])
    clock.now += 61
    gate.write([record()])
    assert len(inner.stored) == 2


def test_the_same_message_from_another_host_is_not_a_repeat():
    """De-duplication keys on host (and app, facility, severity) as well as the message."""
    gate = AlertGate(inner := Recorder(), AlertSettings(window=60, rate=100, per=60), clock=Clock())
    gate.write([record(host="web1"), record(host="web2")])
    assert len(inner.stored) == 2


def test_alerts_beyond_the_rate_are_held_back_and_counted():
    """At most `rate` alerts per period; the rest are counted in the next one that goes out."""
    clock, inner = Clock(), Recorder()
    gate = AlertGate(inner, AlertSettings(window=0, rate=2, per=60), clock=clock)
    gate.write([record(message=f"m{i}") for i in range(5)])
    assert [r.message for r in inner.stored] == ["m0", "m1"]
    clock.now += 60
    gate.write([record(message="later")])
    assert inner.stored[-1].fields["suppressed_over_limit"] == 3


def test_an_alert_the_sink_failed_to_send_is_not_taken_for_a_repeat_when_retried():
    """The retry of a failed send (the same record, by id) is sent rather than suppressed."""
    clock, inner = Clock(), Recorder(fail=OSError("webhook down"))
    gate = AlertGate(inner, AlertSettings(window=60, rate=100, per=60), clock=clock)
    alert = record()
    assert isinstance(gate.write([alert])[0], OSError)
    inner.fail = None
    assert gate.write([alert]) == [None]
    assert len(inner.stored) == 1


def test_an_alert_that_failed_stays_in_the_window_for_its_copies():
    """While the first one is retried, a new identical alert is still a repeat."""
    clock, inner = Clock(), Recorder(fail=OSError("webhook down"))
    gate = AlertGate(inner, AlertSettings(window=60, rate=100, per=60), clock=clock)
    gate.write([record()])
    inner.fail = None
    assert gate.write([record()]) == [None]
    assert inner.stored == []


def test_tee_names_the_sinks_that_stored_a_record_another_refused():
    """One sink of two failed: PartlyStored names the other, recoverable as the failure."""
    good, bad = Recorder(), Recorder(fail=OSError("down"))
    [result] = TeeSink([good, bad], ["console", "webhook"]).write([record()])
    assert isinstance(result, PartlyStored)
    assert result.stored == frozenset({"console"})
    assert is_recoverable(result) and str(result) == "down"


def test_tee_asks_only_the_sinks_that_do_not_have_the_record_yet():
    """write_rest skips, per record, the sinks already named: the console prints once."""
    console, webhook = Recorder(), Recorder()
    tee = TeeSink([console, webhook], ["console", "webhook"])
    first, second = record("a"), record("b")
    assert tee.write_rest([first, second], [frozenset({"console"}), frozenset()]) == [None, None]
    assert [r.message for r in console.stored] == ["b"]
    assert [r.message for r in webhook.stored] == ["a", "b"]


def test_alert_settings_read_durations_and_refuse_unknown_keys():
    """[alerts] takes 5m-style durations; a misspelt key is a ConfigError."""
    assert alert_settings({"window": "5m", "per": "30s", "rate": 3}).window == 300.0
    with pytest.raises(ConfigError, match="unknown key"):
        alert_settings({"windw": "5m"}, source="alerter.toml")
    with pytest.raises(ConfigError, match=r"alerter\.toml"):
        alert_settings({"window": "soon"}, source="alerter.toml")


def test_a_bad_shutdown_timeout_names_the_file_and_key(tmp_path):
    """[worker] shutdown_timeout that is no duration: one ConfigError, before any connect."""
    config = loads_service(MINIMAL + '[worker]\nshutdown_timeout = "soon"\n', source="svc.toml")
    with pytest.raises(ConfigError, match=r"svc.toml: \[worker\] shutdown_timeout 'soon'"):
        run_service(config, url="amqp://guest:guest@127.0.0.1:1/%2F", stop_signals=False)
