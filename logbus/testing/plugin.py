"""logbus's pytest plugin: brokers and record captures for your own tests.

Installed with logbus (the ``pytest11`` entry point ``logbus``), so its fixtures
are there in every test session without a ``conftest.py`` line:

- ``logbus_broker_url`` (session): a RabbitMQ that answered — ``LOGBUS_TEST_URL``,
  else one on ``127.0.0.1:5672``, else a testcontainers RabbitMQ when a Docker
  engine answers (see :mod:`logbus.testing.rabbitmq`). Without any, the test is
  skipped with the reason, or fails when ``LOGBUS_REQUIRE_BROKER=1`` (set it in
  CI, so that a missing broker is never mistaken for a green run).
- ``logbus_inprocess_url``: a ``memory://`` URL of an in-process broker that
  belongs to this test alone (RabbitMQ's routing and acks, no sockets).
- ``logbus_capture``: a started :class:`~logbus.testing.Capture` on
  ``logbus_capture_url``, with ``LOGBUS_URL`` and ``LOGBUS_CONFIG`` pointing at it
  for the test's duration, so that code which builds ``Emitter()`` from its
  environment publishes into the capture.
- ``logbus_capture_url``: where captures run; the test's in-process broker unless
  overridden (``def logbus_capture_url(logbus_broker_url): return logbus_broker_url``
  in a ``conftest.py`` captures on RabbitMQ, each test under its own name prefix).

``pytest -p no:logbus`` leaves the plugin out. This module loads in every pytest
run of everyone who installs logbus, so it imports nothing heavy: pika, aio-pika,
docker and testcontainers are imported by the fixtures, when a test asks for them.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from typing import TYPE_CHECKING, NoReturn

import pytest

if TYPE_CHECKING:
    from logbus.testing.capture import Capture

__all__ = [
    "logbus_broker_url",
    "logbus_capture",
    "logbus_capture_url",
    "logbus_inprocess_url",
]

#: Set to 1 where a test that needs RabbitMQ must never be skipped (CI).
REQUIRE_VARIABLE = "LOGBUS_REQUIRE_BROKER"


def unavailable(reason: str) -> NoReturn:
    """Skip the test for want of a broker, or fail it under ``LOGBUS_REQUIRE_BROKER=1``."""
    if os.environ.get(REQUIRE_VARIABLE) == "1":
        pytest.fail(f"{REQUIRE_VARIABLE}=1 but no RabbitMQ: {reason}", pytrace=False)
    pytest.skip(f"no RabbitMQ to test against: {reason}")


def unique_label(request: pytest.FixtureRequest) -> str:
    """The test's name as it may appear in an entity name: ``logbus-test-<name>-<hex>``."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name).strip("-")[:60]
    return f"logbus-test-{name}-{secrets.token_hex(4)}"


@pytest.fixture(scope="session")
def logbus_broker_url() -> Iterator[str]:
    """The URL of a RabbitMQ that answered an AMQP handshake (started once per session)."""
    from contextlib import ExitStack

    from logbus.errors import BrokerUnavailable
    from logbus.testing.rabbitmq import find_rabbitmq

    with ExitStack() as stack:
        try:
            url = stack.enter_context(find_rabbitmq())
        except BrokerUnavailable as exc:
            unavailable(str(exc))
        yield url


@pytest.fixture
def logbus_inprocess_url(request: pytest.FixtureRequest) -> str:
    """``memory://<name>``: an in-process broker no other test shares."""
    return f"memory://{unique_label(request)}"


@pytest.fixture
def logbus_capture_url(logbus_inprocess_url: str) -> str:
    """Where ``logbus_capture`` listens; override it to capture on RabbitMQ."""
    return logbus_inprocess_url


@pytest.fixture
def logbus_capture(
    logbus_capture_url: str,
    logbus_inprocess_url: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Capture]:
    """A started capture; ``LOGBUS_URL``/``LOGBUS_CONFIG`` point at it during the test."""
    from logbus.testing.capture import Capture

    # The test's own in-process broker needs no prefix (code under test may use the default
    # names), and is emptied afterwards. On any other broker the names are the test's own.
    own = logbus_capture_url == logbus_inprocess_url
    prefix = "" if own else f"{unique_label(request)}."
    with Capture(logbus_capture_url, prefix=prefix, cleanup=True) as capture:
        for name, value in capture.environ.items():
            monkeypatch.setenv(name, value)
        yield capture
