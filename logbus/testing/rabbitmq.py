"""Finding a RabbitMQ to test against: a given URL, the local one, or a container.

:func:`find_rabbitmq` is what the ``logbus_broker_url`` fixture runs once per test
session; it is usable without pytest too. The first source that answers wins:

1. ``LOGBUS_TEST_URL``, if set, and then only that: an explicit URL that does
   not answer is reported, never silently replaced by another broker;
2. a broker answering on ``127.0.0.1:5672`` as guest/guest;
3. a testcontainers ``RabbitMqContainer`` (image ``LOGBUS_TEST_IMAGE``, default
   :data:`CONTAINER_IMAGE`), when a Docker engine answers; it is stopped when
   the context ends.

When none answers, :class:`~logbus.errors.BrokerUnavailable` says why for each
source, so that a skipped test names what to start. "Answers" means a TCP
connect and then a real AMQP handshake through logbus's own transport: a port
can belong to something else, or to a broker still booting, and a URL is read
the way logbus reads it (failover lists, ``amqps://`` with ``?cafile=``).

pika, docker and testcontainers are imported only here, inside the functions
that need them: the pytest plugin imports this module on first use only.
"""

from __future__ import annotations

import importlib
import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import quote

from logbus._urls import address, parse_url, redact_url, split_urls
from logbus.errors import BrokerUnavailable, LogbusError

__all__ = [
    "CONTAINER_IMAGE",
    "LOCAL_URL",
    "PROBE_TIMEOUT",
    "find_rabbitmq",
    "probe",
]

#: The broker tried when ``LOGBUS_TEST_URL`` is not set (RabbitMQ's out-of-the-box user).
LOCAL_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
#: The image started when no broker answers and Docker does; ``LOGBUS_TEST_IMAGE`` overrides.
CONTAINER_IMAGE = "rabbitmq:3.10-management"
#: Seconds each check may take: a test session should not hang on a broker that is not there.
PROBE_TIMEOUT = 3.0

URL_VARIABLE = "LOGBUS_TEST_URL"
IMAGE_VARIABLE = "LOGBUS_TEST_IMAGE"


def probe(url: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """None if ``url`` answers an AMQP handshake, else why not, in one line.

    A TCP connect to each host comes first because it fails in milliseconds
    where a refused handshake can take the whole timeout; then logbus opens and
    closes a connection of its own, so that credentials and vhost are checked too.
    """
    try:
        hosts = [parse_url(one.strip()) for one in split_urls(url) if one.strip()]
    except LogbusError as exc:
        return str(exc)
    if not hosts:
        return "the URL is empty"
    refused = [why for parts in hosts if (why := _tcp_problem(parts.hostname, parts.port, timeout))]
    if len(refused) == len(hosts):
        return "; ".join(refused)
    from logbus.transports import connect

    try:
        connect(url, connect_timeout=timeout).close()
    except LogbusError as exc:
        return str(exc)
    return None


def _tcp_problem(host: str | None, port: int | None, timeout: float) -> str | None:
    """None if ``host:port`` accepts a TCP connection within ``timeout`` seconds."""
    where = address(parse_url(f"amqp://{host or 'localhost'}:{port or 5672}"))
    try:
        with socket.create_connection((host or "localhost", port or 5672), timeout=timeout):
            return None
    except OSError as exc:
        return f"nothing accepts connections on {where} ({exc.strerror or exc})"


@contextmanager
def find_rabbitmq(environ: Mapping[str, str] | None = None) -> Iterator[str]:
    """The URL of a RabbitMQ that answered (see the module docstring), for the ``with`` block.

    Raises :class:`~logbus.errors.BrokerUnavailable` naming why every source failed.
    A container started here is stopped when the block ends.
    """
    env = os.environ if environ is None else environ
    explicit = env.get(URL_VARIABLE)
    if explicit:
        problem = probe(explicit)
        if problem is not None:
            shown = redact_url(explicit)
            raise BrokerUnavailable(f"{URL_VARIABLE}={shown} does not answer: {problem}")
        yield explicit
        return
    local_problem = probe(LOCAL_URL)
    if local_problem is None:
        yield LOCAL_URL
        return
    docker_problem = _docker_problem()
    if docker_problem is not None:
        why = f"{redact_url(LOCAL_URL)}: {local_problem}; {docker_problem}"
        raise BrokerUnavailable(f"{why}; or set {URL_VARIABLE}")
    image = env.get(IMAGE_VARIABLE) or CONTAINER_IMAGE
    container = _start_container(image)
    try:
        url = _container_url(container)
        problem = probe(url, timeout=PROBE_TIMEOUT * 10)  # a fresh node may still be booting
        if problem is not None:
            raise BrokerUnavailable(f"the {image} container does not answer: {problem}")
        yield url
    finally:
        container.stop()


def _docker_problem() -> str | None:
    """None if a Docker engine answers a ping, else why not."""
    try:
        docker = importlib.import_module("docker")  # untyped; a dev extra, not a dependency
    except ImportError:
        return "no Docker client: pip install 'testcontainers[rabbitmq]'"
    try:
        client = docker.from_env(timeout=int(PROBE_TIMEOUT))
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # docker raises its own, requests' and OSError alike
        return f"no Docker engine answers ({type(exc).__name__}: {exc})"
    return None


def _start_container(image: str) -> Any:
    """A started ``RabbitMqContainer``; BrokerUnavailable if it cannot be started."""
    try:
        from testcontainers.community.rabbitmq import RabbitMqContainer
    except ImportError:  # testcontainers < 4.9 kept it at the top level
        try:
            from testcontainers.rabbitmq import RabbitMqContainer
        except ImportError:
            raise BrokerUnavailable(
                "testcontainers is not installed: pip install 'testcontainers[rabbitmq]'"
            ) from None
    container = RabbitMqContainer(image)
    try:
        container.start()  # waits for the broker's AMQP handshake itself
    except Exception as exc:  # docker's and testcontainers' own errors alike
        with suppress(Exception):  # a container that never became ready is not left running
            container.stop()
        raise BrokerUnavailable(f"starting {image} failed: {type(exc).__name__}: {exc}") from exc
    return container


def _container_url(container: Any) -> str:
    """The AMQP URL of a started container, from the port Docker mapped."""
    host = container.get_container_host_ip()
    port = container.get_exposed_port(container.port)
    user = quote(container.username, safe="")
    password = quote(container.password, safe="")
    vhost = quote(container.vhost, safe="")
    return f"amqp://{user}:{password}@{host}:{port}/{vhost}"
