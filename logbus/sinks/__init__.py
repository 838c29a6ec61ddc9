"""Sinks: where a worker puts the records it consumes — the :class:`Sink` Protocol and loading.

A sink is named on the command line as ``NAME[:ARG][?KEY=VALUE&...]``::

    console
    jsonl:/var/log/logbus/{facility}/{severity}.jsonl?rotate=daily&fsync=batch
    sqlite:/var/lib/logbus/archive.db?max_batch=500
    postgres:postgresql://logbus@db1:5432/logs?table=records&sslmode=require
    webhook:https://alerts.example.com/hook?body=array&timeout=5

ARG fills the sink's main option (a path, a URL); the query string after the
first ``?`` holds the others, values URL-encoded (``%26`` for ``&``). When ARG
is a URL (postgres, webhook), only the sink's own option names are taken out
of its query; every other key stays in the URL (``sslmode`` above is
libpq's). A service names its sink in a ``[sink]`` table instead, where ``type``
is the name and every other key an option, the main one included::

    [sink]
    type = "jsonl"
    path = "/var/log/logbus/{facility}/{severity}.jsonl"
    rotate = "daily"
    max_bytes = "512M"

An option the sink does not have is a :class:`~logbus.errors.ConfigError`
naming it and listing the sink's options. Every built-in sink takes
``max_batch`` (records per write, at most) and ``max_wait`` (seconds the worker
may wait to fill a batch; 0 hands over only what is already waiting), which
the sink then carries as attributes of those names.

:func:`load_sink` resolves the name among the built-ins first, then among the
``logbus.sinks`` entry points that installed packages declare, so a plugin is a
package with::

    [project.entry-points."logbus.sinks"]
    mysink = "logbus_mysink:MySink"

A plugin deriving from :class:`ConfigurableSink` gets the options, their
checking and the ``[sink]`` table for free. Any other entry point is a
:data:`SinkFactory`: called with the text after the colon (or None); in a
``[sink]`` table it takes only the key ``arg``.

The contract every sink keeps:

* ``open()`` once before the first write, ``close()`` once after the last; a
  problem with the sink's configuration found there (a directory that does not
  exist) raises :class:`~logbus.errors.ConfigError`.
* ``write(batch)`` stores the records and returns one result per record, in
  order: None when that record is stored (the worker then acks it), else the
  exception saying why not. An exception raised by ``write`` itself counts for
  every record of the batch. A failure is retried later when the exception is
  *recoverable* (see :func:`is_recoverable`); otherwise the record is
  dead-lettered. A record already stored (same ``id``) counts as stored.
* ``write`` may be called from several threads at once (``--concurrency``);
  a sink serialises what must be serialised itself.
* ``max_batch`` and ``max_wait`` say how the worker should batch for the sink;
  a sink without them gets 100 records and no waiting.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Protocol, cast, runtime_checkable

from logbus.errors import ConfigError, LogbusError
from logbus.record import LogRecord
from logbus.sinks._options import ConfigurableSink, SinkOptions

__all__ = [
    "BUILTIN_SINKS",
    "ENTRY_POINT_GROUP",
    "ConfigurableSink",
    "Sink",
    "SinkFactory",
    "SinkOptions",
    "is_recoverable",
    "known_sinks",
    "load_sink",
    "load_sink_table",
    "parse_spec",
]

ENTRY_POINT_GROUP = "logbus.sinks"


@runtime_checkable
class Sink(Protocol):
    """Where a worker puts records; batch-aware, and safe to call from several threads."""

    def open(self) -> None:
        """Acquire what the sink needs (a file, a connection); called once, before writes."""
        ...

    def write(self, batch: Sequence[LogRecord]) -> Sequence[Exception | None]:
        """Store ``batch``; one result per record: None if stored, else the exception."""
        ...

    def close(self) -> None:
        """Flush and release everything; called once, after the last write."""
        ...

    @property
    def max_batch(self) -> int:
        """Records per ``write``, at most."""
        ...

    @property
    def max_wait(self) -> float:
        """Seconds the worker may wait to fill a batch (0: only what is already waiting)."""
        ...


#: Builds a sink from the argument after ``NAME:`` (None when there is no colon).
SinkFactory = Callable[[str | None], Sink]

#: Built-in sink name -> "module:Class", imported on first use (like the transports).
BUILTIN_SINKS: dict[str, str] = {
    "console": "logbus.sinks.console:ConsoleSink",
    "jsonl": "logbus.sinks.jsonl:JsonlSink",
    "postgres": "logbus.sinks.postgres:PostgresSink",
    "sqlite": "logbus.sinks.sqlite:SqliteSink",
    "webhook": "logbus.sinks.webhook:WebhookSink",
}


def parse_spec(spec: str) -> tuple[str, str | None]:
    """Split ``NAME[:ARG][?OPTIONS]`` into the name and the rest (None without ``:`` or ``?``).

    The rest keeps its options: ``console?max_batch=10`` gives ``("console",
    "?max_batch=10")``.
    """
    text = spec.strip()
    cut = min((i for i in (text.find(":"), text.find("?")) if i >= 0), default=-1)
    name = (text if cut < 0 else text[:cut]).strip().lower()
    if not name:
        raise ConfigError(
            f"sink {spec!r} has no name; write NAME[:ARG], e.g. jsonl:/tmp/logs.jsonl"
        )
    if cut < 0:
        return name, None
    return name, (text[cut + 1 :] if text[cut] == ":" else text[cut:])


def load_sink(spec: str) -> Sink:
    """The sink ``spec`` names (``console``, ``jsonl:PATH``, or a plugin's), not yet opened.

    An unknown name raises :class:`ConfigError` listing the known sinks, with the
    closest one as a suggestion; an unknown option lists the sink's options.
    """
    name, arg = parse_spec(spec)
    found = _factory(name)
    from_spec = getattr(found, "from_spec", None)
    if callable(from_spec):
        return cast(Sink, from_spec(arg))
    return found(arg)


def load_sink_table(table: Mapping[str, Any]) -> Sink:
    """The sink a ``[sink]`` table describes: ``type`` names it, the other keys are options.

    ``{"type": "sqlite", "path": "/var/lib/logbus/archive.db", "max_batch": 500}``
    is the same sink as ``sqlite:/var/lib/logbus/archive.db?max_batch=500``.
    """
    kind = table.get("type")
    if not isinstance(kind, str) or not kind.strip():
        raise ConfigError(
            'the [sink] table needs type = NAME, e.g. type = "jsonl" '
            f"(known sinks: {', '.join(known_sinks())})"
        )
    name = kind.strip().lower()
    options = {key: value for key, value in table.items() if key != "type"}
    found = _factory(name)
    from_table = getattr(found, "from_table", None)
    if callable(from_table):
        return cast(Sink, from_table(options))
    # A plain factory takes one argument, given as `arg`.
    extra = sorted(set(options) - {"arg"})
    if extra:
        raise ConfigError(
            f"sink {name} has no option {extra[0]!r}; its only option is 'arg' "
            "(the text that follows NAME: in a spec)"
        )
    arg = options.get("arg")
    return found(None if arg is None else str(arg))


def known_sinks() -> list[str]:
    """Every sink name that :func:`load_sink` can resolve: built-ins and plugins."""
    return sorted(set(BUILTIN_SINKS) | set(_plugins()))


def is_recoverable(exc: BaseException) -> bool:
    """Whether writing the record again later may succeed, so it is worth requeueing.

    A :class:`~logbus.errors.LogbusError` says so itself. Operating-system errors
    (a full disk, a refused or dropped connection, a timeout) are taken as
    recoverable: the record is kept until the sink works again rather than
    dropped. Any other exception may set a ``recoverable`` attribute (so plugins
    need not import logbus); without one it is a bug or bad data, not worth
    retrying.
    """
    if isinstance(exc, LogbusError):
        return exc.recoverable
    if isinstance(exc, OSError):
        return True
    return bool(getattr(exc, "recoverable", False))


def _factory(name: str) -> SinkFactory:
    target = BUILTIN_SINKS.get(name)
    if target is not None:
        return _import(target)
    plugin = _plugins().get(name)
    if plugin is not None:
        try:
            return cast(SinkFactory, plugin.load())
        except Exception as exc:  # a broken plugin must not look like a logbus bug
            raise ConfigError(
                f"sink plugin {name!r} ({plugin.value}) failed to load: "
                f"{type(exc).__name__}: {exc} (reinstall or remove the package that provides it)"
            ) from exc
    known = known_sinks()
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(
        f"unknown sink {name!r}; {hint}known sinks: {', '.join(known)} "
        f"(plugins add more through the {ENTRY_POINT_GROUP!r} entry point group)"
    )


def _import(target: str) -> SinkFactory:
    module_name, _, attribute = target.partition(":")
    found: object = importlib.import_module(module_name)
    for part in attribute.split("."):
        found = getattr(found, part)
    return cast(SinkFactory, found)


def _plugins() -> dict[str, EntryPoint]:
    # Scanning installed distributions costs milliseconds: only for names not built in.
    return {ep.name.lower(): ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
