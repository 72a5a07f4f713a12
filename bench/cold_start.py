"""Cold start as Lambda has it: importing each handler from the `sam build` output in a fresh Python 3.13.

    .venv/bin/python bench/cold_start.py                        # builds into a temporary folder first
    .venv/bin/python bench/cold_start.py --build-dir .aws-sam/build  # or times an existing `sam build`

Each run is a new interpreter with only what Lambda puts on sys.path (the built function folder, the
built layer's python/ folder, boto3 as the runtime provides it), tracing on as in Lambda (the template
sets Tracing: Active), and no bytecode written (Lambda's code folders are read-only): what the layer
does not ship compiled is compiled again at every cold start. The figure is the median, in ms and as
a ratio to a bare `import boto3` timed in the same interpreter runs. `--without-bytecode` also times a
copy of the build with every .pyc removed, for comparison.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.sam_artifacts import FUNCTIONS, lambda_environment, lambda_sys_path, python313, runtime_packages, sam_build  # noqa: E402

PROBE = """
import json, sys, time
sys.path[0:1] = {paths!r}
started, cpu_started = time.perf_counter(), time.process_time()
import {module}
elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
print(json.dumps({{"seconds": elapsed, "cpu": cpu, "xray": "aws_xray_sdk.core" in sys.modules}}))
"""


def import_seconds(python: str, build_dir: Path, runtime: Path, function: str, module: str) -> dict:
    code = PROBE.format(paths=lambda_sys_path(build_dir, function, runtime), module=module)
    # -S: no site-packages of this Python; -B: write no bytecode, as on Lambda's read-only /opt and /var/task.
    completed = subprocess.run([python, "-S", "-B", "-c", code], env=lambda_environment(build_dir, function),
                               cwd=build_dir, capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"importing {module} for {function} failed:\n{completed.stderr}")
    return json.loads(completed.stdout)


def measure(python: str, build_dir: Path, runtime: Path, runs: int) -> dict[str, list[dict]]:
    """Interleaved, so a busy moment of the machine weighs on every target alike."""
    results: dict[str, list[dict]] = {"import boto3": [], **{name: [] for name in FUNCTIONS}}
    for _ in range(runs):
        results["import boto3"].append(import_seconds(python, build_dir, runtime, "collector", "boto3"))
        for function in FUNCTIONS:
            results[function].append(import_seconds(python, build_dir, runtime, function, "app"))
    return results


def report(title: str, results: dict[str, list[dict]]) -> None:
    def median(runs: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    wall_baseline, cpu_baseline = median(results["import boto3"], "seconds"), median(results["import boto3"], "cpu")
    print(title)
    for name, runs in results.items():
        wall, cpu = median(runs, "seconds"), median(runs, "cpu")
        xray = "  X-Ray SDK loaded" if name != "import boto3" and all(r["xray"] for r in runs) else ""
        print(f"  {name:<13} {wall * 1000:5.0f} ms = {wall / wall_baseline:4.2f} x import boto3   "
              f"(CPU {cpu * 1000:4.0f} ms = {cpu / cpu_baseline:4.2f} x){xray}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build-dir", type=Path, help="an existing `sam build` output (default: build now)")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--without-bytecode", action="store_true", help="also time the build without its .pyc")
    args = parser.parse_args()
    python = python313()
    with tempfile.TemporaryDirectory(prefix="cold-start-") as scratch:
        build_dir = args.build_dir
        if build_dir is None:
            build_dir = Path(scratch) / "build"
            built = sam_build(build_dir, python)
            if built.returncode != 0:
                raise SystemExit(f"sam build failed:\n{built.stdout}\n{built.stderr}")
        build_dir = build_dir.resolve()
        runtime = runtime_packages(Path(scratch) / "runtime")
        version = subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"],
                                 capture_output=True, text=True).stdout.strip()
        report(f"cold start: handler import from the built artifacts, Python {version}, tracing on, "
               f"median of {args.runs} fresh interpreters\n"
               f"(target: each handler <= 1.5 x import boto3 in CPU time, and < 400 ms)\n"
               f"(CPU time is the same import's processor time: it does not grow when the machine is busy)",
               measure(python, build_dir, runtime, args.runs))
        if args.without_bytecode:
            bare = Path(scratch) / "without-bytecode"
            shutil.copytree(build_dir, bare, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            report("same build with no .pyc (compiled at every cold start)", measure(python, bare, runtime, args.runs))


if __name__ == "__main__":
    main()
