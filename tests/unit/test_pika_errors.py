"""pika's driver exceptions are listed, and translated by reading those lists."""

from __future__ import annotations

import pika.exceptions as pika_errors
import pytest

from logbus.errors import ConnectionLost, InputError, NotFound, TransportError
from logbus.transports.amqp.pika_errors import (
    RECOVERABLE,
    REFUSALS,
    broker_refusal,
    hard_error,
    is_auth_failure,
    local_error,
)


@pytest.mark.parametrize("driver", REFUSALS)
def test_each_listed_refusal_is_an_auth_failure(driver):
    """What REFUSALS lists ends a first connect as a refused login, never a retry."""
    assert is_auth_failure(driver("ACCESS_REFUSED"))


@pytest.mark.parametrize(
    "exc",
    [
        pika_errors.StreamLostError("cut"),
        pika_errors.AMQPHeartbeatTimeout("silent"),
        pika_errors.ConnectionWrongStateError("closing"),
        pika_errors.ChannelWrongStateError("closed"),
        ConnectionResetError(104, "Connection reset by peer"),
    ],
)
def test_a_listed_recoverable_exception_under_a_call_is_a_lost_connection(exc):
    """A call that met a link going away is ConnectionLost: recoverable, retried later."""
    assert isinstance(exc, RECOVERABLE)
    error = local_error(exc, "declare queue 'q'")
    assert isinstance(error, ConnectionLost)
    assert error.recoverable


def test_bad_input_under_a_call_is_an_input_error():
    """A value pika cannot encode is the caller's input, not a broker fault."""
    assert isinstance(local_error(ValueError("bad"), "publish"), InputError)


def test_refusals_are_not_listed_as_recoverable():
    """A refused login is never retried as if the link had gone."""
    assert not any(issubclass(driver, RECOVERABLE) for driver in REFUSALS)


def test_a_channel_the_broker_closed_is_its_reply_codes_error():
    """ChannelClosedByBroker(404) is NotFound with the broker's words."""
    refusal = broker_refusal(pika_errors.ChannelClosedByBroker(404, "NOT_FOUND - no queue 'q'"))
    assert refusal is not None
    assert isinstance(refusal.error, NotFound)
    assert refusal.code == 404
    assert "no queue 'q'" in str(refusal.error)


def test_a_channel_closed_by_us_is_no_refusal():
    """A channel we closed ourselves carries no broker error."""
    assert broker_refusal(pika_errors.ChannelClosedByClient(200, "bye")) is None


def test_a_connection_closed_over_a_command_is_a_hard_error():
    """503 COMMAND_INVALID closing the connection is reported, not reconnected around."""
    error = hard_error(pika_errors.ConnectionClosedByBroker(503, "COMMAND_INVALID - bad type"))
    assert isinstance(error, TransportError)
    assert hard_error(pika_errors.ConnectionClosedByBroker(320, "CONNECTION_FORCED")) is None


def test_a_refused_vhost_close_is_an_auth_failure():
    """The broker closing the connection with 530 (vhost refused) is a refusal."""
    assert is_auth_failure(pika_errors.ConnectionClosedByBroker(530, "NOT_ALLOWED"))
