"""``logbus ingest`` with real senders: logger(1), loggen, rsyslog (omfwd, omrelp), SysLogHandler.

Each sender writes to a gateway started as the real command line; the records
are read back by a plain pika consumer and must carry the sender's facility,
severity, host, app, pid and structured data. The senders are installed by
``scripts/ensure-packages``.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ingest_support import (
    Consumer,
    Gateway,
    free_port,
    ingest_topology,
    self_signed,
    start_gateway,
    tasks_queue,
)

HOST = socket.gethostname()


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("LOGBUS_REQUIRE_BROKER") == "1":
            pytest.fail(f"{tool} is not installed: run scripts/ensure-packages", pytrace=False)
        pytest.skip(f"{tool} is not installed (scripts/ensure-packages)")
    return path


@pytest.fixture
def ingest(
    amqp_url: str, unique_name: str, tmp_path: Path
) -> Iterator[Callable[..., tuple[Gateway, Consumer]]]:
    """Start a gateway with the given listeners on this test's topology; stopped after."""
    started: list[tuple[Gateway, Consumer]] = []
    with ingest_topology(amqp_url, unique_name + ".", tmp_path) as (config, topology):

        def start(*listeners: str, extra: tuple[str, ...] = ()) -> tuple[Gateway, Consumer]:
            gateway = start_gateway(config, amqp_url, *listeners, extra=extra)
            consumer = Consumer(amqp_url, tasks_queue(topology))
            started.append((gateway, consumer))
            return gateway, consumer

        yield start
        for gateway, consumer in started:
            consumer.close()
            assert gateway.stop() == 0


def _one(consumer: Consumer) -> tuple[str, dict[str, Any]]:
    [record] = consumer.take(1)
    return consumer.keys[0], record


def test_logger_over_udp_arrives_with_its_header(ingest) -> None:
    """logger -d (UDP, RFC 5424 by default): facility, severity, host, app and pid kept."""
    logger = _need("logger")
    gateway, consumer = ingest("udp")
    subprocess.run(
        [logger, "-d", "-n", "127.0.0.1", "-P", str(gateway.port("udp")), "-p", "local3.warning",
         "-t", "backup", "--id=4242", "nightly run done"],
        check=True,
    )  # fmt: skip
    key, record = _one(consumer)
    assert key == "local3.warning"
    assert (record["host"], record["app"], record["pid"]) == (HOST, "backup", 4242)
    assert record["message"] == "nightly run done"
    assert record["fields"]["peer"].startswith("127.0.0.1:")


def test_logger_over_tcp_with_octet_counting(ingest) -> None:
    """logger -T --octet-count --rfc3164: an octet-counted BSD line over TCP."""
    logger = _need("logger")
    gateway, consumer = ingest("tcp")
    subprocess.run(
        [logger, "-T", "--octet-count", "--rfc3164", "-n", "127.0.0.1", "-P",
         str(gateway.port("tcp")), "-p", "mail.err", "-t", "postfix", "--id=77", "queue full"],
        check=True,
    )  # fmt: skip
    key, record = _one(consumer)
    assert key == "mail.error"
    assert (record["host"], record["app"], record["pid"]) == (HOST, "postfix", 77)
    assert record["fields"]["syslog"]["format"] == "rfc3164"


def test_logger_rfc5424_carries_msgid_and_structured_data(ingest) -> None:
    """logger --rfc5424 with --msgid and --sd-param: both land in fields."""
    logger = _need("logger")
    gateway, consumer = ingest("tcp")
    subprocess.run(
        [logger, "-T", "--rfc5424", "-n", "127.0.0.1", "-P", str(gateway.port("tcp")),
         "-p", "auth.notice", "-t", "sshd", "--id=9", "--msgid", "LOGIN",
         "--sd-id", "origin@32473", "--sd-param", 'user="root"', "accepted key"],
        check=True,
    )  # fmt: skip
    key, record = _one(consumer)
    assert key == "auth.notice"
    assert (record["host"], record["app"], record["pid"]) == (HOST, "sshd", 9)
    assert record["fields"]["msgid"] == "LOGIN"
    assert record["fields"]["sd"]["origin@32473"] == {"user": "root"}


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_loggen_lines_all_arrive(ingest, tmp_path: Path, transport: str) -> None:
    """syslog-ng's loggen, 500 RFC 5424 lines with structured data, over TCP or TLS."""
    loggen = _need("loggen")
    cert, key = self_signed(tmp_path)
    gateway, consumer = ingest(transport, extra=("--cert", str(cert), "--key", str(key)))
    flags = ["-S"] if transport == "tcp" else ["-U"]
    subprocess.run(
        [loggen, *flags, "-P", "-p", '[meta@1 rack="r7"]', "-n", "500", "-s", "200",
         "127.0.0.1", str(gateway.port(transport))],
        check=True, capture_output=True,
    )  # fmt: skip
    records = consumer.take(500)
    assert len(records) == 500
    assert set(consumer.keys) == {"auth.info"}
    assert {(r["host"], r["app"], r["pid"]) for r in records} == {("localhost", "prg00000", 1234)}
    assert all(r["fields"]["sd"]["meta@1"] == {"rack": "r7"} for r in records)
    sequence = sorted(int(r["message"].split(",")[0].split()[1]) for r in records)
    assert sequence == list(range(500))


def _rsyslogd(tmp_path: Path, action: str) -> tuple[subprocess.Popen[bytes], int]:
    """rsyslogd in the foreground with a private config: imudp in, ``action`` out."""
    rsyslogd = _need("rsyslogd")
    work = tmp_path / "rsyslog"
    work.mkdir()
    port = free_port()
    conf = work / "rsyslog.conf"
    conf.write_text(
        f'global(workDirectory="{work}")\n'
        'module(load="imudp")\n'
        f'input(type="imudp" address="127.0.0.1" port="{port}")\n'
        f"{action}\n"
    )
    process = subprocess.Popen(
        [rsyslogd, "-n", "-f", str(conf), "-i", str(work / "pid")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return process, port


def _wait_until_forwarding(logger: str, port: int, consumer: Consumer) -> None:
    """Send probes into rsyslog's imudp until one came through (UDP before it listens is lost)."""
    for _ in range(50):
        subprocess.run([logger, "-d", "-n", "127.0.0.1", "-P", str(port), "probe"], check=True)
        if consumer.take(1, timeout=0.3):
            consumer.records.clear()  # later probes are filtered out by the test
            consumer.keys.clear()
            return
    raise AssertionError("rsyslog forwarded none of 50 probes")


@pytest.mark.parametrize("how", ["omfwd", "omrelp"])
def test_rsyslog_forwards_through_omfwd_and_omrelp(ingest, tmp_path: Path, how: str) -> None:
    """logger -> rsyslog (imudp) -> omfwd over TCP, or omrelp -> the gateway."""
    logger = _need("logger")
    kind = "tcp" if how == "omfwd" else "relp"
    gateway, consumer = ingest(kind)
    action = (
        f'action(type="omfwd" target="127.0.0.1" port="{gateway.port(kind)}" protocol="tcp" '
        'template="RSYSLOG_SyslogProtocol23Format")'
        if how == "omfwd"
        else f'module(load="omrelp")\naction(type="omrelp" target="127.0.0.1" '
        f'port="{gateway.port(kind)}" template="RSYSLOG_SyslogProtocol23Format")'
    )
    rsyslog, port = _rsyslogd(tmp_path, action)
    try:
        _wait_until_forwarding(logger, port, consumer)
        for n in range(20):
            subprocess.run(
                [logger, "-d", "--rfc5424", "-n", "127.0.0.1", "-P", str(port),
                 "-p", "daemon.crit", "-t", "raidd", "--id=31", "--sd-id", "disk@1",
                 "--sd-param", f'slot="{n}"', f"array degraded {n}"],
                check=True,
            )  # fmt: skip
        records = consumer.take(20, where=lambda r: r["app"] == "raidd")
    finally:
        rsyslog.terminate()
        rsyslog.wait(20)
    assert len(records) == 20
    assert set(consumer.keys) == {"daemon.critical"}
    assert {(r["host"], r["app"], r["pid"]) for r in records} == {(HOST, "raidd", 31)}
    slots = sorted(int(r["fields"]["sd"]["disk@1"]["slot"]) for r in records)
    assert slots == list(range(20))


@pytest.mark.parametrize("socktype", [socket.SOCK_DGRAM, socket.SOCK_STREAM])
def test_python_sysloghandler_over_udp_and_tcp(ingest, socktype: int) -> None:
    """logging.handlers.SysLogHandler (BSD lines without host; NUL-ended over TCP)."""
    kind = "udp" if socktype == socket.SOCK_DGRAM else "tcp"
    gateway, consumer = ingest(kind)
    handler = logging.handlers.SysLogHandler(
        ("127.0.0.1", gateway.port(kind)),
        facility=logging.handlers.SysLogHandler.LOG_LOCAL5,
        socktype=socktype,
    )
    handler.ident = "billing[808]: "
    logger = logging.getLogger(f"ingest-test-{kind}")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.error("invoice %s failed", 17)
    finally:
        logger.removeHandler(handler)
        handler.close()
    key, record = _one(consumer)
    assert key == "local5.error"
    assert (record["app"], record["pid"], record["message"]) == (
        "billing",
        808,
        "invoice 17 failed",
    )
    assert record["host"] == "127.0.0.1"  # no hostname in the line: the sender's address


def test_a_unix_socket_takes_local_programs(ingest, tmp_path: Path) -> None:
    """logger -u PATH (a /dev/log of the gateway's): host is this machine."""
    logger = _need("logger")
    path = tmp_path / "log"
    gateway, consumer = ingest(f"unix:{path}")
    subprocess.run([logger, "-u", str(path), "-p", "cron.info", "-t", "cron", "--id=5", "tick"],
                   check=True)  # fmt: skip
    key, record = _one(consumer)
    assert key == "cron.info"
    assert (record["host"], record["app"], record["pid"]) == (HOST, "cron", 5)
    assert gateway.addresses["unix"][0] == str(path)
