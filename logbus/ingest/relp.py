"""RELP, the Reliable Event Logging Protocol, as rsyslog's omrelp (librelp) speaks it.

RELP is why a syslog sender can know its line arrived: every ``syslog`` command
is answered by a ``rsp`` carrying its transaction number, and a sender
re-sends what was not answered after a reconnect. The gateway answers only once
RabbitMQ has confirmed the record, so the answer means "stored", not "read".
This module is the codec only (no sockets): :class:`RelpDecoder` turns a byte
stream into :class:`RelpFrame` objects, and the builders write the server's side.

A frame is ``TXNR SP COMMAND SP DATALEN [SP DATA] LF``: TXNR and DATALEN are 1-9
digits, COMMAND 1-32 letters. The client opens with ``open`` and its offers
(``relp_version=0``, ``commands=syslog``, ``relp_software=librelp,1.11.0,...``,
one per line); the server answers ``200 OK`` followed by the offers it accepts.
``close`` is answered and ends the session; the server's ``serverclose`` hint
(TXNR 0, never answered) says it is going away. The specification says a peer
that sees bad framing closes the connection rather than trying to resynchronise,
so the decoder stops at the first error and says what it was.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_MAX_DATA",
    "RelpDecoder",
    "RelpFrame",
    "accept_offers",
    "format_offers",
    "parse_offers",
    "parse_response",
    "response",
    "serverclose",
]

DEFAULT_MAX_DATA: Final = 128 * 1024
"""The largest DATA accepted, the limit of RELP version 1 (librelp's default)."""

SUPPORTED_VERSIONS: Final = ("0", "1")
_HEADER = re.compile(rb"([0-9]{1,9}) ([A-Za-z]{1,32}) ([0-9]{1,9})")
# What a header cut short by the end of a recv can look like: wait for more.
_PARTIAL_HEADER = re.compile(rb"[0-9]{0,9}(?: (?:[A-Za-z]{0,32}(?: [0-9]{0,9})?)?)?")
_HEADER_MAX = 9 + 1 + 32 + 1 + 9
_RSP = re.compile(rb"([0-9]{3})(?: ([^\n]*))?(?:\n(.*))?", re.DOTALL)


@dataclass(frozen=True, slots=True)
class RelpFrame:
    """One RELP frame: transaction number, command (as sent) and its data."""

    txnr: int
    command: str
    data: bytes = b""

    def encode(self) -> bytes:
        """The frame's bytes on the wire."""
        head = b"%d %s %d" % (self.txnr, self.command.encode("ascii"), len(self.data))
        return head + (b" " + self.data if self.data else b"") + b"\n"


class RelpDecoder:
    """Frames from one RELP connection's byte stream, however it was split.

    ``feed(data)`` returns the frames ``data`` completes. At the first framing
    error it returns the frames before it, sets ``error`` to what was wrong and
    ignores anything later: the connection is to be closed. ``buffered`` stays
    under ``max_data`` plus a header between calls.
    """

    def __init__(self, max_data: int = DEFAULT_MAX_DATA) -> None:
        if max_data < 1:
            raise ValueError(f"max_data must be at least 1, not {max_data}")
        self.max_data = max_data
        self.error: str | None = None
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held for a frame not yet complete."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[RelpFrame]:
        """The frames completed by ``data``, in order (none once ``error`` is set)."""
        frames: list[RelpFrame] = []
        if self.error is not None:
            return frames
        buf = self._buf
        buf += data
        pos = 0
        while pos < len(buf):
            frame, after = self._frame_at(buf, pos)
            if frame is None:
                break
            frames.append(frame)
            pos = after
        if self.error is not None:
            buf.clear()
        else:
            del buf[:pos]
        return frames

    def _frame_at(self, buf: bytearray, pos: int) -> tuple[RelpFrame | None, int]:
        """The frame starting at ``pos`` and the index after it; None while incomplete
        (or broken: then ``error`` is set)."""
        header = _HEADER.match(buf, pos)
        end = header.end() if header is not None else -1
        if header is None or end == len(buf):
            window = bytes(buf[pos : pos + _HEADER_MAX + 1])
            if len(window) > _HEADER_MAX or not _PARTIAL_HEADER.fullmatch(window):
                self.error = f"bad frame header {window[:60]!r}"
            return None, pos
        size = int(header[3])
        if size > self.max_data:
            self.error = f"frame of {size} data bytes, over the limit of {self.max_data}"
            return None, pos
        frame = RelpFrame(int(header[1]), header[2].decode("ascii"))
        sep = buf[end]
        if size == 0:
            # "3 close 0\n"; a space before the LF is tolerated.
            if sep == 0x0A:
                return frame, end + 1
            if sep == 0x20:
                if end + 1 == len(buf):
                    return None, pos
                if buf[end + 1] == 0x0A:
                    return frame, end + 2
            self.error = f"frame {frame.txnr} {frame.command}: no line feed after DATALEN 0"
            return None, pos
        if sep != 0x20:
            self.error = f"frame {frame.txnr} {frame.command}: no space before its data"
            return None, pos
        stop = end + 1 + size
        if stop >= len(buf):
            return None, pos
        if buf[stop] != 0x0A:
            self.error = f"frame {frame.txnr} {frame.command}: its data is not followed by LF"
            return None, pos
        return RelpFrame(frame.txnr, frame.command, bytes(buf[end + 1 : stop])), stop + 1


def parse_offers(data: bytes) -> dict[str, list[str]]:
    """The offers of an ``open`` (or its answer): ``{"relp_version": ["0"], ...}``.

    One offer a line, ``name[=value[,value...]]``; blank lines are skipped, bytes
    that are not UTF-8 are replaced, a repeated name keeps its last values.
    """
    offers: dict[str, list[str]] = {}
    for line in data.decode("utf-8", "replace").split("\n"):
        name, eq, values = line.strip("\r").partition("=")
        if name:
            offers[name] = values.split(",") if eq else []
    return offers


def format_offers(offers: Mapping[str, Sequence[str]]) -> bytes:
    """Offers one a line (``name=v1,v2``), as an ``open`` and its answer carry them."""
    return b"\n".join(
        (f"{name}={','.join(values)}" if values else name).encode()
        for name, values in offers.items()
    )


def accept_offers(
    offers: Mapping[str, Sequence[str]],
    *,
    commands: Sequence[str] = ("syslog",),
    software: Sequence[str] = ("logbus",),
) -> dict[str, list[str]] | None:
    """The offers a server answers an ``open`` with, or None if the client offered no
    ``relp_version`` (then the open is refused). The client's version is echoed
    when it is one this codec speaks (0, what librelp sends, or 1), else 0; the
    commands are those both sides know; ``relp_software`` names this server."""
    versions = offers.get("relp_version")
    if not versions:
        return None
    version = versions[0] if versions[0] in SUPPORTED_VERSIONS else SUPPORTED_VERSIONS[0]
    wanted = offers.get("commands", [])
    return {
        "relp_version": [version],
        "relp_software": list(software),
        "commands": [name for name in wanted if name in commands],
    }


def response(txnr: int, code: int = 200, text: str = "OK", body: bytes = b"") -> bytes:
    """A ``rsp`` frame: ``200 OK`` by default, ``500 <text>`` for a failure; ``body``
    follows on the next line (the accepted offers, for an ``open``)."""
    data = b"%03d %s" % (code, text.replace("\n", " ").encode()) + (b"\n" + body if body else b"")
    return RelpFrame(txnr, "rsp", data).encode()


def serverclose() -> bytes:
    """The server's ``serverclose`` hint: TXNR 0, no data, never answered."""
    return RelpFrame(0, "serverclose").encode()


def parse_response(data: bytes) -> tuple[int, str, bytes] | None:
    """A ``rsp`` frame's data as (code, text, body), or None if it is no response."""
    match = _RSP.fullmatch(data)
    if match is None:
        return None
    return int(match[1]), (match[2] or b"").decode("utf-8", "replace"), match[3] or b""
