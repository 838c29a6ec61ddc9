"""Worker processes: the ``process`` pool, for a sink that needs CPU past the GIL.

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
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from types import FrameType
from typing import TYPE_CHECKING, Any

from logbus._log import get_logger
from logbus._urls import redact_url
from logbus.errors import ConfigError, DecodeError, InputError
from logbus.sinks import Sink, is_recoverable, load_sink
from logbus.sinks._partial import stored_by
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

if TYPE_CHECKING:
    from logbus.transports.base import Delivery

from logbus.worker.lanes import (
    Lane,
    PoolKind,
    PoolWorkerLost,
    RemoteSinkError,
    Result,
    Undecodable,
    handle_batch,
)

__all__ = ["START_TIMEOUT", "STOP_TIMEOUT", "ProcessPool"]

log = get_logger("logbus.pools")

#: How long a worker process may take to start and open its sink.
START_TIMEOUT = 60.0
#: How long a worker process told to stop may take to close its sink, before it is killed
#: (a worker sets its pool's ``stop_timeout`` to its own shutdown timeout).
STOP_TIMEOUT = 20.0

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
