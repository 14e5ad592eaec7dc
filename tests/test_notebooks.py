"""Every notebook in nbs/ executed at smoke scale through the runner, as `advnb run --scale smoke` does."""
import json
from pathlib import Path

import pytest

from advnb.workflow import runner

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_every_notebook_runs_at_smoke_scale(smoke_site):
    reports, failed, logs = smoke_site  # rendered once per session (conftest.py); the browser test reads the same site
    print("\n".join(logs))
    states = {p.stem: json.loads(p.read_text()) for p in (reports / "smoke" / ".state").glob("*.json")}
    bad = {k: v.get("error") for k, v in states.items() if v["status"] != "ok"}
    assert failed == 0 and not bad, f"notebooks failed at smoke scale: {bad}"
    for nb in runner.list_notebooks(ROOT):
        assert (reports / "smoke" / f"{nb.stem}.html").exists(), nb.stem
    assert (reports / "smoke" / "index.html").exists()


# one notebook per paper at its paper-scale settings, its models a few steps on look-alikes (issue 27); README gives the
# whole dry run's times. Left to the whole dry run (on a GPU, make gpu-check): paper E's WRN-50-2 on Tiny-ImageNet and
# ResNet-110 (e2) and paper D's WRN-34-10 (d2-d4), whose steps at 64x64 and 200 classes, or under NAttack, are each
# minutes of CPU
DRY_RUN_NOTEBOOKS = {
    "a3_local_response": "ResNet-18 at width 64 on CIFAR-10, standard and PGD-10 trained",
    "b1_smooth_kernels": "the B networks on MNIST, FashionMNIST, the four shapes and CIFAR-10; ResNet-50 at 224x224",
    "c4_nonlinear": "VGG-19 and ResNet-18 at width 64, locally connected and fully connected networks on CIFAR-10",
    "d1_rlfat": "RLFAT's block shuffle and objectives at CIFAR-10's shape",
    "e3_margins_singular": "Fixup ResNet-56 on CIFAR-10 and CIFAR-100, the exact singular values of its strided layers",
}


@pytest.mark.slow
def test_paper_scale_dry_run_of_one_notebook_per_paper(tmp_path, monkeypatch):
    from advnb import core
    monkeypatch.setenv("ADVNB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("ADVNB_DEVICE", "cpu")
    core.get_settings(reload=True)
    reports = tmp_path / "reports"
    try:
        rc = runner.main(["run", "--scale", "paper", "--dry-run", *DRY_RUN_NOTEBOOKS, "--reports-dir", str(reports)])
    finally:
        monkeypatch.undo()
        core.get_settings(reload=True)
    states = {p.stem: json.loads(p.read_text()) for p in (reports / "paper-dry" / ".state").glob("*.json")}
    bad = {k: (v.get("failed_cell"), v.get("error")) for k, v in states.items() if v["status"] != "ok"}
    assert rc == 0 and not bad, f"the paper-scale dry run failed: {bad}"
    assert {k.split("@")[0] for k in states} >= set(DRY_RUN_NOTEBOOKS)
    assert not (reports / "paper").exists()
