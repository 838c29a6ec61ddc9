"""Every URL and sink-spec parser answers any text with a value or a logbus error, nothing else.

A malformed ``--url`` (an unclosed ``[``, a port that is not a number, an odd
character) must end as one line and exit 78, so every function that reads a
URL or a sink spec may only raise a :class:`~logbus.errors.LogbusError`:
anything else escapes the command line's error boundary as a traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from logbus import _urls, management
from logbus.errors import ConfigError, LogbusError
from logbus.sinks import BUILTIN_SINKS, load_sink, load_sink_table, parse_spec
from logbus.transports import scheme_of
from logbus.transports.aio import connect as _aio_connect
from logbus.transports.amqp import pika_convert as _pika_convert
from logbus.transports.inprocess import local, memory, process

# Pieces that make URL parsers stumble: brackets, ports, escapes, separators, query keys
# logbus reads itself, NFKC-sensitive characters, controls.
_PIECES = st.sampled_from(
    [
        "amqp://", "amqps://", "memory://", "local://", "process://", "http://", "https://",
        "postgresql://", "guest", "pw", ":", "@", "[", "]", "::1", "/", "%2F", "%", "%zz", "?",
        "#", "&", "=", ",", ";", " ", "5672", "99999", "-1", "0", "host", "localhost",
        "cafile=", "capath=", "certfile=", "server_hostname=", "heartbeat=", "ssl_options=",
        "max_batch=", "\x00", "\n", "é", "\uff03", "\u2100", "\ufe6b",
    ]
)  # fmt: skip
URLS = st.one_of(
    st.text(max_size=40),
    st.lists(st.one_of(_PIECES, st.text(max_size=4)), max_size=14).map("".join),
)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def only_logbus_errors(parse: Callable[[str], Any], text: str) -> None:
    """``parse(text)`` returns or raises a LogbusError; anything else fails the test."""
    with contextlib.suppress(LogbusError):
        parse(text)


def _pika_endpoints(url: str) -> Any:
    return _pika_convert.endpoints(
        url, heartbeat=30, heartbeat_wins=True, connect_timeout=1.0, connection_name="fuzz"
    )


def _aio_urls(url: str) -> None:
    """What the aio-pika transport reads of a URL before and while it connects."""
    options = _aio_connect.Options("fuzz", 1.0, 1.0, 30)
    for one in _aio_connect.split_urls(url):
        _aio_connect.endpoint(one)
        _aio_connect._broker_url(one, options)


URL_PARSERS: dict[str, Callable[[str], Any]] = {
    "parse_url": _urls.parse_url,
    "split_urls": _urls.split_urls,
    "redact_url": _urls.redact_url,
    "scheme_of": scheme_of,
    "pika": _pika_endpoints,
    "aio": _aio_urls,
    "memory": memory.broker_name,
    "process": process.broker_name,
    "local": local.socket_path,
    "management_vhost": management.vhost_of,
    "management_api": management.management_api,
}


@pytest.mark.parametrize("name", sorted(URL_PARSERS))
@FUZZ
@given(url=URLS)
@example(url="amqp://guest:pw@[::1")
@example(url="amqp://guest:pw@host:99999/")
@example(url="amqp://guest:pw@host:x/")
@example(url="amqp://guest:pw@ho\uff03st/")
@example(url="amqps://h/?ssl_options={")
@example(url="memory://[")
def test_url_parsers_raise_only_logbus_errors(name: str, url: str) -> None:
    """Any text given as a URL is parsed or refused with a logbus error."""
    only_logbus_errors(URL_PARSERS[name], url)


@pytest.mark.parametrize(
    "url",
    [
        "amqp://guest:s3cret@[::1",
        "amqp://guest:s3cret@host:99999/",
        "amqp://guest:s3cret@host:port/",
        "amqp://guest:s3cret@ho\uff03st/",
        "amqps://guest:s3cret@[::1,amqp://localhost",
        "memory://[",
    ],
)
def test_a_malformed_url_is_a_config_error_without_the_password(url: str) -> None:
    """The one URL parser says what is wrong with the URL, password hidden."""
    with pytest.raises(ConfigError) as caught:
        for one in _urls.split_urls(url):
            _urls.parse_url(one)
    assert "s3cret" not in str(caught.value)
    assert "fix" in str(caught.value)


def test_a_malformed_url_is_refused_by_every_transport_the_same_way() -> None:
    """pika, the one-shot path's full-path fallback and aio-pika give the same ConfigError."""
    url = "amqp://guest:s3cret@[::1"
    errors = []
    for parse in (scheme_of, _pika_endpoints, _aio_urls):
        with pytest.raises(ConfigError) as caught:
            parse(url)
        errors.append(str(caught.value))
    assert len(set(errors)) == 1, errors


# -- sink specs ---------------------------------------------------------------------------

SPECS = st.one_of(
    st.text(max_size=40),
    st.tuples(
        st.sampled_from(sorted(BUILTIN_SINKS)),
        st.sampled_from([":", "?", ""]),
        st.lists(st.one_of(_PIECES, st.text(max_size=4)), max_size=12).map("".join),
    ).map("".join),
)


@FUZZ
@given(spec=SPECS)
@example(spec="webhook:http://[::1")
@example(spec="webhook:http://h:99999/")
@example(spec="postgres:postgresql://u:pw@[::1")
@example(spec="jsonl:\x00")
@example(spec="sqlite:?max_batch=%zz")
def test_sink_specs_raise_only_logbus_errors(spec: str) -> None:
    """Any text given as ``--sink`` makes a sink (not opened) or a logbus error."""
    only_logbus_errors(parse_spec, spec)
    only_logbus_errors(load_sink, spec)


@FUZZ
@given(
    kind=st.sampled_from(sorted(BUILTIN_SINKS)),
    table=st.dictionaries(
        st.sampled_from(["path", "url", "arg", "max_batch", "max_wait", "rotate", "table", "x"]),
        st.one_of(st.text(max_size=20), URLS, st.integers(), st.floats(), st.none(), st.booleans()),
        max_size=4,
    ),
)
def test_sink_tables_raise_only_logbus_errors(kind: str, table: dict[str, Any]) -> None:
    """Any [sink] table makes a sink (not opened) or a logbus error."""
    only_logbus_errors(load_sink_table, {"type": kind, **table})
