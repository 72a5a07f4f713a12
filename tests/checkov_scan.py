"""checkov on template.yaml, offline, in one checkov process per test session (its start-up, about 5 s of CPU,
is most of a scan): the SAM template as written (optional features on), its transform, and the transform resolved
for concrete bucket parameters (RESOLVED_BUCKETS).

The scan runs once per test session (conftest's `checkov_reports`), shared by test_template_security.py
and test_template_alarms.py; each report is the one checkov would give for that file alone.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from template_model import KMS_KEY, ROOT, TEMPLATE_PATH, resolved_resources, transform_template

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

LOG_BUCKET = "central-s3-access-logs-123456789012"
# The snapshot bucket's encryption and access-log checks are skipped in template.yaml because checkov cannot
# evaluate their Fn::If. Resolved for concrete parameters and with those skips removed, the bucket must pass them:
# report name -> (parameter overrides, the checks unskipped).
RESOLVED_BUCKETS = {
    "defaults": ({}, {"CKV_AWS_19"}),
    "kms-and-access-logs": ({"SnapshotBucketKmsKeyArn": KMS_KEY, "AccessLogBucketName": LOG_BUCKET},
                            {"CKV_AWS_19", "CKV_AWS_18"}),
}


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


def run_checkov(files: dict[str, Path], workdir: Path) -> dict[str, dict[str, Any]]:
    """checkov's JSON report of each CloudFormation/SAM file (framework cloudformation, offline), by name:
    one checkov run over all of them, its results split by file."""
    command = [sys.executable, "-c", _CHECKOV_BOOTSTRAP,
               *(argument for path in files.values() for argument in ("--file", str(path))),
               "--framework", "cloudformation", "--output", "json", "--skip-download", "--compact"]
    # cwd: an empty directory, so no stray .checkov.yaml changes the run.
    completed = subprocess.run(command, cwd=workdir, env=_checkov_env(), capture_output=True, text=True,
                               timeout=300, check=False)
    assert "NETWORK ATTEMPT" not in completed.stderr, f"checkov tried to reach the network:\n{completed.stderr}"
    assert completed.returncode in (0, 1), f"checkov crashed ({completed.returncode}):\n{completed.stderr[-4000:]}"
    report = json.loads(completed.stdout)
    assert isinstance(report, dict) and report["check_type"] == "cloudformation", report
    reports = {name: _report_of_one_file(report, path) for name, path in files.items()}
    for count in ("passed", "failed", "skipped", "parsing_errors"):  # no result lost in the split
        assert sum(one["summary"][count] for one in reports.values()) == report["summary"][count], count
    return reports


def _report_of_one_file(report: dict[str, Any], path: Path) -> dict[str, Any]:
    """The part of a several-file report about `path`, with its own summary counts."""
    def of_path(file: str) -> bool:
        return Path(file).resolve() == path.resolve()

    results = {kind: [check for check in report["results"][kind] if of_path(check["file_abs_path"])]
               for kind in ("passed_checks", "failed_checks", "skipped_checks")}
    results["parsing_errors"] = [file for file in report["results"]["parsing_errors"] if of_path(file)]
    summary = {"passed": len(results["passed_checks"]), "failed": len(results["failed_checks"]),
               "skipped": len(results["skipped_checks"]), "parsing_errors": len(results["parsing_errors"]),
               "checkov_version": report["summary"]["checkov_version"]}
    return {"check_type": report["check_type"], "results": results, "summary": summary}


def checkov_reports_of(tmp_root: str) -> dict[str, dict[str, Any]]:
    """checkov on the SAM template, on its transform and on each RESOLVED_BUCKETS variant (conftest's session
    fixture `checkov_reports`)."""
    tmp = Path(tmp_root)
    everything = _with_optional_features_enabled(tmp / "template.yaml")
    files = {"sam": everything, "transformed": tmp / "transformed.json"}
    _write_json(files["transformed"], transform_template(load_template(everything)))
    as_written = transform_template(load_template(TEMPLATE_PATH))
    for name, (overrides, unskipped) in RESOLVED_BUCKETS.items():
        files[name] = tmp / f"resolved-{name}.json"
        _write_json(files[name], {"AWSTemplateFormatVersion": "2010-09-09",
                                  "Resources": _bucket_checks_unskipped(as_written, overrides, unskipped)})
    (tmp / "work").mkdir(exist_ok=True)
    return run_checkov(files, tmp / "work")


def _write_json(path: Path, template: dict[str, Any]) -> None:
    path.write_text(json.dumps(template, indent=1), encoding="utf-8")


def _bucket_checks_unskipped(cfn: dict[str, Any], overrides: dict[str, str], check_ids: set[str]) -> dict[str, Any]:
    """The stack's resources resolved for `overrides`, the snapshot bucket no longer skipping `check_ids`."""
    resources = copy.deepcopy(resolved_resources(cfn, overrides))
    skips = resources["SnapshotBucket"].setdefault("Metadata", {}).setdefault("checkov", {}).setdefault("skip", [])
    skips[:] = [skip for skip in skips if skip["id"] not in check_ids]
    return resources


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
