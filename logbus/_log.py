"""Loggers for logbus's own events: structlog key-value events through stdlib logging.

A library must not print on its own: events go to the standard ``logging``
logger of the same name (``logbus.transports.amqp`` ...), so they follow
whatever the application configured — and, unconfigured, only warnings and
errors reach stderr. Nothing here configures structlog globally.

structlog itself is imported the first time an event is actually emitted at an
enabled level: a command that logs nothing (the usual ``logbus emit``) does not
pay for importing it.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["get_logger"]


class _LazyLogger:
    """``log.info("event", key=value)``: checks the level, then renders with structlog."""

    __slots__ = ("_bound", "_logger")

    def __init__(self, name: str) -> None:
        self._logger = logging.getLogger(name)
        self._bound: Any = None

    def _emit(self, level: int, method: str, event: str, kw: dict[str, Any]) -> None:
        if not self._logger.isEnabledFor(level):
            return
        if self._bound is None:
            import structlog

            render = structlog.processors.KeyValueRenderer(key_order=["event"])

            def text_and_event(logger: Any, name: str, event: Any) -> Any:
                # The message is key=value text; the event itself rides along on the
                # LogRecord as `logbus_event`, for a handler that writes JSON lines.
                fields = dict(event)  # before rendering, which takes `event` out
                return (render(logger, name, event),), {"extra": {"logbus_event": fields}}

            self._bound = structlog.wrap_logger(
                self._logger,
                processors=[structlog.processors.format_exc_info, text_and_event],
                wrapper_class=structlog.stdlib.BoundLogger,
            )
        getattr(self._bound, method)(event, **kw)

    def debug(self, event: str, **kw: Any) -> None:
        """Log a debug event."""
        self._emit(logging.DEBUG, "debug", event, kw)

    def info(self, event: str, **kw: Any) -> None:
        """Log an info event."""
        self._emit(logging.INFO, "info", event, kw)

    def warning(self, event: str, **kw: Any) -> None:
        """Log a warning event."""
        self._emit(logging.WARNING, "warning", event, kw)

    def error(self, event: str, **kw: Any) -> None:
        """Log an error event."""
        self._emit(logging.ERROR, "error", event, kw)

    def exception(self, event: str, **kw: Any) -> None:
        """Log an error event with the current exception's traceback."""
        kw.setdefault("exc_info", True)
        self._emit(logging.ERROR, "error", event, kw)


def get_logger(name: str) -> _LazyLogger:
    """A logger for ``name`` that renders ``event='...' key=value`` lines into stdlib."""
    return _LazyLogger(name)
