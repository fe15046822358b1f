from pathlib import Path

import pytest


@pytest.fixture
def ui_dir(tmp_path: Path) -> Path:
    build = tmp_path / "ui"
    build.mkdir()
    (build / "index.html").write_text("<html></html>")
    return build
