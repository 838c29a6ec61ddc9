"""``Capture``: the records a piece of code emitted, caught on a queue of their own.

>>> with Capture("memory://example") as capture:          # doctest: +SKIP
...     with capture.emitter() as emitter:
...         emitter.emit("auth.info", "signed up", user="ada")
...     capture.find(key="auth.*", message="signed up", user="ada")

A capture declares a topology (logbus's default unless given one) and binds a
temporary queue of its own to every exchange the topology's emit targets
publish to, with the binding that takes everything there (``#`` on a topic
exchange, a fanout binding, ``x-match=all`` with no headers). Whatever code
publishes through that topology is seen: an :class:`~logbus.emitter.Emitter`
built from :attr:`Capture.settings` or :attr:`Capture.environ`, the
``logbus`` command, or the logging handler of :mod:`logbus.integrations`
(:meth:`Capture.handler`, or one built from the environment).

On a shared broker the topology's names get a unique :attr:`Capture.prefix`,
so that tests running at the same time never see each other's records, and
everything the capture declared is deleted when it closes.

Records arrive asynchronously on RabbitMQ: :meth:`Capture.find` and
:meth:`Capture.wait_for` wait (up to :attr:`Capture.timeout`) for what they
ask before failing with an ``AssertionError`` that lists what did arrive;
:attr:`Capture.records` and :meth:`Capture.select` are what arrived so far.
"""

from __future__ import annotations

import re
import secrets
import tempfile
from collections.abc import Callable, Mapping
from contextlib import suppress
from pathlib import Path
from time import monotonic
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from logbus.emitter import Emitter
    from logbus.integrations import LogbusHandler
    from logbus.record import LogRecord
    from logbus.settings import Settings
    from logbus.topology import Topology
    from logbus.transports import Consumer, Delivery, Transport

__all__ = ["Capture", "prefixed"]

#: Seconds ``find`` and ``wait_for`` wait for a record, unless told otherwise.
DEFAULT_TIMEOUT = 5.0
#: How many captured records a failed assertion lists.
SHOWN = 20
#: The record attributes ``find`` compares by name; any other name is a key of ``fields``.
_ATTRIBUTES = frozenset({"id", "ts", "facility", "severity", "host", "app", "pid", "v"})
#: The binding that takes every message an exchange of each type routes.
_CATCH_ALL: dict[str, tuple[str, dict[str, Any]]] = {
    "topic": ("#", {}),
    "fanout": ("", {}),
    "headers": ("", {"x-match": "all"}),  # nothing left to compare: matches everything
}


def prefixed(topology: Topology, prefix: str) -> Topology:
    """``topology`` with every exchange and queue name (and every reference to one) prefixed.

    The default exchange (``""``) keeps its name; an emit target to it names a
    queue by its key, which is prefixed when it is a plain name.
    """
    from logbus.topology import Topology

    if not prefix:
        return topology

    def rename(name: str) -> str:
        return f"{prefix}{name}" if name else name

    data = topology.to_dict()
    for queue in data["queues"]:
        queue["name"] = rename(queue["name"])
        if queue.get("dead_letter_exchange"):
            queue["dead_letter_exchange"] = rename(queue["dead_letter_exchange"])
        arguments = queue["arguments"]
        if arguments.get("x-dead-letter-exchange"):
            arguments["x-dead-letter-exchange"] = rename(arguments["x-dead-letter-exchange"])
    for exchange in data["exchanges"]:
        exchange["name"] = rename(exchange["name"])
    for binding in data["bindings"]:
        binding["source"] = rename(binding["source"])
        binding["destination"] = rename(binding["destination"])
    for target in data["emit"]:
        if target["exchange"]:
            target["exchange"] = rename(target["exchange"])
        elif "{" not in target["key"]:
            target["key"] = rename(target["key"])
    return Topology.from_dict(data)


class Capture:
    """Catches every record published through a topology, for a test to assert on.

    ``url`` is any transport URL; ``topology`` defaults to logbus's default one.
    ``prefix`` is put before every name of the topology: by default a fresh
    ``logbus-test-<hex>.``, so that captures sharing a broker never see each
    other's records (the fixture gives none on the test's own in-process broker).
    ``cleanup`` (default: whenever names are prefixed) deletes the topology's
    queues and exchanges on :meth:`close`. ``timeout`` is how long :meth:`find`
    and :meth:`wait_for` wait by default.
    """

    def __init__(
        self,
        url: str,
        *,
        topology: Topology | None = None,
        prefix: str | None = None,
        cleanup: bool | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        from logbus.topology import default

        if prefix is None:
            prefix = f"logbus-test-{secrets.token_hex(4)}."
        self.url = url
        self.prefix = prefix
        #: The topology the capture declared and listens to (names prefixed).
        self.topology = prefixed(topology or default(), prefix)
        self.timeout = timeout
        #: How many copies of an already captured record arrived (several targets, a retry).
        self.duplicates = 0
        self._cleanup = bool(prefix) if cleanup is None else cleanup
        self._records: list[LogRecord] = []
        self._seen: set[str] = set()
        self._directory: tempfile.TemporaryDirectory[str] | None = None
        self._transport: Transport | None = None
        self._consumer: Consumer | None = None

    # -- what code under test is given --------------------------------------------------

    @property
    def config(self) -> Path:
        """A topology file holding :attr:`topology`, for ``LOGBUS_CONFIG`` or ``--config``."""
        if self._directory is None:
            from logbus.topology import dumps

            self._directory = tempfile.TemporaryDirectory(prefix="logbus-capture-")
            path = Path(self._directory.name) / "topology.toml"
            path.write_text(dumps(self.topology), encoding="utf-8")
        return Path(self._directory.name) / "topology.toml"

    @property
    def environ(self) -> dict[str, str]:
        """``LOGBUS_URL`` and ``LOGBUS_CONFIG`` that send a process's records here."""
        return {"LOGBUS_URL": self.url, "LOGBUS_CONFIG": str(self.config)}

    @property
    def settings(self) -> Settings:
        """:class:`~logbus.settings.Settings` that send records here."""
        from logbus.settings import Settings

        return Settings(url=self.url, config=self.config)

    def emitter(self, **options: Any) -> Emitter:
        """An :class:`~logbus.emitter.Emitter` publishing through the capture's topology."""
        from logbus.emitter import Emitter

        options.setdefault("topology", self.topology)
        return Emitter(self.url, settings=self.settings, **options)

    def handler(self, **options: Any) -> LogbusHandler:
        """A :class:`~logbus.integrations.LogbusHandler` that sends what is logged here.

        For code that logs rather than emits: attach it to a logger, or let the
        code build its own handler from ``LOGBUS_URL``/``LOGBUS_CONFIG`` (which the
        ``logbus_capture`` fixture sets). The handler publishes from a thread of its
        own, so assert with :meth:`find` or :meth:`wait_for`, which wait; close it
        (``handler.close()``) when done. ``options`` are the handler's keywords.
        """
        from logbus.integrations import LogbusHandler

        options.setdefault("topology", self.topology)
        return LogbusHandler(self.url, settings=self.settings, **options)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> Capture:
        """Connect, declare the topology, and bind the capture's queue; idempotent."""
        if self._transport is not None:
            return self
        from logbus.errors import ConfigError
        from logbus.topology import declare
        from logbus.transports import connect

        exchanges = {e.name: e.type for e in self.topology.exchanges}
        sources = {t.exchange for t in self.topology.emit if t.exchange}
        bindings = [
            (name, *_CATCH_ALL[exchanges[name]])
            for name in sorted(sources)
            if exchanges[name] in _CATCH_ALL
        ]
        if not bindings:
            raise ConfigError(
                "a capture needs an emit target on a topic, fanout or headers exchange "
                "(a direct exchange or the default one cannot be bound to take everything)"
            )
        transport = connect(self.url, settings=self.settings)
        try:
            declare(transport, self.topology)
            queue = transport.declare_queue(
                "", durable=False, exclusive=True, auto_delete=True
            ).name
            for exchange, key, arguments in bindings:
                transport.bind_queue(queue, exchange, key, arguments)
            self._consumer = transport.consume(queue, prefetch=1000)
        except BaseException:
            transport.close()
            raise
        self._transport = transport
        return self

    def close(self) -> None:
        """Stop listening; delete what was declared when :attr:`prefix` made it the test's own."""
        transport, self._transport = self._transport, None
        if transport is not None:
            try:
                if self._consumer is not None:
                    self._consumer.cancel()
                if self._cleanup:
                    self._delete_topology(transport)
            finally:
                transport.close()
        if self._directory is not None:
            self._directory.cleanup()
            self._directory = None

    def _delete_topology(self, transport: Transport) -> None:
        from logbus.errors import NotFound

        for queue in self.topology.queues:
            with suppress(NotFound):  # the code under test may have deleted it already
                transport.delete_queue(queue.name)
        for exchange in self.topology.exchanges:
            with suppress(NotFound):
                transport.delete_exchange(exchange.name)

    def __enter__(self) -> Capture:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- what arrived -------------------------------------------------------------------

    @property
    def records(self) -> list[LogRecord]:
        """The records captured so far, in arrival order, each once (by its ``id``)."""
        self._drain(0)
        return list(self._records)

    def clear(self) -> None:
        """Forget what was captured (what arrives later is still caught)."""
        self._drain(0)
        self._records.clear()

    def select(
        self, key: str | None = None, message: str | re.Pattern[str] | None = None, **attrs: Any
    ) -> list[LogRecord]:
        """The captured records that match, without waiting (see :meth:`find` for criteria)."""
        match = _matcher(key, message, attrs)
        return [record for record in self.records if match(record)]

    def find(
        self,
        key: str | None = None,
        message: str | re.Pattern[str] | None = None,
        *,
        timeout: float | None = None,
        **attrs: Any,
    ) -> LogRecord:
        """The first record that matches, waiting up to ``timeout`` seconds for one.

        ``key`` is a routing key or a binding pattern (``auth.*``, ``#.error``);
        ``message`` the exact message or a compiled regex searched in it; every
        other keyword is a record attribute (``host``, ``app``, ``severity``,
        ``facility``, ``id``) or a key of its ``fields``. Raises ``AssertionError``
        listing the records that did arrive when none matches.
        """
        __tracebackhide__ = True  # pytest shows the test's line, not this one
        return self.wait_for(1, timeout=timeout, key=key, message=message, **attrs)[0]

    def wait_for(
        self,
        count: int,
        *,
        timeout: float | None = None,
        key: str | None = None,
        message: str | re.Pattern[str] | None = None,
        **attrs: Any,
    ) -> list[LogRecord]:
        """At least ``count`` matching records (all of them), waiting up to ``timeout`` s."""
        __tracebackhide__ = True
        wait = self.timeout if timeout is None else timeout
        match = _matcher(key, message, attrs)
        deadline = monotonic() + wait
        while True:
            found = [record for record in self.records if match(record)]
            left = deadline - monotonic()
            if len(found) >= count or left <= 0:
                break
            self._drain(left)
        if len(found) < count:
            raise AssertionError(self._missing(count, len(found), wait, key, message, attrs))
        return found

    def _drain(self, timeout: float) -> None:
        """Take what the queue holds: the first delivery within ``timeout`` s, then no waiting."""
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("the capture is not started: use `with Capture(...)` or .start()")
        while (delivery := consumer.get(timeout)) is not None:
            timeout = 0
            self._take(delivery)

    def _take(self, delivery: Delivery) -> None:
        from logbus.errors import LogbusError
        from logbus.record import decode

        try:
            record = decode(delivery.body, delivery.properties, delivery.routing_key)
        except LogbusError as exc:  # kept visible: a capture that hid it would lie
            raise AssertionError(f"a message published here is not a record: {exc}") from exc
        finally:
            delivery.ack()
        if record.id in self._seen:
            self.duplicates += 1
            return
        self._seen.add(record.id)
        self._records.append(record)

    def _missing(
        self,
        count: int,
        found: int,
        waited: float,
        key: str | None,
        message: str | re.Pattern[str] | None,
        attrs: Mapping[str, Any],
    ) -> str:
        wanted = _describe(key, message, attrs)
        head = f"expected {count} record(s) matching {wanted}, found {found} (waited {waited:g}s)"
        records = self._records
        if not records:
            return f"{head}; nothing was captured at all"
        lines = [f"{head}; {len(records)} record(s) captured:"]
        lines += [f"  {_show(record)}" for record in records[:SHOWN]]
        if len(records) > SHOWN:
            lines.append(f"  ... and {len(records) - SHOWN} more")
        return "\n".join(lines)


def _matcher(
    key: str | None, message: str | re.Pattern[str] | None, attrs: Mapping[str, Any]
) -> Callable[[LogRecord], bool]:
    """A predicate for the criteria of :meth:`Capture.find`."""
    from logbus.record import Severity
    from logbus.routing import topic_matches

    wanted = dict(attrs)
    if "severity" in wanted:
        wanted["severity"] = Severity.parse(wanted["severity"])

    def match(record: LogRecord) -> bool:
        if key is not None and not topic_matches(key, record.routing_key):
            return False
        if isinstance(message, re.Pattern):
            if message.search(record.message) is None:
                return False
        elif message is not None and record.message != message:
            return False
        for name, value in wanted.items():
            if name in _ATTRIBUTES:
                actual = getattr(record, name)
            elif name in record.fields:
                actual = record.fields[name]
            else:
                return False
            if actual != value:
                return False
        return True

    return match


def _describe(
    key: str | None, message: str | re.Pattern[str] | None, attrs: Mapping[str, Any]
) -> str:
    shown = [f"key={key!r}"] if key is not None else []
    if isinstance(message, re.Pattern):
        shown.append(f"message=~{message.pattern!r}")
    elif message is not None:
        shown.append(f"message={message!r}")
    shown += [f"{name}={value!r}" for name, value in attrs.items()]
    return ", ".join(shown) or "anything"


def _show(record: LogRecord) -> str:
    """One captured record, as a failed assertion lists it."""
    fields = f" {record.fields}" if record.fields else ""
    return f"{record.routing_key} host={record.host} app={record.app} {record.message!r}{fields}"
