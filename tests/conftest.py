"""The shared RabbitMQ for integration and contract tests, found or started once per session.

Where the broker comes from, first that answers wins:

1. ``LOGBUS_TEST_URL``, if set (and then only that: an explicit URL that does
   not answer is reported, never silently replaced);
2. a broker answering AMQP on ``127.0.0.1:5672`` as guest/guest;
3. a testcontainers ``RabbitMqContainer``, when a Docker daemon answers;
4. otherwise every integration test is skipped with the reason — or fails,
   when ``LOGBUS_REQUIRE_BROKER=1`` (CI sets it, so a missing broker is never
   mistaken for a green run).

Every test under ``tests/integration/`` is marked ``integration``.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote, urlsplit, urlunsplit

import pika
import pytest

LOCAL_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
CONTAINER_IMAGE = "rabbitmq:3.10-management"
PROBE_TIMEOUT = 3.0
_INTEGRATION = Path(__file__).parent / "integration"

pytest_plugins = ["pytester", "tests.private_broker", "tests.pool_probe"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test collected from tests/integration/ as ``integration``."""
    for item in items:
        if _INTEGRATION in item.path.parents:
            item.add_marker(pytest.mark.integration)


def redact(url: str) -> str:
    """``url`` with its password replaced, fit for a message or a log line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def probe(url: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """Open and close a real AMQP connection to ``url``; None if it worked, else why not.

    A TCP connect is not enough: the port may belong to something else, or
    the broker may still be booting and refuse the handshake.
    """
    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.retry_delay = 0
    params.socket_timeout = timeout
    params.stack_timeout = timeout
    params.blocked_connection_timeout = timeout
    params.client_properties = {"connection_name": "logbus-tests-probe"}
    try:
        connection = pika.BlockingConnection(params)
    except Exception as exc:  # any failure just means "not this broker"
        return repr(exc)  # pika's str() of a refused connection is empty; repr names the cause
    connection.close()
    return None


def _docker_problem() -> str | None:
    """None if a Docker daemon answers a ping, else why not."""
    try:
        import docker
    except ImportError:
        return "testcontainers/docker not installed: pip install 'logbus[dev]'"
    try:
        client = docker.from_env(timeout=int(PROBE_TIMEOUT))
        client.ping()
        client.close()
    except Exception as exc:
        return f"no Docker daemon answers ({type(exc).__name__}: {exc})"
    return None


def _start_container() -> Any:
    try:
        from testcontainers.community.rabbitmq import RabbitMqContainer
    except ImportError:  # testcontainers < 4.9 kept it at the top level
        from testcontainers.rabbitmq import RabbitMqContainer
    container = RabbitMqContainer(CONTAINER_IMAGE)
    container.start()
    return container


def _container_url(container: Any) -> str:
    host = container.get_container_host_ip()
    port = container.get_exposed_port(container.port)
    user = quote(container.username, safe="")
    password = quote(container.password, safe="")
    vhost = quote(container.vhost, safe="")
    return f"amqp://{user}:{password}@{host}:{port}/{vhost}"


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("LOGBUS_REQUIRE_BROKER") == "1":
        pytest.fail(f"LOGBUS_REQUIRE_BROKER=1 but no RabbitMQ: {reason}", pytrace=False)
    pytest.skip(f"no RabbitMQ for integration tests: {reason}")


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """The URL of a RabbitMQ that answered an AMQP handshake (see the module docstring)."""
    explicit = os.environ.get("LOGBUS_TEST_URL")
    if explicit:
        problem = probe(explicit)
        if problem is not None:
            _unavailable(f"LOGBUS_TEST_URL={redact(explicit)} does not answer: {problem}")
        yield explicit
        return

    local_problem = probe(LOCAL_URL)
    if local_problem is None:
        yield LOCAL_URL
        return

    docker_problem = _docker_problem()
    if docker_problem is not None:
        _unavailable(f"{redact(LOCAL_URL)}: {local_problem}; {docker_problem}")
    try:
        container = _start_container()
    except Exception as exc:
        _unavailable(f"starting {CONTAINER_IMAGE} failed: {type(exc).__name__}: {exc}")
    try:
        url = _container_url(container)
        problem = probe(url)
        if problem is not None:
            _unavailable(f"the {CONTAINER_IMAGE} container does not answer: {problem}")
        yield url
    finally:
        container.stop()


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A fresh prefix for this test's entity names: ``test-<testname>-<hex>``."""
    test_name = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name).strip("-")[:80]
    return f"test-{test_name}-{secrets.token_hex(4)}"


#: The PostgreSQL the archive tests use: $LOGBUS_TEST_POSTGRES_URL, else the local one.
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A PostgreSQL that answers; skips without one, fails under LOGBUS_REQUIRE_POSTGRES=1."""
    url = os.environ.get("LOGBUS_TEST_POSTGRES_URL", POSTGRES_URL)
    try:
        import psycopg
    except ImportError:
        problem = "psycopg is not installed (pip install 'logbus[postgres]')"
    else:
        try:
            with psycopg.connect(url, connect_timeout=5) as connection:
                connection.execute("SELECT 1")
            return url
        except psycopg.Error as exc:
            problem = f"{redact(url)} does not answer: {str(exc).splitlines()[0]}"
    if os.environ.get("LOGBUS_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"LOGBUS_REQUIRE_POSTGRES=1 but {problem}", pytrace=False)
    pytest.skip(problem)
