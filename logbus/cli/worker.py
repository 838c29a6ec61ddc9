"""``logbus worker``: consume a durable work queue into a sink until told to stop."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from logbus.cli.common import ConfigOption, UrlOption, fail, make_settings, quiet_connect

if TYPE_CHECKING:
    from logbus.topology import Topology
    from logbus.transports.base import Transport

__all__ = ["EPILOG", "register", "worker"]

EPILOG = """Examples:

\b
  logbus worker                  # the topology's work queue, to the console
  logbus worker --sink jsonl:/var/log/logbus.jsonl --concurrency 4
  logbus worker --queue logbus.tasks --prefetch 1   # strictly fair, slow sink

SIGTERM or Ctrl-C stops taking records, finishes and acks those in hand, and
exits 0; a second one quits at once (the broker requeues what was not acked).
Sinks: console, jsonl:PATH.
"""

USAGE = 2


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
            "per thread (at least 10). Low keeps competing workers fair.",
            show_default=False,
        ),
    ] = None,
    concurrency: Annotated[
        int,
        typer.Option(min=1, max=1024, help="Threads handing records to the sink in parallel."),
    ] = 1,
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
    from logbus.settings import redact_url
    from logbus.sinks import load_sink
    from logbus.topology import declare
    from logbus.transports import connect
    from logbus.worker import Worker

    settings = make_settings(url, config)
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
            chosen,
            prefetch=prefetch,
            concurrency=concurrency,
            settings=settings,
        )
        with _stop_on_signals(runner.stop):
            runner.start()
            threads = f"{concurrency} thread{'s' if concurrency != 1 else ''}"
            typer.echo(
                f"logbus worker: consuming {name} (prefetch {runner.prefetch}, {threads}) "
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
