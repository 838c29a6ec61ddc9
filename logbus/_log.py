"""Loggers for logbus's own events: structlog key-value events through stdlib logging.

A library must not print on its own: events go to the standard ``logging``
logger of the same name (``logbus.transports.amqp`` ...), so they follow
whatever the application configured — and, unconfigured, only warnings and
errors reach stderr. Nothing here configures structlog globally.

structlog itself is imported the first time an event is actually emitted at an
enabled level: a command that logs nothing (the usual ``logbus emit``) does not
pay for importing it.

*Repeated events* (one per record, one per reconnect attempt) go through a
:class:`Repeats`: the first event of a kind in a window (10 s) is logged whole,
the others of that window are counted, and when the window ends one more line
says how many there were (``more=15467 summary='and 15,467 more like this in
the last 10 s'``). A flood becomes a line per kind per window; nothing is
silenced entirely.

:func:`log_json_lines` switches the root handlers to one JSON object per event
(``--log-format json`` of ``logbus worker`` and the services, for log shippers).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import threading
import time
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["REPEAT_WINDOW", "JsonLines", "Repeats", "get_logger", "log_json_lines"]

#: Seconds in which repeats of an event are counted rather than logged.
REPEAT_WINDOW = 10.0


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


@dataclass
class _Window:
    """One kind of event: when its window opened, how many repeats it has held back."""

    opened: float
    level: str
    fields: dict[str, Any]
    more: int = 0
    keys: dict[str, Any] = field(default_factory=dict)


class Repeats:
    """Logs the first event of a kind per ``window`` seconds and summarises the rest.

    A kind is the event's name plus ``key`` (e.g. the queue and the error's type):
    ``repeats.warning("worker.sink_failed", key=(queue, "OSError"), queue=queue, ...)``.
    The first one of a window is logged whole; the others are counted, and once the
    window has passed (seen by the next event, by a timer, by :meth:`flush` or at
    exit) one line with the same event name says how many more there were:
    ``more=N seconds=S summary='and N more like this in the last S s'``, with the
    fields of the last one held back. Safe from any thread.
    """

    def __init__(
        self,
        log: _LazyLogger,
        window: float = REPEAT_WINDOW,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, Hashable], _Window] = {}
        self._timer: threading.Timer | None = None
        _ALL.add(self)

    def warning(self, event: str, *, key: Hashable = (), **kw: Any) -> None:
        """A warning event, summarised with the others of its kind."""
        self._event("warning", event, key, kw)

    def info(self, event: str, *, key: Hashable = (), **kw: Any) -> None:
        """An info event, summarised with the others of its kind."""
        self._event("info", event, key, kw)

    def flush(self) -> None:
        """Say now how many repeats every open window held back, and close them."""
        with self._lock:
            done = [(event, w) for (event, _), w in self._windows.items() if w.more]
            self._windows.clear()
        self._say(done)

    def _event(self, level: str, event: str, key: Hashable, kw: dict[str, Any]) -> None:
        now = self._clock()
        with self._lock:
            expired = self._expire(now)
            window = self._windows.get((event, key))
            if window is None:
                self._windows[(event, key)] = _Window(now, level, kw)
            else:
                window.more += 1
                window.fields = kw
                self._arm(window.opened + self.window - now)
        self._say(expired)
        if window is None:
            getattr(self.log, level)(event, **kw)

    def _expire(self, now: float) -> list[tuple[str, _Window]]:
        """Close the windows that have passed (the lock is held); those with repeats."""
        passed = [k for k, w in self._windows.items() if now - w.opened >= self.window]
        done = [(k[0], self._windows.pop(k)) for k in passed]
        return [(event, w) for event, w in done if w.more]

    def _arm(self, delay: float) -> None:
        # One timer at a time: it closes what has passed and arms itself again if needed.
        if self._timer is None or not self._timer.is_alive():
            self._timer = threading.Timer(max(0.0, delay), self._tick)
            self._timer.daemon = True
            self._timer.start()

    def _tick(self) -> None:
        now = self._clock()
        with self._lock:
            self._timer = None
            expired = self._expire(now)
            pending = [w.opened + self.window - now for w in self._windows.values() if w.more]
            if pending:
                self._arm(min(pending))
        self._say(expired)

    def _say(self, done: list[tuple[str, _Window]]) -> None:
        for event, window in done:
            seconds = round(min(self.window, self._clock() - window.opened), 1)
            getattr(self.log, window.level)(
                event,
                **window.fields,
                more=window.more,
                seconds=seconds,
                summary=f"and {window.more:,} more like this in the last {seconds:g} s",
            )


_ALL: weakref.WeakSet[Repeats] = weakref.WeakSet()


@atexit.register
def _flush_all() -> None:
    """At exit (before logging shuts down: atexit runs last-in first-out), say what is held."""
    for repeats in list(_ALL):
        with contextlib.suppress(Exception):  # at exit, a closed stream is not worth a traceback
            repeats.flush()


class JsonLines(logging.Formatter):
    """One JSON object per event: time, level, logger, then the event's own keys."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, object] = {
            "ts": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        event = getattr(record, "logbus_event", None)  # logbus's events carry their keys
        if isinstance(event, dict):
            line.update(event)
        else:  # a driver's or the standard library's message
            line["event"] = record.getMessage()
            if record.exc_info:
                line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def log_json_lines() -> None:
    """Write logbus's events (info and up) to stderr as JSON lines, not text."""
    root = logging.getLogger()
    for handler in root.handlers:
        handler.setFormatter(JsonLines())
    logbus = logging.getLogger("logbus")
    if logbus.getEffectiveLevel() > logging.INFO:  # --debug keeps its debug events
        logbus.setLevel(logging.INFO)
