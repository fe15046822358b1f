"""docs/architecture.md's module table names every module of proxy/, launcher/ and deploy/."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_module_has_a_row_in_the_architecture_table():
    table = (ROOT / "docs" / "architecture.md").read_text()
    modules = [path.relative_to(ROOT).as_posix() for package in ("proxy", "launcher", "deploy") for path in (ROOT / package).rglob("*.py") if path.name != "__init__.py"]
    missing = [module for module in modules if f"| `{module}` |" not in table]
    assert not missing, f"add a row to docs/architecture.md's module table for: {missing}"
