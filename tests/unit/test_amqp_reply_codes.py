"""AMQP reply codes become the logbus errors they mean (the shared words of both drivers)."""

from __future__ import annotations

import pytest

from logbus.errors import (
    ChannelError,
    InputError,
    InvalidExpiration,
    NotFound,
    NotImplementedByBroker,
    PreconditionFailed,
    ResourceLocked,
)
from logbus.transports.amqp.errors import reply_error


@pytest.mark.parametrize(
    ("code", "text", "kind"),
    [
        (404, "NOT_FOUND - no queue 'q' in vhost '/'", NotFound),
        (405, "RESOURCE_LOCKED - cannot obtain exclusive access", ResourceLocked),
        (406, "PRECONDITION_FAILED - inequivalent arg 'durable'", PreconditionFailed),
        (
            540,
            "NOT_IMPLEMENTED - if-unused on a quorum queue",
            NotImplementedByBroker,
        ),
    ],
)
def test_each_reply_code_has_its_error_class(code, text, kind):
    """404, 405, 406 and 540 each map to their own class, keeping the broker's text."""
    error = reply_error(code, text)
    assert type(error) is kind and text in str(error)


def test_an_invalid_expiration_is_a_406_and_bad_input():
    """RabbitMQ's 406 for an expiration is InvalidExpiration: a channel error, exit 65."""
    error = reply_error(406, "PRECONDITION_FAILED - invalid expiration 'abc': no_integer")
    assert isinstance(error, InvalidExpiration)
    assert isinstance(error, PreconditionFailed) and isinstance(error, InputError)
    assert error.exit_code == 65


def test_an_unknown_code_stays_a_channel_error():
    """A code without a class of its own is a plain ChannelError naming it."""
    error = reply_error(530, "NOT_ALLOWED - something")
    assert type(error) is ChannelError and "(530)" in str(error)
