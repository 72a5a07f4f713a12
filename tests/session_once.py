"""Expensive session fixtures (the checkov scan, `sam build`) run once per test session, not once per
pytest-xdist worker.

xdist's own grouping (`--dist loadgroup` with `xdist_group` marks) does nothing with pytest 9, whose
nodes no longer take the group suffix xdist 3.8 writes into `item._nodeid`; so the workers share the
result instead: the first to ask produces it in a folder all workers see, holding a lock, and the
others wait for it and read it. Without xdist the folder is the session's own.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable
from pathlib import Path

import pytest

RUNS = "runs"  # one line per time `produce` ran, for the tests that check it ran once


def shared_folder(tmp_path_factory: pytest.TempPathFactory, name: str,
                  produce: Callable[[Path], None]) -> Path:
    """A folder that `produce(folder)` filled exactly once in this session, whichever worker asked first."""
    root = _session_root(tmp_path_factory)
    folder = root / f"shared-{name}"
    done = root / f"shared-{name}.done"
    with open(root / f"shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if produce raises
        if not done.exists():
            folder.mkdir(exist_ok=True)
            produce(folder)
            with open(root / f"shared-{name}.{RUNS}", "a") as runs:
                runs.write("ran\n")
            done.touch()
    return folder


def times_produced(tmp_path_factory: pytest.TempPathFactory, name: str) -> int:
    """How often `shared_folder(..., name, ...)` ran its `produce` in this session, over all workers."""
    runs = _session_root(tmp_path_factory) / f"shared-{name}.{RUNS}"
    return len(runs.read_text().splitlines()) if runs.exists() else 0


def _session_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    basetemp = tmp_path_factory.getbasetemp()
    # Under xdist each worker's basetemp is <session basetemp>/popen-gwN: the parent is the session's.
    return basetemp.parent if basetemp.name.startswith("popen-gw") else basetemp
