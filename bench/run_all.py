"""Runs every benchmark in turn (`make bench`); each also runs alone, see its docstring."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["cold_start.py", "collector_pace.py", "collector_budget.py", "posture_freshness.py", "differ_stream.py",
              "prism_paging.py", "history_layout.py", "posture_carry.py"]

if __name__ == "__main__":
    for name in BENCHMARKS:
        print(f"\n$ {sys.executable} bench/{name}", flush=True)
        subprocess.run([sys.executable, str(HERE / name)], check=True)
