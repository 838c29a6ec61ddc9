"""The checks of a topology entity's fields, and the one-line TOML values their messages use.

Each rule takes the field's name and value and raises
:class:`~logbus.errors.InvalidTopology` saying what is wrong, what to do and where
(the field), in the words a TOML author reads. :mod:`logbus.topology` runs them in
its dataclasses' ``__post_init__``; they live apart to keep that module small.
Strict as the file format is: ``"1"`` is not 1, and 1 is not ``true``.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from string import Formatter
from typing import Any, get_args

from logbus.errors import InvalidTopology

__all__ = [
    "PLACEHOLDERS",
    "arguments",
    "bindable",
    "check_fields",
    "count",
    "dead_letter_strategy",
    "flag",
    "frozen_dict",
    "name",
    "one_of",
    "optional_label",
    "optional_string",
    "template",
    "text",
    "toml_value",
]

PLACEHOLDERS = ("facility", "severity", "host", "app")
"""The names an emit target's key template may use."""


def toml_value(value: Any) -> str:
    """One TOML value, inline, on one line (for files and for messages)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):  # JSON's escapes are TOML's, but TOML also forbids a raw DEL
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)  # inf, -inf, nan
    if isinstance(value, dict):
        inner = ", ".join(f"{_toml_key(str(k))} = {toml_value(v)}" for k, v in value.items())
        return f"{{ {inner} }}" if inner else "{}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write a {type(value).__name__} as TOML")


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_value(key)


# -- checking one entity's fields (the messages are what a TOML author reads) -------------

_HINTS = {
    "string": "write a quoted string",
    "boolean": "write true or false, without quotes",
    "integer": "write a whole number, without quotes",
    "dictionary": "write a table",
}


def _wrong(key: str, value: object, what: str) -> InvalidTopology:
    got = f" = {toml_value(value)}" if isinstance(value, str | int | float) else ""
    return InvalidTopology(f"{key}{got}: input should be a valid {what}", _HINTS[what], (key,))


def name(key: str, name: object) -> None:
    if not isinstance(name, str):
        raise _wrong(key, name, "string")
    if not name:
        raise InvalidTopology("the name is empty", 'give it one, like "logbus.audit"', (key,))
    if len(name.encode()) > 255:  # an AMQP short string
        raise InvalidTopology(f"the name {name[:20]!r}... is over 255 bytes", "shorten it", (key,))
    if name.startswith("amq."):  # the broker refuses to declare these
        what = f"the name {name!r} uses the reserved prefix amq."
        raise InvalidTopology(what, "rename it", (key,))


def check_fields(entity: object, names: Mapping[str, Any]) -> None:
    """Check each field of ``entity`` against its annotation's rule in ``names``: a
    strict type (no "1" for 1, no 1 for true), a Literal's choices, ``ge=0`` counts."""
    problems: list[InvalidTopology] = []
    for key, rule in names.items():
        value = getattr(entity, key)
        try:
            rule(key, value)
        except InvalidTopology as exc:
            problems.append(exc)
    if problems:
        raise InvalidTopology.of(problems)


def text(key: str, value: object) -> None:
    if not isinstance(value, str):
        raise _wrong(key, value, "string")


def optional_string(key: str, value: object) -> None:
    if value is not None:
        text(key, value)


def optional_label(key: str, value: object) -> None:
    """An emit target's name: absent, or a word to type after ``--target``."""
    if value is None:
        return
    text(key, value)
    assert isinstance(value, str)
    if not value.strip() or "," in value:
        what = f"{key} = {toml_value(value)} is not a usable name"
        raise InvalidTopology(what, 'give a short word without commas, like "audit"', (key,))


def flag(key: str, value: object) -> None:
    if not isinstance(value, bool):
        raise _wrong(key, value, "boolean")


def count(key: str, value: object) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise _wrong(key, value, "integer")
    if value < 0:
        raise InvalidTopology(
            f"{key} = {value}: input should be greater than or equal to 0", "use 0 or more", (key,)
        )


def arguments(key: str, value: object) -> None:
    if not isinstance(value, dict):
        raise _wrong(key, value, "dictionary")
    for name in value:
        if not isinstance(name, str):
            raise _wrong(f"{key}[{name!r}]", name, "string")


def one_of(choices: Any, optional: bool = False) -> Any:
    allowed = get_args(choices)
    shown = ", ".join(repr(c) for c in allowed[:-1]) + f" or {allowed[-1]!r}"

    def check(key: str, value: object) -> None:
        if (value is None and optional) or (isinstance(value, str) and value in allowed):
            return
        got = f" = {toml_value(value)}" if isinstance(value, str | int | float) else ""
        raise InvalidTopology(f"{key}{got} is not allowed", f"use one of {shown}", (key,))

    return check


def frozen_dict(entity: object, key: str) -> None:
    """Keep a copy of a mutable argument table, as a validated model did."""
    value = getattr(entity, key)
    if isinstance(value, dict):
        object.__setattr__(entity, key, dict(value))


def bindable(key: str, source: object) -> None:
    text(key, source)
    if not source:
        hint = "bind to a declared exchange; the default one routes by queue name already"
        raise InvalidTopology("the default exchange cannot be bound", hint, (key,))


def template(key_name: str, key: object) -> None:
    text(key_name, key)
    assert isinstance(key, str)
    hint = "use {facility}, {severity}, {host} or {app}; {{ and }} for literal braces"
    try:
        parsed = list(Formatter().parse(key))
    except ValueError as exc:
        raise InvalidTopology(
            f"key template {key!r} is malformed: {exc}", hint, (key_name,)
        ) from None
    for _text, name, spec, conversion in parsed:
        if name is not None and (name not in PLACEHOLDERS or spec or conversion):
            what = f"key template {key!r} has unknown placeholder {{{name}}}"
            raise InvalidTopology(what, hint, (key_name,))


def dead_letter_strategy(args: Mapping[str, Any]) -> None:
    """At-least-once dead-lettering as RabbitMQ (3.10+) takes it: a classic queue with
    ``x-dead-letter-strategy`` is refused at declare time, and a quorum queue whose
    overflow is not ``reject-publish`` quietly falls back to at-most-once (a broker log
    warning only), so both are refused here, where the author reads why."""
    if args.get("x-dead-letter-strategy") != "at-least-once":
        return
    if args.get("x-queue-type") != "quorum":
        raise InvalidTopology(
            'dead_letter_strategy = "at-least-once" needs a quorum queue',
            'set queue_type = "quorum"; RabbitMQ refuses the strategy on other queues',
            ("dead_letter_strategy",),
        )
    if args.get("x-overflow") != "reject-publish":
        raise InvalidTopology(
            'dead_letter_strategy = "at-least-once" needs overflow = "reject-publish"',
            'set overflow = "reject-publish"; else RabbitMQ falls back to at-most-once',
            ("overflow",),
        )


_AGE = re.compile(r"[0-9]+[YMDhms]")
#: What a stream refuses, as the friendly field a TOML author wrote or the x-argument.
_NOT_FOR_STREAMS = {
    "x-max-length": "max_length",
    "x-overflow": "overflow",
    "x-message-ttl": "message_ttl",
    "x-dead-letter-exchange": "dead_letter_exchange",
    "x-dead-letter-routing-key": "dead_letter_routing_key",
    "x-dead-letter-strategy": "dead_letter_strategy",
    "x-max-priority": "arguments",
    "x-expires": "arguments",
    "x-single-active-consumer": "arguments",
    "x-delivery-limit": "arguments",
}


def max_age(key: str, value: object) -> None:
    """A stream's retention by age: a count and a unit, ``7D``, ``12h`` (RabbitMQ's form)."""
    if value is None:
        return
    if not isinstance(value, str) or not _AGE.fullmatch(value):
        raise InvalidTopology(
            f"{key} = {toml_value(value)} is not an age",
            'write a count and a unit: "7D", "12h", "30m" (Y M D h m s)',
            (key,),
        )


def stream_arguments(args: Mapping[str, Any]) -> None:
    """RabbitMQ refuses a stream with the arguments of other queue types; so do we, first."""
    if args.get("x-queue-type") != "stream":
        if "x-max-age" in args:
            what = "max_age is for streams only"
            raise InvalidTopology(what, 'set queue_type = "stream", or remove it', ("max_age",))
        return
    for key, field_name in _NOT_FOR_STREAMS.items():
        if key in args:
            what = f"a stream queue cannot have {key}"
            hint = "bound a stream with max_length_bytes and max_age, or use another queue type"
            raise InvalidTopology(what, hint, (field_name,))


def undeclared(
    what: str, name: str, known: Iterable[str], section: str, loc: Any
) -> InvalidTopology:
    """InvalidTopology for a name that is not declared, with the closest one as a hint."""
    close = difflib.get_close_matches(name, sorted(known), 1)
    hint = f"did you mean {close[0]!r}?" if close else f"declare it under [[{section}]]"
    return InvalidTopology(f"{what} {name!r} is not declared", hint, loc)


def once(items: Sequence[object], section: str, field_name: str | None = None) -> None:
    """InvalidTopology for the first item declared twice in a section."""
    for i, item in enumerate(items):
        if item in items[:i]:
            what = f"{item!r} is declared twice" if field_name else "this entry is declared twice"
            loc = (section, i, field_name) if field_name else (section, i)
            raise InvalidTopology(what, "remove one", loc)
