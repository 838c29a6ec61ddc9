"""A gateway's options from a service file (``config/services/ingest.toml``) and sizes.

The file has one ``[ingest]`` table whose keys are the command line's long
options without their dashes (``tcp = ["0.0.0.0:6514"]``, ``spool_fsync =
"second"``); an option given on the command line wins over the file. Reading
it here, not in the CLI, keeps everything the command does callable from Python.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from logbus.errors import ConfigError

__all__ = ["KEYS", "parse_size", "read_service_file"]

#: The keys an ``[ingest]`` table may hold, and the type each must have.
KEYS: dict[str, type | tuple[type, ...]] = {
    "url": str,
    "udp": list,
    "tcp": list,
    "tls": list,
    "relp": list,
    "unix": list,
    "cert": str,
    "key": str,
    "client_ca": str,
    "max_size": (int, str),
    "max_per_peer": int,
    "idle_timeout": (int, float, str),
    "max_in_flight": int,
    "spool": str,
    "spool_max_size": (int, str),
    "spool_fsync": str,
    "metrics_port": int,
    "metrics_host": str,
    "drain_timeout": (int, float, str),
    "confirm_timeout": (int, float, str),
}
_SIZE = re.compile(r"([0-9]+)\s*([kKmMgG]?)i?[bB]?")
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(value: int | str, *, what: str = "size") -> int:
    """``65536``, ``64k``, ``512M``, ``1G`` (powers of 1024) as bytes."""
    if isinstance(value, int):
        return value
    match = _SIZE.fullmatch(value.strip())
    if match is None:
        raise ConfigError(f"{what} {value!r} is not a size: write 65536, 64k, 512M or 1G")
    return int(match[1]) * _UNITS[match[2].lower()]


def read_service_file(path: Path) -> dict[str, Any]:
    """The ``[ingest]`` table of ``path``, its keys and types checked."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    table = document.get("ingest")
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: no [ingest] table (see config/services/ingest.toml)")
    for key, value in table.items():
        wanted = KEYS.get(key)
        if wanted is None:
            known = ", ".join(KEYS)
            raise ConfigError(f"{path}: [ingest] has no key {key!r}; known: {known}")
        if not isinstance(value, wanted) or isinstance(value, bool):
            raise ConfigError(f"{path}: [ingest] {key} has the wrong type ({value!r})")
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{path}: [ingest] {key} must be a list of addresses (strings)")
    return dict(table)
