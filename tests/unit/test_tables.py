"""Unit tests for logbus.cli._tables: the rich tables the commands print on a terminal."""

from __future__ import annotations

import pytest

from logbus.cli._tables import add_row, print_table, table


@pytest.fixture(autouse=True)
def narrow(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 40-column screen without colours, whatever the terminal running the tests."""
    monkeypatch.setenv("COLUMNS", "40")
    monkeypatch.setenv("NO_COLOR", "1")


def lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """What was printed, line by line, without trailing blanks."""
    return [line.rstrip() for line in capsys.readouterr().out.splitlines()]


def test_brackets_in_a_cell_are_text_not_markup(capsys):
    """A queue named a[red]b[/red] is shown as it is named."""
    rows = table("queue")
    add_row(rows, "a[red]b[/red]")
    print_table(rows)
    assert lines(capsys) == ["queue", "a[red]b[/red]"]


def test_numbers_are_right_aligned_under_their_header(capsys):
    """A number column ends where its header ends."""
    rows = table("queue", "ready", numbers={"ready"})
    add_row(rows, "q", "7")
    add_row(rows, "q2", "12345")
    print_table(rows)
    header, *body = lines(capsys)
    assert header == "queue  ready"
    assert body == ["q          7", "q2     12345"]


def test_a_name_wider_than_the_screen_folds_and_is_never_cut(capsys):
    """A 70-character name on a 40-column screen is shown whole over several lines."""
    name = "logbus." + "x" * 60 + ".end"
    rows = table("queue", "ready", numbers={"ready"}, header=False)
    add_row(rows, name, "3")
    print_table(rows)
    printed = lines(capsys)
    assert len(printed) > 1
    assert all(len(line) <= 40 for line in printed)
    assert "".join(line.removesuffix("3").strip() for line in printed) == name


def test_an_indented_table_starts_that_many_columns_in(capsys):
    """indent=2 puts every line two spaces in, and no wider than its cells."""
    rows = table("name", "type", header=False)
    add_row(rows, "logbus.topic", "topic")
    print_table(rows, indent=2)
    assert lines(capsys) == ["  logbus.topic  topic"]
