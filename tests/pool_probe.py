"""The probe sink and its helpers, shared by the worker-pool tests of every tier.

:class:`ProbeSink` is installed as the ``probe`` sink plugin (a ``logbus.sinks``
entry point in a dist-info directory put on ``sys.path``, which spawned worker
processes inherit), so that worker processes load it from its spec ``probe:DIR``
exactly as they would an installed plugin. Each record's message says what the
sink does with it; every record stored is one line ``pid ident id`` in
``DIR/stored``, so the test sees which process (and thread) wrote it.

Its fixtures (``probe_plugin``, ``probe_dir``, ``transport``) are a pytest plugin of
the whole suite (``pytest_plugins`` in ``tests/conftest.py``).
"""

from __future__ import annotations

import os
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from logbus.errors import ConfigError
from logbus.message import Message
from logbus.record import LogRecord
from logbus.transports import Transport, connect
from tests.support import RunningWorker

DEADLINE = 20.0
REPO = Path(__file__).resolve().parents[1]


# -- the probe sink -----------------------------------------------------------------------


class ProbeSink:
    """A sink that does what each record's message says, and logs what it stored.

    ``store``: store. ``cpu``: zlib-compress the body at level 9, twenty times, then
    store. ``sleep S``: note the id in ``DIR/started``, wait S seconds (cooperatively
    when gevent patched the process), then store. ``meet N``: wait until N records
    are being written at once (by other threads, processes or greenlets), then store.
    ``hang-once``: the first attempt in DIR writes its pid to ``DIR/hung`` and hangs
    for a minute; later ones store. ``gate``: touch ``DIR/writing``, wait until
    ``DIR/open`` exists, then store. ``fail``: a non-recoverable error.
    ``oserror-once``: a recoverable error on the first attempt, then store.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    @classmethod
    def from_spec(cls, arg: str | None) -> ProbeSink:
        """The sink for ``probe:DIR``."""
        if not arg:
            raise ConfigError("sink probe needs a directory: probe:DIR")
        return cls(arg)

    def open(self) -> None:
        """Note the opening process; a DIR that does not exist is a configuration error."""
        if not self.directory.is_dir():
            raise ConfigError(f"sink probe: no directory {self.directory}")
        self._append("opened", f"{os.getpid()}\n")

    def write(self, batch: Sequence[LogRecord]) -> Sequence[Exception | None]:
        """Act on each record as its message says; one result per record."""
        return [self._one(record) for record in batch]

    def close(self) -> None:
        """Note the closing process."""
        self._append("closed", f"{os.getpid()}\n")

    def _one(self, record: LogRecord) -> Exception | None:
        word, _, arg = record.message.partition(" ")
        if word == "cpu":
            data = record.to_bytes() * 64
            for _ in range(20):
                zlib.compress(data, 9)
        elif word == "sleep":
            self._append("started", f"{record.id}\n")
            time.sleep(float(arg))
        elif word == "meet":
            meeting = self.directory / "meet"
            meeting.mkdir(exist_ok=True)
            (meeting / record.id).touch()
            if not _until(lambda: len(os.listdir(meeting)) >= int(arg), 10):
                return ValueError(f"probe: only {len(os.listdir(meeting))} of {arg} met")
        elif word == "hang-once" and self._first(self.directory / "hung"):
            time.sleep(60)
        elif word == "gate":
            (self.directory / "writing").touch()
            _until((self.directory / "open").exists, 30)
        elif word == "fail":
            return ValueError("probe: refused")
        elif word == "oserror-once" and self._first(self.directory / f"failed-{record.id}"):
            return OSError("probe: try again")
        self._append("stored", f"{os.getpid()} {threading.get_ident()} {record.id}\n")
        return None

    def _first(self, marker: Path) -> bool:
        """Whether this is the first attempt: creates ``marker`` (holding the pid) if so."""
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            return False
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return True

    def _append(self, name: str, line: str) -> None:
        fd = os.open(self.directory / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def _until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    if not _until(condition, timeout):
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass(frozen=True)
class Stored:
    """One line of ``DIR/stored``."""

    pid: int
    ident: int
    id: str


def stored(directory: Path) -> list[Stored]:
    """What the probe sink stored in ``directory``, in order."""
    path = directory / "stored"
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [Stored(int(p), int(i), r) for p, i, r in (line.split() for line in lines)]


def started(directory: Path) -> list[str]:
    """The ids of the records whose ``sleep`` began."""
    path = directory / "started"
    return path.read_text().split() if path.exists() else []


def pids(directory: Path, name: str) -> list[int]:
    """The pids in ``DIR/opened`` or ``DIR/closed``."""
    path = directory / name
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie not yet reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture(scope="session")
def probe_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Install ProbeSink as the ``probe`` sink plugin; the environment for subprocesses."""
    root = tmp_path_factory.mktemp("plugins")
    info = root / "logbus_probe-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: logbus-probe\nVersion: 0\n")
    (info / "entry_points.txt").write_text(
        "[logbus.sinks]\nprobe = tests.pool_probe:ProbeSink.from_spec\n"
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(root))
        patch.syspath_prepend(str(REPO))
        yield {"PYTHONPATH": os.pathsep.join([str(root), str(REPO)])}


@pytest.fixture
def probe_dir(tmp_path: Path) -> Path:
    """A directory for this test's probe sink."""
    directory = tmp_path / "probe"
    directory.mkdir()
    return directory


@pytest.fixture
def transport() -> Iterator[Transport]:
    """A connection to this test's own memory:// broker, with a durable queue ``tasks``."""
    with connect(f"memory://pools-{os.urandom(4).hex()}") as opened:
        opened.declare_queue("tasks")
        yield opened


def publish(transport: Transport, messages: Sequence[str], queue: str = "tasks") -> list[str]:
    """Publish one record per message to ``queue``; their ids, in order."""
    records = [LogRecord.from_key("kern.info", text) for text in messages]
    transport.publish_many(Message(r.to_bytes(), r.to_properties(), "", queue) for r in records)
    return [r.id for r in records]


class Running(RunningWorker):
    """A worker on a thread of its own, given this module's deadline to stop."""

    timeout = DEADLINE


def ready(transport: Transport, queue: str = "tasks") -> int:
    """Messages ready in ``queue``."""
    return transport.declare_queue(queue, passive=True).message_count
