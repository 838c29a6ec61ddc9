"""The broker served over a Unix socket: what is refused before any socket is opened.

Key files, what lies at the socket's path, a broker that is not there, and the names of
process:// brokers. Everything that listens, connects or starts a broker process is in
``tests/integration/test_local_broker.py``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from logbus.broker.server import listen
from logbus.errors import BrokerUnavailable, ConfigError
from logbus.transports import connect
from logbus.transports.inprocess.process import env_var


@pytest.fixture
def directory() -> Iterator[str]:
    """A private temporary directory with a short path (AF_UNIX paths are limited)."""
    path = tempfile.mkdtemp(prefix="lb-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sock(directory: str) -> str:
    """Where this test's broker socket goes."""
    return os.path.join(directory, "broker.sock")


# -- files and keys ---------------------------------------------------------------------


def test_a_group_readable_key_file_is_refused(sock):
    """A key file others may read stops the broker with one line saying so."""
    with open(sock + ".key", "wb") as out:
        out.write(b"k" * 32)
    os.chmod(sock + ".key", 0o640)
    with pytest.raises(ConfigError, match=r"readable by group or others \(mode 0640\)"):
        listen(sock)


def test_a_regular_file_at_the_path_is_not_removed(sock):
    """A file that is not a socket is reported, never deleted."""
    with open(sock, "w") as out:
        out.write("precious")
    with pytest.raises(ConfigError, match="not a socket"):
        listen(sock)
    assert os.path.exists(sock)


# -- connecting -------------------------------------------------------------------------


def test_a_missing_socket_is_broker_unavailable_with_the_command_to_run(sock):
    """Connecting where no broker runs names the path and `logbus broker serve --listen`."""
    with pytest.raises(BrokerUnavailable, match=f"logbus broker serve --listen {sock}"):
        connect(f"local://{sock}")


# -- process:// ----------------------------------------------------------------------------


def test_distinct_names_get_distinct_variables():
    """Names that differ only in case or punctuation do not share a broker."""
    variables = {env_var(n) for n in ("a-b", "a_b", "A_B", "ab", "")}
    assert len(variables) == 5
