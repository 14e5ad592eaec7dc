"""README's library example runs as written on a machine like CI's (FashionMNIST from ../shared/data, no download)."""
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, SHARED_DATA


def test_the_readme_library_example_runs_as_written(tmp_path):
    if not (SHARED_DATA / "FashionMNIST").exists():
        pytest.skip("FashionMNIST is not under ../shared/data")
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) == 1, "README has one library example; this test runs it"
    script = blocks[0] + ("\nout = res.summary()\nassert out['n'] == 128 and 0.5 < out['clean'] <= 1 and out['PGD-20'] <= out['clean']"
                          "\nassert res.worst_case_accuracy() <= min(out['PGD-20'], out['AutoAttack'])\n")
    env = {**os.environ, "ADVNB_CACHE_DIR": str(tmp_path / "cache"), "ADVNB_REPORTS_DIR": str(tmp_path / "reports"),
           "ADVNB_DATA_ROOT": str(SHARED_DATA), "ADVNB_DOWNLOAD": "0", "ADVNB_DEVICE": "cpu"}
    r = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "cache" / "zoo").is_dir() and not r.stderr.count("Traceback")
