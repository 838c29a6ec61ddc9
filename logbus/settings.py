"""``Settings``: where the broker is and how to talk to it, from ``LOGBUS_*`` variables.

Settings are passed explicitly to whatever needs them; there is no global
instance. Every field can come from the environment (``LOGBUS_URL``,
``LOGBUS_CONFIG``, ``LOGBUS_PREFETCH`` ...) or from keyword arguments, which win.
The URL may carry a password: :func:`redact_url` is how it is ever shown, and
``repr(settings)`` uses it. To keep credentials out of argv (``ps`` shows it)
and out of the environment of every child process, ``url_file``
(``LOGBUS_URL_FILE``) names a file holding the URL, used when no URL is given
otherwise, and ``password_file`` (``LOGBUS_PASSWORD_FILE``) a file whose
content replaces the password of every ``amqp(s)://`` URL.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from logbus._urls import parse_url, redact_url, split_urls
from logbus.errors import ConfigError
from logbus.topology import Topology, default, load

__all__ = ["DEFAULT_URL", "Settings", "load_settings", "redact_url", "with_password"]

DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"


@dataclass(frozen=True, init=False)
class Settings:
    """Connection and consumption settings; ``LOGBUS_<FIELD>`` variables fill what is not given.

    ``url`` is one broker URL or several, comma-separated (failover); ``config`` is a
    topology TOML file, ``None`` for the built-in default; ``prefetch`` is how many
    unacked deliveries a consumer may hold; the timeouts are in seconds; ``heartbeat``
    is the AMQP heartbeat in seconds (0 turns it off). ``url_file`` is a file holding
    the URL, read when ``url`` is not given; ``password_file`` a file holding the
    password that replaces the one of every ``amqp://``/``amqps://`` URL (user
    ``guest`` where the URL names none); one trailing newline of either is ignored.
    ``given`` names the fields that were set (by keyword or variable), not defaulted.

    A frozen dataclass checked by hand, not a pydantic model (nor pydantic-settings):
    every command builds one, and a one-record ``logbus emit`` should not pay for
    importing pydantic. A bad value raises a one-line :class:`ConfigError` naming the
    field and its variable (a URL shown redacted).
    """

    url: str
    config: Path | None
    prefetch: int  # AMQP's prefetch-count is 16 bits
    confirm_timeout: float
    connect_timeout: float
    heartbeat: int
    url_file: Path | None
    password_file: Path | None
    given: frozenset[str] = field(compare=False, repr=False)

    def __init__(self, **values: Any) -> None:
        data = {**_environment(), **values}
        unknown = sorted(set(data) - set(_RULES))
        if unknown:
            raise ConfigError(f"unknown setting {unknown[0]!r} (see logbus.settings.Settings)")
        data = {k: None if v == "" and k in _PATHS else v for k, v in data.items()}
        data = _credentials_from_files(data)
        for name, (read, fallback) in _RULES.items():
            value = data.get(name, fallback)
            try:
                checked = read(value)
            except (TypeError, ValueError) as exc:
                shown = redact_url(value) if name == "url" and isinstance(value, str) else value
                what = f"setting {name} = {shown!r}: {exc}"
                raise ConfigError(
                    f"{what} (fix LOGBUS_{name.upper()} or the matching option)"
                ) from None
            object.__setattr__(self, name, checked)
        object.__setattr__(self, "given", frozenset(data))

    def topology(self) -> Topology:
        """The topology to use: ``config`` loaded, or :func:`logbus.topology.default`."""
        return default() if self.config is None else load(self.config)

    def __repr__(self) -> str:
        shown = (
            f"{f.name}={redact_url(self.url) if f.name == 'url' else getattr(self, f.name)!r}"
            for f in fields(self)
            if f.repr
        )
        return f"Settings({', '.join(shown)})"


# -- reading each field: lenient as environment variables need (the text "7" is 7) -------


def _number(kind: type[int] | type[float], low: float, high: float | None, above: bool) -> Any:
    word = "integer" if kind is int else "number"

    def read(value: object) -> int | float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"input should be a valid {word}")
        try:
            number = kind(value.strip() if isinstance(value, str) else value)
        except ValueError:
            raise ValueError(f"input should be a valid {word}, unable to parse it") from None
        if kind is int and isinstance(value, float) and value != number:
            raise ValueError("input should be a valid integer, got a number with a fraction")
        if (number <= low) if above else (number < low):
            raise ValueError(
                f"input should be greater than {'' if above else 'or equal to '}{low:g}"
            )
        if high is not None and number > high:
            raise ValueError(f"input should be less than or equal to {high:g}")
        return number

    return read


def _url(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("input should be a valid string")
    if not value:
        raise ValueError("string should have at least 1 character")
    # Every URL of the list is read once here, so that a malformed one is a one-line
    # ConfigError (password hidden) on every command, before anything connects.
    for one in split_urls(value):
        if one.strip():
            parse_url(one.strip())
    return value


def _path(value: object) -> Path | None:
    if value is None or isinstance(value, Path):
        return value
    if isinstance(value, str):
        return Path(value)
    raise ValueError("input is not a valid path")


_RULES: dict[str, tuple[Any, Any]] = {
    "url": (_url, DEFAULT_URL),
    "config": (_path, None),
    "prefetch": (_number(int, 1, 65535, False), 100),
    "confirm_timeout": (_number(float, 0, None, True), 30.0),
    "connect_timeout": (_number(float, 0, None, True), 10.0),
    "heartbeat": (_number(int, 0, 65535, False), 30),
    "url_file": (_path, None),
    "password_file": (_path, None),
}
_PATHS = ("config", "url_file", "password_file")  # LOGBUS_CONFIG= (empty) means "no file"
_PREFIX = "logbus_"


def _environment() -> dict[str, str]:
    """The ``LOGBUS_<FIELD>`` variables that name a field, by field; names are matched
    case-insensitively, and variables that name no field (``LOGBUS_TEST_URL``) are left."""
    found: dict[str, str] = {}
    for name, value in os.environ.items():
        lowered = name.lower()
        if lowered.startswith(_PREFIX) and lowered[len(_PREFIX) :] in _RULES:
            found[lowered[len(_PREFIX) :]] = value
    return found


def _credentials_from_files(data: dict[str, Any]) -> dict[str, Any]:
    """``url`` from ``url_file`` when none is given, and ``password_file``'s password in it."""
    url_file, password_file = data.get("url_file") or None, data.get("password_file") or None
    if url_file is not None and not data.get("url"):
        data = {**data, "url": _read_secret(url_file, "url_file").strip()}
    if password_file is not None:
        password = _read_secret(password_file, "password_file")
        data = {**data, "url": with_password(data.get("url") or DEFAULT_URL, password)}
    return data


def _read_secret(path: object, field: str) -> str:
    """The text of a credentials file, without its trailing newline; ConfigError naming it."""
    try:
        with open(str(path), encoding="utf-8") as source:
            text = source.read()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"LOGBUS_{field.upper()} {str(path)!r} cannot be read: {why}") from None
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise ConfigError(f"LOGBUS_{field.upper()} {str(path)!r} is empty")
    return text


def with_password(url: str, password: str) -> str:
    """``url`` (one or a failover list) with every ``amqp(s)://`` URL's password set to
    ``password`` (percent-encoded; user ``guest``, pika's default, where none is named)."""
    from urllib.parse import quote

    from logbus._urls import split_urls

    out = []
    for one in split_urls(url):
        head, sep, rest = one.partition("://")
        if head.strip().lower() not in ("amqp", "amqps"):
            out.append(one)
            continue
        userinfo, at, host = rest.rpartition("@")
        user = userinfo.partition(":")[0] if at else "guest"
        out.append(f"{head}{sep}{user}:{quote(password, safe='')}@{host}")
    return ",".join(out)


def load_settings(**overrides: Any) -> Settings:
    """``Settings(**overrides)``: a bad value is a one-line :class:`ConfigError` naming the
    field and its variable; a rejected URL is shown redacted. (Settings itself says so
    now; this stays the name commands call.)"""
    return Settings(**overrides)
