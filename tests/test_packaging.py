"""The installable CLI: pyproject.toml's console script, packages and pins, and the command's name in hints.

Building a wheel needs setuptools (and, for the one in the test virtualenv, the wheel package) from the
registry: not offline, so `pip install .` is checked by hand (see docs/cli.md) and here its inputs are.
"""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import pytest

import kandji_snapshots
from kandji_snapshots.cli.console import COMMAND, command_name

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PACKAGE_ROOT = ROOT / "layers" / "common"


def pins(path: Path) -> list[str]:
    lines = (line.split("#")[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("-r")]


def test_the_console_script_is_the_cli_main():
    target = PYPROJECT["project"]["scripts"][COMMAND]
    module, _, name = target.partition(":")
    entry = getattr(importlib.import_module(module), name)
    assert callable(entry)
    assert entry(["--help"]) == 0


def test_the_dependencies_are_the_layers_pins():
    assert PYPROJECT["project"]["dependencies"] == pins(PACKAGE_ROOT / "requirements.txt")
    local = [pin for pin in pins(ROOT / "requirements-dev.txt") if pin.startswith(("duckdb==", "sqlglot=="))]
    assert PYPROJECT["project"]["optional-dependencies"]["local"] == local


def test_every_sub_package_is_packaged_and_the_version_comes_from_the_package():
    setuptools = PYPROJECT["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"": "layers/common"}
    assert setuptools["packages"]["find"]["include"] == ["kandji_snapshots", "kandji_snapshots.*"]
    found = {str(init.parent.relative_to(PACKAGE_ROOT)).replace("/", ".")
             for init in (PACKAGE_ROOT / "kandji_snapshots").rglob("__init__.py")}
    assert {"kandji_snapshots.cli", "kandji_snapshots.collect", "kandji_snapshots.diff", "kandji_snapshots.kandji",
            "kandji_snapshots.query", "kandji_snapshots.snapshots"} <= found
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "kandji_snapshots.__version__"}
    assert kandji_snapshots.__version__


@pytest.mark.parametrize("argv0, shown", [
    ("/usr/local/bin/kandji-snapshots", "kandji-snapshots"),  # found on the PATH
    (".venv/bin/kandji-snapshots", ".venv/bin/kandji-snapshots"),  # typed as a path: shown as typed
    ("/work/x/layers/common/kandji_snapshots/__main__.py", "python -m kandji_snapshots"),
])
def test_hints_name_the_command_as_it_was_typed(argv0, shown, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/local/bin:/usr/bin")
    assert command_name(argv0) == shown
