"""What an application's log event becomes in a record: severity, fields, JSON-safe values.

Shared by the ``logging`` handler and the structlog processor, so that a
``logger.error(...)`` and a ``log.error(...)`` become the same record. Nothing
here does I/O or touches the queue: these run on the application's thread,
and they must be cheap and must never raise on odd values.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import traceback
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from logbus.record import Severity

__all__ = [
    "STANDARD_ATTRIBUTES",
    "app_name",
    "exception_text",
    "is_own",
    "json_safe",
    "severity_for_level",
]

# logging's levels and the severity each stands for; a custom level takes the nearest.
_ANCHORS: tuple[tuple[int, Severity], ...] = (
    (logging.DEBUG, Severity.DEBUG),
    (logging.INFO, Severity.INFO),
    (logging.WARNING, Severity.WARNING),
    (logging.ERROR, Severity.ERROR),
    (logging.CRITICAL, Severity.CRITICAL),
)
_EXACT = dict(_ANCHORS)

#: Every attribute a ``logging.LogRecord`` has of its own; anything else on a record
#: came from ``extra=`` (or a filter) and becomes a field.
STANDARD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("n", logging.INFO, "p", 1, "m", None, None, "f", "s"))
) | {"message", "asctime", "taskName"}

# Nesting kept before the rest of a value is shown as its repr (records allow 100).
_MAX_DEPTH = 20


def severity_for_level(level: int) -> Severity:
    """The severity of a ``logging`` level: the five standard ones map one to one
    (``ERROR`` -> ``error``, ``CRITICAL`` -> ``critical``); a custom level takes the
    nearest of them, the more severe on a tie, so that nothing is under-reported."""
    exact = _EXACT.get(level)
    if exact is not None:
        return exact
    best_level, best = _ANCHORS[0]
    for anchor, severity in _ANCHORS:
        if abs(level - anchor) <= abs(level - best_level):
            best_level, best = anchor, severity
    return best


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON data a record accepts: containers rebuilt with ``str`` keys,
    anything else (objects, bytes, NaN, sets) as its ``repr``. Never raises: a log
    call must not fail because of what it was asked to carry."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if depth >= _MAX_DEPTH:
        return _repr(value)
    if isinstance(value, Mapping):
        try:
            return {_key(k): json_safe(v, depth + 1) for k, v in value.items()}
        except Exception:  # a mapping whose items() misbehaves
            return _repr(value)
    if isinstance(value, list | tuple):
        return [json_safe(v, depth + 1) for v in value]
    return _repr(value)


def _key(key: object) -> str:
    return key if isinstance(key, str) else _repr(key)


def _repr(value: object) -> str:
    try:
        return repr(value)
    except Exception as exc:  # a __repr__ that raises still leaves a trace
        return f"<{type(value).__name__} whose repr failed: {type(exc).__name__}>"


ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def exception_text(exc_info: object) -> str | None:
    """The formatted traceback of ``exc_info`` as ``logging`` prints it: a
    ``(type, value, tb)`` tuple, an exception, or ``True`` for the one being handled."""
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if not isinstance(exc_info, tuple) or len(exc_info) != 3 or exc_info[1] is None:
        return None
    try:
        return "".join(traceback.format_exception(*exc_info)).rstrip("\n")
    except Exception:
        return _repr(exc_info[1])


def app_name() -> str:
    """The default ``app`` of a record: the running program's name (``worker`` for
    ``python worker.py``, the package for ``python -m pkg``), else ``python``."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        name = str(spec.name).removesuffix(".__main__")
    else:
        argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
        name = os.path.splitext(os.path.basename(argv0))[0]
    return name or "python"


# Loggers of logbus and of the AMQP clients it publishes through, and the threads that
# publish: what they log while the broker is away must not wait for the broker.
_OWN_LOGGERS = frozenset({"logbus", "pika", "aio_pika", "aiormq"})
_OWN_THREADS = ("logbus-amqp", "logbus-shipper")


def is_own(logger_name: str, thread_name: str | None) -> bool:
    """Whether an event comes from logbus's own publishing path, and so must not be
    shipped: pika logs on its I/O thread while connecting, and a handler that made
    that thread wait for room in its own buffer would wait for ever."""
    if logger_name.partition(".")[0] in _OWN_LOGGERS:
        return True
    return thread_name is not None and thread_name.startswith(_OWN_THREADS)
