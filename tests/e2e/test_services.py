"""services/archiver and services/alerter as operators run them: ``python -m services.NAME``.

Each test writes a service file naming this test's own topology (the
``deployment`` fixture) and its own queue, runs the service in a subprocess
against the real RabbitMQ, feeds it with ``logbus emit`` and looks at what
arrived in the sink (SQLite, PostgreSQL, a local HTTP server).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from logbus.sinks.archive_table import DEFAULT_TABLE
from tests.e2e.support import Deployment, emit, free_port, one_error_line
from tests.support import wait_until

ROOT = Path(__file__).resolve().parents[2]


class Service:
    """A service subprocess; its stderr is collected line by line."""

    def __init__(self, name: str, config: Path, amqp_url: str, *more: str) -> None:
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", f"services.{name}"),
                *("--config", str(config), "--url", amqp_url, *more),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        self.err: list[str] = []
        self.out: list[str] = []
        for stream, lines in ((self.proc.stderr, self.err), (self.proc.stdout, self.out)):
            threading.Thread(target=self._collect, args=(stream, lines), daemon=True).start()
        wait_until(self.started, 30, f"{name} to start consuming ({self.err})")

    @staticmethod
    def _collect(stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    def started(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"the service exited {self.proc.returncode}: {self.err}")
        return any("consuming" in line for line in self.err)

    def stop(self) -> int:
        """SIGTERM, then the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(30)


@pytest.fixture
def services() -> Iterator[list[Service]]:
    """Services started by the test; any still running at the end are killed."""
    started: list[Service] = []
    yield started
    for service in started:
        if service.proc.poll() is None:
            service.kill()


def service_file(
    tmp_path: Path, deployment: Deployment, name: str, body: str, *, bindings: str = '["#"]'
) -> tuple[Path, str]:
    """A service file on this test's topology; returns it and the service's queue name."""
    queue = deployment.name(f"{name}.q")
    deployment.extra_queues.extend(
        [queue, f"{queue}.dead", *(f"{queue}.retry.{ms}" for ms in (100, 200, 400, 800))]
    )
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f"""
[service]
name = "{name}"
topology = "{deployment.config}"

[queue]
name = "{queue}"
exchange = "{deployment.name("logbus.topic")}"
bindings = {bindings}

[retry]
max_attempts = 3
delay = "100ms"
max_delay = "800ms"
{body}
"""
    )
    return path, queue


def rows(path: Path) -> list[tuple[str, str]]:
    """(id, message) of every archived record; none while the archive does not exist yet."""
    if not path.exists():
        return []
    with sqlite3.connect(path) as db:
        try:
            return db.execute(f"SELECT id, message FROM {DEFAULT_TABLE}").fetchall()
        except sqlite3.OperationalError:  # the sink has not created its table yet
            return []


def test_archiver_stores_each_emitted_record_once_and_stops_cleanly(
    amqp_url: str, deployment: Deployment, tmp_path: Path, services: list[Service]
) -> None:
    """Records from `logbus emit` land in the SQLite archive once each; SIGTERM exits 0."""
    archive = tmp_path / "archive.db"
    config, _ = service_file(
        tmp_path, deployment, "archiver", f'[sink]\ntype = "sqlite"\npath = "{archive}"\n'
    )
    archiver = Service("archiver", config, amqp_url)
    services.append(archiver)
    lines = "".join(f"job {i} done\n" for i in range(300))
    emitted = emit(amqp_url, deployment, "app.info", "-", stdin=lines)
    assert emitted.returncode == 0, emitted.stderr
    wait_until(lambda: len(rows(archive)) >= 300, 60, "300 archived records")
    assert archiver.stop() == 0, archiver.err
    stored = rows(archive)
    assert sorted(message for _, message in stored) == sorted(f"job {i} done" for i in range(300))
    assert len({record_id for record_id, _ in stored}) == 300
    assert any("stopped" in line for line in archiver.err)


def test_archiver_killed_mid_batch_still_archives_each_record_exactly_once(
    amqp_url: str,
    deployment: Deployment,
    tmp_path: Path,
    services: list[Service],
    postgres_url: str,
    unique_name: str,
) -> None:
    """SIGKILL while writing: the redelivered batch is stored once (de-duplicated by id)."""
    import psycopg

    table = f"archive_{unique_name.rsplit('-', 1)[-1]}"
    config, queue = service_file(
        tmp_path,
        deployment,
        "archiver",
        f'[sink]\ntype = "postgres"\nurl = "{postgres_url}"\ntable = "{table}"\nmax_batch = 50\n',
    )
    count = 20_000  # about a second of work: the kill lands while records still flow
    lines = "".join(f"job {i} done\n" for i in range(count))
    # The queue must exist before the records are emitted: a first run declares it. It
    # stops before they are, so that they are all waiting when the run to be killed
    # starts (an archiver running during the emit would keep up and finish with it).
    declaring = Service("archiver", config, amqp_url)
    services.append(declaring)
    assert declaring.stop() == 0, declaring.err

    def archived() -> int:
        with psycopg.connect(postgres_url) as db:
            try:
                found = db.execute(f"SELECT count(*) FROM {table}").fetchone()
            except psycopg.errors.UndefinedTable:
                return 0
        return int(found[0]) if found else 0

    try:
        emitted = emit(amqp_url, deployment, "app.info", "-", stdin=lines)
        assert emitted.returncode == 0, emitted.stderr
        first = Service("archiver", config, amqp_url)
        services.append(first)
        wait_until(lambda: archived() > 0, 60, "the first records in PostgreSQL")
        first.kill()
        assert archived() < count, "the archiver finished before it could be killed"
        second = Service("archiver", config, amqp_url)
        services.append(second)
        wait_until(lambda: archived() >= count and deployment.depth(queue) == 0, 120, "all")
        assert second.stop() == 0, second.err
        with psycopg.connect(postgres_url) as db:
            total, distinct = db.execute(
                f"SELECT count(*), count(DISTINCT message) FROM {table}"
            ).fetchone() or (0, 0)
        assert (total, distinct) == (count, count)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as db:
            db.execute(f"DROP TABLE IF EXISTS {table}")


class Webhook:
    """A local HTTP endpoint that records what it is sent."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


def test_alerter_sends_critical_and_worse_once_per_window_to_console_and_webhook(
    amqp_url: str,
    deployment: Deployment,
    tmp_path: Path,
    services: list[Service],
    webhook: Webhook,
) -> None:
    """Critical and worse reach both sinks; repeats are folded; lesser severities never come."""
    body = f"""
[alerts]
window = "10m"
rate = 100
per = "1m"

[[sinks]]
type = "console"

[[sinks]]
type = "webhook"
url = "{webhook.url}"
"""
    config, _ = service_file(
        tmp_path,
        deployment,
        "alerter",
        body,
        bindings='["*.critical", "*.alert", "*.emergency"]',
    )
    alerter = Service("alerter", config, amqp_url)
    services.append(alerter)
    for key, message in [
        ("kern.critical", "disk failed"),
        ("kern.critical", "disk failed"),
        ("kern.critical", "disk failed"),
        ("app.error", "not an alert"),
        ("kern.emergency", "power lost"),
    ]:
        result = emit(amqp_url, deployment, key, message, "--host", "web1")
        assert result.returncode == 0, result.stderr
    wait_until(lambda: len(webhook.bodies) >= 2, 60, "two alerts at the webhook")
    assert alerter.stop() == 0, alerter.err
    assert [b["message"] for b in webhook.bodies] == ["disk failed", "power lost"]
    assert webhook.bodies[1]["fields"]["suppressed_repeats"] == 2
    printed = "\n".join(alerter.out)
    assert "disk failed" in printed and "power lost" in printed
    assert "not an alert" not in printed


def test_metrics_endpoint_counts_what_the_archiver_wrote(
    amqp_url: str, deployment: Deployment, tmp_path: Path, services: list[Service]
) -> None:
    """/metrics on the configured port reports written records; /healthz says ok."""
    port = free_port()
    archive = tmp_path / "archive.db"
    config, _ = service_file(
        tmp_path,
        deployment,
        "archiver",
        f'[metrics]\nport = {port}\n[sink]\ntype = "sqlite"\npath = "{archive}"\n',
    )
    archiver = Service("archiver", config, amqp_url)
    services.append(archiver)
    emitted = emit(amqp_url, deployment, "app.info", "-", stdin="one\ntwo\nthree\n")
    assert emitted.returncode == 0, emitted.stderr
    wait_until(lambda: len(rows(archive)) >= 3, 60, "three archived records")

    def written() -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
        for line in text.splitlines():
            if line.startswith("logbus_worker_written_total{"):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    wait_until(lambda: written() >= 3, 30, "written_total to reach 3")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
        assert answer.status == 200
        assert json.loads(answer.read())["status"] == "ok"
    assert archiver.stop() == 0


def test_a_bad_service_file_is_one_line_and_exit_78(tmp_path: Path) -> None:
    """A misspelt key: exit 78 and one line naming the file and the key."""
    config = tmp_path / "bad.toml"
    config.write_text(
        '[service]\nname = "x"\n[queue]\nname = "q"\nbindngs = ["#"]\n[sink]\ntype = "console"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "services.archiver", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 78
    line = one_error_line(result.stderr)
    assert "bad.toml" in line and "queue.bindngs" in line


def test_a_service_without_config_says_how_to_name_it() -> None:
    """No --config: a usage error (2) showing the shipped file to start from."""
    result = subprocess.run(
        [sys.executable, "-m", "services.alerter"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "config/services/alerter.toml" in result.stderr
    assert "Traceback" not in result.stderr


def test_log_format_json_writes_the_services_events_as_json_lines(
    amqp_url: str, deployment: Deployment, tmp_path: Path, services: list[Service]
) -> None:
    """--log-format json: the worker's own events are JSON objects on stderr."""
    archive = tmp_path / "archive.db"
    config, queue = service_file(
        tmp_path, deployment, "archiver", f'[sink]\ntype = "sqlite"\npath = "{archive}"\n'
    )
    archiver = Service("archiver", config, amqp_url, "--log-format", "json")
    services.append(archiver)
    assert archiver.stop() == 0
    events = [json.loads(line) for line in archiver.err if line.startswith("{")]
    started = [e for e in events if e.get("event") == "worker.started"]
    assert started and started[0]["queue"] == queue


class FlakyWebhook(Webhook):
    """A webhook that answers 503 to its first ``failures`` requests, then takes them."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.refused = 0
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                body = json.loads(self.rfile.read(length))
                if hook.refused < failures:
                    hook.refused += 1
                    self.send_response(503)
                else:
                    hook.bodies.append(body)
                    self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server.RequestHandlerClass = Handler


def test_alerter_prints_each_alert_once_while_its_webhook_fails_then_recovers(
    amqp_url: str, deployment: Deployment, tmp_path: Path, services: list[Service]
) -> None:
    """Console and webhook settle apart: the console prints the alert once although the
    webhook refused it twice, and the webhook gets it once, on the third attempt."""
    hook = FlakyWebhook(failures=2)
    try:
        body = f"""
[alerts]
window = "10m"

[[sinks]]
type = "console"

[[sinks]]
type = "webhook"
url = "{hook.url}"
tries = 1
"""
        config, queue = service_file(
            tmp_path, deployment, "alerter", body, bindings='["*.critical"]'
        )
        alerter = Service("alerter", config, amqp_url)
        services.append(alerter)
        result = emit(amqp_url, deployment, "kern.critical", "disk failed", "--host", "web1")
        assert result.returncode == 0, result.stderr
        wait_until(lambda: len(hook.bodies) >= 1, 60, "the alert at the webhook")
        wait_until(lambda: deployment.depth(queue) == 0, 10, "nothing left to retry")
        assert alerter.stop() == 0, alerter.err
        assert hook.refused == 2
        assert [b["message"] for b in hook.bodies] == ["disk failed"]
        printed = [line for line in alerter.out if "disk failed" in line]
        assert len(printed) == 1, alerter.out
    finally:
        hook.close()
