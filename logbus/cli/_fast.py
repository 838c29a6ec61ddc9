"""``logbus emit KEY MESSAGE...`` without typer, pydantic or pika: the one-record fast path.

An operator's single ``logbus emit`` spent most of its time importing. For the
plain case — a routing key, message words, and only ``--host``, ``--app``,
``--pid``, ``--field``, ``--timeout``, ``--url``, ``--config`` — :func:`emit`
parses the arguments itself, reads ``LOGBUS_*`` (:mod:`logbus._env`) and the
topology (:mod:`logbus._plain_topology`), builds the record
(:mod:`logbus._wire`) and, for one plain ``amqp://`` URL, publishes it with
:mod:`logbus.transports._oneshot`.

It must behave exactly as the typer command does, so it only ever answers
when it is sure to say the same: anything else — ``--help``, stdin, ``--json``,
``--debug``, an option it does not know, a value it would have to interpret,
a bad key, a bad topology file, a URL that is not plain ``amqp://``, a broker
refusing a declaration — returns ``None`` before anything was published, and
the typer command runs from the start and speaks for itself. Errors it does
report (an unreachable broker, a refused login, a nack, a returned record, a
timeout) are the pika transport's words, printed as the typer command prints
them; tests run both paths and compare.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["emit"]

_VALUED = frozenset({"--host", "--app", "--pid", "--field", "--timeout", "--url", "--config"})
_PID = re.compile(r"[0-9]{1,12}")
_SECONDS = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?")


@dataclass
class _Args:
    """The arguments of a plain ``logbus emit``, as the typer command would receive them."""

    words: list[str] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)
    fields: list[str] = field(default_factory=list)


def _parse(args: list[str]) -> _Args | None:
    """Split like click would, for the plain case only; ``None`` for anything else."""
    parsed = _Args()
    rest = iter(args)
    for arg in rest:
        if not arg.startswith("-"):
            parsed.words.append(arg)
            continue
        name, eq, value = arg.partition("=")
        if name not in _VALUED:
            return None  # --help, --json, -f, --, "-", an unknown option, a "-5" word ...
        if not eq:
            value = next(rest, "-")
            if value.startswith("-"):
                return None  # no value, or one click might read differently
        if name == "--field":
            parsed.fields.append(value)
        else:
            parsed.options[name] = value  # the last one wins, as in click
    if len(parsed.words) < 2:
        return None  # no key, or no message (then stdin is read)
    return parsed


def _fields(items: list[str]) -> dict[str, Any] | None:
    """``--field`` values as the typer command parses them; ``None`` if any is refused or
    holds data the light record encoder does not write as pydantic does (floats)."""
    import json

    from logbus._wire import plain_json

    fields: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.rstrip(":"):
            return None
        if name.endswith(":"):
            try:
                fields[name[:-1]] = json.loads(value)
            except (ValueError, RecursionError):
                return None
        else:
            fields[name] = value
    return fields if plain_json(fields) else None


def _topology(path: Path | None) -> Any:
    """The topology file (or the built-in default) as plain data, or ``None``."""
    from logbus import _plain_topology

    if path is None:
        return _plain_topology.DEFAULT
    try:
        import tomllib

        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except Exception:  # missing, a directory, unreadable, not UTF-8, not TOML: the full path says
        return None
    return _plain_topology.plain_topology(data)


def emit(args: list[str]) -> int | None:
    """Run ``logbus emit`` with ``args`` (after ``emit``) on the fast path; the exit
    status, or ``None`` when the typer command must run instead."""
    if "_LOGBUS_COMPLETE" in os.environ or os.environ.get("LOGBUS_DEBUG") == "1":
        return None
    level = (os.environ.get("LOGBUS_LOG_LEVEL") or "warning").strip().lower()
    if level not in ("warning", "error"):
        return None  # events asked for (or a level to refuse): the typer command logs them
    try:
        return _emit(args)
    except KeyboardInterrupt:
        sys.stderr.write("logbus: interrupted\n")
        sys.stderr.flush()
        return 130


def _emit(args: list[str]) -> int | None:
    parsed = _parse(args)
    if parsed is None:
        return None
    options = parsed.options
    pid = options.get("--pid")
    timeout = options.get("--timeout")
    if (pid is not None and not _PID.fullmatch(pid)) or (
        timeout is not None and not _SECONDS.fullmatch(timeout)
    ):
        return None
    fields = _fields(parsed.fields)
    if fields is None:
        return None

    from logbus import __version__
    from logbus._env import quick_settings
    from logbus._keys import WORDS, parse_routing_key
    from logbus._plain_topology import declarations, render_key
    from logbus._wire import WireRecord, hostname
    from logbus.errors import RecordError
    from logbus.transports import _oneshot
    from logbus.transports._amqp_codec import default_connection_name

    settings = quick_settings(
        url=options.get("--url"),
        config=options.get("--config"),
        confirm_timeout=None if timeout is None else float(timeout),
    )
    if settings is None:
        return None
    topology = _topology(settings.config)
    if topology is None:
        return None
    if not topology.emit:  # as the typer command says it, before anything connects
        from logbus._plain_topology import no_emit_targets
        from logbus.errors import ConfigError

        return _guarded(_raiser(ConfigError(no_emit_targets(settings.config))))
    target = _oneshot.broker(settings.url)
    if target is None:
        return None
    try:
        facility, severity = parse_routing_key(parsed.words[0])
    except RecordError:
        return None
    host, app = options.get("--host"), options.get("--app")
    record = WireRecord(
        facility,
        severity,
        " ".join(parsed.words[1:]),
        host=hostname() if host is None else host,
        app="logbus" if app is None else app,
        pid=os.getpid() if pid is None else int(pid),
        fields=fields,
    )
    body, properties = record.body(), record.properties()
    messages = [
        _oneshot.Outgoing(
            t["exchange"],
            render_key(t, facility, WORDS[severity], record.host, record.app),
            body,
            properties,
        )
        for t in topology.emit
    ]
    try:
        _oneshot.publish(
            target,
            declarations(topology),
            messages,
            connect_timeout=settings.connect_timeout,
            confirm_timeout=settings.confirm_timeout,
            heartbeat=settings.heartbeat,
            connection_name=default_connection_name(),
            version=__version__,
        )
    except _oneshot.Unsure:
        return None
    except _oneshot.Unsettled:
        return _guarded(
            lambda: _send_again(
                record.values(), options, None if timeout is None else float(timeout)
            )
        )
    except Exception as exc:
        return _report(exc, len(messages))
    return 0


def _send_again(values: dict[str, Any], options: dict[str, str], timeout: float | None) -> None:
    from logbus.cli.emit import send_record

    config = options.get("--config")
    send_record(values, options.get("--url"), None if config is None else Path(config), timeout)


# -- saying what went wrong, as the typer command does ----------------------------


def _report(exc: Exception, targets: int) -> int:
    """Print ``exc`` as the typer command would (one line on stderr); its exit status."""
    from logbus.errors import EX_TEMPFAIL, NotConfirmed

    if isinstance(exc, NotConfirmed):  # as logbus.cli.emit._send words it
        from logbus.cli.common import fail
        from logbus.cli.emit import unconfirmed

        return fail(unconfirmed(exc, 1, targets), EX_TEMPFAIL).exit_code
    return _guarded(_raiser(exc))


def _raiser(exc: Exception) -> Callable[[], None]:
    def run() -> None:
        raise exc

    return run


def _guarded(run: Callable[[], None]) -> int:
    """``run()`` inside what ``logbus.cli.common.run_guarded`` does around a command."""
    import typer

    from logbus.cli.common import _safe, configure_logging
    from logbus.errors import LogbusError

    configure_logging(False)
    try:
        run()
    except typer.Exit as exc:
        return exc.exit_code
    except LogbusError as exc:
        typer.echo(f"logbus: error: {_safe(str(exc))}", err=True)
        return exc.exit_code
    return 0
