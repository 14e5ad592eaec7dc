"Unit, known-answer, invariant and error tests for advnb.attacks (fast: synthetic data, tiny models)."
import functools
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advnb.attacks import (ATTACKS, Attack, AttackInputError, adef, attack_batches, attack_success, cw_l2, deepfool,
                           eval_mode, evaluate, fgsm, nattack, perturbation_norm, pgd, pgd_minimal, robust_accuracy_of,
                           salt_and_pepper)
from advnb.core import torch_generator
from attack_fixtures import small_cnn, stripes, train

P = functools.partial


@pytest.fixture(scope="module")
def trained():
    "A small CNN (Normalize + BatchNorm inside) trained for ~1 s; returns (model, x_test, y_test)."
    xtr, ytr = stripes(1200, size=10, noise=0.08, seed=0)
    xte, yte = stripes(64, size=10, noise=0.08, seed=1)
    m = train(small_cnn(widths=(12, 24), batchnorm=True), xtr, ytr)
    with torch.no_grad():
        assert (m(xte).argmax(1) == yte).float().mean() > 0.9
    return m, xte, yte


def affine(d=20, classes=3, seed=0):
    "An affine classifier Z = W x + b on flat inputs, with its W and b."
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(d, classes)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(classes, d, generator=g))
        lin.bias.copy_(torch.randn(classes, generator=g))
    return lin, lin.weight.detach().clone(), lin.bias.detach().clone()


def interior(n=16, d=20, seed=1):
    g = torch.Generator().manual_seed(seed)
    return 0.4 + 0.2 * torch.rand(n, d, generator=g)


# ---------------------------------------------------------------------------------------------- known answers
def test_fgsm_exact_on_affine_multiclass():
    lin, W, b = affine(classes=5)
    x = interior()
    y = torch.arange(16) % 5
    p = torch.softmax(x @ W.T + b, 1)
    grad = (p - F.one_hot(y, 5).float()) @ W  # ∇_x CE for Z = Wx + b
    eps = 0.05
    assert torch.allclose(fgsm(lin, x, y, eps), (x + eps * grad.sign()).clamp(0, 1), atol=1e-6)
    t = (y + 1) % 5
    gt = (p - F.one_hot(t, 5).float()) @ W
    assert torch.allclose(fgsm(lin, x, t, eps, targeted=True), (x - eps * gt.sign()).clamp(0, 1), atol=1e-6)
    # near the box edge the clamp is part of the answer
    x2 = torch.zeros(16, 20)
    assert torch.allclose(fgsm(lin, x2, y, 0.3), (x2 + 0.3 * ((torch.softmax(b.expand(16, 5), 1)
                                                                - F.one_hot(y, 5).float()) @ W).sign()).clamp(0, 1))


@pytest.mark.parametrize("loss", ["ce", "cw"])
def test_pgd_linf_exact_on_affine_binary(loss):
    # two classes: the loss is monotone in the margin (w_y − w_o)·x, so the maximiser over the L∞ ball ∩ box
    # is the corner x − ε sign(w_y − w_o), clamped to [0, 1]; PGD reaches it exactly from any start.
    lin, W, b = affine(classes=2)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(16, 20, generator=g)  # includes coordinates near 0 and 1, so clamping matters
    y = torch.arange(16) % 2
    eps = 0.1
    wd = W[y] - W[1 - y]
    expected = (x - eps * wd.sign()).clamp(0, 1)
    out = pgd(lin, x, y, eps, alpha=eps / 2, steps=6, loss=loss, kappa=1e4)
    assert torch.allclose(out, expected, atol=1e-6)


def test_pgd_l2_exact_on_affine_binary():
    lin, W, b = affine(classes=2)
    x = interior()
    y = torch.arange(16) % 2
    eps = 0.2
    wd = W[y] - W[1 - y]
    expected = x - eps * wd / wd.norm(dim=1, keepdim=True)
    out = pgd(lin, x, y, eps, alpha=eps, steps=3, norm="l2", random_start=False)
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(perturbation_norm(out, x, "l2"), torch.full((16,), eps), atol=1e-5)


def _boundary_case(classes, d=20):
    """A random affine `classes`-way model on `d` features, 16 interior points (coordinates in [0.4, 0.6], far enough
    from 0 and 1 that no attack here needs clamping) and the model's own predictions as their labels."""
    lin, W, b = affine(d, classes)
    x = interior(d=d)
    y = (x @ W.T + b).argmax(1)
    return lin, W, b, x, y


@pytest.mark.parametrize("norm,dual", [("l2", 2), ("linf", 1)])
@pytest.mark.parametrize("classes", [2, 4])
def test_deepfool_exact_distance_on_affine(norm, dual, classes):
    lin, W, b, x, y = _boundary_case(classes)
    z = x @ W.T + b
    f = z - z.gather(1, y[:, None])                        # f_k = Z_k − Z_y  (≤ 0)
    wn = (W[None] - W[y][:, None]).norm(p=dual, dim=2)     # ‖w_k − w_y‖_q
    dist = torch.where(f == 0, torch.full_like(f, float("inf")), f.abs() / wn)
    k = dist.argmin(1)
    expected = 1.02 * (dist.gather(1, k[:, None]).squeeze(1) + 1e-4 / wn.gather(1, k[:, None]).squeeze(1))
    xa = deepfool(lin, x, y, norm=norm, overshoot=0.02, num_classes=classes)
    assert ((xa > 0) & (xa < 1)).all()  # no clamping happened, so the answer is exact
    got = perturbation_norm(xa, x, "l2" if norm == "l2" else "linf")
    assert torch.allclose(got, expected, rtol=1e-4)
    if classes == 2:  # deepfool's own output against the binary textbook form 1.02·(|w·x + b| + 1e-4) / ‖w‖_q
        w = W[1] - W[0]
        assert torch.allclose(got, 1.02 * ((x @ w + b[1] - b[0]).abs() + 1e-4) / w.norm(p=dual), rtol=1e-4)
    assert (lin(xa).argmax(1) != y).all()


def test_cw_l2_close_to_exact_distance_on_affine_binary():
    lin, W, b, x, y = _boundary_case(2)
    w = W[1] - W[0]
    dist = (x @ w + b[1] - b[0]).abs() / w.norm()
    xa = cw_l2(lin, x, y, c=1.0, kappa=0.0, steps=300, lr=0.01, binary_search_steps=6)
    n = perturbation_norm(xa, x)
    ok = lin(xa).argmax(1) != y
    assert ok.all()
    assert (n >= dist - 1e-5).all() and (n <= 1.01 * dist + 1e-3).all()  # measured worst: 1.0032 · dist


def test_cw_l2_success_needs_the_confidence_margin():
    # with κ > 0 an iterate counts (for the result and the search over c) only once Z_other − Z_y ≥ κ, as in
    # Carlini's `compare`; judging by the flipped label alone returns points just across the boundary
    lin, W, b, x, y = _boundary_case(2)
    w = W[1] - W[0]
    kappa = 1.0
    xa = cw_l2(lin, x, y, c=1.0, kappa=kappa, steps=300, lr=0.01, binary_search_steps=6)
    with torch.no_grad():
        z = lin(xa)
    margin = z.gather(1, (1 - y)[:, None]).squeeze(1) - z.gather(1, y[:, None]).squeeze(1)
    assert (margin >= kappa).all()
    dist = ((x @ w + b[1] - b[0]).abs() + kappa) / w.norm()  # the nearest point with margin κ
    n = perturbation_norm(xa, x)
    assert (n >= dist - 1e-5).all() and (n <= 1.01 * dist + 1e-3).all()
    t = 1 - y  # targeted: the same margin towards t
    xt = cw_l2(lin, x, t, c=1.0, kappa=kappa, steps=300, lr=0.01, binary_search_steps=6, targeted=True)
    with torch.no_grad():
        zt = lin(xt)
    assert (zt.gather(1, t[:, None]).squeeze(1) - zt.gather(1, y[:, None]).squeeze(1) >= kappa).all()


# ---------------------------------------------------------------------------------------------- invariants
def _suite():
    return {
        "fgsm": (P(fgsm, eps=0.08), 0.08, "linf"),
        "pgd-linf": (P(pgd, eps=0.08, alpha=0.02, steps=8), 0.08, "linf"),
        "pgd-linf-best": (P(pgd, eps=0.08, alpha=0.02, steps=8, best=True), 0.08, "linf"),
        "pgd-kl": (P(pgd, eps=0.08, alpha=0.02, steps=8, loss="kl"), 0.08, "linf"),
        "pgd-cw": (P(pgd, eps=0.08, alpha=0.02, steps=8, loss="cw", kappa=50.0), 0.08, "linf"),
        "pgd-l2": (P(pgd, eps=1.0, alpha=0.25, steps=8, norm="l2"), 1.0, "l2"),
        "cw_l2": (P(cw_l2, steps=30, lr=0.05, binary_search_steps=3), None, None),
        "deepfool-l2": (P(deepfool, num_classes=4), None, None),
        "deepfool-linf": (P(deepfool, norm="linf", num_classes=4), None, None),
        "adef": (P(adef, steps=10), None, None),
        "salt_and_pepper": (P(salt_and_pepper, steps=50), None, None),
        "nattack": (P(nattack, eps=0.08, samples=30, iters=20, lr=0.05), 0.08, "linf"),
    }


@pytest.mark.parametrize("name", list(_suite()))
def test_invariants(trained, name):
    model, x, y = trained
    atk, eps, norm = _suite()[name]
    model.train()  # the attack must put it in eval mode and give train mode back
    model[2].eval()  # ... submodule by submodule
    bn_stats = model[2].running_mean.clone()
    xa = atk(model, x, y)
    assert model.training and not model[2].training and model[1].training
    assert torch.equal(model[2].running_mean, bn_stats)
    assert all(p.grad is None for p in model.parameters())
    assert not xa.requires_grad and xa.shape == x.shape and xa.dtype == x.dtype
    assert xa.min() >= 0 and xa.max() <= 1
    if eps is not None:
        assert (perturbation_norm(xa, x, norm) <= eps * (1 + 1e-5) + 1e-6).all()
    model.eval()
    with torch.no_grad():
        lc, la = model(x), model(xa)
    success = (lc.argmax(1) == y) & (la.argmax(1) != y)
    assert success.any(), f"{name} fooled nothing on an undefended model"
    ce_c, ce_a = F.cross_entropy(lc, y, reduction="none"), F.cross_entropy(la, y, reduction="none")
    assert (ce_a[success] >= ce_c[success]).all()  # untargeted success never lowers the loss


def test_existing_param_grads_untouched(trained):
    model, x, y = trained
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    pgd(model, x, y, 0.05, 0.01, 3)
    fgsm(model, x, y, 0.05)
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in model.parameters())
    for p in model.parameters():
        p.grad = None


class Ignorant(nn.Module):
    "A model whose output does not depend on its input (but is differentiable in it)."
    def __init__(self, classes=4):
        super().__init__()
        self.z = nn.Parameter(torch.arange(classes, dtype=torch.float32))

    def forward(self, x): return self.z.expand(x.shape[0], -1) + 0 * x.flatten(1).sum(1, keepdim=True)


@pytest.mark.parametrize("name", list(_suite()))
def test_ignorant_model_never_fooled(trained, name):
    _, x, _ = trained
    model = Ignorant()
    y = torch.full((x.shape[0],), 3)  # the constant prediction
    atk, eps, norm = _suite()[name]
    xa = atk(model, x, y)
    assert torch.isfinite(xa).all()
    assert (model(xa).argmax(1) == y).all()
    assert not attack_success(model, x, xa, y).any()


# ---------------------------------------------------------------------------------------------- PGD specifics
def test_pgd_seeded_and_global_rng_untouched(trained):
    model, x, y = trained
    state = torch.get_rng_state()
    a = pgd(model, x, y, 0.05, 0.01, 2, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, pgd(model, x, y, 0.05, 0.01, 2, seed=1))
    assert not torch.equal(a, pgd(model, x, y, 0.05, 0.01, 2, seed=2))
    assert torch.equal(pgd(model, x, y, 0.05, 0.01, 0, random_start=False), x)


def test_pgd_best_has_highest_loss(trained):
    # α = ε makes L∞ PGD jump between corners of the box, so the final iterate is often not the best one:
    # best=True must return, per example, the iterate of highest loss on the path (pgd with t steps and the same
    # seed ends at the path's t-th iterate), and beat the final iterate somewhere
    model, x, y = trained
    eps, steps = 0.1, 6
    fin = pgd(model, x, y, eps, eps, steps, loss="ce")
    best = pgd(model, x, y, eps, eps, steps, loss="ce", best=True)
    iterates = [pgd(model, x, y, eps, eps, t, loss="ce") for t in range(steps + 1)]
    with torch.no_grad():
        ce = lambda z: F.cross_entropy(model(z), y, reduction="none")
        lf, lb = ce(fin), ce(best)
        path = torch.stack([ce(z) for z in iterates])
    assert torch.allclose(lb, path.max(0).values, rtol=1e-5, atol=1e-5)
    assert (lb >= lf - 1e-5).all() and (lb > lf + 1e-3).any()
    assert (perturbation_norm(best, x, "linf") <= eps + 1e-6).all()


def test_pgd_targeted_reaches_target(trained):
    model, x, y = trained
    t = (y + 1) % 4
    xa = pgd(model, x, t, 0.3, 0.05, 20, targeted=True)
    with torch.no_grad():
        assert (model(xa).argmax(1) == t).float().mean() > 0.9
    xa = fgsm(model, x, t, 0.3, targeted=True)
    with torch.no_grad():
        assert F.cross_entropy(model(xa), t) < F.cross_entropy(model(x), t)


def test_pgd_kl_increases_divergence_from_clean(trained):
    model, x, y = trained
    xa = pgd(model, x, y, 0.08, 0.02, 8, loss="kl")
    with torch.no_grad():
        p = torch.softmax(model(x), 1)
        kl = F.kl_div(F.log_softmax(model(xa), 1), p, reduction="none").sum(1)
        kl0 = F.kl_div(F.log_softmax(model(pgd(model, x, y, 0.08, 0.02, 0, loss="kl")), 1), p,
                       reduction="none").sum(1)
    assert kl.mean() > 10 * kl0.mean()


def test_pgd_minimal_and_success_definition(trained):
    model, x, y = trained
    mp = pgd_minimal(model, x, y, 0.1, 0.02, 10, norm="linf", measure="l2")
    final = pgd(model, x, y, 0.1, 0.02, 10, random_start=False)
    ok = attack_success(model, x, final, y)
    assert (mp.success | ~ok).all()  # the final iterate is on the path
    assert (mp.norm[ok] <= perturbation_norm(final, x)[ok] + 1e-6).all()
    assert mp.success.any() and torch.equal(attack_success(model, x, mp.x_adv, y), mp.success)
    assert torch.equal(mp.x_adv[~mp.success], x[~mp.success]) and (mp.step[mp.success] >= 0).all()
    assert torch.allclose(perturbation_norm(mp.x_adv, x)[mp.success], mp.norm[mp.success])
    # C's predicate: the ε test is on the norm of the perturbation
    n = mp.norm[mp.success]
    tight = attack_success(model, x, mp.x_adv, y, eps=float(n.min()) * 0.999)
    assert not tight.any()
    assert attack_success(model, x, mp.x_adv, y, eps=float(n.max())).sum() == mp.success.sum()


def test_nattack_is_query_only(trained):
    model, x, y = trained

    class NoGrad(nn.Module):
        def __init__(self, m):
            super().__init__(); self.m = m

        def forward(self, z):
            assert not torch.is_grad_enabled() and not z.requires_grad
            return self.m(z)

    xa = nattack(NoGrad(model), x[:8], y[:8], eps=0.1, samples=20, iters=5)
    assert (perturbation_norm(xa, x[:8], "linf") <= 0.1 + 1e-6).all()
    for fn in (P(salt_and_pepper, steps=10),):
        fn(NoGrad(model), x[:8], y[:8])


def test_evaluate_bookkeeping(trained):
    model, x, y = trained
    atk = Attack("pgd", norm="linf", eps=0.08, alpha=0.02, steps=5)
    ev = evaluate(model, x, y, {"pgd": atk}, batch_size=40)
    r = ev.attacks["pgd"]
    with torch.no_grad():
        clean = (model(x).argmax(1) == y)
    assert ev.n == 64 and ev.clean_accuracy == pytest.approx(clean.float().mean().item())
    assert torch.equal(ev.clean_correct, clean)
    assert torch.equal(r.success, ev.clean_correct & ~r.robust_correct)
    assert ev.robust_accuracy("pgd") == pytest.approx(r.robust_correct.float().mean().item())
    assert ev.robust_accuracy("pgd") < ev.clean_accuracy
    # paper E's variant: among the clean-correct only (relabel 16 images so that some are wrong when clean)
    y_bad = y.clone(); y_bad[:16] = (y_bad[:16] + 1) % 4
    evb = evaluate(model, x, y_bad, {"pgd": atk}, batch_size=40)
    rc, cc = evb.attacks["pgd"].robust_correct, evb.clean_correct
    assert cc.float().mean() < 0.8 and evb.robust_accuracy("pgd", clean_first=True) == pytest.approx(rc.sum().item() / cc.sum().item())
    assert evb.robust_accuracy("pgd") == pytest.approx(rc.float().mean().item())
    # the per-batch seed: batch i is attacked with seed + i (here seed 5, batch 1)
    ev5 = evaluate(model, x, y, {"pgd": atk}, batch_size=40, seed=5, keep_adversarial=True)
    assert torch.equal(ev5.attacks["pgd"].x_adv[40:], pgd(model, x[40:], y[40:], 0.08, 0.02, 5, seed=6))
    assert torch.equal(ev5.attacks["pgd"].x_adv[:40], pgd(model, x[:40], y[:40], 0.08, 0.02, 5, seed=5))
    # at a budget smaller than every perturbation nothing counts as a success
    ev0 = evaluate(model, x, y, {"deepfool": Attack("deepfool", norm="linf", eps=1e-4, num_classes=4)})
    assert ev0.robust_accuracy("deepfool") == ev0.clean_accuracy and not ev0.attacks["deepfool"].success.any()


def test_every_attack_accepts_a_seed(trained):
    from advnb.registry import load_plugins
    load_plugins()  # paper B registers its Foolbox-style searches as attacks
    model, x, y = trained
    hp = {"fgsm": dict(eps=0.05), "pgd": dict(eps=0.05, alpha=0.02, steps=2), "cw_l2": dict(steps=2, binary_search_steps=1),
          "deepfool": dict(steps=2, num_classes=4), "adef": dict(steps=2), "salt_and_pepper": dict(steps=5),
          "nattack": dict(eps=0.05, samples=4, iters=1), "fgsm_search": dict(n_eps=5), "pgd_search": dict(steps=2),
          "autoattack": dict(eps=0.05, steps=2, square_queries=5)}
    assert set(hp) == set(ATTACKS)
    for name, fn in ATTACKS.items():
        out = fn(model, x[:4], y[:4], seed=3, **hp[name])
        assert out.shape == x[:4].shape, name


def test_attack_values_validate_their_threat_model():
    with pytest.raises(AttackInputError, match="fgsm is an linf attack"):
        Attack("fgsm", norm="l2", eps=0.1)
    with pytest.raises(AttackInputError, match="give eps"):
        Attack("pgd", alpha=0.01, steps=2)
    with pytest.raises(AttackInputError, match="takes no \\['step'\\]"):
        Attack("pgd", eps=0.1, alpha=0.01, step=2)
    with pytest.raises(AttackInputError, match="no attack 'pgd2'"):
        Attack("pgd2")
    a = Attack("deepfool", eps=0.5)
    assert a.norm == "l2" and a.to_dict() == {"name": "deepfool", "norm": "l2", "eps": 0.5}


def test_one_evaluation_whichever_entry_point(trained):
    "evaluate, attack_batches + the success rule, and paper D's evaluate_defense agree exactly."
    from advnb.papers.d_setup import evaluate_defense
    model, x, y = trained
    atk = Attack("pgd", eps=0.05, alpha=0.01, steps=3)
    ev = evaluate(model, x, y, {"PGD": atk}, batch_size=32, seed=4)
    xa = attack_batches(atk, model, x, y, batch_size=32, seed=4)
    with torch.no_grad():
        ok = (model(x).argmax(1) == y) & (model(xa).argmax(1) == y)
    assert ev.robust_accuracy("PGD") == ok.float().mean().item()
    assert robust_accuracy_of(model, x, xa, y, eps=0.05) == ev.robust_accuracy("PGD")
    assert robust_accuracy_of(model, x, xa, y, clean_first=True) == ev.robust_accuracy("PGD", clean_first=True)
    assert robust_accuracy_of(model, x, xa, y, eps=1e-3) == ev.clean_accuracy  # nothing within a tiny budget
    row = evaluate_defense(model, x, y, eps=0.05, alpha=0.01, steps=3, nattack_n=4, nattack_iters=1,
                           nattack_samples=4, batch_size=32, seed=4)
    assert row["PGD"] == ev.robust_accuracy("PGD") and row["clean"] == ev.clean_accuracy


def test_pgd_linf_random_start_is_uniform_in_the_ball():
    "With zero steps PGD returns its random start: inside the open ball almost everywhere, mean |delta| = eps/2."
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    x = torch.full((64, 3, 8, 8), 0.5)  # far from the [0, 1] box, so no clamping
    eps = 0.1
    d = (pgd(model, x, torch.zeros(64, dtype=torch.long), eps=eps, alpha=0.01, steps=0, seed=0) - x).abs()
    assert (d < eps * 0.999).float().mean() > 0.99        # a 2-eps box clamped back would pile up at eps
    assert d.mean().item() == pytest.approx(eps / 2, rel=0.03)


def test_eval_mode_restores_each_submodule():
    m = nn.Sequential(nn.Linear(2, 2), nn.Dropout(), nn.BatchNorm1d(2))
    m.train(); m[1].eval()
    with eval_mode(m):
        assert not any(s.training for s in m.modules())
    assert m.training and not m[1].training and m[2].training
    with pytest.raises(RuntimeError):
        with eval_mode(m):
            raise RuntimeError
    assert m.training and not m[1].training


# ---------------------------------------------------------------------------------------------- errors
ALL = {"fgsm": P(fgsm, eps=0.1), "pgd": P(pgd, eps=0.1, alpha=0.01, steps=2), "cw_l2": P(cw_l2, steps=2),
       "deepfool": P(deepfool, steps=2), "adef": P(adef, steps=2), "salt_and_pepper": P(salt_and_pepper, steps=2),
       "nattack": P(nattack, eps=0.1, samples=4, iters=2)}


@pytest.mark.parametrize("name", list(ALL))
def test_bad_inputs_raise_clear_errors(trained, name):
    model, x, y = trained
    atk = ALL[name]
    with pytest.raises(AttackInputError, match=r"\[0, 1\]"):
        atk(model, x * 2 - 0.5, y)
    with pytest.raises(AttackInputError, match="batch size"):
        atk(model, x, y[:-1])
    with pytest.raises(AttackInputError, match="shape"):
        atk(lambda z: model(z)[:, :, None], x, y)
    with pytest.raises(AttackInputError, match="shape"):
        atk(lambda z: model(z)[:-1], x, y)
    with pytest.raises(AttackInputError, match="labels"):
        atk(model, x, y + 10)


@pytest.mark.parametrize("name", list(ALL))
def test_edge_inputs_named_exactly(trained, name):
    "Just outside [0, 1] is reported unrounded; float64 images on a float32 model are named, not a deep dtype error."
    model, x, y = trained
    x_out = x.clone(); x_out[0, 0, 0, 0] = 1 + 1e-6
    with pytest.raises(AttackInputError, match=r"got values in \[0, 1\.00000095"):
        ALL[name](model, x_out, y)
    with pytest.raises(AttackInputError, match=r"x is torch.float64 but the model's parameters are torch.float32"):
        ALL[name](model, x.double(), y)


@pytest.mark.parametrize("fn,needle", [(P(deepfool, steps=-1), "steps must be an integer >= 1, got -1"),
                                       (P(deepfool, steps=0), "steps must be an integer >= 1, got 0"),
                                       (P(deepfool, num_classes=0), "num_classes must be an integer >= 2, got 0"),
                                       (P(cw_l2, steps=0), "steps must be an integer >= 1, got 0"),
                                       (P(cw_l2, binary_search_steps=0), "binary_search_steps must be an integer >= 1"),
                                       (P(adef, steps=0), "steps must be an integer >= 1"),
                                       (P(adef, num_classes=1), "num_classes must be an integer >= 2"),
                                       (P(salt_and_pepper, steps=0), "steps must be an integer >= 1"),
                                       (P(deepfool, steps=2.5), "steps must be an integer >= 1, got 2.5")])
def test_iteration_counts_that_would_do_nothing_are_rejected(trained, fn, needle):
    model, x, y = trained
    with pytest.raises(AttackInputError, match=needle.replace("[", r"\[")):
        fn(model, x, y)


@pytest.mark.parametrize("fn", [P(fgsm, eps=-0.1), P(pgd, eps=-0.1, alpha=0.01, steps=2),
                                P(pgd, eps=0.1, alpha=-0.01, steps=2), P(nattack, eps=-1.0),
                                P(pgd, eps=float("nan"), alpha=0.01, steps=2)])
def test_negative_or_nan_eps_rejected(trained, fn):
    model, x, y = trained
    with pytest.raises(AttackInputError, match=">= 0"):
        fn(model, x, y)


def test_bad_options_rejected(trained):
    model, x, y = trained
    with pytest.raises(AttackInputError, match="norm"):
        pgd(model, x, y, 0.1, 0.01, 2, norm="l3")
    with pytest.raises(AttackInputError, match="loss"):
        pgd(model, x, y, 0.1, 0.01, 2, loss="mse")
    with pytest.raises(AttackInputError, match="untargeted"):
        pgd(model, x, y, 0.1, 0.01, 2, loss="kl", targeted=True)
    with pytest.raises(AttackInputError, match="floating"):
        pgd(model, (x * 255).to(torch.uint8), y, 0.1, 0.01, 2)


# ---------------------------------------------------------------------------------------------- query-only specifics
def _foolbox_salt_and_pepper(model, x, y, steps, seed=0):
    "Foolbox 3.3.4's SaltAndPepperNoiseAttack.run loop, line for line, drawing its noise from `torch_generator(seed)`."
    gen = torch_generator(seed, x.device)
    n = len(x)
    shape = [n, 1, *x.shape[2:]]
    with torch.no_grad():
        result = x
        best = torch.where(model(x).argmax(1) != y, torch.zeros(n), torch.full((n,), float("inf")))
        min_p, max_p = torch.zeros(n), torch.ones(n)
        stepsizes = max_p / steps
        p = stepsizes
        tried = []
        for step in range(steps):
            u = torch.rand(shape, generator=gen)
            p_ = p.view(-1, 1, 1, 1)
            xn = (x + (u >= 1 - p_ / 2).to(x.dtype) - (u < p_ / 2).to(x.dtype)).clamp(0, 1)
            norms = (xn - x).flatten(1).norm(dim=1)
            is_best_adv = (model(xn).argmax(1) != y) & (norms < best)
            tried.append((p.clone(), is_best_adv))
            result = torch.where(is_best_adv.view(-1, 1, 1, 1), xn, result)
            best = torch.where(is_best_adv, norms, best)
            min_p = torch.where(is_best_adv, 0.5 * p, min_p)
            max_p = torch.where(is_best_adv, torch.minimum(p * 1.2, torch.tensor(1.0)), max_p)
            stepsizes = torch.where(is_best_adv, (max_p - min_p) / (steps - step), stepsizes)
            reset = p == max_p
            p = torch.where(is_best_adv | reset, min_p, p)
            p = torch.minimum(p + stepsizes, max_p)
    return result, tried


def test_salt_and_pepper_follows_foolbox_schedule(trained):
    model, x, y = trained
    steps = 60
    ref, tried = _foolbox_salt_and_pepper(model, x, y, steps)
    # the schedule restarts after a success: the next p tried is p/2 + (1.2p − p/2)/(steps left), below p
    restarted = [(t, i) for t, (p, hit) in enumerate(tried[:-1]) for i in hit.nonzero().flatten().tolist()]
    assert restarted, "no success before the last step: the test would not exercise the restart"
    for t, i in restarted:
        p = tried[t][0][i]
        assert torch.isclose(tried[t + 1][0][i], 0.5 * p + (min(1.2 * p, 1.0) - 0.5 * p) / (steps - t))
        assert tried[t + 1][0][i] < p
    out = salt_and_pepper(model, x, y, steps=steps, seed=0)
    assert torch.equal(out, ref)
    norms = perturbation_norm(out, x)
    assert torch.equal(norms.median(), perturbation_norm(ref, x).median())


def test_nattack_checks_the_last_update_and_needs_sigma(trained):
    model, x, y = trained
    calls = []

    def spy(z):
        calls.append(len(z))
        return model(z)

    samples, n = 20, 8
    nattack(spy, x[:n], y[:n], eps=0.02, samples=samples, iters=2, lr=0.01)
    # queries: clean check (n) and `active`, then per iteration: g(μ) check, then the population; the last one
    # must be the check of g(μ) after the final update of μ, not a population query
    assert calls[-1] <= n and calls[-2] % samples == 0
    with pytest.raises(AttackInputError, match="sigma must be > 0"):
        nattack(model, x, y, eps=0.1, sigma=0.0)


def test_evaluate_rejects_an_attack_that_changes_the_shape(trained):
    model, x, y = trained
    with pytest.raises(AttackInputError, match="returned shape"):
        evaluate(model, x[:8], y[:8], {"bad": lambda m, a, b, seed=0: a[:, :1]})


def test_an_attack_is_checked_when_it_is_built():
    "A missing hyper-parameter is named at once (not a TypeError at the first batch); a 0-255 budget and a softmax warn."
    from advnb.attacks import evaluate
    with pytest.raises(AttackInputError, match=r"pgd needs alpha, steps: e.g. Attack\('pgd', eps=\.\.\., alpha=\.\.\., steps=\.\.\.\)"):
        Attack("pgd", eps=0.1)
    with pytest.warns(UserWarning, match=r"eps=8 for images in \[0, 1\].*8/255 = 0.03137"):
        Attack("pgd", eps=8, alpha=2, steps=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Attack("pgd", norm="l2", eps=1.5, alpha=0.5, steps=1)  # an L2 budget above 1 is ordinary
        Attack("pgd", eps=8 / 255, alpha=2 / 255, steps=1)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    x, y = torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 2, 0])
    with pytest.warns(UserWarning, match="outputs are probabilities"):
        evaluate(nn.Sequential(net, nn.Softmax(1)), x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate(net, x, y, warn_at_chance=False)  # logits: no word of probabilities (this toy is at chance)


def test_looks_like_probabilities_by_hand():
    "Softmax rows are probabilities; one-hot rows (a toy's logits), logits, and rows in [0, 1] that do not sum to 1 are not."
    from advnb.attack_basics import looks_like_probabilities
    assert looks_like_probabilities(torch.tensor([[0.2, 0.8], [0.5, 0.5]]))
    assert not looks_like_probabilities(torch.eye(3))
    assert not looks_like_probabilities(torch.tensor([[2.0, -1.0], [0.3, 0.7]]))
    assert not looks_like_probabilities(torch.tensor([[0.2, 0.3], [0.5, 0.1]]))
    assert not looks_like_probabilities(torch.empty(0, 3))


def test_perturbation_norms_by_hand():
    x = torch.zeros(2, 1, 1, 3)
    xa = torch.tensor([[[[1.0, -2.0, 0.5]]], [[[0.0, 0.0, 0.0]]]])
    expected = {"l1": [3.5, 0.0], "l2": [5.25 ** 0.5, 0.0], "linf": [2.0, 0.0], "l0": [3.0, 0.0]}
    for norm, want in expected.items():
        assert perturbation_norm(xa, x, norm).tolist() == pytest.approx(want), norm


def test_attack_batches_gives_batch_i_the_seed_plus_i():
    seen = []

    def record(model, x, y, seed):
        seen.append((len(x), seed))
        return x + 0.5

    x = torch.rand(5, 1, 4, 4)
    out = attack_batches(record, nn.Flatten(), x, torch.zeros(5, dtype=torch.long), batch_size=2, seed=7)
    assert seen == [(2, 7), (2, 8), (1, 9)] and torch.equal(out, x + 0.5)
