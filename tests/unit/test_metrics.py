"""Unit tests for logbus.metrics: the exposition text, parsed back, and counting from threads.

:func:`parse` is a strict reader of the Prometheus text format 0.0.4: every
line must be a ``# HELP``, a ``# TYPE`` or a sample matching the grammar, each
family typed once and before its samples, each sample belonging to a typed
family. Every test that reads the text goes through it.
"""

from __future__ import annotations

import math
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

import logbus.metrics
from logbus.metrics import BATCH_RECORDS_BUCKETS, BATCH_SECONDS_BUCKETS, WorkerMetrics

COUNTERS = [
    "received",
    "written",
    "failed",
    "retried",
    "dead_lettered",
    "undecodable",
    "redelivered",
]
#: The process collector's families, under the names Prometheus' client libraries use.
PROCESS = {
    "process_cpu_seconds_total": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_virtual_memory_bytes": "gauge",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
    "process_start_time_seconds": "gauge",
}
HISTOGRAMS = ["logbus_worker_batch_seconds", "logbus_worker_batch_records"]

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"'
_VALUE = r"[+-]?(?:Inf|NaN|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
_SAMPLE = re.compile(rf"({_NAME})(?:\{{((?:{_LABEL})(?:,{_LABEL})*,?)?\}})? ({_VALUE})(?: -?\d+)?")
_UNESCAPE = {"\\": "\\", '"': '"', "n": "\n"}


@dataclass
class Exposition:
    """What :func:`parse` read: family types and helps, and the samples in order."""

    types: dict[str, str] = field(default_factory=dict)
    helps: dict[str, str] = field(default_factory=dict)
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def value(self, name: str, **labels: str) -> float:
        """The one sample named ``name`` whose labels include ``labels``."""
        found = [
            value
            for sample, have, value in self.samples
            if sample == name and labels.items() <= have.items()
        ]
        assert len(found) == 1, (name, labels, found)
        return found[0]

    def buckets(self, histogram: str) -> list[tuple[float, float]]:
        """``(le, cumulative count)`` of ``histogram``, in the order rendered."""
        return [
            (float(labels["le"]), value)
            for name, labels, value in self.samples
            if name == f"{histogram}_bucket"
        ]


def _family(name: str, types: dict[str, str]) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and types.get(base) == "histogram":
            return base
    return name


def parse(text: str) -> Exposition:
    """Read ``text`` strictly as the text format 0.0.4, failing on any line that is not."""
    assert text.endswith("\n"), "the exposition ends with a line feed"
    out = Exposition()
    seen: set[str] = set()  # families whose samples have begun
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            name, _, text_ = line[len("# HELP ") :].partition(" ")
            assert re.fullmatch(_NAME, name), line
            assert name not in out.helps, f"second HELP for {name}"
            out.helps[name] = text_
        elif line.startswith("# TYPE "):
            name, _, kind = line[len("# TYPE ") :].partition(" ")
            assert re.fullmatch(_NAME, name), line
            assert kind in {"counter", "gauge", "histogram", "summary", "untyped"}, line
            assert name not in out.types, f"second TYPE for {name}"
            assert name not in seen, f"TYPE for {name} after its samples"
            out.types[name] = kind
        else:
            match = _SAMPLE.fullmatch(line)
            assert match is not None, f"not a sample line: {line!r}"
            name, label_text, value = match.group(1), match.group(2) or "", match.groups()[-1]
            labels: dict[str, str] = {}
            for label in re.finditer(_LABEL, label_text):
                assert label.group(1) not in labels, f"label {label.group(1)} twice: {line}"
                labels[label.group(1)] = re.sub(
                    r"\\(.)", lambda m: _UNESCAPE[m.group(1)], label.group(2)
                )
            family = _family(name, out.types)
            assert family in out.types, f"sample of an untyped family: {line}"
            seen.add(family)
            out.samples.append((name, labels, float(value)))
    return out


@pytest.fixture
def metrics() -> WorkerMetrics:
    """Metrics of a worker on queue logbus.tasks writing to a jsonl file."""
    return WorkerMetrics("logbus.tasks", "jsonl:/tmp/all.jsonl")


@pytest.fixture
def contended() -> Iterator[None]:
    """Threads switch as often as the interpreter lets them, so any race shows up sooner."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def run_together(threads: int, work: Callable[[], None]) -> None:
    """Run ``work`` in ``threads`` threads released at the same moment; wait for all."""
    barrier = threading.Barrier(threads, timeout=10)

    def go() -> None:
        barrier.wait()
        work()

    pool = [threading.Thread(target=go) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=30)
        assert not thread.is_alive()


# --- the exposition text --------------------------------------------------------------


def test_public_names_are_exported():
    """Everything in logbus.metrics.__all__ exists."""
    for name in logbus.metrics.__all__:
        assert hasattr(logbus.metrics, name), name


def test_every_line_follows_the_text_format(metrics):
    """After some activity every line parses as HELP, TYPE or a well-formed sample."""
    metrics.received(5)
    metrics.written(4)
    metrics.failed()
    metrics.observe_batch(0.0123, 4)
    assert len(parse(metrics.render()).samples) > 0


def test_the_metric_families_are_the_documented_ones(metrics):
    """Exactly these families are exposed, each with a HELP and a TYPE."""
    exposition = parse(metrics.render())
    assert exposition.types == {
        "logbus_worker_up": "gauge",
        "logbus_worker_start_time_seconds": "gauge",
        "logbus_worker_received_total": "counter",
        "logbus_worker_written_total": "counter",
        "logbus_worker_failed_total": "counter",
        "logbus_worker_retried_total": "counter",
        "logbus_worker_dead_lettered_total": "counter",
        "logbus_worker_undecodable_total": "counter",
        "logbus_worker_redelivered_total": "counter",
        "logbus_worker_batch_seconds": "histogram",
        "logbus_worker_batch_records": "histogram",
        **PROCESS,
    }
    assert exposition.helps.keys() == exposition.types.keys()
    assert all(exposition.helps.values())


def test_every_sample_is_labelled_with_queue_and_sink(metrics):
    """Each sample carries queue and sink (and le, on buckets only); the process's own none."""
    for name, labels, _ in parse(metrics.render()).samples:
        if name.startswith("process_"):
            assert labels == {}, name
            continue
        expected = {"queue", "sink", "le"} if name.endswith("_bucket") else {"queue", "sink"}
        assert labels.keys() == expected, name
        assert labels["queue"] == "logbus.tasks"
        assert labels["sink"] == "jsonl:/tmp/all.jsonl"


def test_the_process_collector_reads_this_process(metrics):
    """CPU seconds, memory, open fds and the start time of the process serving them."""
    exposition = parse(metrics.render())
    assert exposition.value("process_cpu_seconds_total") > 0
    assert exposition.value("process_resident_memory_bytes") > 1_000_000
    assert exposition.value("process_virtual_memory_bytes") >= exposition.value(
        "process_resident_memory_bytes"
    )
    assert 3 <= exposition.value("process_open_fds") <= exposition.value("process_max_fds")
    assert 0 < time.time() - exposition.value("process_start_time_seconds") < 86400


def test_the_queue_depth_is_a_gauge_once_known(metrics):
    """No depth sample before the worker looked; then the last depth it saw."""
    assert "logbus_worker_queue_depth" not in parse(metrics.render()).types
    metrics.queue_depth(12)
    metrics.queue_depth(7)
    exposition = parse(metrics.render())
    assert exposition.types["logbus_worker_queue_depth"] == "gauge"
    assert exposition.value("logbus_worker_queue_depth") == 7


def test_up_is_one(metrics):
    """logbus_worker_up is 1."""
    assert parse(metrics.render()).value("logbus_worker_up") == 1


def test_start_time_is_when_the_metrics_were_made():
    """logbus_worker_start_time_seconds is the Unix time of creation."""
    before = time.time()
    metrics = WorkerMetrics("q", "console")
    after = time.time()
    assert before <= parse(metrics.render()).value("logbus_worker_start_time_seconds") <= after


@pytest.mark.parametrize("counter", COUNTERS)
def test_counters_start_at_zero(metrics, counter):
    """Before anything happened every counter reads 0."""
    assert parse(metrics.render()).value(f"logbus_worker_{counter}_total") == 0


@pytest.mark.parametrize("counter", COUNTERS)
def test_each_method_increases_its_own_counter_only(metrics, counter):
    """counter(3) then counter() reads 4 on its metric, and the others stay 0."""
    getattr(metrics, counter)(3)
    getattr(metrics, counter)()
    exposition = parse(metrics.render())
    for other in COUNTERS:
        expected = 4 if other == counter else 0
        assert exposition.value(f"logbus_worker_{other}_total") == expected, other


def test_a_counter_only_goes_up_between_renders(metrics):
    """A later render reads more after more deliveries."""
    metrics.received(2)
    first = parse(metrics.render()).value("logbus_worker_received_total")
    metrics.received(1)
    assert parse(metrics.render()).value("logbus_worker_received_total") == first + 1


@pytest.mark.parametrize("counter", COUNTERS)
def test_a_negative_increment_is_refused(metrics, counter):
    """A counter that went down would read as a restart: ValueError, and no change."""
    with pytest.raises(ValueError, match="only go up"):
        getattr(metrics, counter)(-1)
    assert parse(metrics.render()).value(f"logbus_worker_{counter}_total") == 0


def test_histograms_start_empty(metrics):
    """Every bucket, the sum and the count read 0 before any batch."""
    exposition = parse(metrics.render())
    for histogram in HISTOGRAMS:
        assert all(count == 0 for _, count in exposition.buckets(histogram))
        assert exposition.value(f"{histogram}_sum") == 0
        assert exposition.value(f"{histogram}_count") == 0


def test_bucket_bounds_are_the_documented_ones_then_inf(metrics):
    """batch_seconds spans 1 ms..10 s; both histograms end with le="+Inf"."""
    exposition = parse(metrics.render())
    seconds = [le for le, _ in exposition.buckets("logbus_worker_batch_seconds")]
    records = [le for le, _ in exposition.buckets("logbus_worker_batch_records")]
    assert seconds == [*BATCH_SECONDS_BUCKETS, math.inf]
    assert seconds[0] == 0.001
    assert seconds[-2] == 10
    assert records == [*BATCH_RECORDS_BUCKETS, math.inf]


def test_a_value_on_a_bound_falls_in_that_bound_bucket(metrics):
    """le means <=: a 5 ms write counts in le="0.005", not in le="0.0025"."""
    metrics.observe_batch(0.005, 1)
    buckets = dict(parse(metrics.render()).buckets("logbus_worker_batch_seconds"))
    assert buckets[0.0025] == 0
    assert buckets[0.005] == 1


durations = st.lists(st.floats(min_value=0, max_value=60, allow_nan=False), max_size=50)
sizes = st.lists(st.integers(min_value=0, max_value=2000), max_size=50)


@given(durations)
def test_each_bucket_counts_the_writes_up_to_its_bound(seconds):
    """Bucket le=B reads how many writes took <= B seconds: cumulative by construction."""
    metrics = WorkerMetrics("q", "console")
    for value in seconds:
        metrics.observe_batch(value, 1)
    for le, count in parse(metrics.render()).buckets("logbus_worker_batch_seconds"):
        assert count == sum(1 for value in seconds if value <= le), le


@given(durations)
def test_buckets_never_decrease(seconds):
    """Bucket counts are non-decreasing from the smallest le to +Inf."""
    metrics = WorkerMetrics("q", "console")
    for value in seconds:
        metrics.observe_batch(value, 1)
    counts = [count for _, count in parse(metrics.render()).buckets("logbus_worker_batch_seconds")]
    assert counts == sorted(counts)


@given(sizes)
def test_the_inf_bucket_equals_the_count(batch_sizes):
    """The +Inf bucket, _count and the number of writes agree, for both histograms."""
    metrics = WorkerMetrics("q", "console")
    for size in batch_sizes:
        metrics.observe_batch(0.5, size)
    exposition = parse(metrics.render())
    for histogram in HISTOGRAMS:
        inf = dict(exposition.buckets(histogram))[math.inf]
        assert inf == exposition.value(f"{histogram}_count") == len(batch_sizes)


@given(sizes)
def test_batch_records_sum_is_the_records_written(batch_sizes):
    """logbus_worker_batch_records_sum is the total of the batch sizes."""
    metrics = WorkerMetrics("q", "console")
    for size in batch_sizes:
        metrics.observe_batch(0.01, size)
    assert parse(metrics.render()).value("logbus_worker_batch_records_sum") == sum(batch_sizes)


def test_batch_seconds_sum_is_the_time_spent(metrics):
    """logbus_worker_batch_seconds_sum adds up the durations."""
    metrics.observe_batch(0.25, 1)
    metrics.observe_batch(1.5, 1)
    assert parse(metrics.render()).value("logbus_worker_batch_seconds_sum") == 1.75


@pytest.mark.parametrize(
    ("seconds", "size"),
    [(-0.001, 1), (math.nan, 1), (math.inf, 1), (0.1, -1)],
)
def test_an_impossible_batch_is_refused(metrics, seconds, size):
    """Negative, NaN or infinite seconds, or a negative size: ValueError, nothing counted."""
    with pytest.raises(ValueError, match="a batch takes"):
        metrics.observe_batch(seconds, size)
    assert parse(metrics.render()).value("logbus_worker_batch_seconds_count") == 0


# --- the registry ---------------------------------------------------------------------


def test_each_worker_has_its_own_registry_never_the_global_one():
    """Two workers on the same queue and sink in one process each count their own, and
    prometheus_client's global registry holds none of it."""
    from prometheus_client import REGISTRY, CollectorRegistry

    first, second = WorkerMetrics("q", "console"), WorkerMetrics("q", "console")
    first.written(2)
    assert isinstance(first.registry, CollectorRegistry)
    assert first.registry is not second.registry
    assert parse(first.render()).value("logbus_worker_written_total") == 2
    assert parse(second.render()).value("logbus_worker_written_total") == 0
    assert REGISTRY.get_sample_value("logbus_worker_written_total", {"queue": "q"}) is None


# --- label values ---------------------------------------------------------------------


def test_backslash_quote_and_newline_are_escaped_in_label_values():
    """A queue named a"b\\c<LF>d renders as queue="a\\"b\\\\c\\nd"."""
    metrics = WorkerMetrics('a"b\\c\nd', "console")
    line = next(
        line for line in metrics.render().splitlines() if line.startswith("logbus_worker_up")
    )
    assert line == 'logbus_worker_up{queue="a\\"b\\\\c\\nd",sink="console"} 1.0'


@given(st.text(), st.text())
def test_any_queue_and_sink_read_back_unchanged(queue, sink):
    """Whatever the names, the text parses and the labels read back as given."""
    metrics = WorkerMetrics(queue, sink)
    for name, labels, _ in parse(metrics.render()).samples:
        if name.startswith("process_"):
            continue  # the process's own, unlabelled
        assert labels["queue"] == queue
        assert labels["sink"] == metrics.sink


def test_the_sink_label_hides_a_password():
    """A sink spec with a URL keeps its user and host and loses its password."""
    metrics = WorkerMetrics("q", "pg:postgresql://logs:s3cret@db/logs")
    assert "s3cret" not in metrics.render()
    assert parse(metrics.render()).value(
        "logbus_worker_up", sink="pg:postgresql://logs:***@db/logs"
    )


# --- threads --------------------------------------------------------------------------


@pytest.mark.parametrize("counter", COUNTERS)
def test_increments_from_many_threads_are_all_counted(metrics, contended, counter):
    """8 threads x 5000 increments read exactly 40000."""
    increment = getattr(metrics, counter)

    def work() -> None:
        for _ in range(5000):
            increment()

    run_together(8, work)
    assert parse(metrics.render()).value(f"logbus_worker_{counter}_total") == 40000


def test_batches_from_many_threads_are_all_counted(metrics, contended):
    """8 threads x 2000 writes of 3 records: count 16000, records sum 48000."""

    def work() -> None:
        for _ in range(2000):
            metrics.observe_batch(0.002, 3)

    run_together(8, work)
    exposition = parse(metrics.render())
    assert exposition.value("logbus_worker_batch_seconds_count") == 16000
    assert exposition.value("logbus_worker_batch_records_sum") == 48000


def test_a_render_during_writes_is_consistent(metrics, contended):
    """Renders taken while threads write always show +Inf == _count == records_sum."""
    done = threading.Event()
    failures: list[AssertionError] = []

    def work() -> None:
        for _ in range(2000):
            metrics.observe_batch(0.002, 1)

    def render_until_done() -> None:
        while True:
            finished = done.is_set()
            exposition = parse(metrics.render())
            inf = dict(exposition.buckets("logbus_worker_batch_records"))[math.inf]
            try:
                assert inf == exposition.value("logbus_worker_batch_seconds_count")
                assert inf == exposition.value("logbus_worker_batch_records_sum")
            except AssertionError as exc:
                failures.append(exc)
            if finished:
                return

    reader = threading.Thread(target=render_until_done)
    reader.start()
    run_together(4, work)
    done.set()
    reader.join(timeout=30)
    assert not reader.is_alive()
    assert not failures, failures[0]
