"""CI must run exactly what the README tells a new user to run."""

import re

from tests.conftest import REPO


def _commands(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if re.match(r"\s*python3 -m (pip install|pytest)", ln)]


def test_ci_runs_the_readme_install_and_test_commands():
    readme = _commands((REPO / "README.md").read_text())
    ci = _commands((REPO / ".ci" / "run").read_text())
    assert readme, "README lost its install/test commands"
    assert [c for c in readme if "pip install" in c] == [c for c in ci if "pip install" in c]
    assert any("pytest" in c for c in ci) and set(c for c in readme if "pytest" in c) <= set(ci)
