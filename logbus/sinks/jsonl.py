"""``jsonl:PATH``: append each record's wire JSON as one line to a file.

The file is opened in append mode, so several workers (or restarts of one) add
to the same file and never truncate it, and line-buffered, so every line
reaches the operating system before the record is acked: a worker killed right
after an ack has not lost that line. Surviving a power cut as well needs an
fsync per write, an option a later issue adds. Records the broker redelivers
(after a worker died before its ack) may appear twice; their ``id`` says so.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from logbus.errors import ConfigError
from logbus.record import LogRecord

__all__ = ["JsonlSink"]


class JsonlSink:
    """Appends one JSON line per record to ``path``; safe to share between threads."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self._file: TextIO | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_spec(cls, arg: str | None) -> JsonlSink:
        """The sink for ``jsonl:PATH``."""
        if not arg:
            raise ConfigError("sink jsonl needs a file to append to: write jsonl:PATH")
        return cls(arg)

    def open(self) -> None:
        """Open the file for appending (creating it, not its directory)."""
        try:
            self._file = open(self.path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            raise ConfigError(
                f"sink jsonl cannot open {str(self.path)!r} for appending: {why} "
                "(check that the directory exists and is writable)"
            ) from exc

    def write(self, batch: Sequence[LogRecord]) -> Sequence[Exception | None]:
        """Append the batch, one line per record; a write error fails the whole batch."""
        text = "".join(record.to_bytes().decode("utf-8") + "\n" for record in batch)
        with self._lock:
            if self._file is None:
                raise ConfigError(f"sink jsonl:{self.path} was written to before open()")
            try:
                self._file.write(text)
                self._file.flush()  # line buffering flushes too; this makes it explicit
            except OSError as exc:  # a full disk, say: the worker retries these records
                return [exc] * len(batch)
        return [None] * len(batch)

    def close(self) -> None:
        """Flush and close the file; idempotent."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __repr__(self) -> str:
        return f"<JsonlSink {str(self.path)!r}>"
