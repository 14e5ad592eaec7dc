"""A plug-in package of a user's own, found through the `advnb.plugins` entry-point group in a fresh process: its
architecture, data set, attack and objective train and attack like the built-in ones, and no advnb file is edited."""
import json
import os
import subprocess
import sys

import pytest

PLUGIN = '''
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from advnb.attacks import register_attack
from advnb.data import DatasetInfo, register_dataset
from advnb.models import register_architecture
from advnb.train import register_objective


@register_architecture("plugin_mlp")
def plugin_mlp(num_classes=10, in_shape=(1, 4, 4), mean=None, std=None, *, hidden: int = 8):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


BARS = DatasetInfo("plugin-bars", (1, 4, 4), 2, (0.25,), (0.43,), ["horizontal", "vertical"])


@register_dataset(BARS)
def make_bars(name, split, n_per_class=None, seed=0):
    n = 20 if n_per_class is None else n_per_class
    x = torch.zeros(2 * n, 1, 4, 4, dtype=torch.uint8)
    for i in range(n):
        x[2 * i, 0, i % 4, :] = 255  # class 0: a horizontal bar
        x[2 * i + 1, 0, :, i % 4] = 255  # class 1: a vertical bar
    return x, torch.arange(2).repeat(n)


@register_attack("plugin_invert", norm="linf")
def plugin_invert(model, x, y, eps=1.0, seed=0):
    return (1 - x).clamp(x - eps, x + eps)  # within eps of x: a full inversion when eps = 1


@register_objective("plugin_double_ce", passes=1)
def plugin_double_ce(model, x, y):
    logits = model(x)
    return 2 * F.cross_entropy(logits, y), logits
'''

SCRIPT = '''
import json
from advnb import zoo
from advnb.attacks import Attack, evaluate
from advnb.data import load_dataset, take
from advnb.workflow.plan import passes_per_image
from advnb.train import TrainSpec
spec = TrainSpec(arch="plugin_mlp", dataset="plugin-bars", objective="plugin_double_ce", epochs=15, batch_size=8,
                 lr=0.2, milestones=(), weight_decay=0.0, seed=1)
model = zoo.get(spec, show_progress=False)
x, y = take(load_dataset("plugin-bars", "test"), 40)
res = evaluate(model, x, y, {"invert": Attack("plugin_invert", eps=1.0), "weak": Attack("plugin_invert", eps=0.0)})
print(json.dumps({**res.summary(), "passes": passes_per_image("plugin_double_ce", {}), "name": spec.name}))
'''


def test_a_plugin_package_trains_and_attacks_through_its_entry_point(tmp_path):
    site = tmp_path / "site"
    (site / "advnb_testplugin-0.1.dist-info").mkdir(parents=True)
    (site / "advnb_testplugin-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: advnb-testplugin\nVersion: 0.1\n")
    (site / "advnb_testplugin-0.1.dist-info" / "entry_points.txt").write_text("[advnb.plugins]\ntestplugin = advnb_testplugin\n")
    (site / "advnb_testplugin.py").write_text(PLUGIN)
    env = {**os.environ, "PYTHONPATH": str(site), "ADVNB_CACHE_DIR": str(tmp_path / "cache"),
           "ADVNB_REPORTS_DIR": str(tmp_path / "reports"), "ADVNB_DEVICE": "cpu"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["passes"] == 1 and res["name"].startswith("plugin_mlp-plugin-bars-plugin_double_ce-")
    assert res["clean"] == 1.0 and res["weak"] == 1.0  # learnt the bars; eps = 0 changes nothing
    assert res["invert"] < 1.0  # the plug-in attack ran: an inverted bar image is not classified as before
    assert (tmp_path / "cache" / "zoo" / res["name"] / "done.json").exists()


def test_a_renamed_plugin_answers_to_its_former_name_and_keeps_what_it_declared():
    from advnb.registry import Registry, UnknownPluginError
    widgets = Registry("widget", "register_widget")

    @widgets.register("new_name", formerly=("old_name",), passes=3)
    def widget():
        return 1

    assert widgets.lookup("new_name") is widget and widgets.current_name("old_name") == "new_name"
    assert widgets.info("new_name") == {"formerly": ("old_name",), "passes": 3}
    with pytest.raises(UnknownPluginError, match="no widget 'old_name'.*it was renamed to 'new_name'"):
        widgets.lookup("old_name")
