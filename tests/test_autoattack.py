"""AutoAttack (`advnb.autoattack`): the exact robust set of a linear model, agreement with torchattacks' own
`AutoAttack`, the invariants every attack keeps, and its place in `Attack`/`evaluate` with the worst case over a set
of attacks and the accuracy-against-ε curve."""
import pytest
import torch
import torchattacks  # installed by `make install`: a missing one fails here, it is not skipped
from torch import nn

from advnb import attacks as A
from advnb.autoattack import AUTOATTACK_STANDARD, autoattack, autoattack_component, linear_robust_set



def linear_case(n=64, eps=0.02):
    "A random linear classifier on 3×8×8 images, one label in five wrong; its exact robust set at `eps`."
    torch.manual_seed(0)
    layer = nn.Linear(3 * 8 * 8, 10)
    model = nn.Sequential(nn.Flatten(), layer)
    x = torch.rand(n, 3, 8, 8)
    with torch.no_grad():
        pred = model(x).argmax(1)
    y = pred.roll(1).where(torch.arange(n) % 5 == 0, pred)
    return model, layer, x, y, eps


def robust_set(model, x, x_adv, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y) & (model(x_adv).argmax(1) == y)


def small_cnn():
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 10))


def test_linear_model_exact_robust_set():
    model, layer, x, y, eps = linear_case()
    exact = linear_robust_set(layer, x, y, eps)
    assert 0 < int(exact.sum()) < int((model(x).argmax(1) == y).sum())  # some correct examples robust, not all
    assert torch.equal(robust_set(model, x, autoattack(model, x, y, eps=eps), y), exact)
    # APGD-CE alone leaves examples a targeted component reaches: the exact set tells the ensemble from one part
    alone = robust_set(model, x, autoattack(model, x, y, eps=eps, components=("apgd-ce",)), y)
    assert int(alone.sum()) > int(exact.sum())


def test_linear_robust_set_against_brute_force():
    "The exact set on a 2-pixel model, by checking every corner of each example's feasible box."
    torch.manual_seed(3)
    layer = nn.Linear(2, 3)
    x, eps = torch.rand(200, 2), 0.1
    y = layer(x).argmax(1)
    lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    corners = torch.stack([torch.stack([a[:, 0], b[:, 1]], 1) for a in (lo, hi) for b in (lo, hi)], 1)
    fooled = (layer(corners).argmax(-1) != y[:, None]).any(1)  # a linear score's minimum sits at a corner
    assert torch.equal(linear_robust_set(layer, x, y, eps), ~fooled)
    assert 0 < int(fooled.sum()) < len(x)


@pytest.mark.parametrize("eps", [0.01, 0.03])
def test_agrees_with_torchattacks_autoattack(eps):
    """Our ensemble at torchattacks' iteration count (10) against `torchattacks.AutoAttack(version='standard')`:
    the same robust set. (Square's schedule differs, `resc_schedule` False here as in the authors' code; it only
    acts on what the first three leave, and here leaves the same set.)"""
    model = small_cnn()
    x = torch.rand(48, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        pred = model(x).argmax(1)
    y = pred.roll(1).where(torch.arange(48) % 6 == 0, pred)
    ours = robust_set(model, x, autoattack(model, x, y, eps=eps, steps=10), y)
    peer = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=0)
    theirs = robust_set(model, x, peer(x, y), y)
    assert torch.equal(ours, theirs)
    assert 0 < int(ours.sum()) < int((pred == y).sum())


def test_components_at_the_authors_settings():
    assert AUTOATTACK_STANDARD == ("apgd-ce", "apgd-t", "fab-t", "square")  # the standard version's order
    model = small_cnn()
    apgd_t = autoattack_component("apgd-t", model, eps=0.03, n_classes=10)
    fab_t = autoattack_component("fab-t", model, eps=0.03, n_classes=10)
    square = autoattack_component("square", model, eps=0.03)
    assert (apgd_t.steps, apgd_t.n_target_classes, apgd_t.n_restarts) == (100, 9, 1)
    assert (fab_t.steps, fab_t.n_target_classes, fab_t.multi_targeted) == (100, 9, True)
    assert (square.n_queries, square.p_init, square.rescale_schedule) == (5000, 0.8, False)
    for name in ("apgd-t", "fab-t"):  # the 9 most likely others whatever the classes, not torchattacks' classes - 1
        assert autoattack_component(name, model, eps=0.03, n_classes=100).n_target_classes == 9
        assert autoattack_component(name, model, eps=0.03, n_classes=4).n_target_classes == 3
    assert autoattack_component("apgd-ce", model, eps=0.03, norm="l2").norm == "L2"
    with pytest.raises(A.AttackInputError, match="no component 'apgd-dlr'"):
        autoattack(model, torch.rand(2, 3, 8, 8), torch.zeros(2, dtype=torch.long), eps=0.1, components=("apgd-dlr",))


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.5)])
def test_invariants(norm, eps):
    "Inside the ε-ball, pixels in [0, 1], reproducible, caller's RNG, mode, requires_grad and .grad untouched."
    model = small_cnn().train()
    model[0].weight.grad = torch.ones_like(model[0].weight)
    model[3].bias.requires_grad_(False)
    x = torch.rand(16, 3, 8, 8)
    with torch.no_grad():
        y = model.eval()(x).argmax(1)  # every example correct, so every component runs
    model.train()
    torch.manual_seed(7)
    state = torch.random.get_rng_state()
    xa = autoattack(model, x, y, eps=eps, norm=norm, steps=5, square_queries=20, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(99)  # another caller state: the same images, since the call seeds its own
    assert torch.equal(xa, autoattack(model, x, y, eps=eps, norm=norm, steps=5, square_queries=20, seed=4))
    assert float(A.perturbation_norm(xa, x, norm).max()) <= eps + 1e-5 and 0 <= float(xa.min()) and float(xa.max()) <= 1
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(model[0].weight.grad, torch.ones_like(model[0].weight)) and model[0].bias.grad is None
    assert model[0].weight.requires_grad and not model[3].bias.requires_grad


def test_the_calls_seed_decides_the_images():
    "Square, the one random search, gives the same images for a seed whatever the caller's random state, others for another."
    model = small_cnn()
    x = torch.rand(32, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        y = model(x).argmax(1)
    runs = []
    for caller_seed in (5, 6):
        torch.manual_seed(caller_seed)
        runs.append(autoattack(model, x, y, eps=0.1, components=("square",), square_queries=30, seed=4))
    assert (runs[0] != x).any() and torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], autoattack(model, x, y, eps=0.1, components=("square",), square_queries=30, seed=3))


def test_through_attack_and_evaluate():
    model, layer, x, y, eps = linear_case()
    attacks = {"PGD": A.Attack("pgd", eps=eps, alpha=eps / 4, steps=10), "AutoAttack": A.Attack("autoattack", eps=eps)}
    ev = A.evaluate(model, x, y, attacks, batch_size=32, warn_at_chance=False)
    exact = linear_robust_set(layer, x, y, eps)
    assert torch.equal(ev.attacks["AutoAttack"].robust_correct, exact)
    assert ev.worst_case_accuracy() == pytest.approx(float(exact.float().mean()))
    assert ev.robustness_overstated("AutoAttack", ["PGD"]) > 0  # PGD on the cross-entropy misses targeted examples
    with pytest.raises(A.AttackInputError, match="give eps"):
        A.Attack("autoattack")


def test_worst_case_is_per_example():
    "Two attacks that each fool half: the worst case fools all, below both robust accuracies."
    def result(robust):
        return A.AttackResult(torch.zeros(4, dtype=torch.bool), torch.tensor(robust), torch.zeros(4), torch.zeros(4))
    ev = A.Evaluation(torch.tensor([True] * 4), torch.zeros(4),
                      {"a": result([True, True, False, False]), "b": result([False, False, True, True])})
    assert (ev.robust_accuracy("a"), ev.robust_accuracy("b"), ev.worst_case_accuracy()) == (0.5, 0.5, 0.0)
    assert ev.worst_case_accuracy(["a"]) == 0.5 and ev.robustness_overstated("b", ["a"]) == 0.0


def test_accuracy_against_eps_is_evaluate_at_each_eps():
    model, layer, x, y, _ = linear_case()
    attack = A.Attack("autoattack", eps=0.02, steps=20, square_queries=50)
    curve = A.accuracy_against_eps(model, x, y, attack, [0.0, 0.01, 0.02, 0.04], batch_size=32, warn_at_chance=False)
    assert list(curve) == [0.0, 0.01, 0.02, 0.04]
    assert curve[0.0] == pytest.approx(A.accuracy(model, x, y))
    for e, acc in curve.items():
        assert acc == pytest.approx(float(linear_robust_set(layer, x, y, e).float().mean())), e


def test_paper_d_autoattack_row():
    "D's AutoAttack columns: on the first `autoattack_n` images, AutoAttack's exact answer beside PGD and CW's worst case."
    from advnb.papers.d_setup import evaluate_autoattack
    model, layer, x, y, eps = linear_case(n=80)
    row = evaluate_autoattack(model, x, y, autoattack_n=60, eps=eps, alpha=eps / 4, steps=5)
    exact = linear_robust_set(layer, x[:60], y[:60], eps)
    assert row["autoattack_n"] == 60 and row["AutoAttack"] == pytest.approx(float(exact.float().mean()))
    assert row["clean (AutoAttack images)"] == pytest.approx(A.accuracy(model, x[:60], y[:60]))
    assert row["overstated by PGD, CW"] == pytest.approx(row["worst of PGD, CW"] - row["AutoAttack"])
    assert row["worst of PGD, CW"] > row["AutoAttack"]  # 5 steps of PGD and CW miss what the targeted components find


def test_the_run_display_is_told_which_component_runs(monkeypatch):
    from advnb import core
    monkeypatch.setenv("ADVNB_PLAIN_PROGRESS", "1")
    seen = []
    monkeypatch.setattr(core, "report_progress", lambda *a, **k: seen.append([b.desc for b in core._reporting_bars]))
    model, _, x, y, eps = linear_case(n=16, eps=0.5)  # large enough that APGD-CE fools every image: the rest never run
    autoattack(model, x, y, eps=eps, steps=5, square_queries=10)
    assert "AutoAttack apgd-ce on 13" in {d for descs in seen for d in descs}
    assert not any("apgd-t" in d for descs in seen for d in descs) and seen[-1] == []  # stopped early, the bar closed
