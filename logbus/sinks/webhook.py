"""``webhook:URL``: POST records as JSON to an HTTP endpoint.

Options (keys of ``URL``'s query string that are these names, or keys of a
``[sink]`` table, where the URL is ``url``; other query keys stay in the URL):

``body``
    ``record`` (default): one request per record, its wire JSON as the body;
    ``array``: one request per batch, a JSON array of the records.
``timeout``
    Seconds to wait for the endpoint to connect or answer (10).
``tries``
    Requests at most for one body, the first included (4).
``max_retry_wait``
    The longest pause between two tries, in seconds (30). A ``Retry-After``
    asking for more ends the tries at once: the worker's delay queues are the
    place to wait that long, not a busy worker thread.
``headers``
    Extra request headers (a table: ``headers = {Authorization = "Bearer ..."}``).
``max_batch`` / ``max_wait``
    The batch hints (100 records; 0 s).

Each request says which records it carries, so that the endpoint can drop
what it already has: the worker delivers at least once, and a record comes
again when an answer was lost (a timeout), when the worker died before acking
it, or when the rest of an array failed. ``Idempotency-Key`` is the record's
``id`` with ``body=record``; with ``body=array``, ``X-Logbus-Ids`` lists the
ids in the array's order, comma-separated, and ``Idempotency-Key`` is the
SHA-256 (hex) of that list, the same whenever the same records are sent
together again. An id is sent as it is (logbus makes 32 hex digits); one with
a character other than printable ASCII, or a ``,`` or ``%``, is
percent-encoded (UTF-8). ``X-Logbus-Ids`` takes 33 bytes a record: keep
``max_batch`` at 200 or less where the endpoint limits a header line to 8 KiB
(nginx and Apache do by default).

A 2xx answer stores the body's records. 429 and 5xx answers, and connections
that fail or time out, are tried again within the write, after the pause
``Retry-After`` asks for, else 0.5 s doubling each time; when the tries are
spent the records fail *recoverably* (the worker retries them later). Any other
answer (400, 404, 413 ...) fails them at once and for good: the worker
dead-letters them. A ``user:password@`` in the URL is sent as HTTP basic
authentication. Neither it, the path nor the query (where tokens live) is ever
printed: errors name the endpoint as ``scheme://host:port``.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal
from urllib.parse import quote, unquote, urlsplit

from pydantic import Field, field_validator

from logbus.errors import ConfigError, SinkError
from logbus.record import LogRecord
from logbus.sinks._options import ConfigurableSink, SinkOptions

__all__ = ["WebhookOptions", "WebhookSink", "header_id", "public_endpoint"]

_FIRST_PAUSE = 0.5
_SHOW_BODY = 200
# What an id may hold as it is in a header: printable ASCII, less the list's comma and "%".
_ID_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in ",%")
_ID_SAFE_SET = frozenset(_ID_SAFE)

Body = Literal["record", "array"]


def public_endpoint(url: str) -> str:
    """``scheme://host:port`` of ``url``: what may be printed of a webhook's address."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


class WebhookOptions(SinkOptions):
    """What ``webhook`` takes: the URL, the body shape, the timeout and the retry bounds."""

    url: str
    body: Body = "record"
    timeout: float = Field(default=10.0, gt=0.0, le=300.0)
    tries: int = Field(default=4, ge=1, le=20)
    max_retry_wait: float = Field(default=30.0, ge=0.0, le=3600.0)
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"{public_endpoint(value)} is not an http:// or https:// URL with a host"
            )
        try:
            parts.port  # noqa: B018 (raises on a port that is not a number)
        except ValueError:
            raise ValueError(f"the URL's port is not a number ({public_endpoint(value)})") from None
        return value


class _Refused(Exception):
    """An answer or failure for one request: whether trying again may help, and how soon."""

    def __init__(self, message: str, *, retry: bool, wait: float | None = None) -> None:
        super().__init__(message)
        self.retry = retry
        self.wait = wait


class WebhookSink(ConfigurableSink):
    """POSTs records as JSON, retrying 429/5xx within bounds; one connection per thread."""

    name = "webhook"
    Options = WebhookOptions
    argument = "url"
    url_argument = True
    example = "webhook:https://HOST/PATH"

    def __init__(
        self,
        url: str,
        *,
        body: Body = "record",
        timeout: float = 10.0,
        tries: int = 4,
        max_retry_wait: float = 30.0,
        headers: dict[str, str] | None = None,
        max_batch: int = 100,
        max_wait: float = 0.0,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        parts = urlsplit(url)
        self.url = url
        self.endpoint = public_endpoint(url)
        self.body: Body = body
        self.timeout = timeout
        self.tries = tries
        self.max_retry_wait = max_retry_wait
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._headers = {
            "Content-Type": "application/json",
            "User-Agent": "logbus",
            **(headers or {}),
        }
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        self._closing = threading.Event()
        self._sleep = sleep or self._pause
        self._local = threading.local()
        self._connections: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._opened = False

    def open(self) -> None:
        """Nothing to connect yet: each thread connects on its first request."""
        self._closing.clear()
        self._opened = True

    def write(self, batch: Sequence[LogRecord]) -> Sequence[Exception | None]:
        """POST the batch (one request per record, or one array); one result per record."""
        if not self._opened:
            raise ConfigError(f"sink webhook {self.endpoint} was written to before open()")
        if not batch:
            return []
        if self.body == "array":
            payload = b"[" + b",".join(record.to_bytes() for record in batch) + b"]"
            return [self._deliver(payload, _array_headers(batch), len(batch))] * len(batch)
        results: list[Exception | None] = []
        for record in batch:
            previous = results[-1] if results else None
            if isinstance(previous, SinkError) and previous.recoverable:
                results.append(previous)  # the endpoint is failing: keep the rest for later
            else:
                headers = {"Idempotency-Key": header_id(record.id)}
                results.append(self._deliver(record.to_bytes(), headers, 1))
        return results

    def close(self) -> None:
        """Close every thread's connection; a write waiting to retry gives up at once."""
        self._closing.set()
        with self._lock:
            connections, self._connections = self._connections, []
            self._opened = False
        for connection in connections:
            connection.close()

    def __repr__(self) -> str:
        return f"<WebhookSink {self.endpoint} body={self.body}>"

    def _deliver(self, payload: bytes, headers: dict[str, str], count: int) -> SinkError | None:
        """POST one body, trying again on 429, 5xx and connection failures, within bounds."""
        what = "record" if count == 1 else f"{count} records"
        for attempt in range(1, self.tries + 1):
            try:
                self._post(payload, headers)
                return None
            except _Refused as refusal:
                if not refusal.retry:
                    return SinkError(f"webhook {self.endpoint} {refusal} ({what})")
                if attempt == self.tries:
                    return SinkError(
                        f"webhook {self.endpoint} {refusal}, {self.tries} tries ({what})",
                        recoverable=True,
                    )
                pause = refusal.wait
                if pause is None:
                    pause = min(_FIRST_PAUSE * 2 ** (attempt - 1), self.max_retry_wait)
                elif pause > self.max_retry_wait:
                    return SinkError(
                        f"webhook {self.endpoint} {refusal} and asks to wait {pause:g} s, more "
                        f"than max_retry_wait {self.max_retry_wait:g} s ({what})",
                        recoverable=True,
                    )
                self._sleep(pause)
                if self._closing.is_set():
                    return SinkError(
                        f"webhook {self.endpoint}: closed while retrying ({what})",
                        recoverable=True,
                    )
        raise AssertionError("unreachable: every try returns")  # pragma: no cover

    def _post(self, payload: bytes, headers: dict[str, str]) -> None:
        """One request; a connection kept from earlier that turns out dead is replaced once."""
        connection, reused = self._connection()
        try:
            try:
                response = self._exchange(connection, payload, headers)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                if not reused:
                    raise
                self._drop(connection)  # the server closed it while idle: not a failure
                connection, _ = self._connection()
                response = self._exchange(connection, payload, headers)
        except (OSError, http.client.HTTPException) as exc:
            self._drop(connection)
            raise _Refused(f"failed: {type(exc).__name__}: {exc}", retry=True) from None
        status = response.status
        if 200 <= status < 300:
            return
        reason = f"answered {status} {response.reason}".rstrip()
        detail = response.text.strip()[:_SHOW_BODY]
        if detail:
            reason += f": {detail}"
        if status == 429 or status >= 500:
            raise _Refused(reason, retry=True, wait=_retry_after(response.retry_after))
        raise _Refused(reason, retry=False)

    def _exchange(
        self, connection: http.client.HTTPConnection, payload: bytes, headers: dict[str, str]
    ) -> _Response:
        sent = {**self._headers, **headers}
        connection.request("POST", self._target, body=payload, headers=sent)
        response = connection.getresponse()
        data = response.read()  # read it all, so that the connection can be used again
        if response.will_close:
            self._drop(connection)
        return _Response(
            response.status,
            response.reason,
            data.decode("utf-8", "replace"),
            response.getheader("Retry-After"),
        )

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is not None:
            return connection, True
        kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        connection = kind(self._host, self._port, timeout=self.timeout)
        self._local.connection = connection
        with self._lock:
            self._connections.append(connection)
        return connection, False

    def _drop(self, connection: http.client.HTTPConnection) -> None:
        connection.close()
        if getattr(self._local, "connection", None) is connection:
            self._local.connection = None
        with self._lock:
            if connection in self._connections:
                self._connections.remove(connection)

    def _pause(self, seconds: float) -> None:
        self._closing.wait(seconds)


@dataclass(frozen=True)
class _Response:
    """What is kept of an answer once its body was read."""

    status: int
    reason: str
    text: str
    retry_after: str | None


def header_id(record_id: str) -> str:
    """``record_id`` as the webhook sends it in a header: as it is, or percent-encoded."""
    if _ID_SAFE_SET.issuperset(record_id):
        return record_id
    return quote(record_id, safe=_ID_SAFE)


def _array_headers(batch: Sequence[LogRecord]) -> dict[str, str]:
    """``X-Logbus-Ids`` and ``Idempotency-Key`` (the digest of the ids) for an array body."""
    ids = ",".join(header_id(record.id) for record in batch)
    return {"X-Logbus-Ids": ids, "Idempotency-Key": hashlib.sha256(ids.encode()).hexdigest()}


def _retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delay or HTTP date); None if absent or bad."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = datetime.now(UTC).timestamp() if now is None else now
    return max(0.0, when.timestamp() - current)
