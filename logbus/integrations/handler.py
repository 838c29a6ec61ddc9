"""``LogbusHandler``: the standard library's ``logging`` into logbus records.

>>> import logging
>>> from logbus.integrations import LogbusHandler
>>> logging.getLogger().addHandler(LogbusHandler(facility="local0"))  # doctest: +SKIP

``handler.emit`` (the application's thread) only turns the ``logging.LogRecord``
into a small event and appends it to a bounded buffer; a listener thread publishes
through :class:`~logbus.emitter.Emitter` (see :mod:`logbus.integrations._shipper`
for the buffer, the ``drop``/``block`` policy and the counters).

What a record gets:

- ``severity``: the level (``DEBUG`` debug, ``INFO`` info, ``WARNING`` warning,
  ``ERROR`` error, ``CRITICAL`` critical; a custom level the nearest of them);
- ``facility``, ``app``, ``host``: the handler's (``app`` defaults to the program's
  name). The logger's name is not the ``app``: an application has one name but
  many loggers, and ``app`` is what a headers exchange filters on. It is the field
  ``logger``;
- ``message``: ``record.getMessage()``, or the handler's formatter's output when one
  is set;
- ``ts`` and ``pid``: when and where the call was made;
- ``fields``: ``logger``, ``level`` (its name), ``module``, ``function``, ``line``,
  ``thread``; every ``extra=`` attribute (anything not a standard ``LogRecord``
  attribute, made JSON-safe: other objects become their ``repr``, and an extra of
  the same name wins); ``exception`` and ``stack`` (formatted text) for
  ``exc_info`` and ``stack_info``.

What logbus's publishing path logs never goes through it: the loggers ``logbus.*``,
``pika.*``, ``aio_pika.*`` and ``aiormq.*``, and anything logged on logbus's I/O and
listener threads. pika logs on its I/O thread while it connects; shipping that
would make the thread that talks to the broker wait for room in a buffer that only
the broker can empty.

From ``logging.config.dictConfig``::

    "handlers": {"bus": {"class": "logbus.integrations.LogbusHandler",
                         "url": "amqp://...", "facility": "local0", "policy": "block",
                         "buffer_size": 50000, "topology": "config/logbus.toml"}}
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from logbus.integrations._fields import (
    STANDARD_ATTRIBUTES,
    app_name,
    exception_text,
    is_own,
    json_safe,
    severity_for_level,
)
from logbus.integrations._shipper import Event, Policy, Shipper

if TYPE_CHECKING:
    from logbus.settings import Settings
    from logbus.topology import Topology

__all__ = ["LogbusHandler"]


class LogbusHandler(logging.Handler):
    """A ``logging.Handler`` publishing to logbus without ever waiting on the network.

    Keywords: ``url`` (default ``LOGBUS_URL``), ``facility`` (default ``user``),
    ``app``, ``host``, ``policy`` (``"drop"`` or ``"block"``), ``buffer_size``,
    ``block_timeout`` and ``flush_timeout`` (seconds), ``topology`` (a TOML file or a
    :class:`~logbus.topology.Topology`; default ``LOGBUS_CONFIG`` or the built-in one),
    ``settings``, ``level``. Pass ``shipper`` to share one engine with a
    :class:`~logbus.integrations.LogbusProcessor`. ``spool`` (a directory) keeps on
    disk what the broker does not take, also across a restart: sent first when it is
    back (see ``_spooled.py``).
    :attr:`dropped`, :attr:`sent`, :attr:`spooled` and :attr:`failed` count what happened.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        facility: str = "user",
        app: str | None = None,
        host: str | None = None,
        policy: Policy = "drop",
        buffer_size: int = 10_000,
        block_timeout: float = 10.0,
        flush_timeout: float = 5.0,
        topology: Topology | str | os.PathLike[str] | None = None,
        settings: Settings | None = None,
        level: int | str = logging.NOTSET,
        shipper: Shipper | None = None,
        spool: str | os.PathLike[str] | None = None,
    ) -> None:
        # The engine first: a configuration error then leaves no half-made handler in
        # logging's list for logging.shutdown() to flush at exit.
        self.shipper = shipper or Shipper(
            url,
            facility=facility,
            app=app or app_name(),
            host=host,
            policy=policy,
            buffer_size=buffer_size,
            block_timeout=block_timeout,
            flush_timeout=flush_timeout,
            topology=topology,
            settings=settings,
            spool=spool,
        )
        super().__init__(level)

    @property
    def dropped(self) -> int:
        """Records dropped by the policy or left unsent at close."""
        return self.shipper.dropped

    @property
    def sent(self) -> int:
        """Records the broker confirmed."""
        return self.shipper.sent

    @property
    def spooled(self) -> int:
        """Records kept in the spool (``spool=``) because the broker did not take them."""
        return self.shipper.spooled

    @property
    def failed(self) -> int:
        """Records that could never be published (larger than the broker takes)."""
        return self.shipper.failed

    def handle(self, record: logging.LogRecord) -> Any:
        """Filter and emit, without ``logging``'s per-handler lock: the buffer has its own,
        and a caller waiting under the ``block`` policy must not hold every other thread's
        log call behind that lock."""
        passed = self.filter(record)
        if passed:
            self.emit(passed if isinstance(passed, logging.LogRecord) else record)
        return passed

    def emit(self, record: logging.LogRecord) -> None:
        """Buffer the record (the application's thread: no network, no waiting unless
        the policy is ``block`` and the buffer is full)."""
        if is_own(record.name, record.threadName):
            return
        try:
            self.shipper.put(self.event(record))
        except Exception:
            self.handleError(record)

    def event(self, record: logging.LogRecord) -> Event:
        """What ``record`` becomes (see the module docs); no I/O."""
        message = self.format(record) if self.formatter is not None else record.getMessage()
        fields: dict[str, Any] = {
            "logger": record.name,
            "level": record.levelname,
            "module": record.module,
            "function": record.funcName,
            "line": record.lineno,
            "thread": record.threadName,
        }
        for key, value in record.__dict__.items():
            if key not in STANDARD_ATTRIBUTES:
                fields[key] = json_safe(value)
        if record.exc_info:
            text = record.exc_text or exception_text(record.exc_info)
            if text:
                fields["exception"] = text
        if record.stack_info:
            fields["stack"] = record.stack_info
        return Event(
            severity_for_level(record.levelno),
            message,
            record.created,
            fields,
            record.process,
        )

    def flush(self) -> None:
        """Wait until what was logged is confirmed, up to ``flush_timeout`` seconds."""
        self.shipper.flush()

    def close(self) -> None:
        """Send what is buffered within ``flush_timeout`` and stop (idempotent); the
        counters are logged once if anything was lost."""
        self.shipper.close()
        super().close()
