"""Loggers for logbus's own events: structlog key-value events through stdlib logging.

A library must not print on its own: events go to the standard ``logging``
logger of the same name (``logbus.transports.amqp`` ...), so they follow
whatever the application configured — and, unconfigured, only warnings and
errors reach stderr. Nothing here configures structlog globally.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

__all__ = ["get_logger"]

_PROCESSORS: list[Any] = [
    structlog.stdlib.filter_by_level,  # drop disabled levels before any rendering
    structlog.processors.format_exc_info,
    structlog.processors.KeyValueRenderer(key_order=["event"], sort_keys=False),
]


def get_logger(name: str) -> Any:
    """A structlog logger for ``name`` that renders ``event key=value`` lines into stdlib."""
    return structlog.wrap_logger(
        logging.getLogger(name),
        processors=_PROCESSORS,
        wrapper_class=structlog.stdlib.BoundLogger,
    )
