"""Worker pools: where a :class:`~logbus.worker.Worker` decodes its records and writes them.

The worker's consuming thread takes every delivery and its threads settle every
one; a pool only supplies ``concurrency`` *lanes*, each turning a batch of
deliveries into one :data:`Result` per delivery. ``thread``: the lanes write to
one sink from threads. ``gevent``: the same lanes, run as greenlets.
``process``: each lane hands its batches to a worker process of its own
(:mod:`logbus.worker.processes`); :mod:`logbus.worker.lanes` has what they share.

*Greenlets.* :class:`GeventPool` never monkey-patches: only the program's entry
point can patch early enough (``logbus worker --pool gevent`` does, first
thing). Patched, ``threading`` makes greenlets and ``queue`` waits
cooperatively, so the lanes are greenlets without this module importing
gevent; unpatched, opening the pool raises :class:`ConfigError`. ``local://``
and ``process://`` block a patched process (multiprocessing connections are
not cooperative): :func:`check_transport` refuses them for the gevent pool.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from logbus.errors import ConfigError
from logbus.sinks import Sink, load_sink
from logbus.transports import scheme_of, transport_class
from logbus.transports.base import capabilities_of

if TYPE_CHECKING:
    from logbus.transports.base import Delivery

from logbus.worker.lanes import (
    POOL_KINDS,
    Lane,
    Pool,
    PoolKind,
    Result,
    handle_batch,
)
from logbus.worker.processes import ProcessPool
from logbus.worker.summary import units

__all__ = [
    "MAX_CONCURRENCY",
    "GeventPool",
    "ProcessPool",
    "ThreadPool",
    "check_concurrency",
    "check_transport",
    "gevent_patched",
    "make_pool",
]

#: More threads (processes, greenlets) than this is a configuration mistake, not a deployment.
MAX_CONCURRENCY = 1024
# What must be patched for greenlets to stand in for threads, and waits to be cooperative.
_PATCHED = ("threading", "queue", "socket", "time")

# -- threads and greenlets ----------------------------------------------------------------


class _SinkLane:
    """A lane that writes to a sink of this process; shared by every thread, stateless."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink

    def handle(self, deliveries: Sequence[Delivery]) -> list[Result]:
        return handle_batch(self._sink, [delivery.message for delivery in deliveries])

    def close(self) -> None:
        """Nothing of its own: the pool closes the shared sink."""


class ThreadPool:
    """``concurrency`` threads of this process writing to one sink (safe for threads).

    ``sink`` is a sink or its spec (``jsonl:PATH``); the pool opens it on
    :meth:`open` and closes it on :meth:`close`.
    """

    kind: PoolKind = "thread"
    unit = "thread"

    def __init__(self, sink: Sink | str) -> None:
        self.sink = load_sink(sink) if isinstance(sink, str) else sink
        self.replaced = 0

    def open(self, concurrency: int, name: str) -> list[Lane]:
        """Open the sink; every lane writes to it."""
        self.sink.open()
        lanes: list[Lane] = [_SinkLane(self.sink)] * concurrency
        return lanes

    def close(self) -> None:
        """Close the sink."""
        self.sink.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} sink={self.sink!r}>"


def gevent_patched() -> bool:
    """Whether gevent has monkey-patched this process (looked up, never imported here)."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None:
        return False
    return all(monkey.is_module_patched(name) for name in _PATCHED)


class GeventPool(ThreadPool):
    """``concurrency`` greenlets writing to one sink, in a monkey-patched process.

    The lanes are the thread pool's, which patched ``threading`` runs as
    greenlets: a sink waiting on a socket (or ``time.sleep``) lets the others
    run. The process must have been patched first thing (``logbus worker
    --pool gevent`` does): :meth:`open` raises :class:`ConfigError` otherwise.
    """

    kind: PoolKind = "gevent"
    unit = "greenlet"

    def open(self, concurrency: int, name: str) -> list[Lane]:
        """Check that the process is monkey-patched, then open the sink."""
        if not gevent_patched():
            raise ConfigError(
                "the gevent pool needs a monkey-patched process: call "
                "gevent.monkey.patch_all() first thing in the program, before importing "
                "logbus (logbus worker --pool gevent does), or use the thread pool"
            )
        return super().open(concurrency, name)


def check_concurrency(concurrency: int, unit: str) -> None:
    """Raise ``ConfigError`` unless ``concurrency`` (threads, processes, greenlets: ``unit``)
    is 1..``MAX_CONCURRENCY``."""
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ConfigError(
            f"concurrency must be 1..{MAX_CONCURRENCY} {units(unit, 2)}, not {concurrency}"
        )


def check_transport(kind: str, url: str) -> None:
    """Raise ``ConfigError`` if pool ``kind`` cannot work with the transport for ``url``.

    Asked of the transport's declared capabilities, never of its scheme: the
    gevent pool needs a transport whose I/O yields in a patched process.
    """
    if kind != "gevent" or capabilities_of(transport_class(url)).cooperative:
        return
    raise ConfigError(
        f"the gevent pool cannot use {scheme_of(url)}://: its connections block a "
        "monkey-patched process; use memory://, gevent:// or amqp://, or another pool"
    )


def make_pool(kind: str, sink: Sink | str) -> Pool:
    """The pool called ``kind`` (thread, process or gevent) for ``sink`` (an object or spec)."""
    if kind == "thread":
        return ThreadPool(sink)
    if kind == "gevent":
        return GeventPool(sink)
    if kind == "process":
        return ProcessPool(sink)
    raise ConfigError(f"unknown pool {kind!r}; use one of: {', '.join(POOL_KINDS)}")
