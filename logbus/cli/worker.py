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

from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from logbus._log import log_json_lines
from logbus.cli.common import ConfigOption, UrlOption, fail, make_settings, quiet_connect

if TYPE_CHECKING:
    from logbus.topology import Queue, QueueType, Topology
    from logbus.worker.retry import RetryPolicy

__all__ = [
    "EPILOG",
    "LogFormat",
    "PoolChoice",
    "QueueTypeChoice",
    "register",
    "stopping_reporter",
    "worker",
]

EPILOG = """Examples:

\b
  logbus worker                  # the topology's work queue, to the console
  logbus worker --sink jsonl:/var/log/logbus.jsonl --concurrency 4
  logbus worker --sink 'jsonl:/var/log/logbus/{facility}.jsonl?rotate=daily&fsync=batch'
  logbus worker --sink sqlite:/var/lib/logbus/archive.db     # then: logbus query
  logbus worker --sink postgres:postgresql://logbus@db1/logs  # logbus[postgres]
  logbus worker --sink webhook:https://hooks.example.com/alerts
  logbus worker --queue logbus.tasks --prefetch 1   # strictly fair, slow sink
  logbus worker --queue task_queue --queue-type quorum --prefetch 1   # the tutorials'
  logbus worker --pool process --concurrency 2     # a sink that needs CPU
  logbus worker --pool gevent --concurrency 200    # a sink that waits on I/O
  logbus worker --max-attempts 8 --retry-delay 500ms --retry-max-delay 1m
  logbus worker --no-retry       # a failed record goes to <queue>.dead at once
  logbus worker --metrics-port 9108 --log-format json   # /metrics, /healthz

A record the sink fails to store recoverably waits in <queue>.retry.<ms>
(a delay queue the broker empties back into <queue>) and is tried again,
up to --max-attempts; then, or at once if the failure is not recoverable, it
goes to <queue>.dead with the reason, its attempt history and the body exactly
as it was published (see logbus dlq). Every body is a record: plain text, other
JSON and bytes that are not UTF-8 included (README, "Semantics"). The worker declares these queues.

SIGTERM or Ctrl-C stops taking records, returns the prefetched ones to the
queue, finishes and acks those in hand, saying so on stderr, and exits 0
within --shutdown-timeout (what the sink has not finished by then goes back
to the queue too); a second one quits at once (the broker requeues what was
not acked: nothing is lost either way).
Worker processes (--pool process) finish their batch and exit first; one that
dies has its records requeued and is replaced. They share a jsonl file
(appending whole batches).

Sinks: console, jsonl:PATH, sqlite:PATH, postgres:URL, webhook:URL, and any
installed plugin (the logbus.sinks entry point group); options follow a '?'
(e.g. ?max_batch=500&max_wait=0.1). The sqlite, postgres and jsonl sinks skip a
record they already hold (by its id), so a batch redelivered after a crash is
stored once.
"""

USAGE = 2
CONFIG = 78


class LogFormat(StrEnum):
    """How the worker's own events are written on stderr: ``--log-format``."""

    console = "console"
    json = "json"


class QueueTypeChoice(StrEnum):
    """The type to create an absent queue with: ``--queue-type``."""

    classic = "classic"
    quorum = "quorum"
    stream = "stream"


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
            help="Queue to consume. Default: the one work queue (not a stream) the topology "
            "declares (logbus.tasks in the default topology). A queue that exists is used as it "
            "is, whoever declared it and with whatever type and arguments; an absent one "
            "is created as the topology declares it, else durable with --queue-type.",
            show_default=False,
        ),
    ] = None,
    queue_type: Annotated[
        QueueTypeChoice | None,
        typer.Option(
            "--queue-type",
            help="Type to create an absent --queue with when the topology does not declare "
            "it: classic (the default), quorum (replicated, as the current RabbitMQ "
            "tutorials declare task_queue) or stream. A queue that exists keeps its type.",
            show_default=False,
        ),
    ] = None,
    sink: Annotated[
        str,
        typer.Option(
            "--sink",
            help="Where records go: console, jsonl:PATH, sqlite:PATH, postgres:URL, "
            "webhook:URL or a plugin's NAME[:ARG], with options after '?'.",
        ),
    ] = "console",
    prefetch: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="Unacked records this worker may hold. Default: $LOGBUS_PREFETCH, else two "
            "per thread, process or greenlet (at least 2000), or two of the sink's batches each "
            "if it waits to fill them (its max_wait). A stuck worker holds this many; lower "
            "keeps competing workers fairer (1: the tutorial's fair dispatch).",
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
    max_attempts: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=1000,
            help="Attempts to store a record before it goes to <queue>.dead (1: no "
            "retries). Default: 5.",
            show_default=False,
        ),
    ] = None,
    retry_delay: Annotated[
        str,
        typer.Option(
            metavar="DURATION",
            help="Wait before the second attempt: 500ms, 2s, 1m (a number alone is seconds).",
        ),
    ] = "1s",
    retry_backoff: Annotated[
        float,
        typer.Option(min=1.0, help="Each later wait is the previous one times this."),
    ] = 2.0,
    retry_max_delay: Annotated[
        str,
        typer.Option(metavar="DURATION", help="The longest wait between attempts."),
    ] = "5m",
    no_retry: Annotated[
        bool,
        typer.Option(
            "--no-retry",
            help="Never retry: a failed record goes to <queue>.dead at once (--max-attempts 1).",
        ),
    ] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            metavar="PORT",
            min=0,
            max=65535,
            help="Serve Prometheus metrics on http://HOST:PORT/metrics and health on "
            "/healthz (200 while consuming, else 503). Default: not served.",
            show_default=False,
        ),
    ] = None,
    metrics_host: Annotated[
        str,
        typer.Option(
            metavar="HOST",
            help="Address for --metrics-port; 0.0.0.0 (or ::) lets other machines scrape.",
        ),
    ] = "127.0.0.1",
    log_format: Annotated[
        LogFormat,
        typer.Option(
            help="console: warnings and errors as text lines. json: every event of the "
            "worker, info and up, one JSON object per line on stderr (for log shippers).",
        ),
    ] = LogFormat.console,
    shutdown_timeout: Annotated[
        str,
        typer.Option(
            metavar="DURATION",
            help="On SIGTERM or Ctrl-C, how long to wait for the sink to finish the records "
            "in hand; then they go back to the queue and the worker exits 0. Keep it under "
            "the time your supervisor allows (Kubernetes: 30s).",
        ),
    ] = "20s",
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Hand every record of a work queue to a sink, acking each once the sink has it.

    Declares the topology first, so the queue exists, and the queue's delay and
    dead-letter queues. Competing workers on one queue share its records fairly;
    a record is acked only after the sink stored it (or after it was safely
    handed to a delay or dead-letter queue), so a worker that dies loses
    nothing: the broker gives its records to another.
    """
    if pool is PoolChoice.gevent:
        _monkey_patch()  # first: see the module docstring
    if log_format is LogFormat.json:
        log_json_lines()
    from logbus.settings import redact_url
    from logbus.sinks import load_sink
    from logbus.worker import Worker, units
    from logbus.worker.assembly import WorkerPlan, run

    policy = _retry_policy(max_attempts, retry_delay, retry_backoff, retry_max_delay, no_retry)
    bound = _shutdown_timeout(shutdown_timeout)
    settings = make_settings(url, config)
    topology = settings.topology()
    name = _pick_queue(topology, queue)
    kind = _queue_type(topology, name, queue_type)
    chosen = load_sink(sink)  # a bad sink fails before anything touches the broker
    plan = WorkerPlan(
        settings,
        topology,
        name,
        sink if pool is PoolChoice.process else chosen,  # processes open it themselves
        pool=pool.value,
        prefetch=prefetch,
        concurrency=concurrency,
        retry=policy,
        shutdown_timeout=bound,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        metrics_label=sink,
        queue_type=kind,
    )
    console = log_format is LogFormat.console

    def started(runner: Worker, metrics_url: str | None) -> None:
        if console:
            lanes = f"{concurrency} {units(runner.pool.unit, concurrency)}"
            served = f"; metrics on {metrics_url}metrics" if metrics_url else ""
            typer.echo(
                f"logbus worker: consuming {name} (prefetch {runner.prefetch}, {lanes}) "
                f"→ {redact_url(sink)}; retries: {policy}{served}",
                err=True,
            )

    summary = run(
        plan,
        on_started=started,
        report=stopping_reporter("logbus worker") if console else None,
        connecting=quiet_connect,
    )
    if console:
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


def _shutdown_timeout(text: str) -> float:
    """``--shutdown-timeout`` in seconds; a usage error if it is not a duration."""
    from logbus.durations import parse_duration
    from logbus.errors import InputError

    try:
        return parse_duration(text, what="--shutdown-timeout")
    except InputError as exc:
        raise fail(str(exc), USAGE) from None


def stopping_reporter(prog: str) -> Callable[[str], None]:
    """Prints what a stopping worker does on stderr; the first line says how to hurry it."""
    told: list[str] = []

    def report(text: str) -> None:
        hint = "" if told else "; Ctrl-C again to stop now"
        told.append(text)
        typer.echo(f"{prog}: {text}{hint}", err=True)

    return report


def _retry_policy(
    max_attempts: int | None, delay: str, backoff: float, max_delay: str, no_retry: bool
) -> RetryPolicy:
    """The policy the retry options describe; a usage error if they make none."""
    from logbus.durations import parse_duration
    from logbus.errors import ConfigError, InputError
    from logbus.worker.retry import RetryPolicy

    if no_retry:
        if max_attempts not in (None, 1):
            raise fail(f"--no-retry and --max-attempts {max_attempts} contradict; give one", USAGE)
        return RetryPolicy.never()
    try:
        first = parse_duration(delay, what="--retry-delay")
        longest = parse_duration(max_delay, what="--retry-max-delay")
        if max_attempts is None:  # the policy's default
            return RetryPolicy(delay=first, backoff=backoff, max_delay=longest)
        return RetryPolicy(max_attempts, first, backoff, longest)
    except (InputError, ConfigError) as exc:
        raise fail(str(exc), USAGE) from None


def _queue_type(topology: Topology, name: str, chosen: QueueTypeChoice | None) -> QueueType | None:
    """``--queue-type``, unless the topology declares queue ``name`` with another type."""
    if chosen is None:
        return None
    declared = {q.name: q for q in topology.queues}.get(name)
    if declared is not None:
        has = declared.all_arguments().get("x-queue-type", "classic")
        if has != chosen.value:
            raise fail(
                f"--queue-type {chosen.value}: the topology declares queue {name!r} as {has}; "
                "drop --queue-type, or change the topology",
                USAGE,
            )
    return chosen.value


def _stream(queue: Queue) -> bool:
    return queue.all_arguments().get("x-queue-type") == "stream"


def _pick_queue(topology: Topology, queue: str | None) -> str:
    if queue is not None:
        if not queue or len(queue.encode()) > 255:
            raise fail("--queue must be a name of 1 to 255 bytes", USAGE)
        return queue
    # A stream (the history) is read by offset, not worked off: never the default work queue.
    shared = [q.name for q in topology.queues if not q.exclusive and not _stream(q)]
    if len(shared) == 1:
        return shared[0]
    listed = f" ({', '.join(shared)})" if shared else ""
    raise fail(
        f"the topology declares {len(shared)} shared queues{listed}; name one with --queue",
        USAGE,
    )
