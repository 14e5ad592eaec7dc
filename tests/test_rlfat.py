"""Paper D (RLFAT): Random Block Shuffle, the training objectives of eqs. 5–10, loss sensitivity (eqs. 11–12),
SmoothGrad and the shared model specs."""
import colorsys
import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from advnb.papers import d_setup as P
from advnb.papers import d_rlfat as R
from advnb import core
from advnb.attacks import pgd
from advnb.core import torch_generator
from advnb.train import get_objective, pgd_at_objective
from conftest import replace_everywhere


# ---------------------------------------------------------------- RBS
def coord_image(n, h, w):
    "Images whose channel 0 holds the row index and channel 1 the column index of each pixel (as floats)."
    r = torch.arange(h, dtype=torch.float64)[:, None].expand(h, w)
    c = torch.arange(w, dtype=torch.float64)[None, :].expand(h, w)
    return torch.stack([r, c, r * w + c])[None].repeat(n, 1, 1, 1)


def runs(idx):
    "Split a 1-D index sequence into maximal runs of consecutive increasing integers."
    out, cur = [], [int(idx[0])]
    for v in idx[1:].tolist():
        if v == cur[-1] + 1:
            cur.append(v)
        else:
            out.append(cur)
            cur = [v]
    return out + [cur]


@pytest.mark.parametrize("length,k,expected", [(32, 3, [11, 11, 10]), (28, 3, [10, 9, 9]), (32, 2, [16, 16]),
                                               (7, 7, [1] * 7), (10, 4, [3, 3, 2, 2]), (5, 1, [5])])
def test_even_blocks_rule_when_k_does_not_divide(length, k, expected):
    assert R.block_sizes(length, k, "even") == expected


@pytest.mark.parametrize("length,k", [(32, 2), (28, 3), (5, 5), (96, 4)])
def test_random_cuts_give_k_nonempty_blocks(length, k):
    g = torch_generator(3)
    seen = set()
    for _ in range(50):
        s = R.block_sizes(length, k, "random", g)
        assert len(s) == k and sum(s) == length and min(s) >= 1
        seen.add(tuple(s))
    assert len(seen) > 1 or length == k  # the cut points really are random


def test_block_sizes_rejects_bad_k_and_cuts():
    with pytest.raises(ValueError):
        R.block_sizes(4, 5)
    with pytest.raises(ValueError):
        R.block_sizes(4, 0)
    with pytest.raises(ValueError):
        R.block_sizes(4, 2, "diagonal")


@pytest.mark.parametrize("cuts", ["even", "random"])
@pytest.mark.parametrize("shape,k", [((3, 32, 32), 2), ((1, 28, 28), 3), ((3, 9, 7), 3), ((3, 10, 6), 4)])
def test_rbs_is_a_pixel_permutation(cuts, shape, k):
    x = torch.rand(6, *shape, generator=torch_generator(0))
    out = R.rbs(x, k=k, seed=1, cuts=cuts)
    assert out.shape == x.shape
    assert torch.equal(out.flatten(2).sort(-1).values, x.flatten(2).sort(-1).values)  # multiset per image/channel
    # the same spatial permutation for every channel: compare with the coordinate image
    xc = coord_image(6, *shape[1:])
    oc = R.rbs(xc, k=k, seed=1, cuts=cuts)
    src = oc[:, 2].long().flatten(1)  # source pixel of every output pixel
    assert torch.equal(torch.sort(src, 1).values, torch.arange(shape[1] * shape[2]).expand(6, -1))
    for c in range(shape[0]):
        assert torch.equal(out[:, c].flatten(1), x[:, c].flatten(1).gather(1, src))


@pytest.mark.parametrize("cuts", ["even", "random"])
def test_rbs_k1_is_identity(cuts):
    x = torch.rand(4, 3, 8, 5)
    assert torch.equal(R.rbs(x, k=1, seed=5, cuts=cuts), x)
    rows, cols = R.rbs_indices(4, 8, 5, 1, cuts, torch_generator(5))  # the general code path, no shortcut
    assert torch.equal(rows, torch.arange(8).expand(4, 8)) and torch.equal(cols, torch.arange(5).expand(4, 5))
    with pytest.raises(ValueError):
        R.rbs(x, k=1, cuts="nope")


@pytest.mark.parametrize("cuts", ["even", "random"])
@pytest.mark.parametrize("h,w,k", [(32, 32, 2), (28, 28, 3), (10, 7, 3), (12, 12, 4)])
def test_rbs_respects_block_boundaries(cuts, h, w, k):
    n = 20
    out = R.rbs(coord_image(n, h, w), k=k, seed=2, cuts=cuts)
    for i in range(n):
        rows = out[i, 0, :, 0].long()  # output row -> source row (the same in every column)
        cols = out[i, 1, 0, :].long()
        assert torch.equal(out[i, 0], rows[:, None].double().expand(h, w))  # whole rows move together
        assert torch.equal(out[i, 1], cols[None, :].double().expand(h, w))  # whole columns move together
        for idx, length in ((rows, h), (cols, w)):
            blocks = runs(idx)
            assert len(blocks) <= k  # at most k contiguous runs of source rows (adjacent blocks may merge)
            assert sorted(v for b in blocks for v in b) == list(range(length))  # the runs tile the side
    # every run boundary is a cut point of that example's blocks (the sizes drawn from the same generator as rbs's)
    rows_i, cols_i, row_sizes, col_sizes = R.rbs_indices(n, h, w, k, cuts, torch_generator(2), return_sizes=True)
    assert torch.equal(out, R.apply_block_indices(coord_image(n, h, w), rows_i, cols_i))
    for i in range(n):
        for idx, sizes, length in ((out[i, 0, :, 0].long(), row_sizes[i], h), (out[i, 1, 0, :].long(), col_sizes[i], w)):
            assert len(sizes) == k and sum(sizes) == length and min(sizes) >= 1
            if cuts == "even":
                assert sizes == R.block_sizes(length, k, "even")
            cut_points = set(torch.tensor([0, *sizes]).cumsum(0).tolist())
            assert all(b[0] in cut_points and b[-1] + 1 in cut_points for b in runs(idx)), (i, sizes, idx.tolist())


def test_rbs_even_index_maps_are_block_orders():
    # 11 rows, k = 3: blocks of 4, 4, 3 rows; every row map must be one of the 3! block orders, and all of them occur
    assert R.block_sizes(11, 3, "even") == [4, 4, 3]
    rows, cols = R.rbs_indices(60, 11, 9, 3, "even", torch_generator(4))
    import itertools
    row_orders = {tuple(R.block_permutation_index([4, 4, 3], p).tolist()) for p in itertools.permutations(range(3))}
    col_orders = {tuple(R.block_permutation_index([3, 3, 3], p).tolist()) for p in itertools.permutations(range(3))}
    assert len(row_orders) == 6
    assert {tuple(r.tolist()) for r in rows} == row_orders
    assert {tuple(c.tolist()) for c in cols} == col_orders
    assert R.block_permutation_index([4, 4, 3], (2, 0, 1)).tolist() == [8, 9, 10, 0, 1, 2, 3, 4, 5, 6, 7]


def test_rbs_randomness_is_per_example_and_seeded():
    x = coord_image(64, 16, 16)
    a, b, c = R.rbs(x, 2, seed=0), R.rbs(x, 2, seed=0), R.rbs(x, 2, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    distinct = {tuple(a[i, 2].flatten().tolist()) for i in range(64)}
    assert len(distinct) > 10  # examples of one batch are shuffled differently
    # with k = 2 each axis keeps its order with probability 1/2, so about a quarter are unchanged
    same = sum(torch.equal(a[i], x[i]) for i in range(64))
    assert 2 <= same <= 32


def test_rbs_passes_gradients():
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    w = torch.rand(2, 3, 8, 8)
    (R.rbs(x, 2, seed=0) * w).sum().backward()
    # the gradient is w permuted back: same multiset
    assert torch.allclose(x.grad.flatten(2).sort(-1).values, w.flatten(2).sort(-1).values)


# ---------------------------------------------------------------- objectives
class TinyLinear(nn.Module):
    "logits = W · vec(x) + b on 1×4×4 images, in float64, so losses can be written out by hand."
    def __init__(self, classes=3, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(torch.randn(classes, 16, generator=g, dtype=torch.float64))
        self.b = nn.Parameter(torch.randn(classes, generator=g, dtype=torch.float64))

    def forward(self, x):
        return x.flatten(1) @ self.W.T + self.b


def batch(n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 4, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def hand_logits(m, x):
    W, b = m.W.detach(), m.b.detach()
    return [[sum(W[c, j].item() * x[i].flatten()[j].item() for j in range(16)) + b[c].item() for c in range(3)]
            for i in range(len(x))]


def hand_ce(logits, y):
    tot = 0.0
    for z, t in zip(logits, y.tolist()):
        tot += math.log(sum(math.exp(v) for v in z)) - z[t]
    return tot / len(logits)


def hand_softmax(z):
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def hand_kl(lc, la):
    tot = 0.0
    for zc, za in zip(lc, la):
        p, q = hand_softmax(zc), hand_softmax(za)
        tot += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    return tot / len(lc)


def hand_sq(la, lb):
    return sum(sum((u - v) ** 2 for u, v in zip(a, b)) for a, b in zip(la, lb)) / len(la)


ATK = dict(eps=0.1, alpha=0.03, steps=3)


def inputs_for(m, x, y, framework, seed, k=2):
    x_adv = pgd(m, x, y, ATK["eps"], ATK["alpha"], ATK["steps"], loss="ce" if framework == "pgdat" else "kl", seed=seed)
    x_rbs = R.rbs(x_adv, k, cuts="random", generator=torch_generator(seed + R.RBS_SEED_OFFSET))
    return x_adv, x_rbs


@pytest.mark.parametrize("name", ["trades", "rbs_pgdat", "rbs_trades", "rlfat_p", "rlfat_t"])
def test_objectives_equal_hand_computation(name):
    m, (x, y), seed = TinyLinear(), batch(), 11
    fw = "pgdat" if name in ("rbs_pgdat", "rlfat_p") else "trades"
    x_adv, x_rbs = inputs_for(m, x, y, fw, seed)
    assert not torch.equal(x_adv, x_rbs)  # RBS did something in this batch
    lc, la, lr = hand_logits(m, x), hand_logits(m, x_adv), hand_logits(m, x_rbs)
    expected = {
        "trades": hand_ce(lc, y) + 6.0 * hand_kl(lc, la),
        "rbs_pgdat": hand_ce(lr, y),
        "rbs_trades": hand_ce(lc, y) + 6.0 * hand_kl(lc, lr),
        "rlfat_p": hand_ce(lr, y) + 0.5 * hand_sq(lr, la),
        "rlfat_t": hand_ce(lc, y) + 6.0 * hand_kl(lc, lr) + 1.0 * hand_sq(lr, la),
    }[name]
    loss, logits = get_objective(name)(m, x, y, seed=seed, **ATK)
    assert loss.item() == pytest.approx(expected, rel=1e-10, abs=1e-12)
    assert loss.requires_grad and logits.shape == (5, 3)
    # returned logits: clean for the TRADES family, the trained-on input for the PGDAT family
    ref = x if fw == "trades" else x_rbs
    assert torch.allclose(logits, m(ref))


def test_pgdat_is_the_foundation_objective():
    m, (x, y) = TinyLinear(), batch()
    l1, _ = R.rlfat_loss(m, x, y, "pgdat", rlfl=False, rlft=False, seed=3, **ATK)
    l2, _ = pgd_at_objective(m, x, y, seed=3, **ATK)
    assert torch.equal(l1, l2)
    x_adv, _ = inputs_for(m, x, y, "pgdat", 3)
    assert l1.item() == pytest.approx(hand_ce(hand_logits(m, x_adv), y), rel=1e-10)


def test_trades_is_the_foundation_objective_bit_for_bit():
    "The foundation's TRADES (advnb.train) is eq. 6 of rlfat_loss: the same loss, gradients and BatchNorm statistics."
    from advnb.models import build_model
    from advnb.train import trades_objective
    torch.manual_seed(0)
    base = build_model("resnet18", num_classes=3, in_shape=(3, 8, 8), width=2)  # with BatchNorm
    x, y = torch.rand(6, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    out = []
    for fn in (lambda m: trades_objective(m, x, y, seed=4, **ATK),
               lambda m: R.rlfat_loss(m, x, y, "trades", rlfl=False, rlft=False, seed=4, **ATK)):
        m = copy.deepcopy(base).train()
        loss, logits = fn(m)
        loss.backward()
        out.append((loss, logits, [p.grad for p in m.parameters()], [b.clone() for b in m.buffers()]))
    (l1, z1, g1, b1), (l2, z2, g2, b2) = out
    assert torch.equal(l1, l2) and torch.equal(z1, z2)
    assert all(torch.equal(a, b) for a, b in zip(g1, g2)) and all(torch.equal(a, b) for a, b in zip(b1, b2))
    assert get_objective("trades").__module__ == "advnb.train"  # a foundation objective: paper B needs no paper D


def test_named_objectives_use_paper_hyperparameters():
    m, (x, y) = TinyLinear(), batch()
    for name, kw in [("trades", dict(framework="trades", rlfl=False, rlft=False, lam=6.0)),
                     ("rlfat_p", dict(framework="pgdat", eta=0.5)),
                     ("rlfat_t", dict(framework="trades", eta=1.0, lam=6.0))]:
        a, _ = get_objective(name)(m, x, y, seed=2, **ATK)
        b, _ = R.rlfat_loss(m, x, y, seed=2, **kw, **ATK)
        assert torch.equal(a, b), name


def test_trades_kl_is_zero_when_outputs_agree():
    z = torch.randn(7, 10, dtype=torch.float64)
    assert R.trades_kl(z, z).item() == pytest.approx(0, abs=1e-15)
    assert R.trades_kl(z, z + 3.0).item() == pytest.approx(0, abs=1e-12)  # same softmax
    assert R.trades_kl(z, torch.randn(7, 10, dtype=torch.float64)).item() > 1e-3
    # eps = 0: the adversarial example is x itself, so the TRADES loss is the clean CE
    m, (x, y) = TinyLinear(), batch()
    loss, _, parts = R.rlfat_loss(m, x, y, "trades", rlfl=False, rlft=False, eps=0.0, alpha=0.01, steps=3,
                                  return_parts=True)
    assert parts["kl"].item() == pytest.approx(0, abs=1e-15)
    assert loss.item() == pytest.approx(hand_ce(hand_logits(m, x), y), rel=1e-12)
    # a model whose output ignores the input: KL zero although x' != x
    const = TinyLinear()
    with torch.no_grad():
        const.W.zero_()
    _, _, parts = R.rlfat_loss(const, x, y, "trades", rlfl=True, rlft=True, return_parts=True, **ATK)
    assert parts["kl"].item() == pytest.approx(0, abs=1e-15) and parts["rlft"].item() == pytest.approx(0, abs=1e-15)


def test_rlft_is_zero_without_shuffle_and_needs_rlfl():
    m, (x, y) = TinyLinear(), batch()
    _, _, parts = R.rlfat_loss(m, x, y, "trades", k=1, return_parts=True, **ATK)
    assert parts["rlft"].item() == 0
    with pytest.raises(ValueError):
        R.rlfat_loss(m, x, y, "pgdat", rlfl=False, rlft=True, **ATK)


def test_objectives_are_deterministic_given_seed():
    m, (x, y) = TinyLinear(), batch()
    a, _ = get_objective("rlfat_t")(m, x, y, seed=9, **ATK)
    b, _ = get_objective("rlfat_t")(m, x, y, seed=9, **ATK)
    c, _ = get_objective("rlfat_t")(m, x, y, seed=10, **ATK)
    assert torch.equal(a, b) and not torch.equal(a, c)


# ---------------------------------------------------------------- loss sensitivity
def test_brightness_matches_colorsys_round_trip():
    x = torch.rand(3, 3, 5, 5, dtype=torch.float64, generator=torch_generator(0))
    x[0, :, 0, 0] = 0  # a black pixel
    x[1, :, 1, 1] = 0.5  # a grey one
    for a in (-0.15, 0.15, 0.6):
        out = R.hsv_brightness(x, a)
        for i in range(3):
            for r in range(5):
                for c in range(5):
                    h, s, v = colorsys.rgb_to_hsv(*x[i, :, r, c].tolist())
                    ref = colorsys.hsv_to_rgb(h, s, min(max(v + a, 0), 1))
                    assert out[i, :, r, c].tolist() == pytest.approx(ref, abs=1e-12)


def test_brightness_on_grey_images_is_intensity_shift():
    x = torch.rand(4, 1, 6, 6, dtype=torch.float64)
    assert torch.allclose(R.hsv_brightness(x, 0.15), (x + 0.15).clamp(0, 1))
    assert torch.allclose(R.hsv_brightness(x, -0.15), (x - 0.15).clamp(0, 1))
    assert torch.allclose(R.gamma_map(x, 0.8), x ** 0.8)


class TinyConv(nn.Module):
    def __init__(self, c=3):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(c, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 16, 5))
        self.double()

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("c,transform", [(3, lambda t: R.hsv_brightness(t, 0.15)), (3, lambda t: R.gamma_map(t, 0.8)),
                                         (1, lambda t: R.hsv_brightness(t, -0.15)), (3, None)])
def test_loss_sensitivity_matches_finite_differences(c, transform):
    m = TinyConv(c)
    x = torch.rand(3, c, 4, 4, dtype=torch.float64, generator=torch_generator(1))
    y = torch.tensor([0, 3, 4])
    xt = x if transform is None else transform(x)
    h, norms = 1e-6, []
    for i in range(3):
        g = torch.zeros(xt[i].numel(), dtype=torch.float64)
        for j in range(g.numel()):
            d = torch.zeros_like(g)
            d[j] = h
            xp = (xt[i].flatten() + d).view(1, *xt.shape[1:])
            xm = (xt[i].flatten() - d).view(1, *xt.shape[1:])
            with torch.no_grad():
                g[j] = (F.cross_entropy(m(xp), y[i:i + 1]) - F.cross_entropy(m(xm), y[i:i + 1])) / (2 * h)
        norms.append(g.norm().item())
    expected = sum(norms) / 3
    got = R.loss_sensitivity(m, x, y, transform, batch_size=2)
    assert got == pytest.approx(expected, rel=1e-6)
    per = R.loss_sensitivity(m, x, y, transform, batch_size=2, per_example=True)
    assert per.shape == (3,) and per.tolist() == pytest.approx(norms, rel=1e-6)


def test_input_gradients_returns_cpu_gradients_equal_to_autograd():
    m = TinyConv(3)
    x = torch.rand(5, 3, 4, 4, dtype=torch.float64, generator=torch_generator(3))
    y = torch.tensor([0, 1, 2, 3, 4])
    got = R.input_gradients(m, x, y, batch_size=2)
    xr = x.clone().requires_grad_(True)
    ref, = torch.autograd.grad(F.cross_entropy(m(xr), y, reduction="sum"), xr)
    assert got.device.type == "cpu" and torch.allclose(got, ref, rtol=1e-12, atol=1e-15)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_input_gradients_move_cpu_batches_to_the_models_device():
    m = TinyConv(3)
    x = torch.rand(5, 3, 4, 4, dtype=torch.float64, generator=torch_generator(3))
    y = torch.tensor([0, 1, 2, 3, 4])
    ref = R.input_gradients(m, x, y, batch_size=2)
    got = R.input_gradients(m.cuda(), x, y, batch_size=2)  # inputs stay on the CPU
    assert got.device.type == "cpu" and torch.allclose(got, ref, rtol=1e-9, atol=1e-12)
    per = R.sensitivity_row(m, x, y, per_example=True)
    assert all(v.device.type == "cpu" and v.shape == (5,) for v in per.values())


def test_sensitivity_row_has_the_papers_four_settings():
    m = TinyConv(3)
    x, y = torch.rand(4, 3, 4, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 3])
    row = R.sensitivity_row(m, x, y)
    assert list(row) == ["brightness -0.15", "brightness +0.15", "gamma 0.8", "gamma 1.2"]
    assert row["gamma 0.8"] == pytest.approx(R.loss_sensitivity(m, x ** 0.8, y))
    per = R.sensitivity_row(m, x, y, per_example=True)
    assert list(per) == list(row) and all(float(per[s].mean()) == pytest.approx(row[s]) for s in row)


# ---------------------------------------------------------------- SmoothGrad
def test_smoothgrad_of_a_linear_model_is_its_weight_row():
    m = TinyLinear()
    x, _ = batch()
    target = torch.tensor([0, 1, 2, 0, 1])
    g = R.smoothgrad(m, x, target, n_samples=7, sigma=0.3, seed=0)
    assert torch.allclose(g.flatten(1), m.W.detach()[target])
    with core.dry_run_setting(True):  # a dry run draws 3 of the 50 samples: still their mean, not 3/50 of it
        assert torch.allclose(R.smoothgrad(m, x, target, n_samples=50).flatten(1), m.W.detach()[target])


def test_smoothgrad_with_no_noise_is_the_gradient_and_noise_smooths():
    m = TinyConv(3)
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64)
    t = torch.tensor([1, 2])
    xr = x.clone().requires_grad_(True)
    plain, = torch.autograd.grad(m(xr).gather(1, t[:, None]).sum(), xr)
    assert torch.allclose(R.smoothgrad(m, x, t, n_samples=3, sigma=0.0), plain)
    assert not torch.allclose(R.smoothgrad(m, x, t, n_samples=3, sigma=0.5), plain)
    img = R.salience_image(plain)
    assert img.shape == (2, 4, 4) and img.min() >= 0 and img.max() <= 1
    assert R.salience_image(plain[:0]).shape == (0, 4, 4)  # no image (d4 when no image is right for all four)


# ---------------------------------------------------------------- specs
def test_paper_d_specs_share_everything_but_the_objective():
    specs = P.paper_d_specs("synthetic-cifar10", arch_kwargs={"depth": 10, "widen_factor": 1}, epochs=1, steps=2)
    assert set(specs) == {*P.PAPER_D_MODELS, "PGDAT+RLFL", "TRADES+RLFL"}
    assert {s.objective for s in specs.values()} == {"pgd_at", "trades", "rlfat_p", "rlfat_t", "rbs_pgdat", "rbs_trades"}
    assert len({s.key for s in specs.values()}) == 6
    assert specs["RLFAT-P"].objective_kwargs["eta"] == 0.5 and specs["RLFAT-T"].objective_kwargs["eta"] == 1.0
    assert specs["TRADES"].objective_kwargs["lam"] == 6.0
    for s in specs.values():
        assert (s.optimizer, s.lr, s.batch_size, s.schedule) == ("adam", 1e-3, 32, "constant")
        get_objective(s.objective)  # every objective is registered
    # apart from the objective and its kwargs, the six specs are identical
    import dataclasses
    rest = [{f.name: getattr(s, f.name) for f in dataclasses.fields(s) if f.name not in ("objective", "objective_kwargs")}
            for s in specs.values()]
    assert all(r == rest[0] for r in rest[1:])
    assert rest[0]["arch_kwargs"] == {"depth": 10, "widen_factor": 1} and rest[0]["epochs"] == 1
    # the attack settings are shared too
    assert {tuple(sorted((k, s.objective_kwargs[k]) for k in ("eps", "alpha", "steps"))) for s in specs.values()} == {
        (("alpha", 0.0075), ("eps", 0.03), ("steps", 2))}
    with pytest.raises(TypeError):
        P.paper_d_setup("synthetic-cifar10", {"epochs": 1, "no_such_setting": 3})


def test_a_data_sets_own_settings_replace_the_shared_ones():
    base, overrides = {"epochs": 1, "steps": 10}, {"stl10": {"steps": 7}}  # App. A: 7 PGD steps on STL-10, 10 on CIFAR-10
    cfg, specs = P.paper_d_setup("stl10", base, overrides)
    assert cfg == {"epochs": 1, "steps": 7} and {s.objective_kwargs["steps"] for s in specs.values()} == {7}
    assert P.paper_d_setup("cifar10", base, overrides)[0] == base and base == {"epochs": 1, "steps": 10}


def test_table_1s_attacks_are_the_papers():
    atk = P.defense_attacks()
    assert (atk["PGD"].hp["loss"], atk["CW"].hp["loss"], atk["CW"].hp["kappa"]) == ("ce", "cw", 50.0)
    assert (atk["NAttack"].hp["iters"], atk["NAttack"].hp["samples"], atk["NAttack"].hp["sigma"]) == (200, 300, 0.1)


def test_steps_to_epochs():
    assert P.steps_to_epochs(79_800, 50_000, 32) == 51
    assert P.steps_to_epochs(29_700, 5_000, 32) == 189
    assert P.steps_to_epochs(10, 1_000_000, 32) == 1


def test_rlfat_trains_through_the_foundation_loop(tmp_path, isolated_settings):
    from advnb.train import train
    specs = P.paper_d_specs("synthetic-cifar10", arch_kwargs={"depth": 10, "widen_factor": 1}, n_per_class=3,
                            epochs=1, batch_size=16, steps=1, eval_n_per_class=2)
    for name in ("RLFAT-P", "RLFAT-T"):
        _, hist = train(specs[name], tmp_path / name, device="cpu", show_progress=False)
        assert len(hist) == 1 and math.isfinite(hist[0]["train_loss"])


# ---------------------------------------------------------------- evaluation
def test_evaluate_defense_reports_clean_accuracy_on_the_nattack_images(tmp_path):
    from advnb.attacks import accuracy
    m = TinyConv(3).float()
    x = torch.rand(12, 3, 4, 4, generator=torch_generator(0))
    y = torch.randint(0, 5, (12,), generator=torch_generator(1))
    kw = dict(eps=0.03, alpha=0.01, steps=1, nattack_n=5, nattack_iters=1, nattack_samples=4, batch_size=4)
    row = P.evaluate_defense(m, x, y, **kw)
    assert row["n"] == 12 and row["nattack_n"] == 5
    assert row["clean"] == pytest.approx(accuracy(m, x, y))
    assert row["clean (NAttack images)"] == pytest.approx(accuracy(m, x[:5], y[:5]))
    spec = P.paper_d_specs("synthetic-cifar10", epochs=1)["PGDAT"]
    a = P.cached_evaluation(spec, m, x, y, {"t": 1}, cache_dir=tmp_path, **kw)
    assert a == row and len(list((tmp_path / "paper_d_eval").iterdir())) == 1


def test_cached_evaluation_key_follows_the_evaluation_code(tmp_path, monkeypatch):
    import advnb.attacks as A
    m = TinyConv(3).float()
    x, y = torch.rand(4, 3, 4, 4, generator=torch_generator(0)), torch.tensor([0, 1, 2, 3])
    kw = dict(eps=0.03, alpha=0.01, steps=1, nattack_n=2, nattack_iters=1, nattack_samples=4)
    spec = P.paper_d_specs("synthetic-cifar10", epochs=1)["PGDAT"]
    P.cached_evaluation(spec, m, x, y, {"t": 1}, cache_dir=tmp_path, **kw)
    P.cached_evaluation(spec, m, x, y, {"t": 1}, cache_dir=tmp_path, **kw)
    assert len(list((tmp_path / "paper_d_eval").iterdir())) == 1  # the same code reuses the row
    original = A.pgd

    def edited_pgd(model, x, y, **kw):  # "editing pgd": the same behaviour, another source
        return original(model, x, y, **kw)
    replace_everywhere(monkeypatch, original, edited_pgd)  # in advnb.attacks and wherever it was imported
    P.cached_evaluation(spec, m, x, y, {"t": 1}, cache_dir=tmp_path, **kw)
    assert len(list((tmp_path / "paper_d_eval").iterdir())) == 2  # edited attack code: a new row, not the old one


@pytest.mark.parametrize("k", [1, 2, 3, 8])
def test_paint_blocks_gives_every_block_its_own_colour_and_keeps_half_the_image(k):
    x = torch.rand(1, 10, 12, generator=torch.Generator().manual_seed(k))
    painted = R.paint_blocks(x, k)
    tint = 2 * painted - x.expand(3, 10, 12)
    rows = torch.repeat_interleave(torch.arange(k), torch.tensor(R.block_sizes(10, k, "even")))
    cols = torch.repeat_interleave(torch.arange(k), torch.tensor(R.block_sizes(12, k, "even")))
    colours = {(int(i), int(j)): tuple(tint[:, a, b].round(decimals=5).tolist()) for a, i in enumerate(rows) for b, j in enumerate(cols)}
    assert len(set(colours.values())) == k * k  # one colour per block, the same all over it
    assert tint.min() >= 0 and tint.max() <= 1


def test_rbs_accuracy_is_the_accuracy_on_the_shuffled_images():
    g = torch_generator(0)
    x, y = torch.rand(96, 3, 8, 8, generator=g), torch.randint(0, 4, (96,), generator=g)
    pooled = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4))  # sees each channel's mean only
    placed = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64, 4))                      # reads every pixel where it is
    with torch.no_grad():
        placed[1].weight.copy_(torch.randn(4, 3 * 64, generator=g))
        clean = (placed(x).argmax(1) == y).float().mean().item()
        y_shuffled = placed(R.rbs(x, k=4, seed=3)).argmax(1)  # labels that are right exactly on RBS(x, 4) of seed 3
    assert all(R.rbs_accuracy(pooled, x, y, k=k) == R.rbs_accuracy(pooled, x, y, k=1) for k in (2, 4, 8))  # RBS moves pixels
    assert R.rbs_accuracy(placed, x, y, k=1) == clean
    assert R.rbs_accuracy(placed, x, y_shuffled, k=4, seed=3, batch_size=40) == 1.0  # that shuffle, whatever the batches
    assert R.rbs_accuracy(placed, x, y_shuffled, k=4, seed=4) < 0.9                  # another seed, another shuffle
