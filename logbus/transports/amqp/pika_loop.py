"""What everything on the pika transport's I/O thread shares, below the core that runs it.

The channel owners (the declare and get slots, the publisher, each consumer) are
made by the core and call back into it; they see it only as an :class:`IoHost`,
so none of them imports the core (the core imports them). :func:`io_callback`
guards every callback pika calls on that thread.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, Protocol, TypeVar

from logbus._log import get_logger

__all__ = ["IoHost", "io_callback"]

log = get_logger("logbus.transports.amqp")

P = ParamSpec("P")
R = TypeVar("R")


def io_callback(method: Callable[P, R]) -> Callable[P, R | None]:
    """Wrap a callback pika calls: a bug in it is logged, never left to kill the I/O loop."""

    @functools.wraps(method)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R | None:
        try:
            return method(*args, **kwargs)
        except Exception:
            log.exception("amqp.callback_failed", callback=method.__qualname__)
            return None

    return guarded


class IoHost(Protocol):
    """The connection's state as its channel owners read it, on the I/O thread."""

    @property
    def closing(self) -> bool:
        """The transport is closing: fail new work, do not reopen channels."""
        ...

    @property
    def ready(self) -> bool:
        """Connected, and what was declared is declared again: user work may run."""
        ...

    def live_connection(self) -> Any:
        """The connection if it is open (to reopen a channel on), else None."""
        ...
