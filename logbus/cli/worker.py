"""``logbus worker``: consume a durable work queue into a sink until told to stop.

``--pool gevent`` monkey-patches the process, and patching must come before
the modules it patches are used — before the transports, the sinks and the
worker are imported, and before any socket or thread exists. So it is the
first thing :func:`worker` does, and everything else this module needs is
imported inside the function, after it. (By then the command line has
imported only typer, logging and the standard library's threading, which
gevent patches in place.) No other pool, and no other command, patches.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from enum import StrEnum
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from logbus.cli.common import ConfigOption, UrlOption, fail, make_settings, quiet_connect

if TYPE_CHECKING:
    from logbus.topology import Topology
    from logbus.transports.base import Transport

__all__ = ["EPILOG", "PoolChoice", "register", "worker"]

EPILOG = """Examples:

\b
  logbus worker                  # the topology's work queue, to the console
  logbus worker --sink jsonl:/var/log/logbus.jsonl --concurrency 4
  logbus worker --queue logbus.tasks --prefetch 1   # strictly fair, slow sink
  logbus worker --pool process --concurrency 2     # a sink that needs CPU
  logbus worker --pool gevent --concurrency 200    # a sink that waits on I/O

SIGTERM or Ctrl-C stops taking records, finishes and acks those in hand, and
exits 0; a second one quits at once (the broker requeues what was not acked).
Worker processes (--pool process) finish their batch and exit first; one that
dies has its records requeued and is replaced. They share a jsonl file
(appending whole batches). Sinks: console, jsonl:PATH.
"""

USAGE = 2
CONFIG = 78


class PoolChoice(StrEnum):
    """Where records are written: ``--pool``."""

    thread = "thread"
    process = "process"
    gevent = "gevent"


def worker(
    queue: Annotated[
        str | None,
        typer.Option(
            "--queue",
            "-q",
            help="Queue to consume. Default: the one queue the topology declares "
            "(logbus.tasks in the default topology). A queue the topology does not "
            "declare is used as it exists, or declared durable with no arguments.",
            show_default=False,
        ),
    ] = None,
    sink: Annotated[
        str,
        typer.Option("--sink", help="Where records go: console, or jsonl:PATH (appends)."),
    ] = "console",
    prefetch: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="Unacked records this worker may hold. Default: $LOGBUS_PREFETCH, else two "
            "per thread, process or greenlet (at least 10). Low keeps competing workers fair.",
            show_default=False,
        ),
    ] = None,
    concurrency: Annotated[
        int,
        typer.Option(
            min=1,
            max=1024,
            help="Threads, processes or greenlets (see --pool) writing to the sink in parallel.",
        ),
    ] = 1,
    pool: Annotated[
        PoolChoice,
        typer.Option(
            help="thread: threads of this process. process: worker processes, each opening "
            "the sink itself (CPU-bound sinks). gevent: greenlets in this process, "
            "monkey-patched (I/O-bound sinks; needs logbus[gevent]; not with local:// or "
            "process://).",
        ),
    ] = PoolChoice.thread,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Hand every record of a work queue to a sink, acking each once the sink has it.

    Declares the topology first, so the queue exists. Competing workers on one
    queue share its records fairly; a record is acked only after the sink stored
    it, so a worker that dies loses nothing: the broker gives its records to
    another. A record that is not a record (bad JSON) is rejected, and
    dead-lettered if the queue has a dead-letter exchange.
    """
    if pool is PoolChoice.gevent:
        _monkey_patch()  # first: see the module docstring
    from logbus.pools import check_transport
    from logbus.settings import redact_url
    from logbus.sinks import load_sink
    from logbus.topology import declare
    from logbus.transports import connect
    from logbus.worker import Worker, units

    settings = make_settings(url, config)
    check_transport(pool.value, settings.url)  # before connecting: gevent blocks some
    topology = settings.topology()
    name = _pick_queue(topology, queue)
    chosen = load_sink(sink)  # a bad sink fails before anything touches the broker
    with quiet_connect():
        transport = connect(settings.url, settings=settings)
    try:
        declare(transport, topology)
        if name not in {q.name for q in topology.queues}:
            _ensure_queue(transport, name)
        runner = Worker(
            transport,
            name,
            sink if pool is PoolChoice.process else chosen,  # processes open it themselves
            pool=pool.value,
            prefetch=prefetch,
            concurrency=concurrency,
            settings=settings,
        )
        with _stop_on_signals(runner.stop):
            runner.start()
            lanes = f"{concurrency} {units(runner.pool.unit, concurrency)}"
            typer.echo(
                f"logbus worker: consuming {name} (prefetch {runner.prefetch}, {lanes}) "
                f"→ {redact_url(sink)}",
                err=True,
            )
            summary = runner.wait()
    finally:
        transport.close()
    typer.echo(f"logbus worker: stopped: {summary}", err=True)


def register(app: typer.Typer) -> None:
    """Add ``logbus worker`` to the app."""
    app.command("worker", epilog=EPILOG)(worker)


def _monkey_patch() -> None:
    """Make this process cooperative for the gevent pool (threads become greenlets)."""
    try:
        from gevent import monkey
    except ImportError:
        raise fail("--pool gevent needs gevent: pip install 'logbus[gevent]'", CONFIG) from None
    monkey.patch_all()


def _pick_queue(topology: Topology, queue: str | None) -> str:
    if queue is not None:
        if not queue or len(queue.encode()) > 255:
            raise fail("--queue must be a name of 1 to 255 bytes", USAGE)
        return queue
    shared = [q.name for q in topology.queues if not q.exclusive]
    if len(shared) == 1:
        return shared[0]
    listed = f" ({', '.join(shared)})" if shared else ""
    raise fail(
        f"the topology declares {len(shared)} shared queues{listed}; name one with --queue",
        USAGE,
    )


def _ensure_queue(transport: Transport, name: str) -> None:
    """Use the queue as it exists (whatever its arguments), else declare it durable."""
    from logbus.errors import NotFound

    try:
        transport.declare_queue(name, passive=True)
    except NotFound:
        transport.declare_queue(name, durable=True)


@contextlib.contextmanager
def _stop_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """SIGTERM and SIGINT call ``stop``; a second one gets the default behaviour back."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers (e.g. an embedding test runner)
        return
    defaults: dict[int, Any] = {
        signal.SIGINT: signal.default_int_handler,
        signal.SIGTERM: signal.SIG_DFL,
    }

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop()
        for number, default in defaults.items():
            signal.signal(number, default)

    previous = {number: signal.signal(number, handler) for number in defaults}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)
