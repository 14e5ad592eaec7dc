"""Paper B's λ and γ chosen on held-out data (issue 25): the validation split never meets the training subset, the
selection rule on hand-made tables, a selection that does not change when the test split is poisoned, and the
penalty-to-data gradient ratio against hand-computed gradients."""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from advnb import data as D
from advnb.data import load_dataset
from advnb.papers import b_smooth_kernels as B
from advnb.train import TrainSpec, build_from_spec, train, train_data


# ---------------------------------------------------------------- the rule on hand-made tables
def test_best_on_validation_takes_the_highest_score_and_the_smaller_key_on_ties():
    assert B.best_on_validation({0.01: 0.2, 1.0: 0.5, 100.0: 0.4}) == 1.0
    assert B.best_on_validation({100.0: 0.5, 0.01: 0.5, 1.0: 0.1}) == 0.01  # a tie goes to the weaker penalty
    assert B.best_on_validation({None: 0.3}) is None  # a loss with no γ


def test_selection_rule_on_a_hand_made_table():
    scores = {
        ("V", None, 0.0): 0.10, ("V", None, 0.01): 0.12, ("V", None, 1.0): 0.30, ("V", None, 100.0): 0.25,
        # T: γ = 10 has the best base model (0.50), so λ is chosen among T's regularised models at γ = 10 only,
        # although the best regularised T of all (0.99) is at γ = 0.1
        ("T", 0.1, 0.0): 0.40, ("T", 1.0, 0.0): 0.45, ("T", 10.0, 0.0): 0.50,
        ("T", 0.1, 0.01): 0.99, ("T", 10.0, 0.01): 0.52, ("T", 10.0, 1.0): 0.52, ("T", 10.0, 100.0): 0.51,
        ("A", None, 0.0): 0.3, ("A", None, 0.01): 0.2, ("A", None, 1.0): 0.1, ("A", None, 100.0): 0.2,
    }
    looked = []
    choice = B.select_hyperparameters(scores, lambda k: looked.append(k) or scores[k])
    # by hand: V's best is λ = 1 (0.30); T: γ = 10 (0.50 > 0.45 > 0.40), then 0.01 and 1 tie at 0.52 -> 0.01;
    # A: 0.01 and 100 tie at 0.2 -> 0.01 (a regularised model is chosen even when the base model scores higher)
    assert choice == {"V": (None, 1.0), "T": (10.0, 0.01), "A": (None, 0.01)}
    assert ("T", 0.1, 0.01) not in looked  # never scored, so never trained


# ---------------------------------------------------------------- the validation split
@pytest.mark.parametrize("name", ["synthetic-fashionmnist", "fourshapes"])
def test_validation_split_is_disjoint_from_the_training_subset(name):
    spec = B.paper_b_specs(name, n_per_class=5)["V"]
    x, y = B.validation_split(spec, 3)
    k = D.dataset_info(name).num_classes
    assert torch.bincount(y, minlength=k).tolist() == [3] * k
    xt = train_data(spec).x.float().div(255)
    assert not (x[:, None] == xt[None]).flatten(2).all(2).any()
    with pytest.raises(ValueError, match="whole training split"):
        B.validation_split(spec.replace(n_per_class=None), 3)


def test_validation_split_of_real_data_is_disjoint_and_balanced():
    try:
        load_dataset("fashionmnist", "test")
    except D.MissingDatasetError as e:
        pytest.skip(f"FashionMNIST is not available here: {e}")
    spec = B.paper_b_specs("fashionmnist", n_per_class=50)["V"]
    x, y = B.validation_split(spec, 20)
    assert torch.bincount(y, minlength=10).tolist() == [20] * 10
    train_keys = {B._image_key(im) for im in train_data(spec).x}
    assert not any(B._image_key(im) in train_keys for im in x.mul(255).round().to(torch.uint8))


# ---------------------------------------------------------------- the selection never reads the test split
TINY = dict(arch_kwargs={"width": 2, "hidden": 8}, n_per_class=4, epochs=1, batch_size=20, steps=1, eps=0.1,
            eval_n_per_class=2)


def _tuned(cache_dir):
    cands = B.paper_b_candidates("synthetic-fashionmnist", lams=(0.01, 100.0), gammas=(0.1, 1.0), **TINY)
    cands = {k: s for k, s in cands.items() if k[0] == "V" or (k[0] == "T" and k[2] in (0.0, 100.0))}  # 6 models
    return B.paper_b_tuned(cands, 5, 0.1, steps=2, cache_dir=cache_dir)


def test_selection_does_not_change_when_the_test_split_is_poisoned(tmp_path, isolated_settings, monkeypatch):
    clean = _tuned(tmp_path / "clean")
    make = D.make_synthetic

    def poisoned(name, split="train", n_per_class=None, seed=0):
        x, y = make(name, split, n_per_class, seed)
        if split == "test":  # every test image inverted and every label moved to the next class
            return 255 - x, (y + 1) % D.dataset_info(name).num_classes
        return x, y

    monkeypatch.setattr(D, "make_synthetic", poisoned)
    poisoned_y = load_dataset("synthetic-fashionmnist", "test").y
    assert not torch.equal(poisoned_y, make("synthetic-fashionmnist", "test", None, 0)[1])  # the poison is in place
    dirty = _tuned(tmp_path / "dirty")  # a fresh cache: every candidate trained and scored again
    assert dirty["choice"] == clean["choice"]
    assert dirty["records"] == clean["records"]  # every validation score, not only the choice
    assert {k for k in clean["records"]} >= {("V", None, 0.0), ("T", 0.1, 0.0), ("T", 1.0, 0.0)}


# ---------------------------------------------------------------- the penalty-to-data gradient ratio
def test_gradient_ratio_of_a_constant_kernel_by_hand():
    "Constant 2×2 kernel c: R = exp(−4c²), ∇R = −2c·exp(−4c²) per entry, so ‖λ∇R‖ = 4|c|λ·exp(−4c²)."
    m = nn.Sequential(nn.Conv2d(1, 1, 2, bias=False))
    c, lam = -0.3, 5.0
    with torch.no_grad():
        m[0].weight.fill_(c)
    ctx = SimpleNamespace(spec=TrainSpec("simple_cnn", "synthetic-mnist", regularizers=(("smooth_kernel", {"lam": lam}),)),
                          model=m, row={})
    cb = B.PenaltyGradientRatio()
    data_grads = [torch.full((1, 1, 2, 2), 1.5), torch.full((1, 1, 2, 2), 0.5)]  # norms 3 and 1: mean 2
    for g in data_grads:
        cb.before_step(ctx)
        m[0].weight.grad = cb._penalty[0] + g
        cb.after_step(ctx)
    cb.after_epoch(ctx)
    pen = 4 * abs(c) * lam * math.exp(-4 * c * c)
    assert ctx.row["penalty_grad_0"] == pytest.approx(pen, rel=1e-6)
    assert ctx.row["data_grad_0"] == pytest.approx(2.0, rel=1e-6)
    assert ctx.row["grad_ratio_0"] == pytest.approx(pen / 2.0, rel=1e-6)
    assert cb._n == 0  # the next epoch starts afresh


def test_gradient_ratio_in_the_history_matches_autograd(tmp_path, isolated_settings):
    "One full-batch step of VR: the history's ratio is ‖λ∇R‖ / ‖∇CE‖ at the initial weights, per layer."
    lam = 3.0
    spec = B.paper_b_specs("synthetic-mnist", n_per_class=3, epochs=1, batch_size=30, lam=lam,
                           arch_kwargs={"width": 2, "hidden": 8}, eval_n_per_class=1)["VR"]
    _, hist = train(spec, tmp_path / "run", show_progress=False)
    model = build_from_spec(spec).train()
    ds = train_data(spec)
    x, y = ds.x.float().div(255), ds.y
    ws = [model.conv1.weight, model.conv2.weight]
    g_ce = torch.autograd.grad(F.cross_entropy(model(x), y), ws)
    g_r = torch.autograd.grad(lam * sum(B.smooth_kernel_penalty(w) for w in ws), ws)
    for name, a, b in zip(("conv1", "conv2"), g_r, g_ce):
        assert hist[0][f"grad_ratio_{name}"] == pytest.approx(float(a.norm() / b.norm()), rel=1e-4)
        assert hist[0][f"data_grad_{name}"] == pytest.approx(float(b.norm()), rel=1e-4)
