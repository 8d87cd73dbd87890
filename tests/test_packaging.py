"""Every third-party package hfrel's code imports is declared in pyproject.toml (a dependency, or an extra)."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]


def _normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    return {_normalised(re.split(r"[\s<>=!~\[;]", requirement, maxsplit=1)[0]) for requirement in requirements}


def _imported_modules() -> dict[str, str]:
    """Top-level module imported -> the first file of hfrel that imports it."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "hfrel").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def test_every_imported_package_is_declared():
    distributions = packages_distributions()
    declared = _declared()
    missing = []
    for module, where in _imported_modules().items():
        if module == "hfrel" or module in sys.stdlib_module_names or module == "__future__":
            continue
        owners = {_normalised(d) for d in distributions.get(module, [])}
        assert owners, f"{module} (imported by {where}) is not installed, so its distribution is unknown"
        if not owners & declared:
            missing.append(f"{module} ({where}; distribution {', '.join(sorted(owners))})")
    assert not missing, "imported but not declared in pyproject.toml: " + "; ".join(missing)
