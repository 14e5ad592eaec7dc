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
