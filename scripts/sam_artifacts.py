"""The deployable artifacts: `sam build` output, and the sys.path Lambda gives a handler built there.

Shared by tests/test_sam_build.py (runs the built handlers) and bench/cold_start.py (times their import).
"""

from __future__ import annotations

import atexit
import functools
import glob
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYER = "CommonLayer"
# What the python3.13 Lambda runtime itself provides next to the standard library (/var/runtime).
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3")


def template_functions(template: Path = ROOT / "template.yaml") -> dict[str, str]:
    """{folder under functions/: logical id} of every function the template deploys."""
    import yaml

    class TemplateLoader(yaml.SafeLoader):
        pass

    TemplateLoader.add_multi_constructor("!", lambda loader, suffix, node: None)  # intrinsics: not needed here
    resources = yaml.load(template.read_text(), Loader=TemplateLoader)["Resources"]
    return {Path(resource["Properties"]["CodeUri"]).name: logical_id for logical_id, resource in resources.items()
            if resource["Type"] == "AWS::Serverless::Function"}


FUNCTIONS = template_functions()


class MissingTool(RuntimeError):
    """A tool the build needs is not installed; the message says which and how to get it."""


def python313() -> str:
    """A working Python 3.13 (Lambda's version): $PYTHON313, python3.13 on PATH, or a pyenv install."""
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = [os.environ.get("PYTHON313"), shutil.which("python3.13"),
                  *sorted(glob.glob(os.path.join(pyenv_root, "versions", "3.13*", "bin", "python3.13")), reverse=True)]
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 13))"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == "True":  # a pyenv shim may exist and fail
            return candidate
    raise MissingTool("Python 3.13 (Lambda's runtime) was not found: install it (e.g. `pyenv install 3.13`), "
                      "put python3.13 on PATH or set PYTHON313=/path/to/python3.13")


def sam_cli() -> str:
    """The pinned SAM CLI that `make test` installs in .venv-sam/, else $SAM_CLI, else sam on PATH."""
    for candidate in (os.environ.get("SAM_CLI"), str(ROOT / ".venv-sam" / "bin" / "sam"), shutil.which("sam")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise MissingTool("the SAM CLI was not found: `make test` installs the pinned one in .venv-sam/ "
                      "(or set SAM_CLI=/path/to/sam)")


@functools.cache
def _sam_config_dir() -> str:
    """A SAM CLI configuration folder whose last version check is now. After each command, sam asks pypi.org
    for a newer version of itself (once a week, 5 s timeout) unless its configuration says it just did: the
    tests and benchmarks must not reach the internet, and the pinned version is the one they run."""
    folder = tempfile.mkdtemp(prefix="kandji-snapshots-sam-config-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    Path(folder, "metadata.json").write_text(json.dumps({"lastVersionCheck": time.time()}))
    return folder


def sam_environment(python: str) -> dict[str, str]:
    """sam (and the layer's Makefile) find this Python 3.13 first on PATH; no telemetry, no version check."""
    return {**os.environ, "PATH": os.path.dirname(python) + os.pathsep + os.environ.get("PATH", ""),
            "PYTHON313": python, "SAM_CLI_TELEMETRY": "0", "__SAM_CLI_APP_DIR": _sam_config_dir()}


def sam_validate(python: str) -> subprocess.CompletedProcess:
    return subprocess.run([sam_cli(), "validate", "--lint", "--template-file", str(ROOT / "template.yaml")],
                          cwd=ROOT, env=sam_environment(python), capture_output=True, text=True)


def sam_build(build_dir: Path, python: str) -> subprocess.CompletedProcess:
    """`sam build` into build_dir: no container, nothing written to the source tree."""
    return subprocess.run([sam_cli(), "build", "--template-file", str(ROOT / "template.yaml"),
                           "--build-dir", str(build_dir), "--cache-dir", str(build_dir.parent / "sam-cache")],
                          cwd=ROOT, env=sam_environment(python), capture_output=True, text=True)


def runtime_packages(target: Path) -> Path:
    """A folder standing in for Lambda's /var/runtime: boto3 and its dependencies only, linked from here."""
    target.mkdir(parents=True, exist_ok=True)
    for name in RUNTIME_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise MissingTool(f"{name} is not installed in {sys.executable}: run `make test` to install it")
        source = Path(spec.origin).parent if spec.submodule_search_locations else Path(spec.origin)
        link = target / source.name
        if not link.exists():
            link.symlink_to(source, target_is_directory=source.is_dir())
    return target


def lambda_sys_path(build_dir: Path, function: str, runtime: Path) -> list[str]:
    """Lambda's order: the function's folder (/var/task), the layer's python/ (/opt/python), the runtime."""
    return [str(build_dir / FUNCTIONS[function]), str(build_dir / LAYER / "python"), str(runtime)]


def lambda_environment(build_dir: Path, function: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """A clean environment as Lambda sets it: no PYTHONPATH, no source tree, read-only code (no .pyc written)."""
    keep = {name: value for name, value in os.environ.items()
            if name in ("PATH", "HOME", "LANG", "TMPDIR", "SYSTEMROOT")}
    return {**keep, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1",
            "LAMBDA_TASK_ROOT": str(build_dir / FUNCTIONS[function]),
            "AWS_LAMBDA_FUNCTION_NAME": f"kandji-snapshots-{function}", "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1", "POWERTOOLS_SERVICE_NAME": "kandji-snapshots",
            "POWERTOOLS_METRICS_NAMESPACE": "KandjiSnapshots", **(extra or {})}
