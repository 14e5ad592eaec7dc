import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def isolated_settings(tmp_path, monkeypatch):
    "Point cache and reports at a temporary folder (and forget cached settings), restoring afterwards."
    from advnb import core
    monkeypatch.setenv("ADVNB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("ADVNB_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("ADVNB_DEVICE", "cpu")
    core.get_settings(reload=True)
    core.start_run("tests", scale="smoke", seed=0)
    yield tmp_path
    monkeypatch.undo()
    core.get_settings(reload=True)
    core._current_run = None


def pytest_terminal_summary(terminalreporter):
    "Print the fault-injection tally (tests/test_faults.py) when the session injected any faults."
    from fault_tally import TALLY
    if TALLY:
        terminalreporter.write_sep("-", "fault-injection tally")
        terminalreporter.write_line(", ".join(f"{k}: {TALLY[k]}" for k in ("faults injected", "recovered", "clear stop", "failure")))
