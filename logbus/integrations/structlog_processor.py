"""``LogbusProcessor``: structlog events into logbus records, with the handler's guarantees.

>>> import structlog
>>> from logbus.integrations import LogbusProcessor
>>> structlog.configure(processors=[
...     structlog.processors.add_log_level,
...     LogbusProcessor(facility="local0"),     # before the renderer
...     structlog.dev.ConsoleRenderer(),
... ])                                           # doctest: +SKIP

**Where it goes in the chain: anywhere before the renderer.** It copies the event
into logbus's buffer and passes the event dict through unchanged, so the rest of
the chain (a renderer, a file, the console) still sees every event. After a
renderer the event is a string and carries no fields any more, which is why it
must come before. The processor is the same engine as
:class:`~logbus.integrations.LogbusHandler` (a bounded buffer, a listener thread,
the ``drop``/``block`` policy, a flush with a deadline at close and at exit), and
can share one with a handler: ``LogbusProcessor(shipper=handler.shipper)``.

What a record gets: ``message`` is the ``event``; ``severity`` is the ``level`` key
(``add_log_level``) or else the method called (``log.warning`` -> warning,
``log.exception`` -> error, ``log.critical``/``fatal`` -> critical, anything unknown
-> info); every other key becomes a field, made JSON-safe (objects become their
``repr``); ``exc_info`` becomes the field ``exception`` (formatted text) and
``stack_info=True`` the field ``stack``.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

from logbus.errors import SeverityError
from logbus.integrations._fields import app_name, exception_text, is_own, json_safe
from logbus.integrations._shipper import Event, Policy, Shipper
from logbus.record import Severity

if TYPE_CHECKING:
    from logbus.settings import Settings
    from logbus.topology import Topology

__all__ = ["LogbusProcessor", "severity_for_method"]

# structlog's method names that are not severity words.
_METHODS = {
    "exception": Severity.ERROR,
    "fatal": Severity.CRITICAL,
    "msg": Severity.INFO,
    "log": Severity.INFO,
}
_TAKEN = frozenset({"event", "level", "exc_info", "stack_info"})


def severity_for_method(name: object) -> Severity:
    """The severity of a structlog level or method name; ``info`` for anything unknown."""
    if isinstance(name, str):
        lowered = name.lower()
        found = _METHODS.get(lowered)
        if found is not None:
            return found
        try:
            return Severity.parse(lowered)
        except SeverityError:
            pass
    return Severity.INFO


class LogbusProcessor:
    """A structlog processor that ships every event to logbus and passes it on.

    Takes the keywords of :class:`~logbus.integrations.LogbusHandler` (``url``,
    ``facility``, ``app``, ``host``, ``policy``, ``buffer_size``, ``block_timeout``,
    ``flush_timeout``, ``topology``, ``settings``) or a ``shipper`` to share.
    :meth:`close` flushes (it also runs at interpreter exit).
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
        shipper: Shipper | None = None,
        spool: str | os.PathLike[str] | None = None,
    ) -> None:
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

    @property
    def dropped(self) -> int:
        """Events dropped by the policy or left unsent at close."""
        return self.shipper.dropped

    @property
    def sent(self) -> int:
        """Records the broker confirmed."""
        return self.shipper.sent

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """Buffer the event, return ``event_dict`` untouched (see the module docs)."""
        if not is_own(str(event_dict.get("logger", "")), threading.current_thread().name):
            self.shipper.put(self.event(method_name, event_dict))
        return event_dict

    def event(self, method_name: str, event_dict: MutableMapping[str, Any]) -> Event:
        """What one structlog event becomes; no I/O, never raises on odd values."""
        message = event_dict.get("event", "")
        fields = {
            key if isinstance(key, str) else repr(key): json_safe(value)
            for key, value in event_dict.items()
            if key not in _TAKEN
        }
        exc_info = event_dict.get("exc_info")
        if exc_info:
            text = exception_text(exc_info)
            if text:
                fields["exception"] = text
        if event_dict.get("stack_info"):
            fields["stack"] = "".join(traceback.format_stack()[:-1]).rstrip("\n")
        return Event(
            severity_for_method(event_dict.get("level", method_name)),
            message if isinstance(message, str) else str(json_safe(message)),
            time.time(),
            fields,
            os.getpid(),
        )

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until what was logged is confirmed (default: up to ``flush_timeout``)."""
        return self.shipper.flush(timeout)

    def close(self) -> None:
        """Send what is buffered within ``flush_timeout`` and stop; idempotent."""
        self.shipper.close()
