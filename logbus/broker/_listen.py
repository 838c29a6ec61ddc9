"""The socket file and its key: where a broker serves and who may talk to it.

The key lives beside the socket as ``<socket>.key`` (mode 0600, 32 random
bytes, made on first use); whoever can read it can use the broker, so a key
file that group or others may read is refused. A socket file left behind by a
broker that did not stop cleanly is replaced; one that somebody answers on is not.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import stat
from multiprocessing.connection import Listener

from logbus._log import get_logger
from logbus.errors import ConfigError

__all__ = ["key_path_for", "listen", "load_key"]

log = get_logger("logbus.broker.server")

_KEY_BYTES = 32


def key_path_for(path: str) -> str:
    """Where the key of the socket at ``path`` lives: ``<path>.key``."""
    return f"{path}.key"


def load_key(key_file: str, *, create: bool = True) -> bytes:
    """Read the authentication key, creating it (0600, 32 random bytes) when missing.

    Refuses (``ConfigError``) a key file that group or others may read: whoever
    holds the key can read every record the broker carries.
    """
    if create:
        try:
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        except OSError as exc:
            raise ConfigError(f"cannot create the key file {key_file}: {exc.strerror}") from None
        else:
            with os.fdopen(fd, "wb") as out:
                out.write(secrets.token_bytes(_KEY_BYTES))
    try:
        mode = stat.S_IMODE(os.stat(key_file).st_mode)
        if mode & 0o077:
            raise ConfigError(
                f"key file {key_file} is readable by group or others (mode {mode:04o}); "
                f"run: chmod 600 {key_file}"
            )
        with open(key_file, "rb") as source:
            key = source.read()
    except OSError as exc:
        raise ConfigError(f"cannot read the key file {key_file}: {exc.strerror}") from None
    if not key:
        raise ConfigError(f"key file {key_file} is empty; delete it and a new one is made")
    return key


def listen(path: str, *, authkey_file: str | None = None) -> tuple[Listener, bytes]:
    """An ``AF_UNIX`` listener on ``path`` (mode 0600) and its key, read or created.

    A socket already at ``path`` is removed only if nothing answers on it.
    """
    key = load_key(authkey_file or key_path_for(path))
    _clear_stale(path)
    try:
        listener = Listener(path, family="AF_UNIX", backlog=128)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    os.chmod(path, 0o600)
    return listener, key


def _clear_stale(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ConfigError(f"{path} exists and is not a socket; remove it or choose another path")
    with socket.socket(socket.AF_UNIX) as probe:
        probe.settimeout(2.0)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # stale: left by a broker that did not stop cleanly
            log.info("broker.stale_socket_removed", path=path)
            return
        except OSError:
            pass  # timed out with a full backlog: somebody is there
    raise ConfigError(f"a broker already answers on {path}; stop it or choose another path")
