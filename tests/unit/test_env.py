"""Light settings (logbus._env) equal Settings wherever they give an answer."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logbus._env import QuickSettings, quick_settings
from logbus.errors import ConfigError
from logbus.settings import Settings, load_settings


def full(environ: dict[str, str], **overrides: Any) -> Settings | None:
    """What the typer command builds from this environment, or None if it refuses it."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.lower().startswith("logbus_"):
                patch.delenv(name)
        for name, value in environ.items():
            patch.setenv(name, value)
        try:
            return load_settings(**{k: v for k, v in overrides.items() if v is not None})
        except ConfigError:
            return None


def same(quick: QuickSettings, settings_: Settings) -> bool:
    return dataclasses.asdict(quick) == settings_.model_dump()


def test_defaults_equal_settings_defaults() -> None:
    """With no LOGBUS_* variables, the light settings are Settings()'s defaults."""
    quick = quick_settings({})
    expected = full({})
    assert quick is not None and expected is not None and same(quick, expected)


def test_variables_and_overrides_are_read_like_settings() -> None:
    """Variables (any case) fill the fields; --url, --config, --timeout win over them."""
    environ = {
        "LOGBUS_URL": "amqp://u:p@rabbit:5672/logs",
        "logbus_config": "/etc/logbus.toml",
        "LOGBUS_PREFETCH": "7",
        "LOGBUS_CONFIRM_TIMEOUT": "2.5",
        "LOGBUS_CONNECT_TIMEOUT": "3",
        "LOGBUS_HEARTBEAT": "0",
        "LOGBUS_DEBUG": "1",  # not a setting: ignored by both
    }
    quick = quick_settings(environ)
    assert quick is not None and quick.config == Path("/etc/logbus.toml")
    assert same(quick, full(environ))  # type: ignore[arg-type]
    quick = quick_settings(environ, url="amqp://x", config="c.toml", confirm_timeout=9.0)
    expected = full(environ, url="amqp://x", config=Path("c.toml"), confirm_timeout=9.0)
    assert quick is not None and expected is not None and same(quick, expected)


def test_an_empty_config_variable_is_no_file() -> None:
    """LOGBUS_CONFIG= means the default topology, as in Settings."""
    quick = quick_settings({"LOGBUS_CONFIG": ""})
    assert quick is not None and quick.config is None


@pytest.mark.parametrize(
    "environ",
    [
        {"LOGBUS_URL": ""},
        {"LOGBUS_PREFETCH": "0"},
        {"LOGBUS_PREFETCH": "65536"},
        {"LOGBUS_PREFETCH": " 7"},
        {"LOGBUS_PREFETCH": "7.0"},
        {"LOGBUS_HEARTBEAT": "-1"},
        {"LOGBUS_CONFIRM_TIMEOUT": "0"},
        {"LOGBUS_CONFIRM_TIMEOUT": "1e3"},
        {"LOGBUS_CONNECT_TIMEOUT": "inf"},
        {"LOGBUS_URL": "amqp://a", "logbus_url": "amqp://b"},
    ],
)
def test_values_not_plainly_written_are_left_to_settings(environ: dict[str, str]) -> None:
    """Anything but plain digits and non-empty URLs gives None: Settings must judge it."""
    assert quick_settings(environ) is None


VALUES = st.one_of(
    st.sampled_from(["", "0", "1", "7", "30", "65535", "65536", "2.5", "1e3", " 3", "x", "-1"]),
    st.text(alphabet="0123456789.", max_size=6),
)
ENV = st.dictionaries(
    st.sampled_from(
        [
            "LOGBUS_URL",
            "LOGBUS_CONFIG",
            "LOGBUS_PREFETCH",
            "LOGBUS_CONFIRM_TIMEOUT",
            "LOGBUS_CONNECT_TIMEOUT",
            "LOGBUS_HEARTBEAT",
            "Logbus_Heartbeat",
            "LOGBUS_OTHER",
        ]
    ),
    VALUES,
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(environ=ENV, timeout=st.none() | st.sampled_from([0.0, 0.5, 3.0]))
def test_whenever_the_light_settings_answer_they_equal_settings(
    environ: dict[str, str], timeout: float | None
) -> None:
    """Generated variables: a light answer is exactly what Settings builds."""
    quick = quick_settings(environ, confirm_timeout=timeout)
    if quick is None:
        return
    expected = full(environ, confirm_timeout=timeout)
    assert expected is not None
    assert same(quick, expected)
