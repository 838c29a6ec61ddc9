"""Durations as operators write them."""

from __future__ import annotations

import pytest

from logbus.durations import format_duration, parse_duration
from logbus.errors import InputError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("2s", 2.0),
        ("1.5s", 1.5),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("3", 3.0),
        (" 10 S ", 10.0),
        (".5s", 0.5),
        (7, 7.0),
        (0.1, 0.1),
    ],
)
def test_parse_duration_reads_numbers_with_and_without_units(text, seconds):
    """Each accepted spelling gives its number of seconds."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "fast", "5 minutes", "-1s", "1w", "inf", True, -3])
def test_parse_duration_refuses_what_is_not_a_duration(bad):
    """Anything else is an InputError that names the thing and the accepted forms."""
    with pytest.raises(InputError, match="retry delay"):
        parse_duration(bad, what="retry delay")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(2.0, "2s"), (120.0, "2m"), (0.25, "250ms"), (7200.0, "2h"), (90.0, "90s")],
)
def test_format_duration_is_the_shortest_exact_spelling(seconds, text):
    """format_duration picks the largest unit that divides the value exactly."""
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)
