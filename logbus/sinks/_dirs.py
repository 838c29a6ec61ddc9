"""Creating the directory a file sink writes into, on first run, and saying so."""

from __future__ import annotations

import os
from pathlib import Path

from logbus._log import get_logger
from logbus.errors import ConfigError

__all__ = ["DIRECTORY_MODE", "ensure_directory"]

log = get_logger("logbus.sinks")

#: Directories a sink creates: the owner writes, its group reads, others see nothing
#: (log records may hold what others should not read).
DIRECTORY_MODE = 0o750


def ensure_directory(directory: Path, sink: str) -> list[Path]:
    """Create ``directory`` and any missing parents (mode 0750), logging each one created;
    the ones created. A directory that cannot be created is a ``ConfigError`` naming it."""
    missing: list[Path] = []
    current = directory
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    made: list[Path] = []
    for path in reversed(missing):
        try:
            path.mkdir(mode=DIRECTORY_MODE)
        except FileExistsError:  # another process made it meanwhile: fine
            continue
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            raise ConfigError(
                f"sink {sink} cannot create directory {str(path)!r}: {why} "
                f"(create it, writable by user {_user()}, or choose another path)"
            ) from exc
        made.append(path)
        log.warning("sink.directory_created", sink=sink, path=str(path), mode="0750")
    return made


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return str(os.geteuid())
