"""Local concurrency: the in-process transports against bare queues, and the worker pools.

Run as ``python bench/local.py``. Every figure is measured in this run and printed
next to its baseline, with its ratio, its target and whether the target was met
(and, if not, what bounds it). Each part is a ``bench_<name>()`` that ``main()``
runs in turn; a part imports its concurrency library itself, so the others never
depend on it.

memory:// — publish (confirmed) -> consume -> ack of 50,000 record bodies, one
  publishing thread and one consuming thread acking each, against a bare
  ``queue.Queue`` producer/consumer thread pair (both from ``bench/routing.py``).
  Best of 3.

process:// — the same 50,000 bodies published (``publish_many``: many publishes to
  a frame, pipelined confirms) through the broker process by one thread of this
  process, consumed and acked one by one on another connection by a second thread
  (the transport sends acks many to a frame); every record crosses two process
  boundaries (to the broker and back) and each ack a third time. The
  baseline is a bare ``multiprocessing.Queue`` between a producer PROCESS and a
  consumer PROCESS passing the same bytes (one boundary, no acks). Best of 3.

Worker pools — ``Worker`` on ``memory://`` (the broker in this process, so the
  figures show the pool, not a transport):
  CPU-bound  1,500 records whose sink parses the record's JSON 330 times (~1 ms of
             CPU that holds the GIL, as formatting and parsing in Python do; zlib
             would release the GIL and let threads scale too), through
             ``--pool process`` with 1 and then 2 worker processes; the thread pool
             with 2 threads is printed for contrast. The sink is loaded in each
             worker process from its spec, as a ``logbus.sinks`` plugin this run
             installs in a temporary directory.
  I/O-bound  records whose sink waits 10 ms (``time.sleep``) each, through
             ``--pool gevent`` with 1 and then 50 greenlets (the default prefetch,
             100 for both). Greenlets need a monkey-patched process, and patching this
             one would change what the other parts measure, so each run is a
             patched subprocess (``python -c``) that prints its time.

durable — ``logbus broker serve --data-dir`` in its own process (its default memory
  limit): ``--durable-count`` records (default 1,000,000; ``--durable-modes`` picks
  default, lazy or both) published (pipelined
  confirms, one connection) to a durable queue, then drained by a consumer acking
  each; once to a default queue (messages kept in memory while it has room) and
  once, with a fresh broker, to a lazy one (``x-queue-mode=lazy``: paged at once).
  Printed: the publish and drain rates, and the broker process's RSS from
  ``/proc`` at start, at its peak (``VmHWM``) and after the drain (the lowest seen
  within 5 s, as the broker gives memory back on its own schedule); the baseline
  is the bodies' own size: peak growth per record against the body's bytes.

gevent:// — greenlets on one hub, with no monkey-patching: nothing here needs it
(gevent:// is correct without it), and patching would change what the thread and
process parts measure.
  throughput   a publisher greenlet publishes 50,000 record bodies to gevent:// while a
               consumer greenlet gets and acks each (default prefetch); the baseline
               passes the same bodies through a bare gevent.queue.Queue between a
               producer greenlet and a consumer greenlet. Best of 3 each.
  I/O-bound    2,000 records whose handler waits 10 ms (gevent.sleep) each, consumed by
               1 greenlet and then by 50 greenlets sharing one consumer; the prefetch
               follows the concurrency (1, then 50).
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.queues import Queue as ProcessQueue
from multiprocessing.synchronize import Event as ProcessEvent
from typing import Any

from logbus import LogRecord
from logbus.message import PERSISTENT, Message, Properties
from logbus.transports import DEFAULT_PREFETCH, Transport, connect

BODY = LogRecord(facility="kern", severity="critical", message="disk /dev/sda1 failed").to_bytes()
PROPERTIES = Properties(content_type="application/json", delivery_mode=PERSISTENT)
ROUNDS = 3

THROUGHPUT_COUNT = 50_000
THROUGHPUT_TARGET = 0.3
IO_COUNT = 2_000
IO_WAIT = 0.010
IO_CONCURRENCY = 50
IO_TARGET = 20.0

MEMORY_TARGET = 0.3
PROCESS_TARGET = 0.2
CPU_COUNT = 1_500
CPU_ROUNDS = 330
CPU_TARGET = 1.6
POOL_IO_COUNTS = {1: 300, 50: 5_000}
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))


def rate(count: int, seconds: float) -> float:
    """Records per second."""
    return count / seconds if seconds else float("inf")


def best_of(rounds: int, fn: Callable[[], float]) -> float:
    """The highest of ``rounds`` runs of ``fn``, which returns records/s."""
    return max(fn() for _ in range(rounds))


def fresh_queue(transport: Transport) -> str:
    """A server-named queue that goes with the transport."""
    return transport.declare_queue("", exclusive=True).name


def verdict(ratio: float, target: float, bound: str) -> str:
    """``(target >= Tx: met)``, or ``MISSED`` with what bounds the figure."""
    if ratio >= target:
        return f"(target >= {target:g}x: met)"
    return f"(target >= {target:g}x: MISSED; bounded by {bound})"


# -- memory:// ------------------------------------------------------------------


def bench_memory() -> None:
    """memory:// publish -> consume -> ack against a bare queue.Queue thread pair."""
    from routing import bare_queue_pair, memory_transport  # bench/routing.py

    bodies = [BODY] * THROUGHPUT_COUNT
    print(
        f"# memory:// throughput: {THROUGHPUT_COUNT:,} records, publisher thread -> consumer "
        f"thread acking each, best of {ROUNDS}"
    )
    base = rate(len(bodies), min(bare_queue_pair(bodies) for _ in range(ROUNDS)))
    mine = rate(len(bodies), min(memory_transport(bodies) for _ in range(ROUNDS)))
    print(f"queue.Queue    {base:>12,.0f} records/s  (bare Queue, producer -> consumer thread)")
    bound = "the broker's lock, routing and unacked bookkeeping per record"
    print(
        f"memory://      {mine:>12,.0f} records/s  ratio={mine / base:.2f}x "
        f"{verdict(mine / base, MEMORY_TARGET, bound)}"
    )


# -- process:// -----------------------------------------------------------------


def _produce(queue: ProcessQueue[bytes | None], body: bytes, count: int, go: Any) -> None:
    """The bare pair's producer process: ``count`` bodies, then None."""
    go.wait()
    for _ in range(count):
        queue.put(body)
    queue.put(None)


def _consume(queue: ProcessQueue[bytes | None], done: ProcessQueue[int], ready: Any) -> None:
    """The bare pair's consumer process: count bodies until None, report the count."""
    ready.set()
    received = 0
    while queue.get() is not None:
        received += 1
    done.put(received)


def bare_process_pair(body: bytes, count: int) -> float:
    """Records/s through a multiprocessing.Queue from a producer to a consumer process."""
    context = multiprocessing.get_context("spawn")
    queue: ProcessQueue[bytes | None] = context.Queue()
    done: ProcessQueue[int] = context.Queue()
    go: ProcessEvent = context.Event()
    ready: ProcessEvent = context.Event()
    producer = context.Process(target=_produce, args=(queue, body, count, go))
    consumer = context.Process(target=_consume, args=(queue, done, ready))
    producer.start()
    consumer.start()
    ready.wait(60)
    time.sleep(0.2)  # the producer has had time to import too; go starts the clock anyway
    started = time.perf_counter()
    go.set()
    received = done.get(timeout=120)
    elapsed = time.perf_counter() - started
    producer.join(10)
    consumer.join(10)
    assert received == count, received
    return rate(count, elapsed)


def process_publish_consume(bodies: Sequence[bytes]) -> float:
    """Records/s published through process:// and consumed, acked each, on another thread."""
    from logbus.transports.inprocess.process import broker_name, stop_broker

    url = f"process://bench-{secrets.token_hex(4)}"
    publisher, subscriber = connect(url), connect(url)
    queue = publisher.declare_queue("bench.q", durable=False).name
    received = 0

    def consume() -> None:
        nonlocal received
        for delivery in subscriber.consume(queue, prefetch=DEFAULT_PREFETCH):
            delivery.ack()
            received += 1
            if received == len(bodies):
                return

    consumer = threading.Thread(target=consume)
    started = time.perf_counter()
    consumer.start()
    publisher.publish_many(Message(body, PROPERTIES, "", queue) for body in bodies)
    consumer.join()
    elapsed = time.perf_counter() - started
    subscriber.close()
    publisher.close()
    stop_broker(broker_name(url))
    return rate(len(bodies), elapsed)


def process_publish_only(bodies: Sequence[bytes]) -> float:
    """Records/s of publishing alone (pipelined confirms) through process://: one hop."""
    from logbus.transports.inprocess.process import broker_name, stop_broker

    url = f"process://bench-{secrets.token_hex(4)}"
    with connect(url) as publisher:
        queue = publisher.declare_queue("bench.q", durable=False).name
        started = time.perf_counter()
        publisher.publish_many(Message(body, PROPERTIES, "", queue) for body in bodies)
        elapsed = time.perf_counter() - started
    stop_broker(broker_name(url))
    return rate(len(bodies), elapsed)


def bench_process() -> None:
    """process:// publish -> consume -> ack against a bare multiprocessing.Queue process pair."""
    bodies = [BODY] * THROUGHPUT_COUNT
    print(
        f"# process:// throughput: {THROUGHPUT_COUNT:,} records, publisher thread -> broker "
        f"process -> consumer thread acking each, best of {ROUNDS}"
    )
    base = max(bare_process_pair(BODY, THROUGHPUT_COUNT) for _ in range(ROUNDS))
    mine = max(process_publish_consume(bodies) for _ in range(ROUNDS))
    publishing = max(process_publish_only(bodies) for _ in range(ROUNDS))
    print(f"mp.Queue       {base:>12,.0f} records/s  (bare Queue, producer -> consumer process)")
    bound = (
        "the broker process's Python work per record (decode, route, enqueue, dispatch, "
        f"encode, settle) on a shared machine: publishing alone, one hop, "
        f"reaches {publishing:,.0f}/s = {publishing / base:.2f}x"
    )
    print(
        f"process://     {mine:>12,.0f} records/s  ratio={mine / base:.2f}x "
        f"{verdict(mine / base, PROCESS_TARGET, bound)}"
    )


# -- worker pools ----------------------------------------------------------------


class CpuSink:
    """Parses each record's JSON ``CPU_ROUNDS`` times: about 1 ms of CPU holding the GIL."""

    @classmethod
    def from_spec(cls, arg: str | None) -> CpuSink:
        """The sink for ``bench-cpu``."""
        return cls()

    def open(self) -> None:
        """Nothing to open."""

    def write(self, batch: Sequence[LogRecord]) -> list[Exception | None]:
        """Burn the CPU for each record, then call it stored."""
        for record in batch:
            wire = record.to_bytes()
            for _ in range(CPU_ROUNDS):
                json.loads(wire)
        return [None] * len(batch)

    def close(self) -> None:
        """Nothing to close."""


class WaitSink:
    """Waits ``IO_WAIT`` per record (``time.sleep``: a greenlet switch when patched)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.written = 0
        self.all_written = threading.Event()

    def open(self) -> None:
        """Nothing to open."""

    def write(self, batch: Sequence[LogRecord]) -> list[Exception | None]:
        """Wait for each record in turn, then call it stored."""
        for _ in batch:
            time.sleep(IO_WAIT)
            self.written += 1
        if self.written >= self.count:
            self.all_written.set()
        return [None] * len(batch)

    def close(self) -> None:
        """Nothing to close."""


def install_bench_sinks() -> str:
    """Make ``bench-cpu`` a ``logbus.sinks`` plugin (for worker processes); its directory."""
    root = tempfile.mkdtemp(prefix="logbus-bench-")
    info = os.path.join(root, "logbus_bench-0.dist-info")
    os.mkdir(info)
    with open(os.path.join(info, "METADATA"), "w") as metadata:
        metadata.write("Metadata-Version: 2.1\nName: logbus-bench\nVersion: 0\n")
    with open(os.path.join(info, "entry_points.txt"), "w") as entry_points:
        entry_points.write("[logbus.sinks]\nbench-cpu = local:CpuSink.from_spec\n")
    sys.path.insert(0, root)  # spawned worker processes get this sys.path too
    importlib.invalidate_caches()
    return root


def worker_seconds(pool: Any, concurrency: int, count: int) -> tuple[float, float]:
    """Seconds for a ``pool`` worker of ``concurrency`` to store ``count`` CPU-bound records,
    and the CPU seconds this (the consuming) process spent meanwhile."""
    from logbus.worker import Worker

    with connect(f"memory://bench-{secrets.token_hex(4)}") as transport:
        queue = fresh_queue(transport)
        transport.publish_many(Message(BODY, PROPERTIES, "", queue) for _ in range(count))
        sink: Any = "bench-cpu" if pool == "process" else CpuSink()
        worker = Worker(transport, queue, sink, pool=pool, concurrency=concurrency)
        worker.start()  # the worker processes are ready: the clock starts with consuming
        started, cpu = time.perf_counter(), time.process_time()
        waiting = threading.Thread(target=worker.wait)
        waiting.start()
        while worker.summary().handled < count:
            time.sleep(0.002)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        worker.stop()
        waiting.join()
        return elapsed, cpu


def gevent_pool_child(concurrency: int, count: int) -> None:
    """In a monkey-patched process: time a gevent-pool worker over I/O-bound records."""
    from logbus.worker import Worker

    with connect(f"memory://bench-{secrets.token_hex(4)}") as transport:
        queue = fresh_queue(transport)
        transport.publish_many(Message(BODY, PROPERTIES, "", queue) for _ in range(count))
        sink = WaitSink(count)
        worker = Worker(transport, queue, sink, pool="gevent", concurrency=concurrency)
        worker.start()
        started = time.perf_counter()
        waiting = threading.Thread(target=worker.wait)  # a greenlet: threading is patched
        waiting.start()
        sink.all_written.wait()
        elapsed = time.perf_counter() - started
        worker.stop()
        waiting.join()
    print(json.dumps({"seconds": elapsed}))


def gevent_pool_seconds(concurrency: int, count: int) -> float:
    """Run :func:`gevent_pool_child` in a freshly patched interpreter; its seconds."""
    code = (
        "from gevent import monkey; monkey.patch_all()\n"
        f"import sys; sys.path.insert(0, {BENCH_DIR!r})\n"
        f"import local; local.gevent_pool_child({concurrency}, {count})\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True
    )
    return float(json.loads(proc.stdout.splitlines()[-1])["seconds"])


def bench_pools() -> None:
    """Worker pools: CPU-bound through 1 and 2 processes, I/O-bound through 1 and 50 greenlets."""
    cores = os.cpu_count() or 1
    print(
        f"# worker pools, CPU-bound: {CPU_COUNT:,} records on memory://, sink parses each "
        f"record's JSON {CPU_ROUNDS} times (holds the GIL), {cores} cores"
    )
    plugins = install_bench_sinks()
    try:
        one, _ = min(worker_seconds("process", 1, CPU_COUNT) for _ in range(ROUNDS))
        two, parent = min(worker_seconds("process", 2, CPU_COUNT) for _ in range(ROUNDS))
        threads, _ = worker_seconds("thread", 2, CPU_COUNT)
    finally:
        shutil.rmtree(plugins, ignore_errors=True)
    print(
        f"1 process      {rate(CPU_COUNT, one):>12,.0f} records/s  "
        f"({one / CPU_COUNT * 1000:.2f} ms per record), best of {ROUNDS}"
    )
    print(
        f"2 processes    {rate(CPU_COUNT, two):>12,.0f} records/s  best of {ROUNDS}; the "
        f"consuming process spent {parent / CPU_COUNT * 1e6:.0f} us of CPU per record"
    )
    print(f"2 threads      {rate(CPU_COUNT, threads):>12,.0f} records/s  (for contrast: the GIL)")
    bound = (
        f"{cores} cores shared by the two worker processes, the consuming process "
        f"({parent / two:.0%} of a core) and whatever else runs on this machine"
    )
    speedup = one / two
    print(f"--pool process 1 -> 2 speed-up={speedup:.2f}x {verdict(speedup, CPU_TARGET, bound)}")
    print()
    print(
        f"# worker pools, I/O-bound: sink waits {IO_WAIT * 1000:.0f} ms per record "
        "(time.sleep, patched), memory://, in a patched subprocess"
    )
    seconds = {n: gevent_pool_seconds(n, count) for n, count in POOL_IO_COUNTS.items()}
    rates = {n: rate(POOL_IO_COUNTS[n], seconds[n]) for n in POOL_IO_COUNTS}
    low, high = sorted(POOL_IO_COUNTS)
    for n in (low, high):
        label = f"{n} greenlet{'s' if n != 1 else ''}"
        print(f"{label:<14} {rates[n]:>12,.0f} records/s  ({POOL_IO_COUNTS[n]:,} records)")
    speedup = rates[high] / rates[low]
    bound = "the worker's own work per record (consume, decode, ack) in one thread"
    print(
        f"--pool gevent {low} -> {high} speed-up={speedup:.1f}x "
        f"{verdict(speedup, IO_TARGET, bound)}"
    )


# -- gevent:// ----------------------------------------------------------------


def bare_gevent_queue(bodies: list[bytes]) -> float:
    """Records/s through a gevent.queue.Queue from a producer greenlet to a consumer greenlet."""
    import gevent
    import gevent.queue

    queue: gevent.queue.Queue[bytes | None] = gevent.queue.Queue()
    received = 0

    def produce() -> None:
        for body in bodies:
            queue.put(body)
        queue.put(None)

    def consume() -> None:
        nonlocal received
        while queue.get() is not None:
            received += 1

    started = time.perf_counter()
    gevent.joinall([gevent.spawn(produce), gevent.spawn(consume)], raise_error=True)
    elapsed = time.perf_counter() - started
    assert received == len(bodies), received
    return rate(received, elapsed)


def gevent_publish_consume(bodies: list[bytes]) -> tuple[float, float, float]:
    """Records/s from a publisher greenlet through gevent:// to a consumer greenlet acking each.

    Also the seconds of each side: the publisher never yields, so it finishes before the
    consumer starts, as the bare Queue's producer does.
    """
    import gevent

    with connect(f"gevent://bench-{secrets.token_hex(4)}") as transport:
        queue = fresh_queue(transport)
        consumer = transport.consume(queue, prefetch=DEFAULT_PREFETCH)
        published = 0.0

        def produce() -> None:
            nonlocal published
            for body in bodies:
                transport.publish(Message(body, PROPERTIES, "", queue))
            published = time.perf_counter()

        def consume() -> None:
            for _ in bodies:
                delivery = consumer.get(timeout=10)
                assert delivery is not None, "a record never arrived"
                delivery.ack()

        started = time.perf_counter()
        gevent.joinall([gevent.spawn(produce), gevent.spawn(consume)], raise_error=True)
        ended = time.perf_counter()
        return rate(len(bodies), ended - started), published - started, ended - published


def gevent_io_bound(concurrency: int, count: int) -> float:
    """Seconds for ``concurrency`` greenlets to handle ``count`` records waiting IO_WAIT each."""
    import gevent

    with connect(f"gevent://bench-{secrets.token_hex(4)}") as transport:
        queue = fresh_queue(transport)
        transport.publish_many(Message(BODY, PROPERTIES, "", queue) for _ in range(count))
        consumer = transport.consume(queue, prefetch=concurrency)
        handled = 0

        def work() -> None:
            nonlocal handled
            for delivery in consumer:
                gevent.sleep(IO_WAIT)  # the handler's I/O
                delivery.ack()
                handled += 1
                if handled == count:
                    consumer.cancel()  # ends every greenlet's iteration

        started = time.perf_counter()
        gevent.joinall([gevent.spawn(work) for _ in range(concurrency)], raise_error=True)
        elapsed = time.perf_counter() - started
        assert handled == count, handled
        return elapsed


def bench_gevent() -> None:
    """gevent:// against a bare gevent.queue.Queue, then 1 against 50 I/O-bound greenlets."""
    bodies = [BODY] * THROUGHPUT_COUNT
    print(
        f"# gevent:// throughput: {THROUGHPUT_COUNT:,} records, publisher greenlet -> "
        f"consumer greenlet acking each, best of {ROUNDS}"
    )
    base = best_of(ROUNDS, lambda: bare_gevent_queue(bodies))
    mine, publishing, consuming = max(gevent_publish_consume(bodies) for _ in range(ROUNDS))
    print(f"gevent.queue   {base:>12,.0f} records/s  (bare Queue, producer -> consumer greenlet)")
    print(
        f"gevent://      {mine:>12,.0f} records/s  "
        f"ratio={mine / base:.2f}x (target >= {THROUGHPUT_TARGET}x)"
    )
    per_record = 1e6 / THROUGHPUT_COUNT
    print(
        f"  per record: publish {publishing * per_record:.2f} us, get+ack "
        f"{consuming * per_record:.2f} us; bare Queue put+get {1e6 / base:.2f} us"
    )
    print()
    print(
        f"# gevent:// I/O-bound: {IO_COUNT:,} records, handler waits {IO_WAIT * 1000:.0f} ms "
        "(gevent.sleep), prefetch = greenlets"
    )
    one = gevent_io_bound(1, IO_COUNT)
    many = gevent_io_bound(IO_CONCURRENCY, IO_COUNT)
    print(f"1 greenlet     {rate(IO_COUNT, one):>12,.0f} records/s  {one:6.2f} s")
    print(f"{IO_CONCURRENCY} greenlets   {rate(IO_COUNT, many):>12,.0f} records/s  {many:6.2f} s")
    print(
        f"gevent:// {IO_CONCURRENCY} greenlets speed-up={one / many:.1f}x "
        f"(target >= {IO_TARGET:.0f}x)"
    )


# -- a durable queue in a broker serve process ------------------------------------

DURABLE_COUNT = 1_000_000
MiB = 1 << 20


def proc_status(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` memory field (``VmRSS``, ``VmHWM``) in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise LookupError(field)


def serve_broker(directory: str) -> tuple[subprocess.Popen[bytes], str]:
    """``logbus broker serve --data-dir`` in a child process, and its local:// URL."""
    sock = os.path.join(directory, "broker.sock")
    data = os.path.join(directory, "data")
    command = [sys.executable, "-m", "logbus", "broker", "serve", "--listen", sock]
    process = subprocess.Popen([*command, "--data-dir", data], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not os.path.exists(sock):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("logbus broker serve did not start")
        time.sleep(0.05)
    return process, f"local://{sock}"


def lowest_rss(pid: int, seconds: float = 5.0) -> int:
    """The lowest RSS of ``pid`` seen over ``seconds`` (memory is given back in the background)."""
    lowest = proc_status(pid, "VmRSS")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.2)
        lowest = min(lowest, proc_status(pid, "VmRSS"))
    return lowest


def durable_run(count: int, arguments: dict[str, Any]) -> tuple[float, float, int, int, int]:
    """Publish ``count`` records to a durable queue of a fresh broker serve process, drain it.

    Returns the publish and drain rates and the broker's RSS at start, peak and after.
    """
    directory = tempfile.mkdtemp(prefix="lbb-")
    process, url = serve_broker(directory)
    try:
        start_rss = proc_status(process.pid, "VmRSS")
        with connect(url) as publisher:
            queue = publisher.declare_queue("bench.durable", arguments=arguments).name
            started = time.perf_counter()
            publisher.publish_many(Message(BODY, PROPERTIES, "", queue) for _ in range(count))
            published = time.perf_counter() - started
        peak = proc_status(process.pid, "VmHWM")
        with connect(url) as subscriber:
            started = time.perf_counter()
            for received, delivery in enumerate(subscriber.consume(queue, prefetch=1000), 1):
                delivery.ack()
                if received == count:
                    break
            drained = time.perf_counter() - started
        after = lowest_rss(process.pid)
    finally:
        process.terminate()
        process.wait(60)
        shutil.rmtree(directory, ignore_errors=True)
    return rate(count, published), rate(count, drained), start_rss, peak, after


DURABLE_MODES = {"default": {}, "lazy": {"x-queue-mode": "lazy"}}


def bench_durable(count: int, modes: Sequence[str] = tuple(DURABLE_MODES)) -> None:
    """A durable queue of ``count`` records in a broker serve process: rates and RSS."""
    print(
        f"# local:// durable queue: {count:,} persistent records published to a broker serve "
        "process with --data-dir, then drained (consumer acking each)"
    )
    for mode in modes:
        published, drained, start_rss, peak, after = durable_run(count, DURABLE_MODES[mode])
        growth = (peak - start_rss) / count
        print(
            f"{mode + ' queue':<14} publish {published:>9,.0f} records/s  "
            f"drain {drained:>9,.0f} records/s"
        )
        print(
            f"{'':<14} broker RSS start {start_rss / MiB:,.0f} MiB  peak {peak / MiB:,.0f} MiB "
            f"({growth:,.0f} B/record, body {len(BODY)} B: ratio={growth / len(BODY):.2f}x)  "
            f"after drain {after / MiB:,.0f} MiB (+{(after - start_rss) / MiB:,.0f} MiB)"
        )


PARTS = ("memory", "process", "pools", "gevent", "durable")


def main() -> None:
    """Run the local benchmarks asked for and print each figure next to its baseline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}"
    )
    parser.add_argument("--durable-count", type=int, default=DURABLE_COUNT, metavar="N")
    parser.add_argument(
        "--durable-modes",
        default=",".join(DURABLE_MODES),
        help=f"comma-separated, of {', '.join(DURABLE_MODES)} (x-queue-mode=lazy)",
    )
    options = parser.parse_args()
    parts = [part.strip() for part in options.parts.split(",") if part.strip()]
    runs: dict[str, Callable[[], None]] = {
        "memory": bench_memory,
        "process": bench_process,
        "pools": bench_pools,
        "gevent": bench_gevent,
        "durable": lambda: bench_durable(
            options.durable_count, [m.strip() for m in options.durable_modes.split(",")]
        ),
    }
    for index, part in enumerate(parts):
        if index:
            print()
        runs[part]()


if __name__ == "__main__":
    main()
