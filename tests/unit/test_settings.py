"""Settings from LOGBUS_* variables, their topology, and URL redaction."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from logbus.errors import ConfigError
from logbus.settings import DEFAULT_URL, Settings, load_settings, redact_url
from logbus.topology import default


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test without the caller's LOGBUS_* variables."""
    for name in list(os.environ):
        if name.startswith("LOGBUS_"):
            monkeypatch.delenv(name)


def test_defaults_without_environment() -> None:
    """With no LOGBUS_* variables, every field has its documented default."""
    settings = Settings()
    assert settings.url == DEFAULT_URL == "amqp://guest:guest@localhost:5672/%2F"
    assert settings.config is None
    assert (settings.prefetch, settings.heartbeat) == (100, 30)
    assert (settings.confirm_timeout, settings.connect_timeout) == (30.0, 10.0)


def test_fields_come_from_logbus_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """LOGBUS_URL, LOGBUS_CONFIG, LOGBUS_PREFETCH ... fill the fields, converted."""
    monkeypatch.setenv("LOGBUS_URL", "amqp://u:p@rabbit:5672/logs")
    monkeypatch.setenv("LOGBUS_CONFIG", "/etc/logbus/logbus.toml")
    monkeypatch.setenv("LOGBUS_PREFETCH", "7")
    monkeypatch.setenv("LOGBUS_CONFIRM_TIMEOUT", "2.5")
    monkeypatch.setenv("LOGBUS_HEARTBEAT", "0")
    settings = Settings()
    assert settings.url == "amqp://u:p@rabbit:5672/logs"
    assert settings.config == Path("/etc/logbus/logbus.toml")
    assert (settings.prefetch, settings.confirm_timeout, settings.heartbeat) == (7, 2.5, 0)


def test_keyword_arguments_win_over_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit value (a CLI option) overrides the environment."""
    monkeypatch.setenv("LOGBUS_PREFETCH", "7")
    assert Settings(prefetch=3).prefetch == 3


def test_empty_config_variable_means_the_default_topology(monkeypatch: pytest.MonkeyPatch) -> None:
    """LOGBUS_CONFIG= (empty) is no file, so topology() is default()."""
    monkeypatch.setenv("LOGBUS_CONFIG", "")
    settings = Settings()
    assert settings.config is None
    assert settings.topology() == default()


def test_topology_loads_the_config_file(tmp_path: Path) -> None:
    """topology() reads the file named by config."""
    path = tmp_path / "t.toml"
    path.write_text('[[exchanges]]\nname = "only"\ntype = "fanout"\n')
    assert [e.name for e in Settings(config=path).topology().exchanges] == ["only"]


def test_prefetch_must_be_at_least_one() -> None:
    """prefetch 0 (unlimited in AMQP) is refused."""
    with pytest.raises(ConfigError, match="setting prefetch = 0: input should be greater"):
        Settings(prefetch=0)


def test_settings_are_frozen() -> None:
    """A Settings object cannot be changed after it is built."""
    settings = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.prefetch = 5  # type: ignore[misc]


def test_load_settings_reports_a_bad_variable_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """load_settings turns a bad value into a ConfigError naming the variable."""
    monkeypatch.setenv("LOGBUS_PREFETCH", "many")
    with pytest.raises(ConfigError, match="LOGBUS_PREFETCH") as caught:
        load_settings()
    assert "\n" not in str(caught.value)


def test_repr_hides_the_password() -> None:
    """repr(settings) shows the URL redacted."""
    text = repr(Settings(url="amqp://admin:s3cr3t@rabbit/%2F"))
    assert "s3cr3t" not in text
    assert "amqp://admin:***@rabbit/%2F" in text


def test_redact_single_url() -> None:
    """The password of one URL becomes ***, the rest is kept."""
    assert redact_url(DEFAULT_URL) == "amqp://guest:***@localhost:5672/%2F"


def test_redact_every_url_of_a_failover_list() -> None:
    """Each URL of a comma-separated list is redacted."""
    urls = "amqp://a:pw1@h1:5672/%2F,amqps://b:pw2@h2:5671/logs"
    assert redact_url(urls) == "amqp://a:***@h1:5672/%2F,amqps://b:***@h2:5671/logs"


@pytest.mark.parametrize(
    "url",
    ["amqp://localhost:5672/%2F", "amqp://user@host/", "memory://", "local:///run/logbus.sock"],
)
def test_urls_without_password_are_unchanged(url: str) -> None:
    """A URL without a password is returned as it was."""
    assert redact_url(url) == url


@pytest.mark.parametrize(
    "password",
    ["guest", "p@ss", "a/b?c#d", "com,ma", "p%40ss", "pass:word", "::@@"],
)
def test_password_never_appears(password: str) -> None:
    """Whatever characters it holds, the password is not in the redacted text."""
    urls = f"amqp://user:{password}@host:5672/%2F, amqps://other:{password}@h2/v"
    redacted = redact_url(urls)
    assert password not in redacted
    assert redacted.startswith("amqp://user:***@")


def test_other_logbus_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """Variables that are not fields (LOGBUS_TEST_URL, set by CI) do not break Settings."""
    monkeypatch.setenv("LOGBUS_TEST_URL", "amqp://ci:ci@broker/%2F")
    monkeypatch.setenv("LOGBUS_REQUIRE_BROKER", "1")
    assert Settings().url == DEFAULT_URL


def test_redaction_is_the_one_url_module() -> None:
    """redact_url is one implementation: settings re-exports the URL module's."""
    import logbus._urls
    import logbus.settings

    assert logbus.settings.redact_url is logbus._urls.redact_url


def test_lowercase_variables_fill_the_fields_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """Variable names are matched case-insensitively: logbus_prefetch is LOGBUS_PREFETCH."""
    monkeypatch.setenv("logbus_prefetch", "9")
    assert Settings().prefetch == 9


def test_a_variable_that_is_not_a_number_is_one_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """LOGBUS_PREFETCH=lots is refused naming the field and its variable."""
    monkeypatch.setenv("LOGBUS_PREFETCH", "lots")
    with pytest.raises(ConfigError, match=r"setting prefetch = 'lots'.*LOGBUS_PREFETCH"):
        load_settings()


def test_given_names_what_was_set_by_keyword_or_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """given tells a default from a value someone chose (a worker's prefetch reads it)."""
    assert "prefetch" not in Settings().given
    assert "prefetch" in Settings(prefetch=100).given
    monkeypatch.setenv("LOGBUS_PREFETCH", "100")
    assert "prefetch" in Settings().given


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("prefetch", "70000", "less than or equal to 65535"),
        ("prefetch", 2.5, "fraction"),
        ("confirm_timeout", "0", "greater than 0"),
        ("heartbeat", "-1", "greater than or equal to 0"),
        ("url", "", "at least 1 character"),
        ("colour", "red", "unknown setting 'colour'"),
    ],
)
def test_each_bad_value_is_one_config_error(field: str, value: object, said: str) -> None:
    """Every field is checked: one line naming the field and what was wrong."""
    with pytest.raises(ConfigError, match=said) as caught:
        Settings(**{field: value})
    assert "\n" not in str(caught.value)


def test_numbers_are_read_from_text() -> None:
    """Values typed as text (variables, options) are converted: "7" is 7, "2.5" is 2.5."""
    settings = Settings(prefetch="7", confirm_timeout="2.5", heartbeat=0)
    assert (settings.prefetch, settings.confirm_timeout, settings.heartbeat) == (7, 2.5, 0)
    assert settings == Settings(prefetch=7, confirm_timeout=2.5, heartbeat="0")
