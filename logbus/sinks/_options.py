"""How a sink is configured: options from ``NAME:ARG?KEY=VALUE&...`` or a ``[sink]`` table.

A configurable sink is a class deriving from :class:`ConfigurableSink`: it names
its options in a pydantic model (``Options``, which extends :class:`SinkOptions`
and so always has the batch hints ``max_batch`` and ``max_wait``), says which
option the text after ``NAME:`` fills (``argument``), and takes the options as
keyword arguments of its constructor. Validation, unknown options and their
messages are handled here once for every such sink, built-in or plugin.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Self
from urllib.parse import unquote_plus

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from logbus.errors import ConfigError

__all__ = ["ByteSize", "ConfigurableSink", "SinkOptions", "split_options"]

_SIZE = re.compile(r"\s*(\d+)\s*([kmgt]?)i?b?\s*", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def _parse_size(value: object) -> object:
    """``"100M"``, ``"64KiB"``, ``"2g"`` or a plain number of bytes (binary units)."""
    if isinstance(value, str):
        match = _SIZE.fullmatch(value)
        if match is None:
            raise ValueError(f"{value!r} is not a size: write bytes, or e.g. 64k, 100M, 1G")
        return int(match[1]) * _SIZE_UNITS[match[2].lower()]
    return value


#: A number of bytes, also written with a binary unit: ``64k``, ``100M``, ``1G``.
ByteSize = Annotated[int, BeforeValidator(_parse_size), Field(ge=1)]


class SinkOptions(BaseModel):
    """The options every configurable sink takes: how the worker batches records for it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Records per ``write``, at most.
    max_batch: int = Field(default=100, ge=1, le=100_000)
    #: Seconds the worker may wait to fill a batch; 0: only what is already waiting.
    max_wait: float = Field(default=0.0, ge=0.0, le=60.0)


class ConfigurableSink:
    """Base of sinks configured through :class:`SinkOptions`; gives ``from_spec``/``from_table``.

    Subclasses set ``name``, ``Options``, ``argument`` (the option filled by
    ``NAME:ARG``, or None for a sink that takes no argument) and ``example``
    (how to write the spec), and accept every option as a keyword argument.
    ``url_argument`` marks an argument that is a URL: query keys that are not
    the sink's options then stay in the URL.
    """

    name: ClassVar[str] = "sink"
    Options: ClassVar[type[SinkOptions]] = SinkOptions
    argument: ClassVar[str | None] = None
    url_argument: ClassVar[bool] = False
    example: ClassVar[str] = ""

    max_batch: int
    max_wait: float

    @classmethod
    def from_spec(cls, arg: str | None) -> Self:
        """The sink for ``NAME:ARG`` (``arg`` is the text after the colon, options included)."""
        text, options = split_options(
            arg or "", set(cls.Options.model_fields), keep_unknown=cls.url_argument
        )
        values: dict[str, Any] = dict(options)
        if cls.argument is None:
            if text:
                raise ConfigError(
                    f"sink {cls.name} takes no argument (got {cls.name}:{text}); "
                    f"write {cls.example or cls.name}"
                )
        elif text:
            if cls.argument in values:
                raise ConfigError(
                    f"sink {cls.name}: {cls.argument!r} is given twice, after the colon and "
                    f"as an option; write {cls.example}"
                )
            values[cls.argument] = text
        return cls.from_table(values)

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> Self:
        """The sink for a mapping of option names to values (a ``[sink]`` table, less ``type``)."""
        options = validate_options(cls, table)
        return cls(**options.model_dump())


def validate_options(cls: type[ConfigurableSink], values: Mapping[str, Any]) -> SinkOptions:
    """``values`` checked against ``cls.Options``; a problem is a ConfigError naming the option."""
    hints = list(SinkOptions.model_fields)
    known = [name for name in cls.Options.model_fields if name not in hints] + hints
    unknown = [key for key in values if key not in known]
    if unknown:
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"sink {cls.name} has no option {unknown[0]!r}{hint}; its options: {', '.join(known)}"
        )
    try:
        return cls.Options(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        option = str(first["loc"][0]) if first["loc"] else "options"
        if first["type"] == "missing":
            how = f"write {cls.example} or " if cls.example and option == cls.argument else ""
            raise ConfigError(
                f"sink {cls.name} needs {option!r}: {how}set {option} in the [sink] table"
            ) from None
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(
            f"sink {cls.name} option {option!r}: {message} (got {first['input']!r})"
        ) from None


def split_options(
    arg: str, known: set[str], *, keep_unknown: bool = False
) -> tuple[str, dict[str, str]]:
    """Split ``TEXT?KEY=VALUE&...`` into TEXT and the options (values URL-decoded).

    With ``keep_unknown`` (TEXT is a URL), only keys in ``known`` are taken out;
    the others stay in the returned URL's query, untouched. Otherwise every key is
    returned, and checking them against the sink's options is the caller's part.
    """
    text, mark, query = arg.partition("?")
    if not mark:
        return arg, {}
    options: dict[str, str] = {}
    kept: list[str] = []
    for piece in query.split("&"):
        if not piece:
            continue
        raw_key, equals, raw_value = piece.partition("=")
        key = unquote_plus(raw_key)
        if keep_unknown and key not in known:
            kept.append(piece)
            continue
        if not equals:
            raise ConfigError(f"sink option {key!r} has no value; write {key}=VALUE")
        if key in options:
            raise ConfigError(f"sink option {key!r} is given twice")
        options[key] = unquote_plus(raw_value)
    return (text + "?" + "&".join(kept) if kept else text), options
