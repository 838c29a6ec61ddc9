"""The shared RabbitMQ for integration and contract tests, and the suite's other fixtures.

The broker comes from logbus's own pytest plugin, :mod:`logbus.testing.plugin`
(loaded through the ``pytest11`` entry point): ``amqp_url`` is its
``logbus_broker_url`` under the name this suite grew up with — ``LOGBUS_TEST_URL``,
else a broker answering on ``127.0.0.1:5672``, else a testcontainers RabbitMQ when
Docker answers, else a skip, or a failure under ``LOGBUS_REQUIRE_BROKER=1`` (CI sets
it, so a missing broker is never mistaken for a green run). One copy of that logic,
the one users get.

Every test under ``tests/integration/`` is marked ``integration``.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

import pytest

from logbus._urls import redact_url

_INTEGRATION = Path(__file__).parent / "integration"

pytest_plugins = ["pytester", "tests.private_broker", "tests.cluster_broker", "tests.pool_probe"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test collected from tests/integration/ as ``integration``."""
    for item in items:
        if _INTEGRATION in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def amqp_url(logbus_broker_url: str) -> str:
    """The URL of a RabbitMQ that answered an AMQP handshake (see the module docstring)."""
    return logbus_broker_url


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
            problem = f"{redact_url(url)} does not answer: {str(exc).splitlines()[0]}"
    if os.environ.get("LOGBUS_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"LOGBUS_REQUIRE_POSTGRES=1 but {problem}", pytrace=False)
    pytest.skip(problem)
