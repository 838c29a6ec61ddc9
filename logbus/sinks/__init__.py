"""Sinks: where a worker puts the records it consumes — the :class:`Sink` Protocol and loading.

A sink is named on the command line as ``NAME[:ARG]``: ``console``, ``jsonl:/var/log/all.jsonl``.
:func:`load_sink` resolves the name among the built-ins first, then among the
``logbus.sinks`` entry points that installed packages declare, so a plugin is a
package with::

    [project.entry-points."logbus.sinks"]
    sqlite = "logbus_sqlite:SqliteSink"

The entry point (like each built-in) is a :data:`SinkFactory`: called with the
text after the colon (or None), it returns a sink that has not been opened yet.

The contract every sink keeps:

* ``open()`` once before the first write, ``close()`` once after the last; a
  problem with the sink's configuration found there (a directory that does not
  exist) raises :class:`~logbus.errors.ConfigError`.
* ``write(batch)`` stores the records and returns one result per record, in
  order: None when that record is stored (the worker then acks it), else the
  exception saying why not. An exception raised by ``write`` itself counts for
  every record of the batch. A failure is retried later when the exception is
  *recoverable* (see :func:`is_recoverable`); otherwise the record is
  dead-lettered.
* ``write`` may be called from several threads at once (``--concurrency``);
  a sink serialises what must be serialised itself.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Protocol, cast, runtime_checkable

from logbus.errors import ConfigError, LogbusError
from logbus.record import LogRecord

__all__ = [
    "BUILTIN_SINKS",
    "ENTRY_POINT_GROUP",
    "Sink",
    "SinkFactory",
    "is_recoverable",
    "known_sinks",
    "load_sink",
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


#: Builds a sink from the argument after ``NAME:`` (None when there is no colon).
SinkFactory = Callable[[str | None], Sink]

#: Built-in sink name -> "module:factory", imported on first use (like the transports).
BUILTIN_SINKS: dict[str, str] = {
    "console": "logbus.sinks.console:ConsoleSink.from_spec",
    "jsonl": "logbus.sinks.jsonl:JsonlSink.from_spec",
}


def parse_spec(spec: str) -> tuple[str, str | None]:
    """Split ``NAME[:ARG]`` into the name and the argument (None without a colon)."""
    name, colon, arg = spec.strip().partition(":")
    name = name.strip().lower()
    if not name:
        raise ConfigError(
            f"sink {spec!r} has no name; write NAME[:ARG], e.g. jsonl:/tmp/logs.jsonl"
        )
    return name, (arg if colon else None)


def load_sink(spec: str) -> Sink:
    """The sink ``spec`` names (``console``, ``jsonl:PATH``, or a plugin's), not yet opened.

    An unknown name raises :class:`ConfigError` listing the known sinks, with the
    closest one as a suggestion.
    """
    name, arg = parse_spec(spec)
    return _factory(name)(arg)


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
