"""Paper B (smooth kernels): the roughness R0 and the regulariser R, the KL logit-pairing loss, the generated four
shapes, the Foolbox-default searches, the perturbation-size bookkeeping and activation maximisation."""
import itertools
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from advnb.papers import b_smooth_kernels as B
from advnb.data import load_dataset
from advnb.train import get_regularizer, training_loss


# ---------------------------------------------------------------- R0 and R
def roughness_brute_force(w: torch.Tensor, neighbourhood: int) -> float:
    "Double loop over every entry and every neighbour of every 2-D slice; each unordered pair counted once."
    offsets = [(0, 1), (1, 0)] + ([(1, 1), (1, -1)] if neighbourhood == 8 else [])
    total = 0.0
    kh, kw = w.shape[-2:]
    for s in w.reshape(-1, kh, kw):
        for i, j in itertools.product(range(kh), range(kw)):
            for di, dj in offsets:
                h, k = i + di, j + dj
                if 0 <= h < kh and 0 <= k < kw:
                    total += float((s[i, j] - s[h, k]) ** 2)
    return total


@pytest.mark.parametrize("neighbourhood", [4, 8])
@pytest.mark.parametrize("shape", [(3, 2, 5, 5), (2, 1, 3, 4), (1, 1, 2, 7)])
def test_kernel_roughness_matches_a_double_loop(neighbourhood, shape):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert B.kernel_roughness(w, neighbourhood).item() == pytest.approx(roughness_brute_force(w, neighbourhood), rel=1e-12)
    per = B.kernel_roughness(w, neighbourhood, per_kernel=True)
    assert per.shape == shape[:2] and per.sum().item() == pytest.approx(roughness_brute_force(w, neighbourhood), rel=1e-12)


def test_kernel_roughness_is_zero_on_constants_and_scales_as_c_squared():
    assert B.kernel_roughness(torch.full((4, 3, 5, 5), 0.7)).item() == 0.0
    w = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    for c in (0.5, 3.0, -2.0):
        assert B.kernel_roughness(c * w).item() == pytest.approx(c * c * B.kernel_roughness(w).item(), rel=1e-12)
    with pytest.raises(ValueError, match="neighbourhood"):
        B.kernel_roughness(w, 6)


def test_penalty_is_exp_of_roughness_minus_scale_per_2d_kernel():
    w = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    expected = sum(math.exp(roughness_brute_force(s, 4) - float(s.pow(2).sum())) for s in w.reshape(-1, 3, 3))
    assert B.smooth_kernel_penalty(w).item() == pytest.approx(expected, rel=1e-12)


def test_a_gradient_step_on_lambda_R_makes_a_random_kernel_smoother_relative_to_its_norm():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 5)
    model = nn.Sequential(conv, nn.Flatten())
    ratio = lambda: float(B.kernel_roughness(conv.weight) / conv.weight.pow(2).sum())
    before = ratio()
    reg = get_regularizer("smooth_kernel")
    loss = 100.0 * reg(model)
    loss.backward()
    with torch.no_grad():
        conv.weight -= 1e-4 * conv.weight.grad
    assert ratio() < before


def test_one_by_one_kernels_are_not_regularised_and_the_spec_adds_lambda_R():
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.Conv2d(2, 2, 3))
    assert [tuple(w.shape) for w in B.conv_kernels(model)] == [(2, 2, 3, 3)]
    spec = B.paper_b_specs("synthetic-mnist", arch_kwargs={"width": 2, "hidden": 8})["VR"]
    from advnb.train import build_from_spec
    m = build_from_spec(spec)
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    total, loss, _, terms = training_loss(spec, m, x, y)
    r = B.smooth_kernel_regularizer(m)
    assert float(terms["smooth_kernel"]) == pytest.approx(r.item(), rel=1e-6)
    assert total.item() == pytest.approx(loss.item() + 100.0 * r.item(), rel=1e-5)
    h = B.paper_b_specs("synthetic-mnist")["AH"]
    assert h.regularizers == (("smooth_kernel", {"lam": -100.0}),) and h.objective == "pgd_at"


# ---------------------------------------------------------------- the L loss
def test_kl_logit_pairing_loss_by_hand():
    za, zc, y, gamma = torch.tensor([[1.0, -0.5, 0.25]]), torch.tensor([[0.2, 0.4, -1.0]]), torch.tensor([2]), 3.0
    pa = [math.exp(v) for v in za[0].tolist()]; pa = [v / sum(pa) for v in pa]
    pc = [math.exp(v) for v in zc[0].tolist()]; pc = [v / sum(pc) for v in pc]
    ce = -math.log(pa[2])
    kl = sum(a * math.log(a / c) for a, c in zip(pa, pc))  # KL(P(x') || P(x))
    assert B.kl_logit_pairing_loss(za, zc, y, gamma).item() == pytest.approx(ce + gamma * kl, rel=1e-6)
    # the other direction, KL(P(x) || P(x')), differs here: the test tells the two apart
    kl_rev = sum(c * math.log(c / a) for a, c in zip(pa, pc))
    assert abs(kl - kl_rev) > 1e-3


def test_kl_logit_pairing_objective_trains_on_pgd_examples():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.rand(5, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1])
    loss, logits = B.kl_logit_pairing_objective(model, x, y, eps=0.1, alpha=0.05, steps=3, gamma=0.0, seed=1)
    from advnb.attacks import pgd
    x_adv = pgd(model, x, y, eps=0.1, alpha=0.05, steps=3, random_start=True, seed=1)
    assert torch.allclose(logits, model(x_adv)) and loss.item() == pytest.approx(F.cross_entropy(model(x_adv), y).item())


# ---------------------------------------------------------------- four shapes
def test_four_shapes_are_balanced_seeded_and_served_by_load_dataset():
    x, y = B.make_four_shapes(split="train", n_per_class=6, seed=3)
    assert x.shape == (24, 1, 32, 32) and x.dtype == torch.uint8
    assert torch.bincount(y).tolist() == [6, 6, 6, 6]
    x2, _ = B.make_four_shapes(split="train", n_per_class=6, seed=3)
    x3, _ = B.make_four_shapes(split="train", n_per_class=6, seed=4)
    xt, _ = B.make_four_shapes(split="test", n_per_class=6, seed=3)
    assert torch.equal(x, x2) and not torch.equal(x, x3) and not torch.equal(x, xt)
    # a black shape on a white background: mostly white, with black ink somewhere
    assert (x.float().mean((1, 2, 3)) > 128).all() and (x.amin((1, 2, 3)) < 30).all()
    ds = load_dataset("fourshapes", "test", n_per_class=5)
    assert len(ds) == 20 and ds.info.classes == list(B.FOUR_SHAPES) and ds.x.dtype == torch.uint8


def test_four_shapes_areas_tell_the_classes_apart():
    u = torch.tensor([0.5, 0.5, 0.5, 0.0])
    ink = {k: float((1 - B.render_shape(c, u)).sum()) for c, k in enumerate(B.FOUR_SHAPES)}
    r = (0.20 + 0.15 * 0.5) * 32
    assert ink["circle"] == pytest.approx(math.pi * r * r, rel=0.02)
    assert ink["square"] == pytest.approx(2 * r * r, rel=0.03)
    assert ink["triangle"] == pytest.approx(3 * math.sqrt(3) / 4 * r * r, rel=0.03)
    star = 5 * r * 0.4 * r * math.sin(math.pi / 5)  # ten triangles between the centre, an outer and an inner vertex
    assert ink["star"] == pytest.approx(star, rel=0.05)


# ---------------------------------------------------------------- attacks
class Linear2(nn.Module):
    "logits = W x + b on flattened inputs."
    def __init__(self, w, b):
        super().__init__()
        self.w, self.b = nn.Parameter(w), nn.Parameter(b)

    def forward(self, x):
        return x.flatten(1) @ self.w.T + self.b


def test_fgsm_search_finds_the_exact_flip_of_a_linear_model_on_its_grid():
    g = torch.Generator().manual_seed(0)
    w = 0.05 * torch.randn(2, 16, generator=g, dtype=torch.float64)
    model = Linear2(w, torch.tensor([0.3, 0.0], dtype=torch.float64))
    x, y = torch.full((1, 1, 4, 4), 0.5, dtype=torch.float64), torch.tensor([0])
    margin = float(model(x)[0, 0] - model(x)[0, 1])
    eps_star = margin / float((w[0] - w[1]).abs().sum())  # the sign step lowers the margin by eps·‖w_y − w_o‖1
    assert 0 < eps_star < 0.5
    x_adv = B.fgsm_search(model, x, y, n_eps=1000)
    found = float((x_adv - x).abs().max())
    assert found == pytest.approx(math.ceil(eps_star * 1000) / 1000, abs=1e-9)  # the first grid point past the flip
    assert model(x_adv).argmax(1).item() == 1


def test_pgd_search_returns_the_input_when_nothing_fools_and_stays_in_the_box():
    const = Linear2(torch.zeros(2, 16, dtype=torch.float64), torch.tensor([1.0, 0.0], dtype=torch.float64))
    x, y = torch.rand(3, 1, 4, 4, dtype=torch.float64), torch.tensor([0, 0, 0])
    assert torch.equal(B.pgd_search(const, x, y, steps=5), x)
    g = torch.Generator().manual_seed(1)
    model = Linear2(torch.randn(2, 16, generator=g, dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    xa = B.pgd_search(model, x, model(x).argmax(1), steps=10)
    assert xa.min() >= 0 and xa.max() <= 1 and (model(xa).argmax(1) != model(x).argmax(1)).all()


def test_perturbation_sizes_and_accuracy_at_bounds():
    x = torch.zeros(2, 3, 2, 2)
    xa = x.clone(); xa[0, :, 0, 0] = 0.5; xa[0, 1, 1, 1] = -0.25
    s = B.perturbation_sizes(xa, x)
    assert s["l0"].tolist() == [2.0, 0.0]  # pixels, not channel entries
    assert s["l2"][0].item() == pytest.approx(math.sqrt(3 * 0.25 + 0.0625)) and s["linf"].tolist() == [0.5, 0.0]
    rec = {"correct": [True, True, False, True], "fooled": [True, False, False, True], "l2": [1.0, 0.0, 0.0, 3.0]}
    assert [B.accuracy_at(rec, b, "l2") for b in (math.inf, 2.0, 0.5)] == [0.25, 0.5, 0.75]
    assert B.accuracy_at(rec, 3.0, "l2") == 0.25  # an attack exactly at the bound is inside it


def test_most_deceptive_averages_the_most_confident_mistakes_per_class():
    model = nn.Sequential(nn.Flatten(), nn.Identity())  # logits = the 2 pixels
    x_adv = torch.tensor([[[[0.0, 5.0]]], [[[0.0, 1.0]]], [[[2.0, 0.0]]], [[[0.0, 3.0]]]])
    y = torch.tensor([0, 0, 0, 1])
    out = B.most_deceptive(model, x_adv, y, num_classes=2, k=1)
    assert torch.equal(out[0], x_adv[0])  # class 0's most confident mistake
    assert torch.isnan(out[1]).all()  # class 1 is never mistaken
    out2 = B.most_deceptive(model, x_adv, y, num_classes=2, k=2)
    assert torch.allclose(out2[0], (x_adv[0] + x_adv[1]) / 2)


# ---------------------------------------------------------------- frequency and activation maximisation
def test_high_frequency_fraction_of_known_arrays():
    assert B.high_frequency_fraction(torch.ones(8, 8)).item() == pytest.approx(0.0, abs=1e-12)
    checker = (-1.0) ** (torch.arange(8)[:, None] + torch.arange(8))
    assert B.high_frequency_fraction(checker).item() == pytest.approx(1.0)
    stripes = torch.cos(2 * math.pi * 0.125 * torch.arange(8, dtype=torch.float64))[None].expand(8, 8)
    assert B.high_frequency_fraction(stripes, cutoff_cycles_per_pixel=0.1).item() == pytest.approx(1.0)
    assert B.high_frequency_fraction(stripes, cutoff_cycles_per_pixel=0.2).item() == pytest.approx(0.0, abs=1e-12)


def test_activation_maximisation_raises_its_logit_and_stays_in_the_box():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    x0 = B.activation_maximisation(model, [0, 2], (1, 4, 4), steps=0, seed=5)
    x1 = B.activation_maximisation(model, [0, 2], (1, 4, 4), steps=50, lr=0.01, seed=5)
    with torch.no_grad():
        z0, z1 = model(x0), model(x1)
    assert z1[0, 0] > z0[0, 0] and z1[1, 2] > z0[1, 2]
    assert x1.min() >= 0 and x1.max() <= 1


def test_image_correlation_and_class_means():
    a = torch.rand(3, 1, 4, 4)
    assert torch.allclose(B.image_correlation(a, 2 * a + 1), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(B.image_correlation(a, -a), -torch.ones(3, dtype=torch.float64))
    m = B.class_means(torch.tensor([[1.0], [3.0], [10.0]]), torch.tensor([0, 0, 1]), 2)
    assert m.squeeze(1).tolist() == [2.0, 10.0]


def test_paper_b_plan_gives_each_known_data_set_its_eps_and_overrides():
    cfg, specs = B.paper_b_plan(["fourshapes", "mnist", "restricted_imagenet_absent"], {"epochs": 2, "lr": 0.5},
                                {"fourshapes": 0.1, "mnist": 0.3}, {"mnist": {"lr": 0.01}})
    assert list(cfg) == ["fourshapes", "mnist"]  # an unknown name is left out, not an error
    assert cfg["mnist"] == {"epochs": 2, "lr": 0.01, "eps": 0.3} and cfg["fourshapes"]["lr"] == 0.5
    assert sorted(specs["mnist"]) == ["A", "AR", "L", "LR", "T", "TR", "V", "VR"]
    assert specs["mnist"]["A"].objective_kwargs["eps"] == 0.3 and specs["mnist"]["A"].lr == 0.01


# ---------------------------------------------------------------- Foolbox 2's settings (issue 25)
def test_pgd_search_keeps_growing_eps_past_one_as_foolbox_2(monkeypatch):
    "Foolbox v2.3.0 iterative_projected_gradient.py 141-151: 20 tries of 0.3·1.5^i, no cap; step ε/30 each."
    tried = []

    def fake_pgd(model, x, y, eps, alpha, **kw):
        tried.append((eps, alpha))
        return x.clone()

    monkeypatch.setattr(B, "pgd", fake_pgd)
    const = Linear2(torch.zeros(2, 16, dtype=torch.float64), torch.tensor([1.0, 0.0], dtype=torch.float64))
    x, y = torch.rand(2, 1, 4, 4, dtype=torch.float64), torch.tensor([0, 0])
    assert torch.equal(B.pgd_search(const, x, y, steps=3), x)  # nothing fools: every ε is tried, x comes back
    eps = [e for e, _ in tried]
    assert eps == pytest.approx([0.3 * 1.5 ** j for j in range(-3, 20)])
    assert eps[-1] == pytest.approx(0.3 * 1.5 ** 19) and eps[-1] > 600  # Foolbox's last try
    assert all(a == pytest.approx(e / 30) for e, a in tried)


def test_foolbox_default_attacks_pass_foolbox_2s_overshoots(monkeypatch):
    "DeepFool: each step × 1.05 (deepfool.py 164) = overshoot 0.05; ADef: no overshoot (adef_attack.py 325) = 1.0."
    seen = {}
    monkeypatch.setattr(B, "deepfool", lambda m, x, y, **kw: seen.setdefault("df_" + kw["norm"], kw) and x)
    monkeypatch.setattr(B, "adef", lambda m, x, y, **kw: seen.setdefault("adef", kw) and x)
    attacks = B.foolbox_default_attacks(num_classes=10)
    for name in ("DF(l2)", "DF(linf)", "ADef"):
        attacks[name](None, torch.zeros(1, 1, 2, 2), torch.zeros(1, dtype=torch.long))
    assert seen["df_l2"]["overshoot"] == seen["df_linf"]["overshoot"] == 0.05
    assert seen["adef"]["overshoot"] == 1.0 and seen["adef"]["sigma"] == 1.0 and seen["adef"]["num_classes"] == 10


def test_robust_per_image_is_accuracy_at_per_image():
    rec = {"correct": [True, True, True, False], "fooled": [True, True, False, False], "linf": [0.05, 0.3, 0.0, 0.0]}
    assert B.robust_per_image(rec).tolist() == [False, False, True, False]
    assert B.robust_per_image(rec, 0.1).tolist() == [False, True, True, False]  # 0.3 is beyond the bound
    assert B.accuracy_at(rec, 0.1) == 0.5


def test_correct_per_image_counts_each_image_in_batches():
    model = nn.Sequential(nn.Flatten(), nn.Identity())  # logits = the 2 pixels
    x = torch.tensor([[[[255, 0]]], [[[0, 255]]], [[[0, 255]]], [[[255, 0]]], [[[0, 255]]]], dtype=torch.uint8)
    data = type("D", (), {"x": x, "y": torch.tensor([0, 1, 0, 0, 0])})()
    assert B.correct_per_image(model, data, batch_size=2).tolist() == [True, True, False, True, False]


def test_two_way_mean_se_by_hand():
    # [[1, 2], [3, 4]]: mean 2.5; row means 1.5, 3.5 -> MS_r = 2·(1 + 1)/1 = 4; column means 2, 3 -> MS_c = 2·0.5 = 1;
    # no interaction -> MS_e = 0; Var = (4 + 1 − 0)/4
    assert B.two_way_mean_se([[1, 2], [3, 4]]) == pytest.approx((2.5, math.sqrt(1.25)))
    # [[0, 0], [0, 4]]: mean 1, MS_r = MS_c = 4, residuals ±1 -> MS_e = 4; Var = (4 + 4 − 4)/4 = 1
    assert B.two_way_mean_se([[0, 0], [0, 4]]) == pytest.approx((1.0, 1.0))
    # a pure interaction: MS_r = MS_c = 0, MS_e = 4 -> MS_r + MS_c − MS_e < 0, the floor MS_e/4 = 1 holds
    assert B.two_way_mean_se([[1, -1], [-1, 1]]) == pytest.approx((0.0, 1.0))
    # a loss effect shared by every class: 4 classes of the same two values; as 8 independent values the SE would be
    # 0.378, but there are only 2 losses: SE = √(MS_r/8) = √(4·2/8) = 1
    assert B.two_way_mean_se([[0] * 4, [2] * 4])[1] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        B.two_way_mean_se([[1, 2, 3]])


def test_ahead_in_most_counts_cells_by_the_one_rule():
    from advnb.papers.b_smooth_kernels import ahead_in_most
    ahead, level, behind = (0.3, 0.1), (0.0, 0.1), (-0.3, 0.1)
    assert ahead_in_most([ahead, ahead, ahead, level]) == (True, 3, 0)
    assert ahead_in_most([ahead, ahead, level, level]) == (None, 2, 0)  # half is not more than half
    assert ahead_in_most([ahead, behind, level]) == (None, 1, 1)  # one behind of three: the level cell could decide
    assert ahead_in_most([behind, behind, ahead]) == (False, 1, 2)
    assert ahead_in_most([ahead, ahead, behind, behind]) == (False, 2, 2)  # half behind: no majority ahead is possible
    assert ahead_in_most([level, level]) == (None, 0, 0)  # all within noise decides nothing


def test_autoattack_robust_is_the_exact_set_of_a_linear_model():
    from advnb.autoattack import linear_robust_set
    from advnb.papers.b_smooth_kernels import autoattack_robust
    torch.manual_seed(0)
    layer = torch.nn.Linear(1 * 6 * 6, 4)
    model = torch.nn.Sequential(torch.nn.Flatten(), layer)
    x = torch.rand(40, 1, 6, 6)
    with torch.no_grad():
        y = model(x).argmax(1)
    robust = autoattack_robust(model, x, y, eps=0.05)
    exact = linear_robust_set(layer, x, y, 0.05)
    assert robust == exact.tolist() and 0 < sum(robust) < len(robust)
