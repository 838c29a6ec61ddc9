"""``example:PATH``: appends ``<prefix> <routing key> <message>`` lines to a file."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from logbus.record import LogRecord
from logbus.sinks import ConfigurableSink, SinkOptions

__all__ = ["ExampleOptions", "ExampleSink"]


class ExampleOptions(SinkOptions):
    """The file to append to, and a word to start each line with."""

    path: str
    prefix: str = "example"


class ExampleSink(ConfigurableSink):
    """One line per record in a text file; the smallest sink that keeps the contract."""

    name = "example"
    Options = ExampleOptions
    argument = "path"
    example = "example:PATH"

    def __init__(
        self, path: str, *, prefix: str = "example", max_batch: int = 100, max_wait: float = 0.0
    ) -> None:
        self.path = Path(path)
        self.prefix = prefix
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._file: TextIO | None = None
        self._lock = threading.Lock()

    def open(self) -> None:
        """Open the file for appending."""
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def write(self, batch: Sequence[LogRecord]) -> Sequence[Exception | None]:
        """Append one line per record; an OSError fails the batch (recoverably)."""
        text = "".join(f"{self.prefix} {r.routing_key} {r.message}\n" for r in batch)
        with self._lock:
            if self._file is None:
                raise RuntimeError("example sink written to before open()")
            try:
                self._file.write(text)
                self._file.flush()
            except OSError as exc:
                return [exc] * len(batch)
        return [None] * len(batch)

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
