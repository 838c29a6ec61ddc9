"""Topology TOML for :mod:`logbus.topology`: reading it with errors that name the line, writing it.

Every problem is one line, ``<source>:<line>: <what is wrong> (<what to do>)``.
TOML syntax errors come from :mod:`tomllib` reworded. The document is then
walked here (:func:`build`): unknown and missing keys are found, and each table
becomes its entity, whose own checks raise :class:`~logbus.errors.InvalidTopology`
with what, what to do and where; :func:`line_of` places that on a line, since
tomllib keeps no positions. Of several problems the first in the file is
reported: fixing it shows the next. No pydantic: the walk is small, and a
``logbus emit --config FILE`` should not pay for importing it.

:func:`dumps` writes a topology back as TOML :func:`loads` reads to an equal one.
Imported by :mod:`logbus.topology` only when a file is read or written.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, TypeVar

from logbus._topology_checks import toml_value
from logbus.errors import ConfigError, InvalidTopology

__all__ = ["Loc", "build", "dumps", "line_of", "loads", "read", "toml_value"]

Loc = tuple[str | int, ...]
Sections = Mapping[str, type[Any]]
M = TypeVar("M")


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
    """Parse ``text`` and build it as ``model``, whose array-of-tables are ``sections``."""
    import tomllib

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
        return build(model, sections, data)
    except InvalidTopology as exc:
        problems = sorted((line_of(text, p.loc), p.what, p.hint) for p in exc.problems)
        line, what, hint = problems[0]  # the first in the file; fixing it shows the next
        raise ConfigError(" ".join(f"{source}:{line}: {what} ({hint})".splitlines())) from exc


def build(model: type[M], sections: Sections, data: Mapping[str, Any]) -> M:
    """``model`` from a document: each of ``sections`` an array of tables of its entity.

    Every table is checked before the whole, and :class:`InvalidTopology` carries every
    problem found in the tables (or the first of the whole), each with its place.
    """
    if not isinstance(data, Mapping):
        raise InvalidTopology("the document is not a table", "write tables", ())
    problems: list[InvalidTopology] = []
    built: dict[str, list[Any]] = {}
    for key, items in data.items():
        if key not in sections:
            problems.append(_unknown(key, list(sections), (key,)))
        elif not isinstance(items, list | tuple):
            got = f" = {toml_value(items)}" if isinstance(items, str | int | float) else ""
            what = f"{key}{got}: input should be a valid tuple"
            problems.append(InvalidTopology(what, "write an array of tables", (key,)))
        else:
            built[key] = []
            for i, item in enumerate(items):
                try:
                    built[key].append(_entity(sections[key], item, (key, i)))
                except InvalidTopology as exc:
                    problems += exc.at(key, i).problems
    try:
        if problems:
            raise InvalidTopology.of(problems)
        return model(**{key: tuple(items) for key, items in built.items()})
    except InvalidTopology as exc:  # each problem said with its table: "[[queues]] #2: ..."
        raise InvalidTopology.of([_entry(p) for p in exc.problems]) from None


def _entity(kind: type[Any], item: object, where: Loc) -> Any:
    """One table as its entity; InvalidTopology located in the table."""
    if not isinstance(item, Mapping):
        got = f" = {toml_value(item)}" if isinstance(item, str | int | float) else ""
        raise InvalidTopology(f"this entry{got} is not a table", "write a table", ())
    known = {f.name: f for f in fields(kind)}
    problems = [_unknown(key, list(known), (key,)) for key in item if key not in known]
    for name, spec in known.items():
        if name not in item and spec.default is MISSING and spec.default_factory is MISSING:
            what = f"required key {name!r} is missing"
            problems.append(InvalidTopology(what, f"add {name} = ...", (name,)))
    if problems:
        raise InvalidTopology.of(problems)
    return kind(**item)


def _entry(problem: InvalidTopology) -> InvalidTopology:
    """``problem`` with the table it is in named first, as ``[[queues]] #2: ``."""
    loc = problem.loc
    if len(loc) > 1 and isinstance(loc[1], int):
        return InvalidTopology(f"[[{loc[0]}]] #{loc[1] + 1}: {problem.what}", problem.hint, loc)
    return problem


def _unknown(key: str, allowed: list[str], loc: Loc) -> InvalidTopology:
    close = difflib.get_close_matches(key, allowed, 1)
    hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(allowed)}"
    return InvalidTopology(f"unknown key {key!r}", hint, loc)


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


def dumps(document: Any, sections: Sections) -> str:
    """TOML for ``document``: each of its ``sections`` an array of tables, defaults left out."""
    out: list[str] = []
    for section in sections:
        for item in getattr(document, section):
            out.append(f"[[{section}]]")
            for spec in fields(item):
                value = getattr(item, spec.name)
                required = spec.default is MISSING and spec.default_factory is MISSING
                fallback = (
                    spec.default if spec.default_factory is MISSING else spec.default_factory()
                )
                if required or spec.name in _ALWAYS or value != fallback:
                    out.append(f"{_key(spec.name)} = {toml_value(value)}")
            out.append("")
    return "\n".join(out)


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_value(key)
