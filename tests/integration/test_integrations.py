"""logbus.integrations on the shared RabbitMQ: what applications log arrives as records.

Each test publishes to a topology of its own (a topic exchange and a queue bound with
``#``, unique names, deleted afterwards) and reads the queue's bodies as JSON: the
wire contract (DESIGN.md) is what is checked, not a decoder.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog

from logbus.integrations import LogbusHandler, LogbusProcessor
from logbus.topology import Binding, EmitTarget, Exchange, Queue, Topology, dumps
from logbus.transports import connect
from tests.support import wait_until

pytestmark = pytest.mark.integration


@dataclass
class Bus:
    """A test's own exchange and queue, the topology file that names them, and a reader."""

    url: str
    queue: str
    topology: Path
    transport: Any

    def bodies(self, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        """The next ``count`` records of the queue, as JSON objects (waiting for them)."""
        got: list[dict[str, Any]] = []

        def arrived() -> bool:
            while len(got) < count:
                delivery = self.transport.get(self.queue, auto_ack=True)
                if delivery is None:
                    return False
                got.append(json.loads(delivery.body))
            return True

        wait_until(arrived, timeout, f"{count} records in {self.queue}")
        return got


def own_topology(name: str, *, durable: bool = False) -> Topology:
    """A topic exchange ``<name>.topic`` feeding the queue ``<name>``, the emit target."""
    exchange = f"{name}.topic"
    return Topology(
        exchanges=(Exchange(name=exchange, type="topic", durable=durable),),
        queues=(Queue(name=name, durable=durable),),
        bindings=(Binding(source=exchange, destination=name, routing_key="#"),),
        emit=(EmitTarget(exchange=exchange),),
    )


@pytest.fixture
def bus(amqp_url: str, unique_name: str, tmp_path: Path) -> Iterator[Bus]:
    topology = own_topology(unique_name)
    path = tmp_path / "topology.toml"
    path.write_text(dumps(topology))
    transport = connect(amqp_url)
    for exchange in topology.exchanges:
        transport.declare_exchange(exchange.name, exchange.type, durable=False)
    transport.declare_queue(unique_name, durable=False)
    transport.bind_queue(unique_name, f"{unique_name}.topic", "#")
    try:
        yield Bus(amqp_url, unique_name, path, transport)
    finally:
        transport.delete_queue(unique_name)
        transport.delete_exchange(f"{unique_name}.topic")
        transport.close()


def test_logged_records_arrive_with_key_severity_and_fields(bus: Bus) -> None:
    """logging calls become records: routing key, severity, app, extra and exception fields."""
    handler = LogbusHandler(bus.url, facility="local4", app="billing", topology=bus.topology)
    logger = logging.getLogger(f"it.{bus.queue}")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        logger.info("invoice %s sent", 17, extra={"customer": "acme", "amount": 12.5})
        try:
            raise KeyError("missing")
        except KeyError:
            logger.exception("lookup failed")
        logger.log(45, "between error and critical")
        assert handler.shipper.flush(20)
    finally:
        logger.removeHandler(handler)
        handler.close()
    info, error, custom = bus.bodies(3)
    assert (info["facility"], info["severity"], info["app"]) == ("local4", "info", "billing")
    assert info["message"] == "invoice 17 sent"
    assert info["fields"]["customer"] == "acme" and info["fields"]["amount"] == 12.5
    assert info["fields"]["logger"] == f"it.{bus.queue}"
    assert error["severity"] == "error"
    assert error["fields"]["exception"].endswith("KeyError: 'missing'")
    assert custom["severity"] == "critical"
    assert (handler.sent, handler.dropped, handler.failed) == (3, 0, 0)


def test_the_routing_key_is_facility_and_severity(bus: Bus) -> None:
    """The broker routes what the handler publishes by ``<facility>.<severity>``."""
    only_errors = f"{bus.queue}.errors"
    bus.transport.declare_queue(only_errors, durable=False)
    bus.transport.bind_queue(only_errors, f"{bus.queue}.topic", "local5.error")
    handler = LogbusHandler(bus.url, facility="local5", topology=bus.topology)
    logger = logging.getLogger(f"it.keys.{bus.queue}")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("not this one")
        logger.error("this one")
        handler.close()
        errors = Bus(bus.url, only_errors, bus.topology, bus.transport).bodies(1)
        assert [b["message"] for b in errors] == ["this one"]
        assert bus.transport.get(only_errors, auto_ack=True) is None
    finally:
        logger.removeHandler(handler)
        bus.transport.delete_queue(only_errors)


def test_dictconfig_in_a_program_that_just_exits(bus: Bus, tmp_path: Path) -> None:
    """A program configured by dictConfig logs and exits without closing anything:
    its records are flushed at interpreter exit."""
    program = tmp_path / "app.py"
    program.write_text(
        textwrap.dedent(
            f"""
            import logging, logging.config
            logging.config.dictConfig({{
                "version": 1,
                "handlers": {{"bus": {{
                    "class": "logbus.integrations.LogbusHandler",
                    "url": {bus.url!r},
                    "facility": "daemon",
                    "app": "payments",
                    "policy": "block",
                    "buffer_size": 100,
                    "flush_timeout": 20,
                    "topology": {str(bus.topology)!r},
                }}}},
                "root": {{"handlers": ["bus"], "level": "INFO"}},
            }})
            for n in range(500):
                logging.getLogger("payments.api").info("request %d", n, extra={{"n": n}})
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(program)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    bodies = bus.bodies(500)
    assert [b["fields"]["n"] for b in bodies] == list(range(500))
    assert {(b["facility"], b["severity"], b["app"]) for b in bodies} == {
        ("daemon", "info", "payments")
    }
    assert "dropped" not in done.stderr


def test_the_structlog_processor_ships_and_passes_on(bus: Bus) -> None:
    """structlog events reach the broker and still reach the renderer after the processor."""
    processor = LogbusProcessor(bus.url, facility="local6", app="svc", topology=bus.topology)
    log = structlog.wrap_logger(
        structlog.ReturnLogger(),
        processors=[
            structlog.processors.add_log_level,
            processor,
            structlog.processors.KeyValueRenderer(),
        ],
    )
    try:
        rendered = log.warning("cache cold", hits=0, region="eu")
        assert "event='cache cold'" in rendered
        assert processor.flush(20)
    finally:
        processor.close()
    (body,) = bus.bodies(1)
    assert (body["facility"], body["severity"], body["app"]) == ("local6", "warning", "svc")
    assert body["message"] == "cache cold"
    assert body["fields"] == {"hits": 0, "region": "eu"}


def test_no_broker_at_all_never_holds_the_application(unique_name: str, tmp_path: Path) -> None:
    """Nothing listens on the port: logging returns at once, close gives up at its
    deadline, and every record is counted as dropped."""
    path = tmp_path / "topology.toml"
    path.write_text(dumps(own_topology(unique_name)))
    handler = LogbusHandler("amqp://guest:guest@127.0.0.1:9/%2F", topology=path, flush_timeout=0.5)
    logger = logging.getLogger(f"it.nobroker.{unique_name}")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for n in range(20):
            logger.error("nobody hears %d", n)
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert (handler.sent, handler.dropped) == (0, 20)
