"""The unit tier's guard (``tests/unit/conftest.py``) fails a test that opens a socket or
starts a process, and says where the test belongs."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import subprocess
import sys

import pytest

from tests.unit.conftest import UnitTestDidIO

WHERE = "unit tests do no I/O: move this test to tests/integration"


def test_connecting_a_tcp_socket_fails_the_test():
    """socket.connect raises, naming the tier to move to."""
    with socket.socket() as sock, pytest.raises(UnitTestDidIO, match=WHERE):
        sock.connect(("127.0.0.1", 5672))


def test_connect_ex_fails_the_test():
    """connect_ex (which would return an errno instead of raising) raises too."""
    with socket.socket() as sock, pytest.raises(UnitTestDidIO, match=r"socket\.connect_ex"):
        sock.connect_ex(("127.0.0.1", 5672))


def test_binding_a_unix_socket_fails_the_test(tmp_path):
    """Listening on a Unix socket (a server in a thread, a local:// broker) raises."""
    with socket.socket(socket.AF_UNIX) as sock, pytest.raises(UnitTestDidIO, match=WHERE):
        sock.bind(str(tmp_path / "s.sock"))
    assert not (tmp_path / "s.sock").exists()


def test_sending_a_datagram_fails_the_test():
    """A UDP sendto (which binds on its own) raises."""
    udp = socket.socket(type=socket.SOCK_DGRAM)
    with udp, pytest.raises(UnitTestDidIO, match=r"socket\.sendto"):
        udp.sendto(b"<13>hello", ("127.0.0.1", 514))


def test_a_socket_pair_fails_the_test():
    """socket.socketpair() called by a test (or the code under test) raises."""
    with pytest.raises(UnitTestDidIO, match=r"socket\.socketpair"):
        socket.socketpair()


def test_an_asyncio_event_loop_still_runs():
    """The socket pair an event loop opens to wake itself is exempt: asyncio works."""
    assert asyncio.run(asyncio.sleep(0, result="ran")) == "ran"


def test_starting_a_subprocess_fails_the_test():
    """subprocess.run (through Popen) raises before anything is started."""
    with pytest.raises(UnitTestDidIO, match=r"subprocess\.Popen"):
        subprocess.run([sys.executable, "-c", "pass"], check=False)


def test_starting_a_multiprocessing_process_fails_the_test():
    """A multiprocessing Process (any start method) raises on start()."""
    child = multiprocessing.get_context("spawn").Process(target=print)
    with pytest.raises(UnitTestDidIO, match=r"multiprocessing Process\.start"):
        child.start()


def test_forking_fails_the_test():
    """os.fork raises in the test process, so no child is ever made."""
    with pytest.raises(UnitTestDidIO, match=r"os\.fork"):
        os.fork()


def test_a_unit_test_that_connects_is_reported_failed(pytester):
    """A unit test that connects fails (not skips, not passes) with the guard's message."""
    pytester.makeconftest("from tests.unit.conftest import no_io  # noqa: F401\n")
    pytester.makepyfile(
        """
        import socket

        def test_talks_to_a_broker():
            socket.create_connection(("127.0.0.1", 5672), timeout=1)
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*UnitTestDidIO: {WHERE} (it called socket.connect)*"])
