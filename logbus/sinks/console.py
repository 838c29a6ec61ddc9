"""``console``: one human-readable line per record on standard output, flushed at once.

Options: ``max_batch`` (100) and ``max_wait`` (0), e.g. ``console?max_batch=10``.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Sequence
from typing import TextIO

from logbus.record import LogRecord
from logbus.sinks._options import ConfigurableSink

__all__ = ["ConsoleSink", "escape_controls", "format_line"]

# Control characters would split one record over several lines (or move the cursor).
_ESCAPES = {code: f"\\x{code:02x}" for code in range(32)} | {
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
    0x7F: "\\x7f",
}


def escape_controls(text: str) -> str:
    """``text`` with line breaks and other control characters escaped, so it stays one line."""
    return text.translate(_ESCAPES)


def format_line(record: LogRecord) -> str:
    """``<ts> <host> <app>[<pid>] <facility>.<severity>: <message> <fields as JSON>``."""
    app = record.app if record.pid is None else f"{record.app}[{record.pid}]"
    ts = record.to_dict()["ts"]
    line = f"{ts} {record.host or '-'} {app or '-'} {record.routing_key}: {record.message}"
    if record.fields:
        line += " " + json.dumps(record.fields, ensure_ascii=False, separators=(",", ":"))
    return line.translate(_ESCAPES)


class ConsoleSink(ConfigurableSink):
    """Prints each record as one line on ``stream`` (standard output by default)."""

    name = "console"
    example = "console"

    def __init__(
        self, stream: TextIO | None = None, *, max_batch: int = 100, max_wait: float = 0.0
    ) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self.max_batch = max_batch
        self.max_wait = max_wait

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
