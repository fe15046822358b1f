"""The settings table is the one place a setting is declared: Settings, the CLI and the README agree with it."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import click

from launcher.cli import serve
from launcher.settings import Settings
from launcher.settings_table import SERVE_SETTINGS, readme_rows

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_configuration_rows() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Configuration") :]
    section = section[: section.index("\n## ", 1)]
    return [line for line in section.splitlines() if line.startswith("| `--")]


def test_the_readme_table_is_the_settings_table():
    # Regenerate with: uv run python -m launcher.settings_table
    assert readme_configuration_rows() == readme_rows()


def test_settings_fields_and_defaults_are_the_tables():
    fields = {field.name: field for field in dataclasses.fields(Settings)}
    assert list(fields)[: len(SERVE_SETTINGS)] == [row.field for row in SERVE_SETTINGS]
    for row in SERVE_SETTINGS:
        assert fields[row.field].default == row.default, row.field
        assert fields[row.field].repr is not row.secret


def test_every_option_of_serve_is_a_row_of_the_table():
    options = [parameter for parameter in serve.params if isinstance(parameter, click.Option)]
    assert [option.name for option in options] == [row.field for row in SERVE_SETTINGS]
    for option, row in zip(options, SERVE_SETTINGS, strict=True):
        assert option.envvar == list(row.env)
        assert "/".join([*option.opts, *option.secondary_opts]) == row.option


def test_help_shows_no_markdown():
    for row in SERVE_SETTINGS:
        option = row.click_option()(lambda **_: None).__click_params__[0]
        assert "`" not in option.help and not re.search(r"\]\(#", option.help), row.option
