"""Worker pools: where a :class:`~logbus.worker.Worker` decodes its records and writes them.

The worker's consuming thread takes every delivery and its threads settle every
one; a pool only supplies ``concurrency`` *lanes*, each turning a batch of
deliveries into one :data:`Result` per delivery. ``thread``: the lanes write to
one sink from threads. ``gevent``: the same lanes, run as greenlets.
``process``: each lane hands its batches to a worker process of its own.

*Processes* are spawned (multiprocessing's ``spawn``: nothing the parent holds
leaks in) and each opens the sink from its spec (``jsonl:PATH``, a plugin's
``NAME:ARG``): the sink is never pickled, and neither is a record. A batch
crosses a ``Pipe`` as one packet of logbus frames (:mod:`logbus.wire.frames`:
body and AMQP properties) through ``send_bytes``; the worker process decodes and
writes, and answers one packet of results. The consuming process acks a record
only after that answer said it was stored. A worker process that dies mid-batch
shows as the end of its pipe: its records, never acked, are nacked with requeue
at once (redelivered), counted, and a new process takes the lane's next batch.
Worker processes ignore SIGINT (Ctrl-C reaches the whole group; the parent
drains) and take SIGTERM as "finish this batch, then exit"; the parent stops
them with a ``stop`` frame and joins them.

*One jsonl file for all processes*, not one each: every worker process appends
to ``PATH`` (``O_APPEND``) a whole batch per ``write(2)`` (the sink flushes each
batch), which a local file system appends whole, so lines never mix (NFS makes
no such promise); batches of different processes interleave, as threads' do.

*Greenlets.* :class:`GeventPool` never monkey-patches: only the program's entry
point can patch early enough (``logbus worker --pool gevent`` does, first
thing). Patched, ``threading`` makes greenlets and ``queue`` waits
cooperatively, so the lanes are greenlets without this module importing
gevent; unpatched, opening the pool raises :class:`ConfigError`. ``local://``
and ``process://`` block a patched process (multiprocessing connections are
not cooperative): :func:`check_transport` refuses them for the gevent pool.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal, Protocol

from logbus._log import get_logger
from logbus._urls import redact_url
from logbus.errors import ConfigError, DecodeError, InputError, LogbusError
from logbus.record import LogRecord, decode
from logbus.sinks import Sink, is_recoverable, load_sink
from logbus.sinks._partial import stored_by, write_rest
from logbus.transports import scheme_of, transport_class
from logbus.transports.base import capabilities_of
from logbus.wire.frames import (
    Frame,
    arg_bool,
    arg_str,
    decode_many,
    encode,
    encode_many,
    message_args,
    message_from,
)
from logbus.worker.retry import stored_of

if TYPE_CHECKING:
    from logbus.message import Message
    from logbus.transports.base import Delivery

__all__ = [
    "POOL_KINDS",
    "GeventPool",
    "Lane",
    "Pool",
    "PoolKind",
    "PoolWorkerLost",
    "ProcessPool",
    "RemoteSinkError",
    "Result",
    "ThreadPool",
    "Undecodable",
    "check_transport",
    "gevent_patched",
    "handle_batch",
    "make_pool",
    "write_batch",
]

log = get_logger("logbus.pools")

PoolKind = Literal["thread", "process", "gevent"]
#: The pools ``make_pool`` (and ``logbus worker --pool``) knows.
POOL_KINDS: tuple[PoolKind, ...] = ("thread", "process", "gevent")
#: How long a worker process may take to start and open its sink.
START_TIMEOUT = 60.0
#: How long a worker process told to stop may take to close its sink, before it is killed
#: (a worker sets its pool's ``stop_timeout`` to its own shutdown timeout).
STOP_TIMEOUT = 20.0
# What must be patched for greenlets to stand in for threads, and waits to be cooperative.
_PATCHED = ("threading", "queue", "socket", "time")


@dataclass(frozen=True, slots=True)
class Undecodable:
    """The result for a message that is not a record: rejected, never retried."""

    reason: str


#: One delivery's fate: None (stored: ack), Undecodable (reject), or the sink's failure.
Result = Exception | Undecodable | None


class PoolWorkerLost(LogbusError):
    """A pool's worker process died with records in hand; they go back to the queue."""

    recoverable = True


class RemoteSinkError(Exception):
    """A sink failure reported by a worker process: its type, message and recoverability
    (and, from a multi-sink, the sinks that stored the record all the same)."""

    def __init__(
        self, kind: str, message: str, *, recoverable: bool, stored: frozenset[str] = frozenset()
    ) -> None:
        super().__init__(f"{kind}: {message}")
        self.recoverable = recoverable  # what is_recoverable() reads
        self.stored = stored  # what stored_by() reads


class Lane(Protocol):
    """One unit of a pool's concurrency, used by one thread (or greenlet) of the worker."""

    def handle(self, deliveries: Sequence[Delivery]) -> list[Result]:
        """Decode and write a batch: a result per delivery, in order. Raises
        :class:`PoolWorkerLost` if a worker process died with them (requeue them)."""
        ...

    def close(self) -> None:
        """Release what the lane holds; idempotent, never raises."""
        ...


class Pool(Protocol):
    """Where a worker's records are decoded and written: threads, processes or greenlets."""

    kind: PoolKind
    unit: str  # what one unit of concurrency is called: thread, process, greenlet
    replaced: int  # worker processes replaced after they died

    def open(self, concurrency: int, name: str) -> list[Lane]:
        """Acquire the sink (in each process, for the process pool); ``concurrency`` lanes."""
        ...

    def close(self) -> None:
        """Release the sink and every lane; called once, after the lanes' threads ended."""
        ...


# -- decoding and writing, wherever the sink lives ---------------------------------------


def write_batch(
    sink: Sink, records: list[LogRecord], stored: Sequence[frozenset[str]] | None = None
) -> list[Exception | None]:
    """The sink's result per record; raises ``ConfigError`` if the sink breaks its contract.

    ``stored`` names, per record, the sinks of a multi-sink that have it already
    (:mod:`logbus.sinks._partial`). A batch whose write raised is written again one
    record at a time, so that one bad record does not fail the others.
    """
    results = _write(sink, records, stored or [frozenset()] * len(records))
    if len(results) != len(records):
        raise ConfigError(
            f"sink {sink!r} returned {len(results)} results for a batch of "
            f"{len(records)} records; a sink returns one per record (a bug in the sink)"
        )
    return results


def _write(
    sink: Sink, records: list[LogRecord], stored: Sequence[frozenset[str]]
) -> list[Exception | None]:
    try:
        return list(write_rest(sink, records, stored))
    except Exception as exc:
        if len(records) == 1:
            return [exc]
    return [
        result
        for record, done in zip(records, stored, strict=True)
        for result in _write(sink, [record], [done])
    ]


def handle_batch(sink: Sink, messages: Sequence[Message]) -> list[Result]:
    """Decode ``messages`` and write what decoded in one sink call; a result per message."""
    results: list[Result] = [None] * len(messages)
    records: list[LogRecord] = []
    stored: list[frozenset[str]] = []
    positions: list[int] = []
    for position, message in enumerate(messages):
        try:
            records.append(decode(message.body, message.properties, message.routing_key))
        except DecodeError as exc:
            results[position] = Undecodable(str(exc))
        else:
            positions.append(position)
            stored.append(stored_of(message.properties))
    if records:
        for position, result in zip(positions, write_batch(sink, records, stored), strict=True):
            results[position] = result
    return results


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


# -- processes ------------------------------------------------------------------------------


class _ProcessLane:
    """A lane whose batches go to a worker process of its own, started again if it dies."""

    def __init__(self, pool: ProcessPool, name: str) -> None:
        self._pool = pool
        self._name = name
        self._process: SpawnProcess | None = None
        self._conn: Connection[Any, Any] | None = None

    @property
    def pid(self) -> int | None:
        """The worker process's pid (None before it started)."""
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        """Spawn the worker process; :meth:`ready` waits until it opened the sink."""
        context = multiprocessing.get_context("spawn")
        self._conn, theirs = context.Pipe()
        self._process = context.Process(
            target=_child_main, args=(theirs, self._pool.sink), name=self._name, daemon=True
        )
        self._process.start()
        theirs.close()  # only the child holds that end now: its death is our EOF

    def ready(self) -> None:
        """Wait for the worker process to open its sink; ``ConfigError`` if it could not."""
        assert self._conn is not None
        timeout = self._pool.start_timeout
        try:
            if not self._conn.poll(timeout):
                pid = self.pid
                self._stop(kill=True)
                raise ConfigError(f"worker process {pid} did not start within {timeout:g} s")
            [frame] = decode_many(self._conn.recv_bytes())
        except (EOFError, OSError):
            raise self._lost("before it was ready") from None
        if frame.op != "ready":
            self._stop(kill=frame.op != "fatal")
            raise ConfigError(arg_str(frame.args, "message", f"worker process sent {frame.op}"))

    def handle(self, deliveries: Sequence[Delivery]) -> list[Result]:
        if self._process is None or not self._process.is_alive():
            self._replace()
        assert self._conn is not None
        results: list[Result] = [None] * len(deliveries)
        frames = []
        for position, delivery in enumerate(deliveries):
            try:
                args = message_args(delivery.message)
            except InputError as exc:  # a header value that cannot cross: not a record
                results[position] = Undecodable(str(exc))
            else:
                frames.append(Frame("record", position, args, delivery.body))
        if not frames:
            return results
        try:
            self._conn.send_bytes(encode_many(frames))
            reply = decode_many(self._conn.recv_bytes())
        except (EOFError, OSError):
            raise self._lost(f"with {len(deliveries)} records in hand") from None
        if len(reply) == 1 and reply[0].op == "fatal":
            raise ConfigError(arg_str(reply[0].args, "message"))
        if sorted(frame.id for frame in reply) != sorted(frame.id for frame in frames):
            raise ConfigError(f"worker process {self.pid} answered records it was not sent")
        for frame in reply:
            results[frame.id] = _result(frame)
        return results

    def _lost(self, when: str) -> PoolWorkerLost:
        """The worker process is gone (reaped here): the error saying how and when."""
        assert self._process is not None
        pid = self._process.pid
        self._process.join(5)
        code = self._process.exitcode
        how = f"exited with status {code}"
        if code is None:
            how = "stopped answering"
        elif code < 0 and -code in signal.valid_signals():
            how = f"was killed by {signal.Signals(-code).name}"
        self._stop(kill=True)
        return PoolWorkerLost(f"worker process {pid} {how} {when}")

    def _replace(self) -> None:
        if self._process is not None:
            log.warning("pool.process_replaced", reason=str(self._lost("between batches")))
        self.start()
        with self._pool._lock:
            self._pool.replaced += 1
        self.ready()

    def _stop(self, *, kill: bool = False) -> None:
        """Tell the worker process to close its sink and exit (or kill it); wait for it."""
        process, conn, self._process, self._conn = self._process, self._conn, None, None
        if process is None or conn is None:
            return
        if not kill:
            with contextlib.suppress(OSError, ValueError):
                conn.send_bytes(encode(Frame("stop")))
            process.join(self._pool.stop_timeout)
        if process.is_alive():
            if not kill:
                log.warning("pool.process_stuck", pid=process.pid, seconds=self._pool.stop_timeout)
            process.kill()
            process.join(5)
        conn.close()

    def close(self) -> None:
        self._stop()

    def kill(self) -> None:
        """Kill the worker process at once (a stop that timed out); never raises."""
        process = self._process
        if process is not None:
            with contextlib.suppress(OSError, ValueError):
                process.kill()


class ProcessPool:
    """``concurrency`` worker processes, each opening the sink from ``spec`` itself.

    ``spec`` names the sink as on the command line (``jsonl:PATH``, or a
    plugin's ``NAME:ARG``, which each process loads through its entry point).
    See the module docstring for what crosses the pipes and how a dead worker
    process is replaced.
    """

    kind: PoolKind = "process"
    unit = "process"

    def __init__(self, spec: Sink | str, *, start_timeout: float = START_TIMEOUT) -> None:
        if not isinstance(spec, str):
            raise ConfigError(
                "the process pool opens the sink in each worker process from its spec: "
                "pass the spec (e.g. 'jsonl:/var/log/logbus.jsonl'), not a sink object; "
                "a sink of your own is named through the 'logbus.sinks' entry point group"
            )
        load_sink(spec)  # an unknown sink fails here, in this process, with the suggestion
        self.sink = spec
        self.start_timeout = start_timeout
        self.stop_timeout = STOP_TIMEOUT
        self.replaced = 0
        self._lanes: list[_ProcessLane] = []
        self._lock = threading.Lock()

    def open(self, concurrency: int, name: str) -> list[Lane]:
        """Start every worker process at once; return when all opened their sink."""
        self._lanes = [_ProcessLane(self, f"logbus-pool-{n}:{name}") for n in range(concurrency)]
        try:
            for lane in self._lanes:
                lane.start()
            for lane in self._lanes:
                lane.ready()
        except BaseException:
            self.close()
            raise
        log.info(
            "pool.started", sink=redact_url(self.sink), pids=[lane.pid for lane in self._lanes]
        )
        lanes: list[Lane] = [*self._lanes]
        return lanes

    def close(self) -> None:
        """Stop every worker process still running and wait for it."""
        for lane in self._lanes:
            lane.close()

    def kill(self) -> None:
        """Kill every worker process now: a stop that ran out of time. Their records,
        never acked, were requeued; the lanes' threads see their pipes end."""
        for lane in self._lanes:
            lane.kill()

    def __repr__(self) -> str:
        return f"<ProcessPool sink={redact_url(self.sink)!r}>"


def _result(frame: Frame) -> Result:
    if frame.op == "stored":
        return None
    if frame.op == "undecodable":
        return Undecodable(arg_str(frame.args, "reason"))
    if frame.op == "failed":
        stored = arg_str(frame.args, "stored", "")
        return RemoteSinkError(
            arg_str(frame.args, "type"),
            arg_str(frame.args, "message"),
            recoverable=arg_bool(frame.args, "recoverable"),
            stored=frozenset(stored.split("\n")) if stored else frozenset(),
        )
    raise ConfigError(f"a worker process sent an unknown result {frame.op!r}")


def _result_frame(position: int, result: Result) -> Frame:
    if result is None:
        return Frame("stored", position)
    if isinstance(result, Undecodable):
        return Frame("undecodable", position, {"reason": result.reason})
    cause = getattr(result, "error", result)  # a multi-sink's failure: say the sink's own
    failure = {"type": type(cause).__name__, "message": str(result)}
    stored = "\n".join(sorted(stored_by(result)))
    return Frame(
        "failed",
        position,
        {**failure, "recoverable": is_recoverable(result), "stored": stored},
    )


class _ChildState:
    """Whether the worker process is writing a batch, and whether SIGTERM came meanwhile."""

    busy = False
    terminating = False

    def on_sigterm(self, _signum: int, _frame: FrameType | None) -> None:
        self.terminating = True
        if not self.busy:  # idle, waiting for a batch: nothing in hand, leave now
            raise SystemExit(0)


def _child_main(conn: Connection[Any, Any], spec: str) -> None:
    """A worker process: open the sink, then write batch after batch until told to stop."""
    state = _ChildState()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, state.on_sigterm)
    try:
        sink = load_sink(spec)
        sink.open()
    except Exception as exc:
        why = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
        conn.send_bytes(encode(Frame("fatal", 0, {"message": why})))
        return
    try:
        conn.send_bytes(encode(Frame("ready", 0, {"pid": os.getpid()})))
        while not state.terminating:
            try:
                packet = conn.recv_bytes()
            except EOFError:  # the parent is gone; the broker requeues what it held
                return
            state.busy = True
            frames = decode_many(packet)
            if frames[0].op == "stop":
                return
            conn.send_bytes(_answer(sink, frames))
            state.busy = False
    except (OSError, SystemExit):
        return
    finally:
        sink.close()


def _answer(sink: Sink, frames: list[Frame]) -> bytes:
    """The reply packet to a batch: one result frame per record frame."""
    try:
        messages = [message_from(frame.args, frame.body) for frame in frames]
        results = handle_batch(sink, messages)
    except ConfigError as exc:  # the sink broke its contract: the worker must stop
        return encode(Frame("fatal", 0, {"message": str(exc)}))
    except DecodeError as exc:  # the framing itself: a bug between parent and child
        return encode(Frame("fatal", 0, {"message": f"bad batch from the worker: {exc}"}))
    return encode_many(
        _result_frame(frame.id, result) for frame, result in zip(frames, results, strict=True)
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
