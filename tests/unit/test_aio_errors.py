"""aio-pika's driver exceptions are listed, and translated by reading those lists."""

from __future__ import annotations

import aiormq.exceptions as amqp
import pytest

from logbus.errors import AccessRefused, ChannelError, ConnectionLost
from logbus.transports.aio.errors import (
    CHANNEL_REPLIES,
    RECOVERABLE,
    connect_refusal,
    translate,
)


@pytest.mark.parametrize(("driver", "logbus"), list(CHANNEL_REPLIES.items()))
def test_each_listed_channel_refusal_becomes_its_logbus_error(driver, logbus):
    """A broker refusal that closed a channel is the logbus error its table row names."""
    error = translate(driver(406, "the broker's words"), doing="declare", endpoint="h:5672")
    assert type(error) is logbus
    assert "the broker's words" in str(error)


def test_a_channel_refusal_not_listed_is_a_plain_channel_error():
    """A ChannelClosed with a reply and no row of its own is a ChannelError."""
    error = translate(amqp.ChannelClosed(505, "unexpected"), doing="bind", endpoint="h:5672")
    assert type(error) is ChannelError


@pytest.mark.parametrize("driver", RECOVERABLE)
def test_each_listed_recoverable_exception_is_a_lost_connection(driver):
    """What RECOVERABLE lists becomes ConnectionLost, which the worker's retries treat as
    recoverable."""
    error = translate(driver("gone"), doing="publish", endpoint="h:5672")
    assert isinstance(error, ConnectionLost)
    assert error.recoverable


def test_refusals_are_not_listed_as_recoverable():
    """A refusal by the broker is not retried as if the link had gone."""
    for driver in CHANNEL_REPLIES:
        assert not issubclass(driver, RECOVERABLE)


def test_a_refused_login_at_first_connect_is_access_refused_naming_the_user():
    """ProbableAuthenticationError at the first connect names the user, not a password."""
    error = connect_refusal(
        amqp.ProbableAuthenticationError("ACCESS_REFUSED"), "h:5672", "bob", "/"
    )
    assert isinstance(error, AccessRefused)
    assert "'bob'" in str(error)


def test_a_failed_connect_that_is_no_refusal_is_none():
    """A refused TCP connection is not an AccessRefused."""
    assert connect_refusal(ConnectionRefusedError("no"), "h:5672", "bob", "/") is None
