"""process://: a SIGKILLed owner's broker directory (socket and key file) does not stay behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from logbus.broker.server import serve
from logbus.transports.inprocess.process import remove_stale
from tests.support import wait_until

# Opens process://, prints the broker's socket path, then waits to be killed.
OWNER = """
import os, sys
from logbus.transports import connect
if __name__ == "__main__":
    transport = connect("process://")
    print(os.environ["LOGBUS_PROCESS_BROKER"], flush=True)
    sys.stdin.read()
"""


def _without_inherited_brokers() -> dict[str, str]:
    """This environment without a process:// broker to inherit: each owner starts its own."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LOGBUS_PROCESS_BROKER")}


def _start_owner(tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    """A process that owns a process:// broker, in its own session; its broker's directory."""
    script = tmp_path / "owner.py"
    script.write_text(OWNER)
    owner = subprocess.Popen(
        [sys.executable, str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**_without_inherited_brokers(), "TMPDIR": str(tmp_path)},
        start_new_session=True,  # its broker child shares its process group
    )
    assert owner.stdout is not None
    socket = Path(owner.stdout.readline().strip())
    assert socket.exists(), socket
    return owner, socket.parent


def test_a_sigkilled_owners_broker_removes_the_directory_and_key(tmp_path: Path) -> None:
    """When only the owner is SIGKILLed, its broker child removes the socket's directory."""
    owner, directory = _start_owner(tmp_path)
    assert (directory / "broker.sock.key").exists()
    owner.send_signal(signal.SIGKILL)
    owner.wait(10)
    wait_until(lambda: not directory.exists(), 20, f"{directory} to be removed")


def test_the_next_start_removes_what_a_sigkilled_process_group_left(tmp_path: Path) -> None:
    """Owner and broker both SIGKILLed: the next process:// start removes the stale directory."""
    owner, directory = _start_owner(tmp_path)
    os.killpg(owner.pid, signal.SIGKILL)  # the owner and its broker child at once
    owner.wait(10)
    assert (directory / "broker.sock.key").exists()  # nobody was left to clean up
    second, fresh = _start_owner(tmp_path)
    try:
        assert not directory.exists()
        assert fresh.exists() and fresh != directory
    finally:
        second.kill()
        second.wait(10)


def test_a_live_owners_directory_is_kept(tmp_path: Path) -> None:
    """A broker directory whose owner is alive is never removed by another start."""
    first, directory = _start_owner(tmp_path)
    try:
        second, _ = _start_owner(tmp_path)
        second.kill()
        second.wait(10)
        assert (directory / "broker.sock").exists()
        assert (directory / "broker.sock.key").exists()
    finally:
        first.kill()
        first.wait(10)


def test_a_directory_whose_socket_still_answers_is_kept(tmp_path: Path) -> None:
    """Owner pid gone (another pid namespace?) but a broker serving there: not stale."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(10)
    directory = tmp_path / f"logbus-process-{gone.pid}-abc123"
    directory.mkdir(mode=0o700)
    ready, stop = threading.Event(), threading.Event()
    server = threading.Thread(
        target=serve,
        args=(str(directory / "broker.sock"),),
        kwargs={"stop": stop, "on_ready": lambda *_: ready.set(), "signals": ()},
        daemon=True,
    )
    server.start()
    try:
        assert ready.wait(20)
        assert remove_stale(str(tmp_path)) == []
        assert directory.exists()
    finally:
        stop.set()
        server.join(20)
    assert remove_stale(str(tmp_path)) == [str(directory)]
    assert not directory.exists()
