"""Syslog over a byte stream (TCP, TLS): RFC 6587's two framings, read incrementally.

A TCP sender either counts octets (``LEN SP MSG``, what RFC 5425 and syslog-ng's
``syslog()`` driver write) or ends each message with a line feed (the
"non-transparent" framing of rsyslog's omfwd and ``logger --rfc3164``; NUL and
CRLF ends are seen too). :class:`Framer` picks one per connection from the
first byte, a digit meaning octet counting, as rsyslog and syslog-ng do.

It is fed whatever ``recv`` returned and gives back whole messages, so the
same stream gives the same messages however it was split. Memory stays
bounded by ``max_size``: a longer message is cut at ``max_size`` and handed on
as :class:`Truncated` (or skipped, if asked), counted either way, and the rest
of it is discarded as it arrives rather than buffered. An octet-counted stream
that loses its framing (a header that is not digits and a space) reads that one
message up to the next line end, counted in ``framing_errors``, and goes back
to counting: a sender's bug costs one odd record, not the connection.
"""

from __future__ import annotations

import re
from typing import Final, Literal

__all__ = ["DEFAULT_MAX_SIZE", "Framer", "Truncated"]

DEFAULT_MAX_SIZE: Final = 64 * 1024
"""The largest message kept whole, as syslog-ng's default ``log-msg-size``."""

_START, _BODY, _LINE = "start", "body", "line"
_HEADER = re.compile(rb"([1-9][0-9]{0,8}) ")
_PARTIAL_HEADER = re.compile(rb"[1-9][0-9]{0,8}")
_END = re.compile(rb"[\n\x00]")


class Truncated(bytes):
    """A message cut short: longer than the framer's ``max_size``, or cut off by
    the connection closing inside an octet-counted frame. The parser flags it."""


class Framer:
    """Split one connection's byte stream into syslog messages (see the module doc).

    ``feed(data)`` returns the messages completed by ``data``; ``flush()``, once
    the peer has closed, returns what was left (never a message silently lost).
    ``mode`` is None until the first byte, then ``"octet-counting"`` or
    ``"non-transparent"``. ``truncated``, ``skipped`` and ``framing_errors``
    count what went wrong; ``buffered`` is the bytes held, at most about
    ``max_size`` between calls.
    """

    def __init__(
        self,
        max_size: int = DEFAULT_MAX_SIZE,
        *,
        oversize: Literal["truncate", "skip"] = "truncate",
    ) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be at least 1, not {max_size}")
        if oversize not in ("truncate", "skip"):
            raise ValueError(f"oversize must be 'truncate' or 'skip', not {oversize!r}")
        self.max_size = max_size
        self.oversize = oversize
        self.mode: str | None = None
        self.truncated = 0
        self.skipped = 0
        self.framing_errors = 0
        self._buf = bytearray()
        self._state = _START
        self._declared = 0  # the octet count of the frame being read
        self._remaining = 0  # its bytes still to come
        self._keep = 0  # how many of them are kept
        self._body = bytearray()
        self._discarding = False  # inside an over-long line, until its end

    @property
    def buffered(self) -> int:
        """Bytes held for messages not yet complete."""
        return len(self._buf) + len(self._body)

    def feed(self, data: bytes) -> list[bytes]:
        """The messages that ``data`` completes, in order (possibly none)."""
        out: list[bytes] = []
        if not data:
            return out
        if self.mode is None:
            octets = data[:1].isdigit()
            self.mode = "octet-counting" if octets else "non-transparent"
            self._state = _START if octets else _LINE
        buf = self._buf
        buf += data
        pos = 0
        if self._state == _LINE and self.mode == "non-transparent" and not self._discarding:
            pos = self._whole_lines(buf, out)
        while pos < len(buf):
            if self._state == _BODY:
                pos = self._body_from(buf, pos, out)
                continue
            after = (
                self._line_from(buf, pos, out) if self._state == _LINE else self._header(buf, pos)
            )
            if after is None:
                break
            pos = after
        del buf[:pos]
        return out

    def flush(self) -> list[bytes]:
        """What is left once the peer has closed: a last line without its end, a
        frame cut off (as :class:`Truncated`); the framer then starts afresh."""
        out: list[bytes] = []
        rest = bytes(self._buf)
        if self._state == _BODY:
            if self._body:
                self.truncated += 1
                out.append(Truncated(self._body))
            elif self._keep == 0:
                self.skipped += 1
        elif self._state == _START and rest:
            self.framing_errors += 1
            self._emit_line(rest, out)
        elif self._state == _LINE and not self._discarding:
            self._emit_line(rest, out)
        self._buf.clear()
        self._body.clear()
        self._discarding = False
        self._state = _START if self.mode == "octet-counting" else _LINE
        return out

    def _header(self, buf: bytearray, pos: int) -> int | None:
        """Read ``LEN SP`` at ``pos``; None while the digits may go on."""
        if buf[pos] in b"\n\r\x00":  # a line end some senders add after a counted frame
            return pos + 1
        header = _HEADER.match(buf, pos)
        if header is not None:
            self._declared = self._remaining = int(header[1])
            fits = self._declared <= self.max_size
            self._keep = (
                self._declared if fits else self.max_size if self.oversize == "truncate" else 0
            )
            self._state = _BODY
            return header.end()
        if _PARTIAL_HEADER.fullmatch(buf, pos):
            return None
        self.framing_errors += 1
        self._state = _LINE
        return pos

    def _body_from(self, buf: bytearray, pos: int, out: list[bytes]) -> int:
        """Take what ``buf`` holds of the current counted frame; emit it once whole."""
        take = min(self._remaining, len(buf) - pos)
        if take == self._declared and self._declared <= self.max_size:
            out.append(bytes(buf[pos : pos + take]))  # the usual case: the frame is all here
            self._state = _START
            return pos + take
        room = self._keep - len(self._body)
        if room > 0:
            self._body += buf[pos : pos + min(take, room)]
        self._remaining -= take
        if self._remaining == 0:
            if self._declared <= self.max_size:
                out.append(bytes(self._body))
            else:
                self._oversized(bytes(self._body), out)
            self._body.clear()
            self._state = _START
        return pos + take

    def _line_from(self, buf: bytearray, pos: int, out: list[bytes]) -> int | None:
        """Take a line ended by LF or NUL; None while it is not ended and still fits."""
        end = _END.search(buf, pos)
        if end is None:
            if self._discarding:
                return len(buf)
            # One byte over max_size may still be the CR of a CRLF, so wait for two.
            if len(buf) - pos > self.max_size + 1:
                self._oversized(bytes(buf[pos : pos + self.max_size]), out)
                self._discarding = True
                return len(buf)
            return None
        stop = end.start()
        if self._discarding:
            self._discarding = False
        else:
            self._emit_line(bytes(buf[pos:stop]), out)
        if self.mode == "octet-counting":
            self._state = _START
        return stop + 1

    def _whole_lines(self, buf: bytearray, out: list[bytes]) -> int:
        """Every ended line in ``buf`` at once (one split, not a search per line); where
        the rest starts."""
        last = max(buf.rfind(b"\n"), buf.rfind(b"\x00"))
        if last < 0:
            return 0
        chunk = bytes(buf[:last])
        if b"\x00" in chunk:
            chunk = chunk.replace(b"\x00", b"\n")
        lines = chunk.split(b"\n")
        long = len(chunk) > self.max_size and max(map(len, lines)) > self.max_size
        if long or b"\r" in chunk:
            for line in lines:
                self._emit_line(line, out)
        else:
            out += filter(None, lines)
        return last + 1

    def _emit_line(self, line: bytes, out: list[bytes]) -> None:
        """Hand on one line without its CR; an empty line is no message."""
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > self.max_size:
            self._oversized(line[: self.max_size], out)
        elif line:
            out.append(line)

    def _oversized(self, kept: bytes, out: list[bytes]) -> None:
        """A message longer than ``max_size``: its start handed on, or skipped; counted."""
        if self.oversize == "truncate":
            self.truncated += 1
            out.append(Truncated(kept))
        else:
            self.skipped += 1
