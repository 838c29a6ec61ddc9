"""Services: a worker, its queue and its sinks, described by one TOML file and run as one process.

A service (``services/archiver``, ``services/alerter``) is a thin composition:
:func:`load_service` reads its file into a :class:`ServiceConfig`, and
:func:`run_service` declares the topology plus the service's own durable queue
and bindings, starts a worker on it (:func:`logbus.worker.assembly.run`) with the configured
pool, retry policy, metrics endpoint and sink(s), and runs until SIGTERM/SIGINT
(stop taking records, finish and ack those in hand, exit 0).

The file::

    [service]
    name = "archiver"
    # url = "amqp://..."            # default: $LOGBUS_URL, else the local RabbitMQ
    # topology = "config/logbus.toml"   # default: $LOGBUS_CONFIG, else the built-in one

    [queue]                         # the service's own durable queue
    name = "logbus.archive"
    exchange = "logbus.topic"       # bound to this exchange ...
    bindings = ["#"]                # ... with these keys
    max_length = 1000000            # optional: also overflow, queue_type

    [worker]                        # optional: pool, concurrency, prefetch, shutdown_timeout
    concurrency = 2
    shutdown_timeout = "20s"        # SIGTERM: what the sink has not finished by then is requeued

    [retry]                         # optional: max_attempts, delay, backoff, max_delay
    max_attempts = 5
    delay = "1s"

    [metrics]                       # optional: Prometheus /metrics and /healthz
    port = 9108                     # host = "127.0.0.1" (loopback unless told otherwise)

    [sink]                          # one sink: `type` plus its options ...
    type = "sqlite"
    path = "/var/lib/logbus/archive.db"
    # [[sinks]] ...                 # ... or several, each record to every one

Every problem is one :class:`~logbus.errors.ConfigError` line naming the file,
the section and the key.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from logbus.errors import ConfigError, InputError, InvalidTopology
from logbus.record import LogRecord

if TYPE_CHECKING:
    from logbus.settings import Settings
    from logbus.sinks import Sink
    from logbus.topology import Topology
    from logbus.worker.summary import WorkerSummary

__all__ = [
    "ServiceConfig",
    "TeeSink",
    "load_service",
    "loads_service",
    "run_service",
    "service_topology",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServiceSection(_Section):
    """``[service]``: the name (for logs and metrics) and where the broker is."""

    name: str = Field(min_length=1)
    url: str | None = None
    topology: Path | None = None


class QueueSection(_Section):
    """``[queue]``: the service's durable queue and what feeds it."""

    name: str = Field(min_length=1, max_length=255)
    exchange: str = "logbus.topic"
    bindings: tuple[str, ...] = ("#",)
    max_length: int | None = Field(default=None, ge=0)
    overflow: Literal["drop-head", "reject-publish", "reject-publish-dlx"] | None = None
    queue_type: Literal["classic", "quorum"] | None = None


class WorkerSection(_Section):
    """``[worker]``: how records are written (see ``logbus worker --help``)."""

    pool: Literal["thread", "process", "gevent"] = "thread"
    concurrency: int = Field(default=1, ge=1, le=1024)
    prefetch: int | None = Field(default=None, ge=1, le=65535)
    shutdown_timeout: str | float = "20s"


class RetrySection(_Section):
    """``[retry]``: how often and how late a failed write is tried again."""

    max_attempts: int = Field(default=5, ge=1)
    delay: str | float = "1s"
    backoff: float = Field(default=2.0, ge=1.0)
    max_delay: str | float = "5m"


class MetricsSection(_Section):
    """``[metrics]``: the Prometheus and health endpoint (off without a port)."""

    port: int | None = Field(default=None, ge=0, le=65535)
    host: str = "127.0.0.1"


class ServiceConfig(_Section):
    """A whole service file, validated; ``source`` is where it was read from."""

    source: str = "<string>"
    service: ServiceSection
    queue: QueueSection
    worker: WorkerSection = WorkerSection()
    retry: RetrySection = RetrySection()
    metrics: MetricsSection = MetricsSection()
    sink: dict[str, Any] | None = None
    sinks: tuple[dict[str, Any], ...] = ()
    #: Sections a service adds for itself (the alerter's ``[alerts]``), kept as read.
    extra: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_way_to_name_sinks(self) -> ServiceConfig:
        if self.sink is not None and self.sinks:
            raise ValueError("write either [sink] or [[sinks]], not both")
        if self.sink is None and not self.sinks:
            raise ValueError("no sink: add a [sink] table with type = ... (e.g. type = 'console')")
        return self

    def sink_tables(self) -> tuple[dict[str, Any], ...]:
        """The sink tables, one or several."""
        return (self.sink,) if self.sink is not None else self.sinks


def load_service(path: str | Path, *, extra_sections: Sequence[str] = ()) -> ServiceConfig:
    """Read and validate a service file; ``extra_sections`` are tables the service owns."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{name}: no such service file (check --config)") from None
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read the service file: {exc.strerror}") from exc
    except UnicodeDecodeError:
        raise ConfigError(f"{name}: not valid UTF-8 (save the file as UTF-8)") from None
    return loads_service(text, source=name, extra_sections=extra_sections)


def loads_service(
    text: str, *, source: str = "<string>", extra_sections: Sequence[str] = ()
) -> ServiceConfig:
    """Parse a service file's text; ``source`` names it in errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from exc
    extra = {key: data.pop(key) for key in extra_sections if key in data}
    try:
        return ServiceConfig.model_validate({**data, "source": source, "extra": extra})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(part) for part in err["loc"] if part != "__root__")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see the service's README)"
        elif err["type"] == "missing":
            msg = "required, but missing"
        prefix = f"{where}: " if where else ""
        raise ConfigError(f"{source}: {prefix}{msg}") from exc


def service_topology(config: ServiceConfig, base: Topology) -> Topology:
    """``base`` plus the service's queue and its bindings (a queue already there is kept)."""
    from logbus.topology import Binding, Queue, Topology

    q = config.queue
    queues = base.queues
    if q.name not in {queue.name for queue in queues}:
        queues = (
            *queues,
            Queue(
                name=q.name,
                max_length=q.max_length,
                overflow=q.overflow,
                queue_type=q.queue_type,
            ),
        )
    have = {(b.source, b.destination, b.routing_key) for b in base.bindings}
    added = tuple(
        Binding(source=q.exchange, destination=q.name, routing_key=key)
        for key in dict.fromkeys(q.bindings)
        if (q.exchange, q.name, key) not in have
    )
    try:
        return Topology(
            exchanges=base.exchanges,
            queues=queues,
            bindings=(*base.bindings, *added),
            emit=base.emit,
        )
    except InvalidTopology as exc:
        raise ConfigError(f"{config.source}: [queue] does not fit the topology: {exc}") from exc


class TeeSink:
    """Writes every record to each of several sinks; stored when all of them stored it.

    Each sink settles a record on its own: a record one sink refused is answered
    with :class:`~logbus.sinks._partial.PartlyStored` naming the sinks that took
    it, and is retried on the others only (so a console prints an alert once,
    however often the webhook beside it fails). ``names`` (default: each sink's
    position) are what the record's ``x-logbus-stored`` header remembers.
    """

    def __init__(self, sinks: Sequence[Sink], names: Sequence[str] | None = None) -> None:
        if not sinks:
            raise ConfigError("a service needs at least one sink")
        self.sinks = tuple(sinks)
        self.names = tuple(names) if names is not None else tuple(map(str, range(len(sinks))))
        if len(self.names) != len(self.sinks) or len(set(self.names)) != len(self.names):
            raise ConfigError("each sink of a service needs a name of its own")
        self.max_batch = min(int(getattr(s, "max_batch", 100)) for s in self.sinks)
        self.max_wait = max(float(getattr(s, "max_wait", 0.0)) for s in self.sinks)

    def open(self) -> None:
        """Open each sink; those already opened are closed again if a later one fails."""
        opened: list[Sink] = []
        try:
            for sink in self.sinks:
                sink.open()
                opened.append(sink)
        except BaseException:
            for sink in reversed(opened):
                sink.close()
            raise

    def write(self, batch: Sequence[LogRecord]) -> Sequence[Exception | None]:
        """Each sink gets the batch; a record's result is None when every sink stored it."""
        return self.write_rest(batch, [frozenset()] * len(batch))

    def write_rest(
        self, batch: Sequence[LogRecord], stored: Sequence[frozenset[str]]
    ) -> Sequence[Exception | None]:
        """Each sink gets the records it does not have yet (``stored`` names, per record,
        the sinks that do); a record's result is None once every sink has it, else the
        first failure, as :class:`~logbus.sinks._partial.PartlyStored` if some sink has it."""
        from logbus.sinks._partial import PartlyStored

        failures: list[Exception | None] = [None] * len(batch)
        have = [set(names) for names in stored]
        for name, sink in zip(self.names, self.sinks, strict=True):
            todo = [index for index in range(len(batch)) if name not in have[index]]
            if not todo:
                continue
            try:
                outcome: Sequence[Exception | None] = sink.write([batch[i] for i in todo])
            except Exception as exc:  # a sink that raises fails every record it was given
                outcome = [exc] * len(todo)
            for index, result in zip(todo, outcome, strict=True):
                if result is None:
                    have[index].add(name)
                elif failures[index] is None:
                    failures[index] = result
        return [
            None if failure is None else PartlyStored(failure, frozenset(done)) if done else failure
            for failure, done in zip(failures, have, strict=True)
        ]

    def close(self) -> None:
        """Close every sink, even when one fails to close."""
        errors: list[BaseException] = []
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


def build_sink(config: ServiceConfig) -> Sink:
    """The sink (or :class:`TeeSink` of sinks) the file's ``[sink]``/``[[sinks]]`` describe."""
    from logbus.sinks import load_sink_table

    tables = config.sink_tables()
    sinks = [load_sink_table(table) for table in tables]
    if len(sinks) == 1:
        return sinks[0]
    # Named by type (console, webhook, webhook#2 ...): what x-logbus-stored remembers.
    names: list[str] = []
    seen: dict[str, int] = {}
    for table in tables:
        kind = str(table.get("type", "sink")).strip().lower()
        seen[kind] = seen.get(kind, 0) + 1
        names.append(kind if seen[kind] == 1 else f"{kind}#{seen[kind]}")
    return TeeSink(sinks, names)


def run_service(
    config: ServiceConfig,
    *,
    url: str | None = None,
    wrap: Callable[[Sink], Sink] | None = None,
    on_started: Callable[[str], None] | None = None,
    stop_signals: bool = True,
    report: Callable[[str], object] | None = None,
) -> WorkerSummary:
    """Declare, consume and write until SIGTERM/SIGINT; returns the worker's summary.

    ``url`` overrides the file's; ``wrap`` lets a service put its own logic around
    the sink (the alerter's de-duplication); ``on_started`` gets a one-line
    description once the worker consumes; ``report`` is told what a stopping worker
    does (see :class:`~logbus.worker.Worker`).
    """
    from logbus.durations import parse_duration
    from logbus.settings import load_settings
    from logbus.worker.assembly import WorkerPlan, run
    from logbus.worker.retry import RetryPolicy

    overrides: dict[str, Any] = {}
    if url or config.service.url:
        overrides["url"] = url or config.service.url
    if config.service.topology is not None:
        overrides["config"] = config.service.topology
    settings: Settings = load_settings(**overrides)
    topology = service_topology(config, settings.topology())
    try:
        r = config.retry
        retry = RetryPolicy(
            max_attempts=r.max_attempts,
            delay=parse_duration(r.delay, what="[retry] delay"),
            backoff=r.backoff,
            max_delay=parse_duration(r.max_delay, what="[retry] max_delay"),
        )
        shutdown_timeout = parse_duration(
            config.worker.shutdown_timeout, what="[worker] shutdown_timeout"
        )
    except InputError as exc:
        raise ConfigError(f"{config.source}: {exc}") from exc
    sink = build_sink(config)
    if wrap is not None:
        sink = wrap(sink)
    plan = WorkerPlan(
        settings,
        topology,
        config.queue.name,
        sink,
        pool=config.worker.pool,
        prefetch=config.worker.prefetch,
        concurrency=config.worker.concurrency,
        retry=retry,
        shutdown_timeout=shutdown_timeout,
        metrics_port=config.metrics.port,
        metrics_host=config.metrics.host,
        metrics_label=config.service.name,
    )

    def started(_worker: object, metrics_url: str | None) -> None:
        if on_started is not None:
            where = f"; metrics on {metrics_url}" if metrics_url else ""
            on_started(f"consuming {config.queue.name}{where}")

    return run(plan, on_started=started, report=report, stop_signals=stop_signals)
