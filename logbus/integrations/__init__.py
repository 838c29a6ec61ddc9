"""Applications into logbus: a ``logging.Handler`` and a structlog processor.

Both put an event into a bounded buffer and return; one listener thread per
handler publishes through :class:`~logbus.emitter.Emitter` (confirmed, reconnecting
by itself). When the broker is away the policy decides: ``"drop"`` (count it in
``dropped``, never wait) or ``"block"`` (the caller waits, up to ``block_timeout``).
``close()`` (and interpreter exit) sends what is left within ``flush_timeout``.

- :class:`LogbusHandler` (``handler.py``): ``logging``, ``dictConfig`` included;
- :class:`LogbusProcessor` (``structlog_processor.py``): structlog, placed before
  the renderer (it passes the event dict through);
- :func:`severity_for_level`: the severity a ``logging`` level becomes.
"""

from __future__ import annotations

from logbus.integrations._fields import severity_for_level
from logbus.integrations._shipper import Shipper
from logbus.integrations.handler import LogbusHandler
from logbus.integrations.structlog_processor import LogbusProcessor, severity_for_method

__all__ = [
    "LogbusHandler",
    "LogbusProcessor",
    "Shipper",
    "severity_for_level",
    "severity_for_method",
]
