"""A faster content header for pika and pamqp: property classes whose encoders are ours.

pika encodes every publish's properties in pure Python, one small piece at a
time; on the I/O thread that is most of the cost of a confirmed publish.
:func:`~logbus.transports._amqp_codec.encode_properties` produces the same bytes
(AMQP 0-9-1 basic properties, flags then fields in spec order) with fewer steps,
and keeps the last few header tables already encoded: records from one emitter
repeat facility, severity, host and app. Anything but plain string headers is
left to pika's own table encoder. (The encoder lives in the pika-free codec so
that the one-shot publisher of ``logbus emit`` shares it.)
"""

from __future__ import annotations

from typing import Any

import pika
from pamqp.commands import Basic

from logbus.transports._amqp_codec import encode_properties

__all__ = ["FastPamqpProperties", "FastProperties", "encode_properties"]


class FastProperties(pika.BasicProperties):  # type: ignore[misc]
    """``pika.BasicProperties`` with a quicker, byte-identical ``encode``."""

    def encode(self) -> list[bytes]:
        """The encoded property flags and fields, as pika's own ``encode`` returns them."""
        return encode_properties(self.__getattribute__)


class FastPamqpProperties(Basic.Properties):
    """pamqp's ``Basic.Properties`` with a quicker, byte-identical ``marshal``.

    No ``__slots__`` of its own on purpose: pamqp walks ``self.__slots__`` to
    marshal, and an empty tuple here would hide the real list.
    """

    def marshal(self) -> bytes:
        """The content header's property bytes, as pamqp's own ``marshal`` returns them."""
        headers = self.headers
        if headers and not all(
            type(k) is str and type(v) is str and k and v and len(k) <= 32
            for k, v in headers.items()
        ):  # pamqp has its own integer widths, empty-string and key-length rules
            return bytes(super().marshal())
        return b"".join(encode_properties(self._pika_name, skip_empty=True))

    def _pika_name(self, name: str) -> Any:
        if name == "type":
            return self.message_type
        if name == "headers":  # pamqp writes table keys sorted
            return None if self.headers is None else dict(sorted(self.headers.items()))
        if name == "timestamp":
            stamp = self.timestamp
            return None if stamp is None else int(stamp.timestamp())
        return getattr(self, name)
