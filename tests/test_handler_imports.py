"""Each Lambda's cold start imports only what that function runs: a structural guard on sys.modules.

Every scheduled run of these functions is a cold start, and its import is most of it (bench/cold_start.py
times it; the figures are in docs/performance.md, never asserted here). Each handler is imported in a
fresh interpreter with tracing on as deployed (LAMBDA_TASK_ROOT set: Powertools' Tracer loads the X-Ray
SDK), and what it loaded is compared with what the other functions and the operator's tooling own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The operator's tooling (DuckDB, sqlglot, the CLI) never loads in a Lambda; nor does asyncio, which no
# handler uses and which wrapt 2 imports (layers/common/requirements.txt pins wrapt 1 for that reason).
NOWHERE = ("duckdb", "sqlglot", "kandji_snapshots.cli", "kandji_snapshots.query.local_duckdb",
           "kandji_snapshots.history.local_copy", "asyncio")
NOT_LOADED_BY = {
    "collector": ("kandji_snapshots.diff.differ", "kandji_snapshots.diff.runtime", "kandji_snapshots.diff.digest",
                  "kandji_snapshots.history", "kandji_snapshots.query"),
    "differ": ("kandji_snapshots.collect", "kandji_snapshots.kandji", "requests", "kandji_snapshots.diff.digest",
               "kandji_snapshots.diff.digest_runtime", "kandji_snapshots.history"),
    "digest": ("kandji_snapshots.diff.differ", "kandji_snapshots.diff.runtime", "kandji_snapshots.collect",
               "kandji_snapshots.kandji", "requests", "kandji_snapshots.history", "aws_xray_sdk"),
    "history": ("kandji_snapshots.diff", "kandji_snapshots.collect", "kandji_snapshots.kandji", "requests",
                "kandji_snapshots.query", "aws_xray_sdk"),
}
WIRED_BY = {"collector": "kandji_snapshots.collect.runtime", "differ": "kandji_snapshots.diff.runtime",
            "digest": "kandji_snapshots.diff.digest_runtime", "history": "kandji_snapshots.history.runtime"}
TRACED = {"collector", "differ"}  # template.yaml: Tracing: Active on these two

IMPORT_HANDLER = """
import json, sys
sys.path.insert(0, sys.argv[1])
import app
print(json.dumps(sorted(sys.modules)))
"""


def modules_loaded_by(function: str, tmp_path: Path) -> set[str]:
    folder = ROOT / "functions" / function
    env = {name: value for name, value in os.environ.items() if name in ("PATH", "HOME", "LANG", "TMPDIR")}
    env.update({"LAMBDA_TASK_ROOT": str(folder), "AWS_LAMBDA_FUNCTION_NAME": f"kandji-snapshots-{function}",
                "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
                "POWERTOOLS_SERVICE_NAME": "kandji-snapshots", "PYTHONDONTWRITEBYTECODE": "1"})
    completed = subprocess.run([sys.executable, "-c", IMPORT_HANDLER, str(folder)], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    return set(json.loads(completed.stdout))


def under(modules: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(name for name in modules if any(name == p or name.startswith(f"{p}.") for p in prefixes))


@pytest.mark.parametrize("function", sorted(NOT_LOADED_BY))
def test_a_handler_imports_only_what_its_function_runs(function, tmp_path):
    loaded = modules_loaded_by(function, tmp_path)

    assert WIRED_BY[function] in loaded, "the handler did not import its own wiring: this test imports the wrong thing"
    assert ("aws_xray_sdk.core" in loaded) == (function in TRACED), "not imported with tracing as deployed"
    assert under(loaded, NOWHERE) == [], "loaded at every cold start, used by no Lambda"
    assert under(loaded, NOT_LOADED_BY[function]) == [], f"the {function} Lambda loads another function's code"
