"""The alerter's own logic: identical alerts once per window, and a rate limit.

:class:`AlertGate` wraps the sink the alerts go to (console, webhook, or both
through a :class:`~logbus.service.TeeSink`). An alert whose facility, severity,
host, app and message match one that went out within ``window`` seconds is a
*repeat*; an alert beyond ``rate`` per ``per`` seconds is *over the limit*.
Neither is sent, both are counted, and the next alert that does go out carries
the counts in its fields (``suppressed_repeats``, ``suppressed_over_limit``), so
an on-call engineer learns that more happened without being paged for each.
A suppressed alert is still acked: it is in the archive, and re-sending it later
would page for something already summarised.

*Retries.* An alert that went through the gate and failed (the webhook was
down) is retried by the worker; its retry is the same alert, not a repeat, so
it passes the gate again (known by its id, or by the sinks that already have
it) while its key stays in the window: new copies of it are still folded. The
sinks behind a :class:`~logbus.service.TeeSink` settle apart, so the console
that printed it is not asked again.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from logbus.durations import parse_duration
from logbus.errors import ConfigError, InputError
from logbus.record import LogRecord
from logbus.sinks import Sink
from logbus.sinks._partial import write_rest

__all__ = ["AlertGate", "AlertSettings", "alert_settings"]

_Key = tuple[str, int, str, str, str]
# Alerts that went through and failed, by id, kept for their retries (the oldest forgotten).
_RETRYING_LIMIT = 10_000


class AlertSettings(BaseModel):
    """The ``[alerts]`` table: de-duplication window and rate limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: float = Field(default=300.0, ge=0)
    rate: int = Field(default=20, ge=1)
    per: float = Field(default=60.0, gt=0)


def alert_settings(table: dict[str, Any], *, source: str = "<string>") -> AlertSettings:
    """Read ``[alerts]`` (durations as ``5m``, ``30s``); problems are one ConfigError line."""
    try:
        values = dict(table)
        for key in ("window", "per"):
            if key in values:
                values[key] = parse_duration(values[key], what=f"[alerts] {key}")
        return AlertSettings.model_validate(values)
    except InputError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(part) for part in err["loc"])
        what = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        raise ConfigError(f"{source}: alerts.{where}: {what}") from exc


class AlertGate:
    """A sink in front of a sink: passes each distinct alert once per window, within a rate."""

    def __init__(
        self,
        inner: Sink,
        settings: AlertSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.settings = settings
        self.max_batch = getattr(inner, "max_batch", 100)
        self.max_wait = getattr(inner, "max_wait", 0.0)
        self._clock = clock
        self._lock = threading.Lock()
        self._last_sent: OrderedDict[_Key, float] = OrderedDict()  # oldest first
        self._sent_at: deque[float] = deque()  # send times within the rate period
        self._retrying: OrderedDict[str, None] = OrderedDict()  # ids passed that failed
        self.repeats = 0  # suppressed since the last alert that went out
        self.over_limit = 0
        self.sent = 0

    def open(self) -> None:
        """Open the sink behind the gate."""
        self.inner.open()

    def close(self) -> None:
        """Close the sink behind the gate."""
        self.inner.close()

    def write(self, batch: Sequence[LogRecord]) -> Sequence[Exception | None]:
        """Send what passes the gate; what does not counts as handled (None)."""
        return self.write_rest(batch, [frozenset()] * len(batch))

    def write_rest(
        self, batch: Sequence[LogRecord], stored: Sequence[frozenset[str]]
    ) -> Sequence[Exception | None]:
        """Send what passes the gate to the sinks that do not have it yet (``stored``
        names, per record, those that do); what does not pass counts as handled (None)."""
        results: list[Exception | None] = [None] * len(batch)
        passing: list[int] = []
        outgoing: list[LogRecord] = []
        with self._lock:
            now = self._clock()
            for index, record in enumerate(batch):
                key = _key(record)
                if stored[index] or record.id in self._retrying:
                    passing.append(index)  # a retry of an alert that went through: not a repeat
                    outgoing.append(record)
                    continue
                if self._is_repeat(key, now):
                    self.repeats += 1
                    continue
                if not self._within_rate(now):
                    self.over_limit += 1
                    continue
                self._last_sent[key] = now
                self._last_sent.move_to_end(key)
                self._sent_at.append(now)
                passing.append(index)
                outgoing.append(self._annotated(record))
        if not outgoing:
            return results
        try:
            sent = write_rest(self.inner, outgoing, [stored[index] for index in passing])
        except Exception as exc:
            sent = [exc] * len(outgoing)
        with self._lock:
            for index, result in zip(passing, sent, strict=True):
                results[index] = result
                record_id = batch[index].id
                if result is None:
                    self._retrying.pop(record_id, None)
                    self.sent += 1
                else:  # its retry must pass again, and its copies still count as repeats
                    self._retrying[record_id] = None
                    self._retrying.move_to_end(record_id)
                    while len(self._retrying) > _RETRYING_LIMIT:
                        self._retrying.popitem(last=False)
        return results

    def _is_repeat(self, key: _Key, now: float) -> bool:
        window = self.settings.window
        while self._last_sent:  # forget what left the window (oldest first)
            oldest, at = next(iter(self._last_sent.items()))
            if now - at < window:
                break
            del self._last_sent[oldest]
        return key in self._last_sent

    def _within_rate(self, now: float) -> bool:
        while self._sent_at and now - self._sent_at[0] >= self.settings.per:
            self._sent_at.popleft()
        return len(self._sent_at) < self.settings.rate

    def _annotated(self, record: LogRecord) -> LogRecord:
        """The record with the suppression counts since the last alert, which are then reset."""
        if not (self.repeats or self.over_limit):
            return record
        fields = {
            **record.fields,
            "suppressed_repeats": self.repeats,
            "suppressed_over_limit": self.over_limit,
        }
        self.repeats = self.over_limit = 0
        return record.replace(fields=fields)


def _key(record: LogRecord) -> _Key:
    """What makes two alerts the same: facility, severity, host, app and message."""
    return (record.facility, int(record.severity), record.host, record.app, record.message)
