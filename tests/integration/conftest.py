"""Fixtures several integration modules share."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.proxy import Proxy


@pytest.fixture
def proxy(amqp_url: str) -> Iterator[Proxy]:
    """A TCP path to the broker under test that the test may cut (and start again)."""
    parts = urlsplit(amqp_url)
    forwarder = Proxy((parts.hostname or "127.0.0.1", parts.port or 5672))
    forwarder.start()
    yield forwarder
    forwarder.cut()


@pytest.fixture
def directory() -> Iterator[str]:
    """A private temporary directory with a short path (AF_UNIX paths are limited)."""
    path = tempfile.mkdtemp(prefix="lb-")
    yield path
    shutil.rmtree(path, ignore_errors=True)
