"""``logbus status`` names the broker it looked at: the right management API, a local socket."""

from __future__ import annotations

import json
from typing import Any

import pytest

from logbus.management import ManagementApi, ManagementUnavailable, management_api
from tests.e2e.test_broker_serve import Running, sock  # noqa: F401 (the socket fixture)
from tests.private_broker import PrivateBroker


def _status(logbus: Any, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    proc = logbus("status", "--json", *args, env=env)
    assert proc.returncode == 0, proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


@pytest.mark.faults
def test_status_asks_the_management_api_named_by_the_variable(
    logbus: Any, private_broker: PrivateBroker
) -> None:
    """AMQP and management on other ports: LOGBUS_MANAGEMENT_URL names the node's API."""
    report = _status(
        logbus,
        "--url",
        private_broker.url,
        env={"LOGBUS_MANAGEMENT_URL": private_broker.management_url},
    )
    assert report["via"] == "management", report["note"]
    assert report["broker"]["node"] in private_broker.ctl("eval", "node().")  # the private node
    assert report["management"].endswith("@" + private_broker.management_url.partition("://")[2])


@pytest.mark.faults
def test_status_does_not_show_another_brokers_statistics(
    logbus: Any, private_broker: PrivateBroker, amqp_url: str
) -> None:
    """A management API of another broker than AMQP reached is refused, and said so."""
    report = _status(logbus, "--url", amqp_url, "--management-url", private_broker.management_url)
    assert report["via"] == "amqp"
    assert "answers for cluster" in report["note"] and "--management-url" in report["note"]


@pytest.mark.faults
def test_status_on_other_ports_without_a_management_url_says_how_to_name_it(
    logbus: Any, private_broker: PrivateBroker
) -> None:
    """AMQP on another port and no management URL: the guess is not trusted, and the note
    names --management-url (whether :15672 is closed or another broker's)."""
    report = _status(logbus, "--url", private_broker.url, env={"LOGBUS_MANAGEMENT_URL": ""})
    assert report["via"] == "amqp"
    assert "--management-url" in report["note"], report["note"]


def test_a_guessed_management_api_of_another_node_is_refused() -> None:
    """The API derived for AMQP on port 5722 refuses an overview that listens on 5672 only."""

    class Other(ManagementApi):
        def get(self, path: str) -> Any:
            assert path == "/api/overview"
            return {"listeners": [{"protocol": "amqp", "port": 5672}]}

    guessed = management_api("amqp://guest:guest@127.0.0.1:5722/%2F")
    assert guessed is not None and guessed.base == "http://127.0.0.1:15672"
    other = Other(guessed.base, guessed.user, guessed.password, amqp_port=guessed.amqp_port)
    with pytest.raises(ManagementUnavailable, match="listening for AMQP on 5672, not 5722"):
        other.snapshot("/")


def test_status_of_a_local_broker_shows_its_socket_path(logbus: Any, sock: str) -> None:  # noqa: F811
    """`logbus status --url local://SOCK` names the socket, and no vhost."""
    server = Running("broker", "serve", "--listen", sock)
    try:
        server.wait_for("listening on")
        report = _status(logbus, "--url", f"local://{sock}")
    finally:
        server.stop()
    assert report["url"] == sock
    assert report["vhost"] is None
