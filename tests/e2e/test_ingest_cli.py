"""``logbus ingest`` as a command: help, exit statuses, metrics and /healthz, SIGTERM."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.ingest_support import Consumer, free_port, ingest_topology, start_gateway, tasks_queue


def test_help_teaches_listeners_limits_and_exit_statuses(logbus) -> None:
    """--help names every listener, the spool, and the exit statuses."""
    result = logbus("ingest", "--help")
    assert result.returncode == 0
    for word in ("--udp", "--tcp", "--tls", "--relp", "--unix", "--spool", "--max-in-flight"):
        assert word in result.stdout
    assert "75" in result.stdout and "69" in result.stdout


def test_no_listener_is_a_configuration_error(logbus) -> None:
    """Without a listener: one line, exit 78."""
    result = logbus("ingest")
    assert result.returncode == 78
    assert "no listener" in result.stderr


def test_an_unreachable_broker_without_a_spool_exits_69(logbus) -> None:
    """Without --spool the broker must answer at start: exit 69, the host named."""
    port = free_port()
    result = logbus("ingest", "--tcp", "0", "--url", f"amqp://guest:guest@127.0.0.1:{port}/%2F")
    assert result.returncode == 69
    assert f"127.0.0.1:{port}" in result.stderr


def test_a_port_in_use_is_a_configuration_error(logbus, amqp_url: str) -> None:
    """Binding a port that is taken: exit 78, saying so."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = logbus("ingest", "--tcp", str(port), "--url", amqp_url)
    assert result.returncode == 78
    assert "cannot listen" in result.stderr


def test_metrics_healthz_and_a_clean_sigterm(amqp_url: str, unique_name: str, tmp_path: Path):
    """/healthz answers ok, /metrics counts per listener, SIGTERM drains and exits 0."""
    port = free_port()
    with ingest_topology(amqp_url, unique_name + ".", tmp_path) as (config, topology):
        gateway = start_gateway(config, amqp_url, "udp", extra=("--metrics-port", str(port)))
        consumer = Consumer(amqp_url, tasks_queue(topology))
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.sendto(b"<11>web1 app: one", ("127.0.0.1", gateway.port("udp")))
            assert len(consumer.take(1)) == 1
            base = f"http://127.0.0.1:{port}"
            health = json.loads(urllib.request.urlopen(f"{base}/healthz", timeout=10).read())
            metrics = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
        finally:
            consumer.close()
            status = gateway.stop()
    assert status == 0
    assert health["status"] == "ok"
    label = f'listener="udp:127.0.0.1:{gateway.port("udp")}"'
    assert f"logbus_ingest_confirmed_total{{{label}}} 1.0" in metrics
    assert f"logbus_ingest_in_flight{{{label}}} 0.0" in metrics


def test_a_service_file_starts_the_gateway(amqp_url: str, unique_name: str, tmp_path: Path) -> None:
    """--service-file reads the [ingest] table; its listener comes up."""
    service = tmp_path / "ingest.toml"
    service.write_text('[ingest]\ntcp = ["127.0.0.1:0"]\nmax_size = "8k"\n')
    with ingest_topology(amqp_url, unique_name + ".", tmp_path) as (config, _):
        process = subprocess.Popen(
            [sys.executable, "-m", "logbus", "ingest", "--service-file", str(service),
             "--config", str(config), "--url", amqp_url],
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert process.stderr is not None
        line = process.stderr.readline()
        process.terminate()
        assert process.wait(30) == 0
    assert "listening on tcp 127.0.0.1:" in line
