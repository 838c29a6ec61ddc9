"""Topology TOML for :mod:`logbus.topology`: reading it with errors that name the line, writing it.

Every problem is one line, ``<source>:<line>: <what is wrong> (<what to do>)``.
TOML syntax errors come from :mod:`tomllib` reworded; validation errors are
pydantic's, each turned into what and what-to-do by :func:`describe` (a model's
own check raises :class:`FieldError` to give its wording and where it applies),
and placed on a line by :func:`line_of`, since tomllib keeps no positions. Of
several problems the first in the file is reported: fixing it shows the next.

:func:`dumps` writes a topology back as TOML :func:`loads` reads to an equal
one; :func:`toml_value` writes one value inline, for it and for messages.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from logbus.errors import ConfigError

__all__ = ["FieldError", "Loc", "describe", "dumps", "line_of", "loads", "read", "toml_value"]

Loc = tuple[str | int, ...]
Sections = Mapping[str, type[BaseModel]]
M = TypeVar("M", bound=BaseModel)


class FieldError(ValueError):
    """A validation failure that says what to do, and where relative to its model."""

    def __init__(self, what: str, hint: str, loc: Loc = ()) -> None:
        super().__init__(f"{what} ({hint})")
        self.what, self.hint, self.loc = what, hint, loc


# -- reading -----------------------------------------------------------------------------


def read(name: str) -> str:
    """The text of topology file ``name``; every problem is a one-line :class:`ConfigError`."""
    try:
        return Path(name).read_bytes().decode("utf-8")
    except FileNotFoundError:
        hint = "check the path, or unset LOGBUS_CONFIG for the built-in default"
        raise ConfigError(f"{name}: no such topology file ({hint})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{name}: not valid UTF-8 (save the file as UTF-8)") from None
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read the topology file: {exc.strerror}") from exc


def loads(model: type[M], sections: Sections, text: str, source: str) -> M:
    """Parse ``text`` and validate it as ``model``, whose array-of-tables are ``sections``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        if at := re.search(r" \(at line (\d+), column (\d+)\)$", msg):
            line, hint, msg = int(at[1]), f"fix the TOML at column {at[2]}", msg[: at.start()]
        else:
            line, hint = text.count("\n") + 1, "the file ends early: close what is open"
            msg = msg.removesuffix(" (at end of document)")
        raise ConfigError(f"{source}:{line}: invalid TOML: {msg} ({hint})") from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = sorted(
            (line_of(text, loc), w, h)
            for loc, w, h in (describe(err, model, sections) for err in exc.errors())
        )
        line, what, hint = problems[0]  # the first in the file; fixing it shows the next
        raise ConfigError(" ".join(f"{source}:{line}: {what} ({hint})".splitlines())) from exc


_TYPE_HINTS = {
    "int_type": "write a whole number, without quotes",
    "bool_type": "write true or false, without quotes",
    "string_type": "write a quoted string",
    "dict_type": "write a table",
    "model_type": "write a table",
    "tuple_type": "write an array of tables",
    "greater_than_equal": "use 0 or more",
}


def describe(err: ErrorDetails, model: type[BaseModel], sections: Sections) -> tuple[Loc, str, str]:
    """One pydantic error as (where in the document, what is wrong, what to do)."""
    loc: Loc = tuple(err["loc"])
    ctx = err.get("ctx", {})
    problem = ctx.get("error")
    loc += problem.loc if isinstance(problem, FieldError) else ()
    entry = f"[[{loc[0]}]] #{loc[1] + 1}: " if len(loc) > 1 and isinstance(loc[1], int) else ""
    if isinstance(problem, FieldError):
        return loc, entry + problem.what, problem.hint
    key = str(loc[-1]) if loc else "the document"
    if err["type"] == "extra_forbidden":
        allowed = list((sections[str(loc[0])] if len(loc) > 1 else model).model_fields)
        close = difflib.get_close_matches(key, allowed, 1)
        hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(allowed)}"
        return loc, f"{entry}unknown key {key!r}", hint
    if err["type"] == "missing":
        return loc, f"{entry}required key {key!r} is missing", f"add {key} = ..."
    value = err["input"]
    got = f" = {toml_value(value)}" if isinstance(value, str | int | float) else ""
    if err["type"] == "literal_error":
        return loc, f"{entry}{key}{got} is not allowed", f"use one of {ctx['expected']}"
    msg = err["msg"][0].lower() + err["msg"][1:]
    return loc, f"{entry}{key}{got}: {msg}", _TYPE_HINTS.get(err["type"], "fix the value")


_HEADER = re.compile(r"\s*(\[\[?)([^\]]*)\]")
_KEY_LINE = re.compile(r"""\s*([A-Za-z0-9_\-."' ]+?)\s*=""")


def _dotted(key: str) -> list[str]:
    return [part.strip().strip("\"'") for part in key.split(".")]


def line_of(text: str, loc: Loc) -> int:
    """The line of the key at ``loc``, else of its nearest enclosing table, else 1.

    tomllib keeps no positions, so the lines are re-read: each table header and
    ``key =`` line gets a path like ``("queues", 1, "max_length")``, and the first
    line sharing the longest prefix with ``loc`` wins.
    """
    best, best_depth = 1, 0
    table: list[str | int] = []
    count: dict[str, int] = {}
    for number, line in enumerate(text.split("\n"), 1):  # lines as tomllib counts them
        if header := _HEADER.match(line):
            keys = _dotted(header[2])
            if header[1] == "[[":
                count[keys[0]] = count.get(keys[0], -1) + 1
            indexed = keys[0] in count
            path = table = [keys[0], count[keys[0]], *keys[1:]] if indexed else [*keys]
        elif key := _KEY_LINE.match(line):
            path = [*table, *_dotted(key[1])]
        else:
            continue
        depth = 0
        while depth < min(len(path), len(loc)) and path[depth] == loc[depth]:
            depth += 1
        if depth > best_depth:
            best, best_depth = number, depth
    return best


# -- writing -----------------------------------------------------------------------------

_ALWAYS = {"durable", "destination_type", "routing_key", "key"}  # worth reading even if default


def dumps(document: BaseModel, sections: Sections) -> str:
    """TOML for ``document``: each of its ``sections`` an array of tables, defaults left out."""
    out: list[str] = []
    for section in sections:
        for item in getattr(document, section):
            out.append(f"[[{section}]]")
            for name, info in type(item).model_fields.items():
                value = getattr(item, name)
                required = info.is_required()
                fallback = None if required else info.get_default(call_default_factory=True)
                if required or name in _ALWAYS or value != fallback:
                    out.append(f"{_key(name)} = {toml_value(value)}")
            out.append("")
    return "\n".join(out)


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_value(key)


def toml_value(value: Any) -> str:
    """One TOML value, inline, on one line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):  # JSON's escapes are TOML's, but TOML also forbids a raw DEL
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)  # inf, -inf, nan
    if isinstance(value, dict):
        inner = ", ".join(f"{_key(str(k))} = {toml_value(v)}" for k, v in value.items())
        return f"{{ {inner} }}" if inner else "{}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write a {type(value).__name__} as TOML")
