import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def replace_everywhere(monkeypatch, old, new):
    "Put `new` wherever an advnb module holds `old` (its own module, and every module that imported it)."
    holders = [m for name, m in list(sys.modules.items()) if name.startswith("advnb") and m is not None
               and any(v is old for v in vars(m).values())]
    assert holders
    for m in holders:
        for k, v in list(vars(m).items()):
            if v is old:
                monkeypatch.setattr(m, k, new)


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


@pytest.fixture(scope="session")
def smoke_site(tmp_path_factory):
    """Every notebook in nbs/ rendered at smoke scale through the runner, once per test session, in a temporary cache
    and reports folder: tests/test_notebooks.py checks the run, tests/test_site_browser.py reads the site it wrote.
    Returns `(reports_root, number_failed, log_lines)`."""
    from advnb import core
    from advnb.workflow import runner
    tmp = tmp_path_factory.mktemp("smoke_site")
    logs = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ADVNB_CACHE_DIR", str(tmp / "cache"))
        mp.setenv("ADVNB_REPORTS_DIR", str(tmp / "reports"))
        mp.setenv("ADVNB_DEVICE", "cpu")
        core.get_settings(reload=True)
        try:
            failed = runner.run("smoke", project=ROOT, reports_dir=tmp / "reports", force=True, log=logs.append)
        finally:
            mp.undo()
            core.get_settings(reload=True)
            core._current_run = None
    return tmp / "reports", failed, logs


def pytest_terminal_summary(terminalreporter):
    "Print the fault-injection tally (tests/test_faults.py) when the session injected any faults."
    from fault_tally import TALLY
    if TALLY:
        terminalreporter.write_sep("-", "fault-injection tally")
        terminalreporter.write_line(", ".join(f"{k}: {TALLY[k]}" for k in ("faults injected", "recovered", "clear stop", "failure")))
