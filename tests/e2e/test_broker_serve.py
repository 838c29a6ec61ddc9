"""``logbus broker serve``: the real command in one subprocess, clients in others."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator

import pytest

DEADLINE = 30.0


class Running:
    """A ``logbus`` subprocess whose stderr lines can be awaited with a deadline."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "logbus", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = DEADLINE) -> str:
        """The first stderr line containing ``text``; fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no {text!r} on stderr in {timeout}s; saw {self.seen}"
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(line)
            if text in line:
                return line

    def stop(self) -> int:
        """SIGTERM, then the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=DEADLINE)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture
def sock() -> Iterator[str]:
    """A socket path in a private temporary directory (short: AF_UNIX paths are limited)."""
    directory = tempfile.mkdtemp(prefix="lb-e2e-")
    yield os.path.join(directory, "broker.sock")
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def served(sock: str) -> Iterator[Running]:
    """``logbus broker serve --listen SOCK``, running and ready."""
    server = Running("broker", "serve", "--listen", sock)
    server.wait_for("listening on")
    yield server
    server.stop()


def test_serve_prints_a_ready_line_naming_socket_and_key_file(served, sock):
    """The ready line on stderr names the socket and the key file (not the key)."""
    line = served.seen[-1]
    assert sock in line
    assert f"{sock}.key" in line
    with open(f"{sock}.key", "rb") as source:
        assert source.read().hex() not in line


def test_demo_through_local_url_is_complete(served, sock, logbus):
    """`logbus demo --url local://SOCK --json` against the served broker reports complete."""
    proc = logbus("demo", "--url", f"local://{sock}", "--json", "--records", "200")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["complete"] is True
    assert sum(w["received"] for w in report["workers"]) == 200


def test_emit_reaches_a_subscriber_through_local_url(served, sock, logbus):
    """A record emitted by one process reaches a subscriber in another, via local://."""
    url = f"local://{sock}"
    subscriber = Running("subscribe", "--url", url, "kern.*", "--count", "1", "--json")
    try:
        subscriber.wait_for("subscribed")
        emitted = logbus("emit", "--url", url, "kern.critical", "disk /dev/sda1 failed")
        assert emitted.returncode == 0, emitted.stderr
        assert subscriber.proc.wait(timeout=DEADLINE) == 0
    finally:
        subscriber.stop()
    assert subscriber.proc.stdout is not None
    record = json.loads(subscriber.proc.stdout.readline())
    assert (record["facility"], record["severity"]) == ("kern", "critical")
    assert record["message"] == "disk /dev/sda1 failed"


def test_sigterm_stops_the_server_and_removes_the_socket(served, sock):
    """SIGTERM ends `broker serve` with status 0 and no socket file left."""
    assert served.stop() == 0
    assert not os.path.exists(sock)


def test_a_second_server_on_a_live_socket_is_refused(served, sock, logbus):
    """Serving where a broker already answers exits 78 with one line, the first keeps going."""
    second = logbus("broker", "serve", "--listen", sock, timeout=DEADLINE)
    assert second.returncode == 78
    assert "already answers" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    assert served.proc.poll() is None


def test_fsync_without_data_dir_is_a_configuration_error(sock, logbus):
    """--fsync alone exits 78 saying it needs --data-dir, and nothing listens."""
    proc = logbus("broker", "serve", "--listen", sock, "--fsync", "always")
    assert proc.returncode == 78
    assert "--data-dir" in proc.stderr
    assert not os.path.exists(sock)


def test_a_memory_limit_that_is_not_a_size_is_a_configuration_error(sock, logbus):
    """--memory-limit lots exits 78 with one line showing sizes that work, and nothing listens."""
    proc = logbus("broker", "serve", "--listen", sock, "--memory-limit", "lots")
    assert proc.returncode == 78
    assert proc.stderr.strip().count("\n") == 0
    assert "--memory-limit 'lots' is not a size" in proc.stderr
    assert not os.path.exists(sock)


def test_serve_names_its_memory_limit_when_ready(sock):
    """The ready line says the memory limit it runs with, as given."""
    running = Running("broker", "serve", "--listen", sock, "--memory-limit", "512M")
    try:
        assert "memory limit 512 MiB" in running.wait_for("listening on")
    finally:
        running.proc.send_signal(signal.SIGTERM)
        running.proc.wait(DEADLINE)


def test_persistent_records_survive_a_restart_with_data_dir(sock):
    """With --data-dir, a durable queue's persistent record is there after SIGTERM and a restart."""
    from logbus.message import PERSISTENT, Message, Properties
    from logbus.transports import connect

    data = os.path.join(os.path.dirname(sock), "data")
    first = Running("broker", "serve", "--listen", sock, "--data-dir", data, "--fsync", "always")
    try:
        first.wait_for("listening on")
        with connect(f"local://{sock}") as transport:
            transport.declare_queue("keep", durable=True)
            transport.publish(
                Message(b"disk failed", Properties(delivery_mode=PERSISTENT), "", "keep")
            )
    finally:
        assert first.stop() == 0
    second = Running("broker", "serve", "--listen", sock, "--data-dir", data)
    try:
        second.wait_for("listening on")
        with connect(f"local://{sock}") as transport:
            delivery = transport.get("keep")
            assert delivery is not None
            assert delivery.body == b"disk failed"
            delivery.ack()
    finally:
        assert second.stop() == 0


def test_connecting_with_no_server_names_the_command_to_run(sock, logbus):
    """A client with no broker at the socket exits 69 saying how to start one."""
    proc = logbus("emit", "--url", f"local://{sock}", "kern.info", "hello")
    assert proc.returncode == 69, proc.stderr
    assert f"logbus broker serve --listen {sock}" in proc.stderr


def test_serve_help_shows_examples(logbus):
    """`logbus broker serve --help` lists the options and examples."""
    proc = logbus("broker", "serve", "--help")
    assert proc.returncode == 0
    for text in ("--listen", "--data-dir", "--fsync", "Examples:", "local://"):
        assert text in proc.stdout
