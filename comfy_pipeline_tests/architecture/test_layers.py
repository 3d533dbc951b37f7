"""The three layers stay apart, each checked on its own (read from each module's import statements): the core
imports neither Dagster nor the Dagster layer (defs/, definitions.py) nor the command line (cli/); the Dagster
layer imports nothing from cli/. Importing the whole core leaves Dagster unloaded."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from comfy_pipeline_tests.support.helpers import REPO

PACKAGE = REPO / "comfy_pipeline"
CORE = ("comfyui", "simulator", "media", "workflows", "batch", "data")
CORE_TOP_LEVEL = ("settings.py",)  # core modules at the package's top
DAGSTER_LAYER = ("defs", "components", "definitions.py")
COMMAND_LINE = ("cli",)


def modules(names: tuple[str, ...]) -> list[Path]:
    return sorted(p for name in names for p in ((PACKAGE / name).rglob("*.py") if (PACKAGE / name).is_dir()
                                                 else [PACKAGE / name]))


def core_modules() -> list[Path]:
    return modules(CORE + CORE_TOP_LEVEL)


def imported_modules(path: Path) -> set[str]:
    """Every module an import statement in `path` names, including ones nested in functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module" and node.args:
            if isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                found.add(node.args[0].value)
    return found


def is_dagster(module: str) -> bool:
    top = module.split(".")[0]
    return top == "dagster" or top.startswith("dagster_")


def is_in(module: str, layers: tuple[str, ...]) -> bool:
    """`module` is (in) one of the comfy_pipeline packages or top-level modules named in `layers`."""
    parts = module.split(".")
    return parts[0] == "comfy_pipeline" and len(parts) > 1 and parts[1] in {n.removesuffix(".py") for n in layers}


def is_dagster_side(module: str) -> bool:
    """What the core must not import: Dagster, the Dagster layer or the command line."""
    return is_dagster(module) or is_in(module, DAGSTER_LAYER + COMMAND_LINE)


def test_every_package_of_the_layout_exists():
    for name in (*CORE, *CORE_TOP_LEVEL, *DAGSTER_LAYER, *COMMAND_LINE):
        assert (PACKAGE / name).exists(), name
    top_level = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top_level == ["__init__.py", "definitions.py", "settings.py"], \
        "modules belong in a layer's package, not at the top"


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_core_module_imports_no_dagster(path):
    bad = sorted(m for m in imported_modules(path) if is_dagster_side(m))
    assert not bad, f"{path.relative_to(PACKAGE)} is core and must not import {bad}"


@pytest.mark.parametrize("path", modules(DAGSTER_LAYER), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_dagster_layer_module_imports_nothing_from_the_command_line(path):
    bad = sorted(m for m in imported_modules(path) if is_in(m, COMMAND_LINE))
    assert not bad, f"{path.relative_to(PACKAGE)} is in the Dagster layer and must not import {bad}"


def test_the_import_reader_sees_nested_and_dynamic_imports(tmp_path):
    # The check above is only as good as the reader: it must catch the ways an import can hide.
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os\n"
        "def f():\n    import dagster as dg\n"
        "def g():\n    from comfy_pipeline.defs import resources\n"
        "def h():\n    importlib.import_module('dagster_postgres')\n"
    )
    assert {m for m in imported_modules(sample) if is_dagster_side(m)} == {
        "dagster", "comfy_pipeline.defs", "comfy_pipeline.defs.resources", "dagster_postgres",
    }
    sample.write_text("def f():\n    from comfy_pipeline.cli.check import run\nimport comfy_pipeline.settings\n")
    assert {m for m in imported_modules(sample) if is_in(m, COMMAND_LINE)} == {
        "comfy_pipeline.cli.check", "comfy_pipeline.cli.check.run",
    }


def test_importing_the_whole_core_loads_no_dagster():
    names = [
        ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for p in core_modules() if p.name != "__main__.py"
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m == 'dagster'"
        " or m.startswith(('dagster.', 'dagster_', 'comfy_pipeline.defs', 'comfy_pipeline.cli'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout
