"""Syslog into logbus: parsing, stream framing and RELP, the layers under the listeners.

Nothing here opens a socket: :mod:`~logbus.ingest.syslog` reads one message
into a record's keywords, :mod:`~logbus.ingest.framing` splits a TCP stream into
messages (RFC 6587) and :mod:`~logbus.ingest.relp` is RELP's codec. Keeping them
pure is what lets a fuzzer drive them with arbitrary bytes and arbitrary splits.
"""

from __future__ import annotations

from logbus.ingest.framing import DEFAULT_MAX_SIZE, Framer, Truncated
from logbus.ingest.relp import RelpDecoder, RelpFrame
from logbus.ingest.syslog import FACILITY_NAMES, parse, parse_record, peer_host

__all__ = [
    "DEFAULT_MAX_SIZE",
    "FACILITY_NAMES",
    "Framer",
    "RelpDecoder",
    "RelpFrame",
    "Truncated",
    "parse",
    "parse_record",
    "peer_host",
]
