"""checkov on template.yaml, offline: the SAM template as written (optional features on) and its transform.

The scan runs once per test session (conftest's `checkov_reports`), shared by test_template_security.py
and test_template_alarms.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from template_model import ROOT, TEMPLATE_PATH, transform_template

from tests.cfn_yaml import load_template

# Runs checkov's own entry point with every socket refusing to connect, and reports any attempt.
_CHECKOV_BOOTSTRAP = textwrap.dedent(
    """
    import runpy, socket, sys

    def _refuse(*args, **kwargs):
        sys.stderr.write(f"NETWORK ATTEMPT {args!r}\\n")
        raise OSError("the checkov test runs without network")

    socket.socket.connect = _refuse
    socket.socket.connect_ex = _refuse
    socket.create_connection = _refuse
    socket.getaddrinfo = _refuse
    sys.argv = ["checkov", *sys.argv[1:]]
    runpy.run_module("checkov.main", run_name="__main__", alter_sys=True)
    """
)


def pinned_checkov_version() -> str:
    text = (ROOT / "requirements-dev.txt").read_text(encoding="utf-8")
    match = re.search(r"^checkov==(\S+)$", text, re.MULTILINE)
    assert match, "requirements-dev.txt must pin checkov==<version>"
    return match.group(1)


def _checkov_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BC_", "PRISMA_", "CKV_", "CHECKOV_")) and k not in ("LOG_LEVEL",)}
    env.update({
        "BC_SKIP_MAPPING": "TRUE",  # no download of the check -> guideline mapping
        "LOG_LEVEL": "WARNING",  # checkov reads LOG_LEVEL for its own logger
        "PYTHONWARNINGS": "ignore",
        "NO_COLOR": "1",
    })
    return env


def run_checkov(template_file: Path, workdir: Path) -> dict[str, Any]:
    """checkov's JSON report of one CloudFormation/SAM file (framework cloudformation, offline)."""
    command = [
        sys.executable, "-c", _CHECKOV_BOOTSTRAP,
        "--file", str(template_file),
        "--framework", "cloudformation",
        "--output", "json",
        "--skip-download",
        "--compact",
    ]
    # cwd: an empty directory, so no stray .checkov.yaml changes the run.
    completed = subprocess.run(command, cwd=workdir, env=_checkov_env(), capture_output=True, text=True,
                               timeout=300, check=False)
    assert "NETWORK ATTEMPT" not in completed.stderr, f"checkov tried to reach the network:\n{completed.stderr}"
    assert completed.returncode in (0, 1), f"checkov crashed ({completed.returncode}):\n{completed.stderr[-4000:]}"
    report = json.loads(completed.stdout)
    assert isinstance(report, dict) and report["check_type"] == "cloudformation", report
    return report


def checkov_reports_of(tmp_root: str) -> dict[str, dict[str, Any]]:
    """checkov on the SAM template and on its transform (conftest's session fixture `checkov_reports`)."""
    tmp = Path(tmp_root)
    everything = _with_optional_features_enabled(tmp / "template.yaml")
    transformed = tmp / "transformed.json"
    transformed.write_text(json.dumps(transform_template(load_template(everything)), indent=1), encoding="utf-8")
    (tmp / "work").mkdir(exist_ok=True)
    return {
        "sam": run_checkov(everything, tmp / "work"),
        "transformed": run_checkov(transformed, tmp / "work"),
    }


# checkov evaluates Conditions with the parameters' defaults: resources that are off by default
# (chat topic, daily digest) are checked in a copy of template.yaml where they are on.
OPTIONAL_FEATURES = ("ChatNotifications", "DailyDigest")


def _with_optional_features_enabled(path: Path) -> Path:
    text = TEMPLATE_PATH.read_text(encoding="utf-8")
    for name in OPTIONAL_FEATURES:
        text, count = re.subn(rf"(\n  {name}:\n    Type: String\n    Default: )Disabled\n", r"\1Enabled\n", text)
        assert count == 1, f"parameter {name} (Default: Disabled) not found in template.yaml"
    path.write_text(text, encoding="utf-8")
    return path
