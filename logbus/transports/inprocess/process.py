"""``process://`` and ``process://name`` — a broker in a child process, started on first use.

On first use in a process, a broker is started in a child process — with the
``spawn`` start method, so it works whether the program's own workers are
forked or spawned — on a private socket in a 0700 temporary directory, and
stopped when the process that started it exits. That process exports the
socket's path as ``LOGBUS_PROCESS_BROKER_<NAME>``, so its children (forked or
spawned, any depth) opening the same URL share that broker instead of starting
their own. The connection itself is a :class:`~logbus.transports.inprocess.local.LocalTransport`.

Caveat of ``spawn``: a script that opens ``process://`` must guard its entry
point with ``if __name__ == "__main__":``, as with any spawned process.
"""

from __future__ import annotations

import atexit
import hashlib
import multiprocessing
import os
import re
import shutil
import signal
import socket
import stat
import tempfile
import threading
import time
from typing import Any
from urllib.parse import quote

from logbus._log import get_logger
from logbus._urls import parse_url
from logbus.errors import (
    BrokerUnavailable,
    ConfigError,
)
from logbus.transports.inprocess.local import LocalTransport

__all__ = [
    "ProcessTransport",
    "broker_name",
    "broker_socket",
    "env_var",
    "remove_stale",
    "stop_broker",
]

log = get_logger("logbus.transports.inprocess.process")


def _after_fork_in_child() -> None:
    global _start_lock  # noqa: PLW0603 - a thread may have held it at the fork: never freed
    _start_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def broker_name(url: str) -> str:
    """The broker name in ``process://name`` (empty for the default one)."""
    parts = parse_url(url)
    if parts.scheme != "process":
        raise ConfigError(f"not a process:// URL: {url!r}")
    return (parts.netloc + parts.path).strip("/")


def env_var(name: str) -> str:
    """The environment variable that carries broker ``name``'s socket path to child processes."""
    if not name:
        return "LOGBUS_PROCESS_BROKER"
    word = re.sub(r"[^A-Z0-9]+", "_", name.upper()).strip("_")
    if word.lower() != name:  # keep distinct names distinct: "a-b" and "a_b", "A" and "a"
        word += "_" + hashlib.blake2s(name.encode(), digest_size=4).hexdigest().upper()
    return f"LOGBUS_PROCESS_BROKER_{word}"


class _Started:
    """A broker process this process started, and how to stop it."""

    def __init__(self, process: Any, directory: str, path: str, var: str) -> None:
        self.process = process
        self.directory = directory
        self.path = path
        self.var = var
        self.pid = os.getpid()

    def stop(self) -> None:
        if os.getpid() != self.pid:
            return  # a forked child inherited the record; the broker is not its to stop
        if self.process.is_alive():
            self.process.terminate()  # SIGTERM: the server closes and removes its socket
            self.process.join(5)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(1)
        shutil.rmtree(self.directory, ignore_errors=True)
        if os.environ.get(self.var) == self.path:
            del os.environ[self.var]


_started: dict[str, _Started] = {}
_start_lock = threading.Lock()


#: The broker's directory: ``<tmp>/logbus-process-<pid of the owner>-<random>``; the
#: owner's pid in its name is how a later start tells a stale one (see :func:`remove_stale`).
_DIR_PREFIX = "logbus-process-"
_STALE = re.compile(re.escape(_DIR_PREFIX) + r"([0-9]+)-[A-Za-z0-9_]+")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _answers(path: str) -> bool:
    """Whether something accepts connections on the Unix socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except OSError:  # no such file, refused: nobody serves there
            return False
    return True


def remove_stale(directory: str | None = None) -> list[str]:
    """Remove broker directories (socket and key file) left behind by owners that died
    without cleaning up (SIGKILL, OOM killer); the paths removed.

    Only this user's directories whose owner process is gone and whose socket
    nobody serves are touched; a live owner's, or another user's, stay. A
    recycled pid keeps a stale directory a while longer, never removes a live one.
    """
    directory = directory or tempfile.gettempdir()
    removed: list[str] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for entry in names:
        found = _STALE.fullmatch(entry)
        if found is None or _alive(int(found.group(1))):
            continue
        path = os.path.join(directory, entry)
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            continue
        if _answers(os.path.join(path, "broker.sock")):
            continue  # a broker still serves there (its owner in another pid namespace?)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
        log.info("process.stale_removed", directory=path, owner=int(found.group(1)))
    return removed


def _serve_child(path: str, name: str) -> None:
    """The broker process's main: serve until SIGTERM or until the parent is gone."""
    from logbus.broker import Broker
    from logbus.broker.server import serve

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent to handle
    stop = threading.Event()
    parent = multiprocessing.parent_process()

    def stop_with_parent() -> None:
        if parent is not None:
            parent.join()  # waits on the parent's sentinel: returns when it is gone
            stop.set()

    threading.Thread(target=stop_with_parent, name="logbus-parent-watch", daemon=True).start()
    serve(path, broker=Broker(f"process:{name}"), stop=stop, signals=(signal.SIGTERM,))
    if parent is not None and not parent.is_alive():
        # The parent died without its atexit (SIGKILL): the directory and its key file
        # are nobody's now. A normal stop has the parent remove them itself.
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)


def broker_socket(name: str, *, timeout: float = 30.0) -> str:
    """The socket of ``process://name``'s broker: inherited, already started, or started now."""
    var = env_var(name)
    with _start_lock:
        started = _started.get(name)
        if started is not None:
            return started.path
        inherited = os.environ.get(var)
        if inherited:
            return inherited
        remove_stale()  # the leftovers of SIGKILLed owners, before adding one more
        directory = tempfile.mkdtemp(prefix=f"{_DIR_PREFIX}{os.getpid()}-")  # mode 0700
        path = os.path.join(directory, "broker.sock")
        context = multiprocessing.get_context("spawn")
        process = context.Process(
            target=_serve_child, args=(path, name), name=f"logbus-broker-{name}", daemon=True
        )
        try:
            process.start()
        except AssertionError:  # "daemonic processes are not allowed to have children"
            shutil.rmtree(directory, ignore_errors=True)
            raise ConfigError(
                f"process://{name}: a daemonic process cannot start a broker; open the URL in "
                "its parent first, so the children find that broker"
            ) from None
        started = _Started(process, directory, path, var)
        atexit.register(started.stop)
        deadline = time.monotonic() + timeout
        while not os.path.exists(path):
            if not process.is_alive() or time.monotonic() > deadline:
                started.stop()
                raise BrokerUnavailable(
                    f"process://{name}: the broker process did not start "
                    f"(exit status {process.exitcode}); see its error above"
                )
            process.join(0.01)  # returns at once if the process dies
        _started[name] = started
        os.environ[var] = path
        return path


def stop_broker(name: str = "") -> bool:
    """Stop the broker this process started for ``process://name``; False if it started none.

    It stops by itself when this process exits; this is for stopping it sooner.
    Connections to it then raise ``ConnectionLost``.
    """
    with _start_lock:
        started = _started.pop(name, None)
    if started is None or started.pid != os.getpid():
        return False
    atexit.unregister(started.stop)
    started.stop()
    return True


class ProcessTransport(LocalTransport):
    """``process://name``: a :class:`LocalTransport` to this process tree's broker process."""

    def __init__(self, url: str = "process://", **options: Any) -> None:
        settings = options.get("settings")
        timeout = float(getattr(settings, "connect_timeout", 30.0))
        name = broker_name(url)
        path = broker_socket(name, timeout=max(timeout, 30.0))
        try:
            super().__init__("local://" + quote(path), **options)
        except BrokerUnavailable as exc:
            raise BrokerUnavailable(
                f"process://{name}: its broker process at {path} is gone ({exc}); "
                "the process that started it has probably exited"
            ) from None
        self.url = url
