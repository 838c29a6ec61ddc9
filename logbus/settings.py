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
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from logbus._urls import parse_url, redact_url, split_urls
from logbus.errors import ConfigError
from logbus.topology import Topology, default, load

__all__ = ["DEFAULT_URL", "Settings", "load_settings", "redact_url", "with_password"]

DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"


class Settings(BaseModel):
    """Connection and consumption settings; ``LOGBUS_<FIELD>`` variables fill what is not given.

    ``url`` is one broker URL or several, comma-separated (failover); ``config`` is a
    topology TOML file, ``None`` for the built-in default; ``prefetch`` is how many
    unacked deliveries a consumer may hold; the timeouts are in seconds; ``heartbeat``
    is the AMQP heartbeat in seconds (0 turns it off). ``url_file`` is a file holding
    the URL, read when ``url`` is not given; ``password_file`` a file holding the
    password that replaces the one of every ``amqp://``/``amqps://`` URL (user
    ``guest`` where the URL names none); one trailing newline of either is ignored.
    """

    # A plain model reading LOGBUS_* itself (see __init__): pydantic-settings and the
    # asyncio it imports cost a one-record `logbus emit` about a third of its start-up.
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    url: str = Field(default=DEFAULT_URL, min_length=1)
    config: Path | None = None
    prefetch: int = Field(default=100, ge=1, le=65535)  # AMQP's prefetch-count is 16 bits
    confirm_timeout: float = Field(default=30.0, gt=0)
    connect_timeout: float = Field(default=10.0, gt=0)
    heartbeat: int = Field(default=30, ge=0, le=65535)
    url_file: Path | None = None
    password_file: Path | None = None

    def __init__(self, **values: Any) -> None:
        super().__init__(**{**_environment(), **values})

    @model_validator(mode="before")
    @classmethod
    def _credentials_from_files(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        url_file, password_file = data.get("url_file") or None, data.get("password_file") or None
        if url_file is not None and not data.get("url"):
            data = {**data, "url": _read_secret(url_file, "url_file").strip()}
        if password_file is not None:
            password = _read_secret(password_file, "password_file")
            data = {**data, "url": with_password(data.get("url") or DEFAULT_URL, password)}
        return data

    @field_validator("config", "url_file", "password_file", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        # LOGBUS_CONFIG= (empty) means "no file", not the current directory.
        return None if value == "" else value

    @field_validator("url")
    @classmethod
    def _url_reads(cls, value: str) -> str:
        # Every URL of the list is read once here, so that a malformed one is a one-line
        # ConfigError (password hidden) on every command, before anything connects.
        for one in split_urls(value):
            if one.strip():
                parse_url(one.strip())
        return value

    def topology(self) -> Topology:
        """The topology to use: ``config`` loaded, or :func:`logbus.topology.default`."""
        return default() if self.config is None else load(self.config)

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, redact_url(value) if name == "url" else value


_PREFIX = "logbus_"


def _environment() -> dict[str, str]:
    """The ``LOGBUS_<FIELD>`` variables that name a field, by field; names are matched
    case-insensitively, and variables that name no field (``LOGBUS_TEST_URL``) are left."""
    fields = Settings.model_fields
    found: dict[str, str] = {}
    for name, value in os.environ.items():
        lowered = name.lower()
        if lowered.startswith(_PREFIX) and lowered[len(_PREFIX) :] in fields:
            found[lowered[len(_PREFIX) :]] = value
    return found


def _read_secret(path: object, field: str) -> str:
    """The text of a credentials file, without its trailing newline; ValueError naming it."""
    try:
        with open(str(path), encoding="utf-8") as source:
            text = source.read()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ValueError(f"LOGBUS_{field.upper()} {str(path)!r} cannot be read: {why}") from None
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise ValueError(f"LOGBUS_{field.upper()} {str(path)!r} is empty")
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
    """``Settings(**overrides)``, with a bad value reported as a one-line :class:`ConfigError`.

    The message names the field and its variable; a rejected URL is shown redacted.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        if not err["loc"] and err["type"] == "value_error":  # a credentials file: it says which
            raise ConfigError(f"{err['ctx']['error']}") from None
        field = str(err["loc"][0]) if err["loc"] else "settings"
        env = f"LOGBUS_{field.upper()}"
        if err["type"] == "extra_forbidden":
            raise ConfigError(f"unknown setting {field!r} (see logbus.settings.Settings)") from None
        value = err["input"]
        shown = redact_url(value) if field == "url" and isinstance(value, str) else value
        what = f"setting {field} = {shown!r}: {err['msg'][0].lower()}{err['msg'][1:]}"
        raise ConfigError(f"{what} (fix {env} or the matching option)") from None
