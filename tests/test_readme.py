"""README's library example and its "Analyse your own model" examples run as written on a machine like CI's
(FashionMNIST from ../shared/data, no download), one after the other in one process, as a reader would paste them."""
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, SHARED_DATA

# What each example must give, checked on its variables after all the blocks ran: known answers where there is one.
CHECKS = """
out = res.summary()
assert out['n'] == 128 and 0.5 < out['clean'] <= 1 and out['PGD-20'] <= out['clean']
assert res.worst_case_accuracy() <= min(out['PGD-20'], out['AutoAttack'])
# A: at radius √2 the low-pass filter keeps every frequency, so the accuracy is the clean one
assert abs(low_pass_accuracy[-1] - out['clean']) < 1e-9 and len(low_pass_accuracy) == 8
assert list(responses.columns) == ['conv1', 'conv2', 'fc1'] and (responses.values > 0).all()
# B: the two 5×5 convolutions, rough and with some energy above the cutoff
assert sorted(roughness_r0) == ['conv1', 'conv2'] and all(v > 0 for v in roughness_r0.values())
assert all(0 < v < 1 for v in high_frequency.values())
# C: shares and 1 − cos live in [0, 1] and [0, 2]; a perturbation's energy sits somewhere in the plane
assert switched.shape == (128,) and ((0 <= switched) & (switched <= 1)).all() and switched.max() > 0
assert gradient_roughness.shape == (128,) and ((0 <= gradient_roughness) & (gradient_roughness <= 2)).all()
assert found.any() and float(radius) > 0 and 0 < float(uniformity) <= 1
# D: k = 1 does not shuffle, so it is the clean accuracy
assert sensitivity > 0 and len(shifted_sensitivity) == 4
assert abs(shuffled_accuracy[1] - out['clean']) < 1e-9
# E: every Conv2d and Linear; a margin is positive exactly where the model is right
assert sorted(singular_values) == ['conv1', 'conv2', 'fc1', 'fc2'] and len(layer_stats) == 4
with torch.no_grad():
    assert torch.equal(margin > 0, model(x).argmax(1) == y)
assert variation.shape == (128,) and torch.isfinite(variation).all()
"""


def test_the_readme_examples_run_as_written(tmp_path):
    if not (SHARED_DATA / "FashionMNIST").exists():
        pytest.skip("FashionMNIST is not under ../shared/data")
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    own = re.findall(r"```python\n(# Paper ([A-E]):.*?)```", readme.split("## Analyse your own model", 1)[1], re.S)
    assert [p for _, p in own] == list("ABCDE"), "one 'Analyse your own model' example per paper, in order"
    assert len(blocks) == 6, "README has the library example and the five analysis examples; this test runs them"
    script = "\n".join(blocks) + CHECKS
    env = {**os.environ, "ADVNB_CACHE_DIR": str(tmp_path / "cache"), "ADVNB_REPORTS_DIR": str(tmp_path / "reports"),
           "ADVNB_DATA_ROOT": str(SHARED_DATA), "ADVNB_DOWNLOAD": "0", "ADVNB_DEVICE": "cpu"}
    r = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "cache" / "zoo").is_dir() and not r.stderr.count("Traceback")
