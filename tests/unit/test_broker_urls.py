"""What a broker URL says, read in one place (logbus._urls) for both AMQP drivers."""

from __future__ import annotations

from logbus import management
from logbus._urls import address, parse_url, query, user_and_vhost
from logbus.transports.aio import connect as _aio_connect


def test_an_address_takes_the_default_port_of_its_scheme():
    """amqp:// without a port is host:5672, amqps:// host:5671."""
    assert address(parse_url("amqp://u:p@rabbit/%2F")) == "rabbit:5672"
    assert address(parse_url("amqps://u:p@rabbit/%2F")) == "rabbit:5671"


def test_an_address_never_shows_the_credentials():
    """host:port only, whatever the URL carries."""
    assert address(parse_url("amqp://user:s3cr3t@10.0.0.1:5673/v")) == "10.0.0.1:5673"


def test_user_and_vhost_are_unquoted_and_default_to_guest_and_slash():
    """%2F is the vhost '/', an empty path is '/', no user is guest."""
    assert user_and_vhost(parse_url("amqp://bob%40x:p@h/%2F")) == ("bob@x", "/")
    assert user_and_vhost(parse_url("amqp://h")) == ("guest", "/")
    assert user_and_vhost(parse_url("amqp://h/logs")) == ("guest", "logs")


def test_query_keeps_blank_values():
    """?cafile=&heartbeat=5 reads as a mapping with the blank kept."""
    assert query(parse_url("amqps://h/?cafile=&heartbeat=5")) == {"cafile": "", "heartbeat": "5"}


def test_the_aio_transport_names_endpoints_as_the_shared_reader_does():
    """The aio-pika side says host:port exactly as logbus._urls does."""
    url = "amqps://u:p@rabbit/%2F"
    assert _aio_connect.endpoint(url) == address(parse_url(url))


def test_the_management_client_splits_a_failover_list_with_the_one_splitter():
    """A comma inside a password stays inside the first URL of the list."""
    first = management._first_url("amqp://u:a,b@h1/%2F,amqp://u:p@h2/%2F")
    assert first == "amqp://u:a,b@h1/%2F"
