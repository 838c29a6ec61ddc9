"""logbus.testing.rabbitmq: which broker a test session gets, in which order, and why not.

No broker and no Docker engine here: the probe, the Docker check and the container
are stand-ins, so that every branch (the container's included) runs on any machine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from logbus.errors import BrokerUnavailable
from logbus.testing import rabbitmq as finder


class FakeContainer:
    """What ``_container_url`` reads of a started testcontainers ``RabbitMqContainer``."""

    port = 5672
    username = "guest"
    password = "s3cr/t"
    vhost = "/"

    def __init__(self) -> None:
        self.stopped = False

    def get_container_host_ip(self) -> str:
        return "10.0.0.7"

    def get_exposed_port(self, port: int) -> int:
        return 32771

    def stop(self) -> None:
        self.stopped = True


CONTAINER_URL = "amqp://guest:s3cr%2Ft@10.0.0.7:32771/%2F"


def answering(*urls: str) -> Callable[..., str | None]:
    """A probe under which only ``urls`` answer."""
    return lambda url, timeout=0: None if url in urls else "connection refused"


@pytest.fixture
def container(monkeypatch: pytest.MonkeyPatch) -> FakeContainer:
    """The container a session would start; its Docker engine answers."""
    started = FakeContainer()
    monkeypatch.setattr(finder, "_docker_problem", lambda: None)
    monkeypatch.setattr(finder, "_start_container", lambda image: started)
    return started


def test_an_explicit_url_that_answers_is_used():
    """LOGBUS_TEST_URL wins over the local broker when it answers."""
    env = {"LOGBUS_TEST_URL": "amqp://u:p@broker:5672/%2F"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(finder, "probe", answering(env["LOGBUS_TEST_URL"], finder.LOCAL_URL))
        with finder.find_rabbitmq(env) as url:
            assert url == env["LOGBUS_TEST_URL"]


def test_an_explicit_url_that_does_not_answer_is_never_replaced(
    monkeypatch: pytest.MonkeyPatch, container: FakeContainer
):
    """A silent LOGBUS_TEST_URL is reported (password hidden), not swapped for another broker."""
    monkeypatch.setattr(finder, "probe", answering(finder.LOCAL_URL, CONTAINER_URL))
    env = {"LOGBUS_TEST_URL": "amqp://u:hunter2@broker:5672/%2F"}
    with pytest.raises(BrokerUnavailable) as caught, finder.find_rabbitmq(env):
        pass
    assert "LOGBUS_TEST_URL=amqp://u:***@broker:5672/%2F does not answer" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_the_local_broker_comes_before_a_container(
    monkeypatch: pytest.MonkeyPatch, container: FakeContainer
):
    """Without LOGBUS_TEST_URL, a broker on 127.0.0.1:5672 is used and nothing is started."""
    monkeypatch.setattr(finder, "probe", answering(finder.LOCAL_URL, CONTAINER_URL))
    with finder.find_rabbitmq({}) as url:
        assert url == finder.LOCAL_URL


def test_a_container_is_started_when_docker_answers_and_stopped_after(
    monkeypatch: pytest.MonkeyPatch, container: FakeContainer
):
    """No local broker, Docker answers: the container's mapped port, stopped at the end."""
    monkeypatch.setattr(finder, "probe", answering(CONTAINER_URL))
    with finder.find_rabbitmq({}) as url:
        assert url == CONTAINER_URL
        assert not container.stopped
    assert container.stopped


def test_the_image_can_be_chosen(monkeypatch: pytest.MonkeyPatch):
    """LOGBUS_TEST_IMAGE names the image the container is started from."""
    images: list[str] = []

    def start(image: str) -> Any:
        images.append(image)
        return FakeContainer()

    monkeypatch.setattr(finder, "probe", answering(CONTAINER_URL))
    monkeypatch.setattr(finder, "_docker_problem", lambda: None)
    monkeypatch.setattr(finder, "_start_container", start)
    with finder.find_rabbitmq({"LOGBUS_TEST_IMAGE": "rabbitmq:4.0-management"}):
        pass
    assert images == ["rabbitmq:4.0-management"]


def test_a_container_that_does_not_answer_is_stopped_and_reported(
    monkeypatch: pytest.MonkeyPatch, container: FakeContainer
):
    """A container that never answers is not left running, and the error says so."""
    monkeypatch.setattr(finder, "probe", answering())
    with (
        pytest.raises(BrokerUnavailable, match="container does not answer"),
        finder.find_rabbitmq({}),
    ):
        pass
    assert container.stopped


def test_without_a_broker_or_docker_the_reason_names_both(monkeypatch: pytest.MonkeyPatch):
    """Nothing answers: the error says why for the local broker and for Docker."""
    monkeypatch.setattr(finder, "probe", answering())
    monkeypatch.setattr(finder, "_docker_problem", lambda: "no Docker engine answers (x)")
    with pytest.raises(BrokerUnavailable) as caught, finder.find_rabbitmq({}):
        pass
    reason = str(caught.value)
    assert "127.0.0.1:5672/%2F: connection refused" in reason
    assert "no Docker engine answers (x)" in reason
    assert "or set LOGBUS_TEST_URL" in reason
    assert "guest:guest" not in reason
