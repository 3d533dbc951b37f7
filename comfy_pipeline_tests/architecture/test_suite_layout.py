"""The test suite keeps its shape: tests live in folders that mirror the packages, share helpers only through
support/, and take fixtures by name from conftest.py (never by import, which would run conftest twice)."""

import ast
from pathlib import Path

import pytest

from comfy_pipeline_tests.support.helpers import TESTS

PY_FILES = sorted(p for p in TESTS.rglob("*.py") if "fixtures" not in p.relative_to(TESTS).parts)


def imported_modules(path: Path) -> set[str]:
    """Every absolute module an import statement in `path` names (nested ones too), and relative ones as `.x`."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def forbidden(module: str) -> bool:
    """conftest or a test module of this suite, named absolutely (comfy_pipeline_tests.x.test_y) or relatively."""
    if not (module.startswith(".") or module.split(".")[0] == "comfy_pipeline_tests"):
        return False
    return any(part == "conftest" or part.startswith("test_") for part in module.split("."))


@pytest.mark.parametrize("path", PY_FILES, ids=lambda p: str(p.relative_to(TESTS)))
def test_no_file_imports_from_conftest_or_a_test_module(path):
    bad = sorted(m for m in imported_modules(path) if forbidden(m))
    assert not bad, (
        f"{path.relative_to(TESTS)} imports {bad}: shared helpers belong in support/helpers.py, "
        "fixtures in conftest.py (pytest passes them by name)"
    )


def test_the_reader_catches_each_way_of_importing_a_test_module(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from comfy_pipeline_tests.conftest import free_port\n"
        "from comfy_pipeline_tests.cli.test_check import check\n"
        "def f():\n    from .test_jobs import execute\n"
        "import comfy_pipeline_tests.defs.test_jobs\n"
        "from comfy_pipeline_tests.support.helpers import wait_until\n"
        "from comfy_pipeline.cli import check\n"
    )
    assert sorted(m for m in imported_modules(sample) if forbidden(m)) == [
        ".test_jobs", ".test_jobs.execute",
        "comfy_pipeline_tests.cli.test_check", "comfy_pipeline_tests.cli.test_check.check",
        "comfy_pipeline_tests.conftest", "comfy_pipeline_tests.conftest.free_port",
        "comfy_pipeline_tests.defs.test_jobs",
    ]


def test_no_test_file_sits_at_the_root_of_the_suite():
    loose = sorted(p.name for p in TESTS.glob("test_*.py"))
    assert not loose, f"{loose}: put each test file in the folder of the package it tests (comfyui/, batch/, ...)"


def test_every_test_folder_is_a_package():
    # Without __init__.py pytest imports test files by their bare names, and two test_files.py would clash.
    folders = {p.parent for p in TESTS.rglob("test_*.py")} | {TESTS}
    missing = sorted(str(f.relative_to(TESTS.parent)) for f in folders if not (f / "__init__.py").is_file())
    assert not missing, f"{missing} need an empty __init__.py"
