"""`advnb run --dry-run`: a scale's settings on synthetic look-alikes at the real shapes, every model a few steps, in
folders of its own (issue 27)."""
import json
import math
import warnings

import pytest
import torch
import yaml

from advnb import core, data, zoo
from advnb import train as train_module
from advnb.checkpoints import completed_steps
from advnb.train import TrainSpec, eval_data, train_batch_size, trained_epochs
from advnb.workflow import runner
from notebook_fixtures import make_project


@pytest.fixture
def dry(monkeypatch, tmp_path):
    "This process in a dry run, its cache under tmp_path."
    monkeypatch.setenv("ADVNB_DRY_RUN", "1")
    monkeypatch.setenv("ADVNB_CACHE_DIR", str(tmp_path / "cache"))
    yield core.get_settings(reload=True)
    monkeypatch.undo()
    core.get_settings(reload=True)


@pytest.mark.parametrize("name,shape,classes", [("cifar10", (3, 32, 32), 10), ("cifar100", (3, 32, 32), 100),
                                                ("stl10", (3, 96, 96), 10), ("tinyimagenet", (3, 64, 64), 200),
                                                ("restricted_imagenet", (3, 224, 224), 9), ("mnist", (1, 28, 28), 10)])
def test_every_data_set_is_a_small_look_alike_at_its_real_shape(dry, name, shape, classes):
    ds = data.load_dataset(name, "train")  # none of these is on this machine
    per_class = max(1, math.ceil(dry.dry_run_images / classes))
    assert tuple(ds.x.shape[1:]) == shape and ds.num_classes == classes and ds.info.name == name
    assert ds.class_counts().tolist() == [per_class] * classes
    assert len(data.load_dataset(name, "test", n_per_class=1)) == classes  # never more than the split asks for


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "tinyimagenet"])
def test_an_evaluation_takes_at_most_dry_run_images_whatever_its_split_holds(dry, name):
    "A look-alike split has one image per class (CIFAR-100's 100): Table 1's 10,000 test images must not attack all."
    split = data.load_dataset(name, "test")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no "taking all" warning: a dry run asks for a few by design
        picked, first = data.take(split, 10_000, seed=0), data.take(split, 10_000)
    assert len(picked[0]) == len(first[0]) == dry.dry_run_images <= len(split)


def test_a_larger_subset_holds_images_a_smaller_one_lacks(dry):
    "b3 validates on the rounds beyond its training subset: in a dry run they must exist and differ from it."
    used, more = (data.load_dataset("mnist", "train", n_per_class=n) for n in (5500, 6000))
    assert torch.equal(used.x[:10], more.x[:10])  # round 0: the same images
    assert not any(torch.equal(a, b) for a in more.x[10:] for b in used.x)  # round 3000 is no round of the smaller


def test_a_model_trains_its_first_epochs_a_few_steps_each_in_the_dry_runs_own_cache(dry, tmp_path, monkeypatch):
    spec = TrainSpec(arch="simple_cnn", dataset="cifar10", epochs=5, batch_size=4, lr=0.01, checkpoint_every=1)
    assert trained_epochs(spec) == dry.dry_run_epochs == 2
    bars, progress = [], train_module.progress
    monkeypatch.setattr(train_module, "progress", lambda *a, **kw: bars.append(kw.get("desc")) or progress(*a, **kw))
    model = zoo.get(spec, device="cpu", show_progress=False)
    assert [b for b in bars if b.startswith("epoch")] == ["epoch 1/2", "epoch 2/2"]  # the display counts what runs
    d = zoo.spec_dir(spec)
    assert d.parent.parent == tmp_path / "cache" / "dry-run"  # <cache>/dry-run/zoo/<model>
    assert [r["epoch"] for r in zoo.history(spec)] == [1, 2]
    assert completed_steps(d) == [0, 1, 2]  # 20 images at batch 4 are 5 steps an epoch; the dry run takes 1
    assert not list(d.glob("resume.*"))  # a finished dry-run model keeps no resume state (three times its weights)
    wide = TrainSpec(arch="simple_cnn", dataset="tinyimagenet", batch_size=128, eval_n_per_class=10)
    assert train_batch_size(wide) == len(eval_data(wide)[1]) == dry.dry_run_images  # not 128 steps of 200 classes
    later = zoo.load_epoch(spec, 5, device="cpu")  # the last epoch trained stands for the later ones
    assert all(torch.equal(a, b) for a, b in zip(later.state_dict().values(), model.state_dict().values()))


BODY = """import torch
from advnb import zoo
from advnb.core import start_run
from advnb.data import load_dataset, take
from advnb.train import TrainSpec
start_run("net", scale=scale)
spec = TrainSpec(arch=arch, dataset=dataset, arch_kwargs=arch_kwargs, epochs=epochs, batch_size=8)
zoo.get(spec, device="cpu", show_progress=False)
print("trained", spec.name)
x, _ = take(load_dataset(dataset, "test"), 4)
print("low-pass energy", (x * torch.ones(32, 32)).square().sum().item())  # written for 32x32 images"""


@pytest.mark.parametrize("paper,needle", [({"arch_kwargs": {"widht": 64}}, "widht"),  # a wrong key
                                          ({"dataset": "stl10"}, "must match the size")])  # a shape mismatch
def test_a_spec_that_cannot_work_at_paper_scale_fails_the_dry_run_by_notebook_and_cell(tmp_path, monkeypatch, paper, needle):
    project = make_project(tmp_path / "p", {"net": ('scale = "smoke"\narch = "simple_cnn"\ndataset = "synthetic-cifar10"\n'
                                                    'arch_kwargs = {}\nepochs = 1', BODY)})
    (project / "params" / "paper.yaml").write_text(yaml.safe_dump({"net": {"epochs": 100, **paper}}))
    monkeypatch.setenv("ADVNB_CACHE_DIR", str(tmp_path / "cache"))
    reports = project / "reports"
    rc = runner.main(["run", "--scale", "paper", "--dry-run", "--project", str(project), "--reports-dir", str(reports)])
    assert not core.get_settings().dry_run  # main() leaves the process as it found it
    assert rc == 1
    state = json.loads((reports / "paper-dry" / ".state" / "net.json").read_text())
    assert state["status"] == "failed" and state["failed_cell"] and needle in state["error"], state
    assert "DRY RUN" in (reports / "paper-dry" / "net.html").read_text()
    assert not (reports / "paper").exists() and sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["dry-run"]


def test_the_same_notebook_runs_through_with_settings_that_work(tmp_path, monkeypatch):
    project = make_project(tmp_path / "p", {"net": ('scale = "smoke"\narch = "simple_cnn"\ndataset = "synthetic-cifar10"\n'
                                                    'arch_kwargs = {}\nepochs = 1', BODY)})
    (project / "params" / "paper.yaml").write_text(yaml.safe_dump({"net": {"epochs": 100, "dataset": "cifar10"}}))
    monkeypatch.setenv("ADVNB_CACHE_DIR", str(tmp_path / "cache"))
    reports = project / "reports"
    args = ["run", "--scale", "paper", "--project", str(project), "--reports-dir", str(reports), "--check-plan"]
    assert runner.main(args) == 2  # --check-plan measures what a dry run trained
    rc = runner.main([*args, "--dry-run"])
    assert not core.get_settings().dry_run  # main() leaves the process as it found it
    assert rc == 0
    page = (reports / "paper-dry" / "net.html").read_text()
    assert "trained simple_cnn-cifar10" in page and "low-pass energy" in page
    index = (reports / "paper-dry" / "index.html").read_text()
    assert "DRY RUN" in index and "paper dry run" in index
    check = (reports / "paper-dry" / "plan-check.md").read_text().splitlines()
    row = next(line for line in check if "simple_cnn-cifar10" in line).strip("|").split("|")
    assert len(row) == 7 and 0.8 <= float(row[-1]) <= 1.33, check  # the estimate within 25% of the measured peak


class CountingLinear(torch.nn.Module):
    """A linear classifier of 3×4×4 images that counts its forward passes; no image in [0, 1] moves it off class 0, so
    no attack ends early."""
    def __init__(self):
        super().__init__()
        self.fc, self.calls = torch.nn.Linear(48, 10), 0
        torch.nn.init.normal_(self.fc.weight, std=1e-3, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            self.fc.bias.copy_(torch.arange(10, 0, -1.0))

    def forward(self, x):
        self.calls += 1
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("name,hp", [("pgd", dict(eps=0.03, alpha=0.01, steps=200)), ("cw_l2", dict(steps=200)),
                                     ("deepfool", dict(steps=200)), ("salt_and_pepper", dict(steps=200)),
                                     ("nattack", dict(eps=0.03, iters=200, samples=4))])
def test_an_attack_runs_at_most_dry_run_attack_steps_iterations_in_a_dry_run(monkeypatch, name, hp):
    from advnb.attacks import Attack
    x, y = torch.rand(4, 3, 4, 4), torch.zeros(4, dtype=torch.long)
    calls = {}
    for dry_run in ("0", "1"):
        monkeypatch.setenv("ADVNB_DRY_RUN", dry_run)
        core.get_settings(reload=True)
        model = CountingLinear()
        Attack(name, **hp)(model, x, y)
        calls[dry_run] = model.calls
    monkeypatch.undo()
    core.get_settings(reload=True)
    assert calls["1"] <= 3 * 3 + 3 < calls["0"], calls  # a few passes per iteration, at most 3 iterations


def test_nattack_queries_at_most_dry_run_attack_steps_samples_an_iteration_in_a_dry_run(dry):
    from advnb.attacks import nattack
    model, x, y = CountingLinear(), torch.rand(4, 3, 4, 4), torch.zeros(4, dtype=torch.long)
    queried = []
    model.register_forward_hook(lambda m, inp, out: queried.append(len(inp[0])))
    nattack(model, x, y, eps=0.03, samples=300, iters=200)
    assert max(queried) <= 4 * 3  # 4 images × 3 samples, where the settings ask for 300 each


def test_a_search_grid_trains_its_two_ends_in_a_dry_run_and_all_of_it_otherwise(dry):
    assert core.search_grid([0.01, 0.1, 1.0, 10.0, 100.0]) == (0.01, 100.0)  # the weakest and the strongest penalty
    assert core.search_grid((1.0,)) == (1.0,)
    with core.dry_run_setting(False):
        assert core.search_grid([0.01, 0.1, 1.0]) == (0.01, 0.1, 1.0)
