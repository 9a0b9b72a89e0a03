"""dvc.yaml promises: every stage depends on every library module it imports (directly or not)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "advdenoise"
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())


def _module_file(name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] != "advdenoise":
        return None
    base = PACKAGE.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path, seen: set[Path] | None = None) -> set[Path]:
    """Files of the advdenoise modules that `path` imports, transitively."""
    seen = set() if seen is None else seen
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            found = _module_file(name)
            if found and found not in seen:
                seen.add(found)
                imported_modules(found, seen)
    return seen


def _covered(dep: str) -> set[str]:
    """The library files a dep covers: itself, or every module of a package folder (DVC hashes it all)."""
    path = ROOT / dep
    if path.is_dir():
        return {str(p.relative_to(ROOT)) for p in path.rglob("*.py")}
    return {dep}


@pytest.mark.parametrize("stage", sorted(DVC["stages"]))
def test_stage_deps_cover_its_imports(stage: str) -> None:
    spec = DVC["stages"][stage]
    script = ROOT / "stages" / f"{stage}.py"
    deps = set(spec["deps"])
    assert f"stages/{stage}.py" in deps
    needed = {
        str(p.relative_to(ROOT))
        for p in imported_modules(script)
        if p.name != "__init__.py" or p.parent != PACKAGE
    }
    covered = {f for d in deps for f in _covered(d)}
    missing = sorted(needed - covered)
    assert not missing, f"stage {stage} imports {missing} but does not depend on them"
    unused = sorted(d for d in deps if d.startswith("src/") and not _covered(d) & needed)
    assert not unused, f"stage {stage} depends on {unused} but imports none of them"
