"""``Settings``: where the broker is and how to talk to it, from ``LOGBUS_*`` variables.

Settings are passed explicitly to whatever needs them; there is no global
instance. Every field can come from the environment (``LOGBUS_URL``,
``LOGBUS_CONFIG``, ``LOGBUS_PREFETCH`` ...) or from keyword arguments, which win.
The URL may carry a password: :func:`redact_url` is how it is ever shown, and
``repr(settings)`` uses it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from logbus._env import DEFAULT_URL
from logbus._urls import redact_url
from logbus.errors import ConfigError
from logbus.topology import Topology, default, load

__all__ = ["DEFAULT_URL", "Settings", "load_settings", "redact_url"]


class Settings(BaseSettings):
    """Connection and consumption settings; ``LOGBUS_<FIELD>`` variables fill what is not given.

    ``url`` is one broker URL or several, comma-separated (failover); ``config`` is a
    topology TOML file, ``None`` for the built-in default; ``prefetch`` is how many
    unacked deliveries a consumer may hold; the timeouts are in seconds; ``heartbeat``
    is the AMQP heartbeat in seconds (0 turns it off).
    """

    model_config = SettingsConfigDict(env_prefix="LOGBUS_", frozen=True, extra="forbid")

    url: str = Field(default=DEFAULT_URL, min_length=1)
    config: Path | None = None
    prefetch: int = Field(default=100, ge=1, le=65535)  # AMQP's prefetch-count is 16 bits
    confirm_timeout: float = Field(default=30.0, gt=0)
    connect_timeout: float = Field(default=10.0, gt=0)
    heartbeat: int = Field(default=30, ge=0, le=65535)

    @field_validator("config", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        # LOGBUS_CONFIG= (empty) means "no file", not the current directory.
        return None if value == "" else value

    def topology(self) -> Topology:
        """The topology to use: ``config`` loaded, or :func:`logbus.topology.default`."""
        return default() if self.config is None else load(self.config)

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, redact_url(value) if name == "url" else value


def load_settings(**overrides: Any) -> Settings:
    """``Settings(**overrides)``, with a bad value reported as a one-line :class:`ConfigError`.

    The message names the field and its variable; a rejected URL is shown redacted.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "settings"
        env = f"LOGBUS_{field.upper()}"
        if err["type"] == "extra_forbidden":
            raise ConfigError(f"unknown setting {field!r} (see logbus.settings.Settings)") from None
        value = err["input"]
        shown = redact_url(value) if field == "url" and isinstance(value, str) else value
        what = f"setting {field} = {shown!r}: {err['msg'][0].lower()}{err['msg'][1:]}"
        raise ConfigError(f"{what} (fix {env} or the matching option)") from None
