"""Cold start: how long each handler module takes to import, in a fresh interpreter.

    python bench/cold_start.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from common import ROOT

PROBE = """
import json, sys, time
sys.path[:0] = [{layer!r}, {function!r}]
started = time.perf_counter()
import app
print(json.dumps(time.perf_counter() - started))
"""


def import_seconds(function: str, runs: int = 5) -> list[float]:
    env = {**os.environ, "POWERTOOLS_TRACE_DISABLED": "1", "AWS_DEFAULT_REGION": "us-east-1",
           "POWERTOOLS_SERVICE_NAME": "kandji-snapshots"}
    code = PROBE.format(layer=str(ROOT / "layers" / "common"), function=str(ROOT / "functions" / function))
    return [json.loads(subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True,
                                      text=True).stdout) for _ in range(runs)]


def main() -> None:
    print("cold start: handler import time in a fresh interpreter (5 runs, target < 500 ms)")
    for function in ("collector", "differ"):
        times = sorted(import_seconds(function))
        print(f"  {function:<10} median {times[len(times) // 2] * 1000:.0f} ms   max {times[-1] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
