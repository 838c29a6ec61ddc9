"""RFC 5424 STRUCTURED-DATA: ``[id name="value" ...][id2 ...]`` into plain JSON data.

Kept apart from the header parser because it is the one part of a syslog line
with escapes (``\\"``, ``\\\\`` and ``\\]`` inside a value; any other backslash is
kept as written, as the RFC says) and the one a fuzzer is most likely to break.
Real senders are a little looser than the RFC, so spaces before ``]`` and
between parameters are tolerated; anything else malformed is reported, never
guessed at, and the caller keeps the text as the message.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["read_sd"]

_SD_ID = re.compile(r'\[([^\s=\]"]{1,128})')
_PARAM = re.compile(r' +([^\s=\]"]{1,128})="((?:[^"\\]|\\.)*)"', re.DOTALL)
_CLOSE = re.compile(r" *\]")
_ESCAPE = re.compile(r'\\(["\\\]])')


def read_sd(text: str) -> tuple[dict[str, dict[str, Any]], int, str | None]:
    """Read the SD-ELEMENTs at the start of ``text``.

    Returns the elements as ``{sd_id: {name: value}}`` (a name given twice in one
    element, or an SD-ID given twice, gives a list of its values), the index just
    after the last ``]``, and None; or, when the elements are malformed, what is
    wrong as the third item (the first two are then to be ignored).
    """
    sd: dict[str, dict[str, Any]] = {}
    pos = 0
    while pos < len(text) and text[pos] == "[":
        head = _SD_ID.match(text, pos)
        if head is None:
            return sd, pos, f"no SD-ID at offset {pos}"
        params = sd.setdefault(head[1], {})
        pos = head.end()
        while True:
            close = _CLOSE.match(text, pos)
            if close is not None:
                pos = close.end()
                break
            param = _PARAM.match(text, pos)
            if param is None:
                return sd, pos, f"element {head[1]!r} is not closed or has a bad parameter"
            _add(params, param[1], _ESCAPE.sub(r"\1", param[2]))
            pos = param.end()
    return sd, pos, None


def _add(params: dict[str, Any], name: str, value: str) -> None:
    """Set ``name``; a repeated name collects its values in a list, in order."""
    if name not in params:
        params[name] = value
    elif isinstance(params[name], list):
        params[name].append(value)
    else:
        params[name] = [params[name], value]
