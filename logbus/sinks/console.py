"""``console``: one human-readable line per record on standard output, flushed at once."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Sequence
from typing import TextIO

from logbus.errors import ConfigError
from logbus.record import LogRecord

__all__ = ["ConsoleSink", "format_line"]

# Control characters would split one record over several lines (or move the cursor).
_ESCAPES = {code: f"\\x{code:02x}" for code in range(32)} | {
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
    0x7F: "\\x7f",
}


def format_line(record: LogRecord) -> str:
    """``<ts> <host> <app>[<pid>] <facility>.<severity>: <message> <fields as JSON>``."""
    app = record.app if record.pid is None else f"{record.app}[{record.pid}]"
    ts = record.model_dump(mode="json", include={"ts"})["ts"]
    line = f"{ts} {record.host or '-'} {app or '-'} {record.routing_key}: {record.message}"
    if record.fields:
        line += " " + json.dumps(record.fields, ensure_ascii=False, separators=(",", ":"))
    return line.translate(_ESCAPES)


class ConsoleSink:
    """Prints each record as one line on ``stream`` (standard output by default)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    @classmethod
    def from_spec(cls, arg: str | None) -> ConsoleSink:
        """The sink for ``console`` (which takes no argument)."""
        if arg is not None:
            raise ConfigError(f"sink console takes no argument (got console:{arg}); write console")
        return cls()

    def open(self) -> None:
        """Nothing to acquire: standard output is already open."""

    def write(self, batch: Sequence[LogRecord]) -> Sequence[Exception | None]:
        """Print the batch and flush, so a reader of a pipe sees each record at once."""
        text = "".join(format_line(record) + "\n" for record in batch)
        stream = self._stream if self._stream is not None else sys.stdout
        with self._lock:  # whole lines: threads never interleave within one
            stream.write(text)
            stream.flush()
        return [None] * len(batch)

    def close(self) -> None:
        """Flush what is left."""
        stream = self._stream if self._stream is not None else sys.stdout
        with self._lock:
            stream.flush()

    def __repr__(self) -> str:
        return "<ConsoleSink>"
