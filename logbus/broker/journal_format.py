"""The journal's file format: its records, their CRC-checked encoding, and replaying them.

File format (``<data-dir>/journal``, integers big-endian)::

    b"logbus journal 1\\n"
    record*: crc32(lengths) u32 | crc32(header + body) u32 | frame

where a frame is :mod:`logbus.wire.frames`'s — header length u32, body
length u32, a JSON header ``{"op", "id", "args"}``, the raw body — so property
values JSON lacks (bytes, x-death's datetimes, Decimal, nested tables) use that
module's tagged encoding. Ops: ``exchange.declare|delete``, ``queue.declare|delete``,
``bind``, ``unbind``, ``in`` (``id`` is the entry id, ``args`` the queue, the
message's exchange, routing key and properties, and its wall-clock expiry),
``out`` (``args``: the queue and the ids that left it).

A record cut short at the end of the file — what a crash mid-write leaves — is
ignored; a damaged record anywhere else is a :class:`~logbus.errors.ConfigError`
naming the file and offset, since reading past it would lose or resurrect
messages silently. :class:`LiveState` is what the records add up to: replayed
from the file at start, kept in step with every record written after, and
written out alone when :class:`~logbus.broker.journal.Journal` compacts.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import struct
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from logbus._log import get_logger
from logbus.broker.paging import PagedEntry, Pages
from logbus.errors import ConfigError, DecodeError
from logbus.message import Message
from logbus.wire.frames import (
    Frame,
    arg_bool,
    arg_str,
    arg_table,
    decode_many,
    encode,
    encode_value,
    message_args,
    message_from,
)

__all__ = [
    "MAGIC",
    "BindingRecord",
    "ExchangeRecord",
    "LiveState",
    "QueueRecord",
    "Recovery",
    "binding_frame",
    "binding_key",
    "damaged",
    "exchange_frame",
    "message_frame",
    "old_records",
    "put_record",
    "queue_frame",
    "read_message",
    "read_records",
]

log = get_logger("logbus.broker.journal")

MAGIC = b"logbus journal 1\n"
_CHECKS = struct.Struct(">II")  # crc32 of the frame's two lengths, crc32 of header + body
_LENGTHS = struct.Struct(">II")  # how a frame starts: header length, body length
_RECORD_HEAD = _CHECKS.size + _LENGTHS.size


# -- what a journal holds ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExchangeRecord:
    """A durable exchange as declared."""

    name: str
    type: str
    auto_delete: bool
    internal: bool
    arguments: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class BindingRecord:
    """A binding between durable entities; ``kind`` is ``queue`` or ``exchange``."""

    source: str
    kind: str
    destination: str
    routing_key: str
    arguments: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class QueueRecord:
    """A durable queue as declared, with its persistent messages in queue order.

    The messages are the journal's paged entries; until a broker adopts them,
    their ``expires_at`` is the wall-clock expiry the record holds.
    """

    name: str
    auto_delete: bool
    arguments: Mapping[str, Any]
    messages: tuple[PagedEntry, ...] = ()


@dataclass(frozen=True, slots=True)
class Recovery:
    """Everything a broker rebuilds from its journal at start."""

    exchanges: tuple[ExchangeRecord, ...]
    queues: tuple[QueueRecord, ...]
    bindings: tuple[BindingRecord, ...]


class LiveState:
    """The live content of the journal, kept in step with every record written."""

    def __init__(self, pages: Pages) -> None:
        self.pages = pages
        self.exchanges: dict[str, ExchangeRecord] = {}
        self.queues: dict[str, QueueRecord] = {}
        self.bindings: dict[tuple[str, ...], BindingRecord] = {}
        # Per durable queue, its live persistent messages by id: the paged index.
        self.messages: dict[str, dict[int, PagedEntry]] = {}
        self.last_id = 0

    def recovery(self) -> Recovery:
        """What a broker rebuilds from this state, messages in queue order."""
        queues = tuple(
            QueueRecord(
                queue.name,
                queue.auto_delete,
                queue.arguments,
                tuple(self.messages[queue.name].values()),
            )
            for queue in self.queues.values()
        )
        return Recovery(tuple(self.exchanges.values()), queues, tuple(self.bindings.values()))

    def drop_exchange(self, name: str) -> None:
        self.exchanges.pop(name, None)
        for key in [k for k in self.bindings if k[0] == name or (k[1:3] == ("exchange", name))]:
            del self.bindings[key]

    def drop_queue(self, name: str) -> int:
        self.queues.pop(name, None)
        for key in [k for k in self.bindings if k[1:3] == ("queue", name)]:
            del self.bindings[key]
        return sum(held.record for held in self.messages.pop(name, {}).values())

    def apply(self, frame: Frame, size: int, offset: int) -> None:
        """Replay one record read from the file at ``offset``."""
        op, args = frame.op, frame.args
        if op == "in":
            self.last_id = max(self.last_id, frame.id)
            held = self.messages.get(arg_str(args, "queue"))
            if held is not None:
                expires = args.get("expires")
                if expires is not None and not isinstance(expires, int | float):
                    raise DecodeError(f"expires must be a number, not {expires!r:.40}")
                message_from(args, frame.body)  # checked now: a bad record fails the start
                entry = PagedEntry(self.pages, frame.id, offset, size, len(frame.body), expires)
                held[frame.id] = entry
        elif op == "out":
            held = self.messages.get(arg_str(args, "queue"), {})
            ids = args.get("ids")
            if not isinstance(ids, list):
                raise DecodeError("ids must be a list")
            for ident in ids:
                held.pop(ident, None)
        elif op == "exchange.declare":
            name = arg_str(args, "name")
            self.exchanges[name] = ExchangeRecord(
                name,
                arg_str(args, "type"),
                arg_bool(args, "auto_delete"),
                arg_bool(args, "internal"),
                arg_table(args, "arguments") or {},
            )
        elif op == "exchange.delete":
            self.drop_exchange(arg_str(args, "name"))
        elif op == "queue.declare":
            name = arg_str(args, "name")
            auto_delete = arg_bool(args, "auto_delete")
            self.queues[name] = QueueRecord(name, auto_delete, arg_table(args, "arguments") or {})
            self.messages[name] = {}
        elif op == "queue.delete":
            self.drop_queue(arg_str(args, "name"))
        elif op in ("bind", "unbind"):
            binding = BindingRecord(
                arg_str(args, "source"),
                arg_str(args, "kind"),
                arg_str(args, "destination"),
                arg_str(args, "key"),
                arg_table(args, "arguments") or {},
            )
            if op == "bind":
                self.bindings[binding_key(binding)] = binding
            else:
                self.bindings.pop(binding_key(binding), None)
        else:
            raise DecodeError(f"unknown record type {op!r} (written by a newer logbus?)")


def binding_key(binding: BindingRecord) -> tuple[str, ...]:
    args = json.dumps(encode_value(binding.arguments), sort_keys=True)
    return (binding.source, binding.kind, binding.destination, binding.routing_key, args)


def exchange_frame(exchange: ExchangeRecord) -> Frame:
    args = {
        "name": exchange.name,
        "type": exchange.type,
        "auto_delete": exchange.auto_delete,
        "internal": exchange.internal,
        "arguments": exchange.arguments,
    }
    return Frame("exchange.declare", 0, args)


def queue_frame(queue: QueueRecord) -> Frame:
    args = {"name": queue.name, "auto_delete": queue.auto_delete, "arguments": queue.arguments}
    return Frame("queue.declare", 0, args)


def binding_frame(binding: BindingRecord, op: str = "bind") -> Frame:
    args = {
        "source": binding.source,
        "kind": binding.kind,
        "destination": binding.destination,
        "key": binding.routing_key,
        "arguments": binding.arguments,
    }
    return Frame(op, 0, args)


def message_frame(queue: str, ident: int, message: Message, expires: float | None) -> Frame:
    args = message_args(message)
    args["queue"] = queue
    if expires is not None:
        args["expires"] = expires
    return Frame("in", ident, args, message.body)


# -- records ----------------------------------------------------------------------


def read_message(record: bytes | memoryview) -> Message:
    """The message of one ``in`` record as :func:`put_record` wrote it (checks and frame)."""
    frame = decode_many(bytes(record[_CHECKS.size :]))[0]
    return message_from(frame.args, frame.body)


def put_record(buffer: bytearray, frame: Frame) -> int:
    """Append one record to ``buffer``; returns its size."""
    data = encode(frame)
    view = memoryview(data)
    split = _LENGTHS.size
    buffer += _CHECKS.pack(zlib.crc32(view[:split]), zlib.crc32(view[split:]))
    buffer += data
    return _CHECKS.size + len(data)


def read_records(path: Path, data: bytes) -> Iterator[tuple[Frame, int]]:
    """The records of a journal file's bytes, with their sizes; stops at a torn tail."""
    view = memoryview(data)
    offset, end = len(MAGIC), len(data)
    while offset < end:
        if end - offset < _RECORD_HEAD:
            _torn(path, offset, end)
            return
        length_crc, data_crc = _CHECKS.unpack_from(data, offset)
        lengths = view[offset + _CHECKS.size : offset + _RECORD_HEAD]
        if zlib.crc32(lengths) != length_crc:
            if data.count(0, offset) == end - offset:  # zeros a crash left past the end
                _torn(path, offset, end)
                return
            raise damaged(path, offset, "its length prefix fails its checksum")
        header_len, body_len = _LENGTHS.unpack(lengths)
        stop = offset + _RECORD_HEAD + header_len + body_len
        if stop > end:
            _torn(path, offset, end)
            return
        if zlib.crc32(view[offset + _RECORD_HEAD : stop]) != data_crc:
            if stop == end:
                _torn(path, offset, end)
                return
            raise damaged(path, offset, "its contents fail their checksum")
        try:
            frames = decode_many(data[offset + _CHECKS.size : stop])
        except DecodeError as exc:
            raise damaged(path, offset, str(exc)) from None
        yield frames[0], stop - offset
        offset = stop


@contextlib.contextmanager
def old_records(
    path: Path, in_file: int | None, buffer: bytearray
) -> Iterator[Callable[[PagedEntry], bytes | memoryview]]:
    """Read live records while a journal is rewritten: from ``path`` (mapped) or ``buffer``.

    ``in_file`` is how many bytes of the journal are in the file, the rest being
    in ``buffer``; None when the file is all there is (opening).
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        fd = -1
    mapped: mmap.mmap | None = None
    try:
        file_size = os.fstat(fd).st_size if fd >= 0 else 0
        if file_size:
            mapped = mmap.mmap(fd, file_size, access=mmap.ACCESS_READ)
        view = memoryview(mapped) if mapped is not None else memoryview(b"")
        split = file_size if in_file is None else in_file
        pending = memoryview(buffer)

        def old(entry: PagedEntry) -> bytes | memoryview:
            start = entry.offset - split
            if start >= 0:
                return pending[start : start + entry.record]
            return view[entry.offset : entry.offset + entry.record]

        try:
            yield old
        finally:
            view.release()
            pending.release()
    finally:
        if mapped is not None:
            mapped.close()
        if fd >= 0:
            os.close(fd)


def _torn(path: Path, offset: int, end: int) -> None:
    log.warning("journal torn tail ignored", path=str(path), offset=offset, bytes=end - offset)


def damaged(path: Path, offset: int, reason: str) -> ConfigError:
    return ConfigError(
        f"journal {path} is damaged at offset {offset}: {reason}; restore it from a backup, "
        "or move it aside to start the broker empty"
    )
