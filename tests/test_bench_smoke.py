"""Every benchmark still runs against the code as it is now, on a tiny fleet.

The figures are not checked here (performance is measured by `make bench`, never asserted in tests):
only that each benchmark completes and prints its verdict lines, so a refactor that breaks one is seen
on the next `make test`, not at the next release's measurement.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"

# Each fleet the smallest that still takes the benchmark's every step (collector_budget: a budget short of the
# fleet, so the second run carries devices; differ_stream: 2 devices changed, 4 events).
SMALL_RUNS = [
    (["collector_pace.py", "--devices", "20"], "devices lost         0"),
    (["collector_budget.py", "--devices", "120", "--budget", "90", "--runs", "2"], "never over budget    yes"),
    (["posture_freshness.py", "--devices", "40", "--runs", "2", "--flips", "2"], "never over budget    yes"),
    (["differ_stream.py", "--devices", "50", "--changed-percent", "4"], "found        4 (the same)"),
    (["prism_paging.py", "--devices", "60", "--page-rows", "25"], "\n       25 "),  # the measured row, not the header
    (["history_layout.py", "--devices", "50", "--hours", "2", "--sample", "10"], "every goal met"),
    (["posture_carry.py", "--devices", "40", "--repeat", "1"], "carried: {'application_firewall': "),
]


@pytest.mark.parametrize(("command", "verdict"), SMALL_RUNS, ids=[command[0] for command, _ in SMALL_RUNS])
def test_each_benchmark_runs_on_a_tiny_fleet(command, verdict):
    result = subprocess.run([sys.executable, *command], cwd=BENCH, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    assert verdict in result.stdout, result.stdout[-2000:]


def test_the_differ_benchmark_sizes_its_lambda_as_the_template_does(monkeypatch):
    from tests.cfn_yaml import load_template

    monkeypatch.syspath_prepend(str(BENCH))
    import differ_stream

    differ = load_template(BENCH.parent / "template.yaml")["Resources"]["DifferFunction"]["Properties"]
    assert differ_stream.DIFFER_MEMORY_MB == differ["MemorySize"]
