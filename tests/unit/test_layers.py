"""The packages import one way, down the layers the README's layout section lists: a module may
import its own layer and those below it, never one above (function-level imports included)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# bottom to top: config/session/tables; features; training; evaluation; batch scoring; job CLIs
LAYERS = ("core", "features", "training", "calibration", "serving", "jobs")


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def upward_imports(root: Path = ROOT) -> list[str]:
    problems = []
    for level, package in enumerate(LAYERS):
        for path in sorted((root / package).rglob("*.py")):
            for module in imports_of(path):
                top = module.split(".")[0]
                if top in LAYERS and LAYERS.index(top) > level:
                    problems.append(f"{path.relative_to(root)} imports {module} ({top} is above {package})")
    return problems


def test_no_module_imports_a_higher_layer():
    assert upward_imports() == []


def test_the_check_sees_an_upward_import(tmp_path):
    fake = tmp_path / "core"
    fake.mkdir()
    (fake / "bad.py").write_text("def f():\n    from training.loop import train_step\n")
    assert upward_imports(tmp_path) == ["core/bad.py imports training.loop (training is above core)"]


# library files the README's layout section names as long, and why; any other stays near 300 lines
LONG_FILES = ("core/tables.py", "core/metrics.py", "calibration/experiments.py")
MAX_LINES = 330


def test_library_files_stay_short_except_the_ones_the_readme_explains():
    readme = (ROOT / "README.md").read_text()
    long = {str(path.relative_to(ROOT)): len(path.read_text().splitlines())
            for package in LAYERS for path in (ROOT / package).rglob("*.py")}
    assert {name: n for name, n in long.items() if n > MAX_LINES and name not in LONG_FILES} == {}
    for name in LONG_FILES:
        assert f"`{name}` ({long[name]}:" in readme, f"README's layout section gives {name}'s length and why"
