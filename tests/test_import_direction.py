"""The direction of imports between the packages (STYLE.md, "In this project"), checked on the source.

`launcher` builds settings and processes and hands them to `proxy`; `proxy` serves with what it is given,
and `deploy` ships the app. Client modules run inside users' mlflow clients (the request-header plugin is
imported by every client process with this package installed), so they reach nothing server-side.
Every import counts: at the top, inside a function, or under `if TYPE_CHECKING`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# (code in this folder, may not import these packages, except these)
RULES = [
    ("proxy", ("launcher", "deploy"), ()),
    ("deploy", ("proxy",), ()),
    ("launcher/client", ("launcher", "proxy"), ("launcher.client",)),
]


def within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == package or module.startswith(package + ".") for package in packages)


def imported_names(root: Path, path: Path) -> list[tuple[int, str]]:
    """(line, dotted name) for each import in the file: `import a.b` gives a.b, `from a import b` gives a.b
    (a module or a name in one), and a relative import is resolved from the file's package."""
    package = path.relative_to(root).parent.parts
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            module = ".".join(part for part in (base, node.module) if part)
            found += [(node.lineno, module if alias.name == "*" else f"{module}.{alias.name}") for alias in node.names]
    return sorted(found)


def violations(root: Path, folder: str, forbidden: tuple[str, ...], allowed: tuple[str, ...]) -> list[str]:
    files = sorted((root / folder).rglob("*.py"))
    assert files, f"{folder}/ holds no Python files: the rule no longer matches the layout"
    return [f"{path.relative_to(root)}:{line}: imports {name}" for path in files for line, name in imported_names(root, path) if within(name, forbidden) and not within(name, allowed)]


@pytest.mark.parametrize(("folder", "forbidden", "allowed"), RULES, ids=[rule[0] for rule in RULES])
def test_imports_go_one_way(folder, forbidden, allowed):
    found = violations(ROOT, folder, forbidden, allowed)
    assert not found, f"{folder}/ may not import {', '.join(forbidden)}" + (f" (outside {', '.join(allowed)})" if allowed else "") + ":\n" + "\n".join(found)


def test_the_check_sees_every_kind_of_import(tmp_path):
    package = tmp_path / "launcher" / "client"
    package.mkdir(parents=True)
    (package / "bad.py").write_text(
        "import proxy.app\n"
        "from launcher import settings, client\n"
        "from .. import server\n"
        "from . import call\n"
        "from .app_token import origin\n"
        "from launcher.client.app_token import origin\n"
        "def later():\n"
        "    from proxy.edge.policy import DEFAULT_ALLOWED_HOSTS\n"
    )
    assert violations(tmp_path, "launcher/client", ("launcher", "proxy"), ("launcher.client",)) == [
        "launcher/client/bad.py:1: imports proxy.app",
        "launcher/client/bad.py:2: imports launcher.settings",
        "launcher/client/bad.py:3: imports launcher.server",
        "launcher/client/bad.py:8: imports proxy.edge.policy.DEFAULT_ALLOWED_HOSTS",
    ]
