"""Paper C's measurements: ReLU changes against the endpoint signs of a one-hidden-layer network, roughness, the
spectra of perturbations against pure sinusoids and Parseval, the linear predictor against input gradients, the
models of Table 3 and the attack of Table 6."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from advnb.papers import c_implicit_fourier as C
from advnb.papers.c_implicit_fourier import full_width_conv, fully_connected, locally_connected


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_relu_changes_of_one_hidden_layer_equal_the_endpoint_sign_flips():
    net = fully_connected(in_shape=(1, 5, 5), hidden=64, nonlinear=True)
    x0, x1 = torch.rand(9, 1, 5, 5, generator=gen(1)), torch.rand(9, 1, 5, 5, generator=gen(2))
    pre = lambda x: net.body.hidden1(net.normalize(x))  # noqa: E731
    expected = ((pre(x0) > 0) != (pre(x1) > 0)).float().mean(1)
    for steps in (1, 3, 16):
        assert torch.allclose(C.relu_changes(net, x0, x1, steps=steps, batch_size=4), expected)
    assert expected.max() > 0  # the test has sign flips to find


def test_relu_changes_count_units_that_switch_between_the_samples():
    # a unit that turns on and off again inside the segment is found only when a sample lands there
    class Bump(nn.Module):
        def __init__(self):
            super().__init__()
            self.relu = nn.ReLU()

        def forward(self, x):  # pre-activation 1 − 16(t − 1/2)² along x = t: positive only near the middle
            return self.relu(1 - 16 * (x.flatten(1)[:, :1] - 0.5) ** 2)
    m = Bump()
    x0, x1 = torch.zeros(1, 1), torch.ones(1, 1)
    assert C.relu_changes(m, x0, x1, steps=1).item() == 0
    assert C.relu_changes(m, x0, x1, steps=2).item() == 1


def test_relu_states_need_relu_modules():
    with pytest.raises(ValueError, match="no nn.ReLU"):
        C.relu_states(fully_connected(in_shape=(1, 3, 3), hidden=4), torch.rand(2, 1, 3, 3))


def test_roughness_is_zero_on_linear_models_and_positive_across_breakpoints():
    lin = fully_connected(in_shape=(1, 4, 4), hidden=20)
    net = fully_connected(in_shape=(1, 4, 4), hidden=20, nonlinear=True)
    x0, x1 = torch.rand(6, 1, 4, 4, generator=gen(3)), torch.rand(6, 1, 4, 4, generator=gen(4))
    cls = torch.tensor([[0, 1]] * 6)
    assert C.roughness(lin, x0, x1, cls).abs().max() < 1e-5
    r = C.roughness(net, x0, x1, cls)
    assert (r > 1e-3).all() and (r <= 2).all()
    # and it does not move the parameters' gradients or the mode
    net.train()
    C.roughness(net, x0, x1, cls[:, 0])
    assert net.training and all(p.grad is None for p in net.parameters())


def test_roughness_against_a_hand_computation():
    net = fully_connected(in_shape=(1, 2, 2), hidden=8, nonlinear=True)
    x0, x1 = torch.rand(1, 1, 2, 2, generator=gen(5)), torch.rand(1, 1, 2, 2, generator=gen(6))

    def grad(x):
        x = x.clone().requires_grad_(True)
        return torch.autograd.grad(net(x)[0, 3], x)[0].flatten()
    g0 = grad(x0)
    hand = np.mean([1 - torch.nn.functional.cosine_similarity(grad(x0 + t * (x1 - x0)), g0, dim=0).item()
                    for t in (0.25, 0.5, 0.75, 1.0)])
    assert C.roughness(net, x0, x1, torch.tensor([3]), steps=4).item() == pytest.approx(hand, abs=1e-6)


def test_random_direction_has_the_perturbations_length():
    x, d = torch.rand(5, 3, 4, 4), 0.1 * torch.randn(5, 3, 4, 4, generator=gen(7))
    xr = C.random_direction(x, d, seed=1)
    assert torch.allclose((xr - x).flatten(1).norm(dim=1), d.flatten(1).norm(dim=1), atol=1e-6)
    assert torch.equal(xr, C.random_direction(x, d, seed=1)) and not torch.equal(xr, C.random_direction(x, d, seed=2))


def test_parseval_for_the_unnormalised_dft():
    d = torch.randn(4, 3, 7, 6, generator=gen(8))
    n = C.spectrum_norms(d)
    assert torch.allclose(n["l2"] ** 2, 42 * d.double().flatten(1).pow(2).sum(1))
    assert torch.allclose(n["l1"], torch.from_numpy(np.abs(np.fft.fft2(d.double().numpy())).reshape(4, -1).sum(1)))


@pytest.mark.parametrize("ky,kx", [(3, 4), (0, 5), (5, 0), (2, -3), (4, 4), (-1, 6)])
def test_radial_and_angular_peaks_of_a_sinusoid(ky, kx):
    H, W = 16, 20
    m, n = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    wave = torch.sin(2 * math.pi * (ky * m / H + kx * n / W) + 0.3).view(1, 1, H, W).repeat(2, 3, 1, 1)
    rc, re = C.radial_energy(wave)
    ac, ae = C.angular_energy(wave, bins=180)
    assert rc[re.argmax()] == round(math.hypot(kx, ky)) and re.max() == pytest.approx(1.0)
    angle = math.degrees(math.atan2(ky, kx)) % 180
    assert ac[ae.argmax()] == pytest.approx(math.floor(angle) + 0.5) and ae.max() == pytest.approx(1.0)
    assert C.mean_radius(rc, re).item() == pytest.approx(round(math.hypot(kx, ky)))
    assert C.angular_uniformity(ae).item() == pytest.approx(0.0, abs=1e-9)


def test_marginals_are_distributions_per_example_and_white_noise_is_spread():
    d = torch.randn(64, 1, 32, 32, generator=gen(9))
    rc, re = C.radial_energy(d, per_example=True)
    ac, ae = C.angular_energy(d, per_example=True)
    assert re.shape == (64, len(rc)) and torch.allclose(re.sum(1), torch.ones(64, dtype=re.dtype))
    assert ae.shape == (64, 36) and torch.allclose(ae.sum(1), torch.ones(64, dtype=ae.dtype))
    assert C.angular_uniformity(ae.mean(0)) > 0.98  # white noise has no direction
    # a smooth (low-pass) perturbation has a smaller mean radius than white noise
    smooth = torch.nn.functional.avg_pool2d(d, 5, 1, 2)
    assert C.mean_radius(*C.radial_energy(smooth)) < C.mean_radius(rc, re.mean(0)) - 2
    with pytest.raises(ValueError, match="N, C, H, W"):
        C.energy_spectrum(torch.rand(3, 4, 4))


def test_class_predictor_is_the_input_gradient_of_its_logit():
    for model in (fully_connected(in_shape=(3, 6, 6), hidden=30, mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4)),
                  full_width_conv(in_shape=(3, 6, 6)), locally_connected(in_shape=(3, 6, 6), channels=4)):
        x = torch.rand(1, 3, 6, 6, requires_grad=True)
        for c in (0, 7):
            beta, norms = C.class_predictor(model, c)
            g = torch.autograd.grad(model(x)[0, c], x)[0][0]
            assert torch.allclose(beta, g, atol=1e-5)
            assert norms["l1"].item() == pytest.approx(C.spectrum_norms(g[None])["l1"].item(), rel=1e-4)


def test_paper_c_specs_follow_table_3_and_5():
    s = C.paper_c_spec("full-width conv", "synthetic-cifar10", alpha=10)
    assert s.arch == "full_width_conv" and s.arch_kwargs == {"depth": 1, "nonlinear": False, "alpha": 10.0}
    assert s.lr == 0.002 and s.weight_decay == 0.0 and s.schedule == "linear"
    assert C.paper_c_spec("fully connected", "x", nonlinear=True).arch_kwargs["hidden"] == 2700
    assert C.paper_c_spec("shallow resnet", "x").arch_kwargs["nonlinear"] is True
    assert C.paper_c_spec("resnet18", "x", width=8).arch_kwargs == {"width": 8}
    with pytest.raises(ValueError, match="shallow models only"):
        C.paper_c_spec("vgg19", "x", alpha=0.1)
    with pytest.raises(ValueError, match="unknown paper C model"):
        C.paper_c_spec("mlp", "x")


def test_minimal_perturbations_stay_in_the_ball_and_succeed_on_a_linear_model():
    model = fully_connected(in_shape=(1, 4, 4), hidden=16)
    x = torch.rand(20, 1, 4, 4, generator=gen(10))
    y = model(x).argmax(1)
    delta, ok = C.minimal_perturbations(model, x, y, eps=0.5, steps=30, batch_size=7)
    assert ok.any() and delta.abs().max() <= 0.5 + 1e-6 and ((x + delta) >= 0).all() and ((x + delta) <= 1).all()
    assert (model(x + delta).argmax(1)[ok] != y[ok]).all() and (delta[~ok] == 0).all()


def test_model_at_reads_initial_epoch_and_in_epoch_checkpoints(tmp_path):
    from advnb import zoo
    from advnb.train import build_from_spec
    spec = C.paper_c_spec("bounded conv", "synthetic-mnist", n_per_class=4, epochs=2, batch_size=10, seed=3,
                          eval_n_per_class=2, checkpoint_every=2)  # 40 images: 4 steps per epoch
    zoo.get(spec, cache_dir=tmp_path, show_progress=False)
    same = lambda a, b: all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))  # noqa: E731
    assert same(C.model_at(spec, 0, cache_dir=tmp_path), build_from_spec(spec))
    assert same(C.model_at(spec, 0.5, cache_dir=tmp_path), zoo.load_checkpoint(spec, step=2, cache_dir=tmp_path))
    assert same(C.model_at(spec, 2, cache_dir=tmp_path), zoo.load_epoch(spec, 2, cache_dir=tmp_path))
    assert not same(C.model_at(spec, 1.5, cache_dir=tmp_path), C.model_at(spec, 1, cache_dir=tmp_path))
    with pytest.raises(ValueError, match="kept every 2 steps"):
        C.model_at(spec, 0.25, cache_dir=tmp_path)
    hist = zoo.history(spec, cache_dir=tmp_path)
    assert C.best_epoch(spec, cache_dir=tmp_path) == max(hist, key=lambda r: (r["test_acc"], -r["epoch"]))["epoch"]


def test_best_epoch_is_the_first_of_equally_accurate_epochs(monkeypatch):
    from advnb import zoo
    accs = [0.5, 0.7, 0.6, 0.7]
    monkeypatch.setattr(zoo, "history", lambda spec, cache_dir=None: [{"epoch": e + 1, "test_acc": a} for e, a in enumerate(accs)])
    assert C.best_epoch(None) == 2  # epochs 2 and 4 tie at 0.7: the earlier one


def test_paper_c_models_leave_out_a_diverged_run(isolated_settings, monkeypatch, capsys):
    from advnb import zoo
    from advnb.train import NonFiniteLossError

    def boom(spec, **kw):
        raise NonFiniteLossError("loss is nan at epoch 1")
    monkeypatch.setattr(zoo, "get", boom)
    out = C.paper_c_models({"lc α=10": ("locally connected", False, 10.0)}, "synthetic-mnist")
    assert out["lc α=10"][1] is None and "diverged" in capsys.readouterr().out


def test_alpha_and_nearer_comparisons():
    rec = lambda r: {"n_success": len(r), "mean_radius": r}  # noqa: E731
    recs = {"a α=0.1": rec([1.0, 1.1, 0.9]), "a α=10": rec([3.0, 3.1, 2.9]), "b α=0.1": rec([1.0, 1.2]),
            "b α=10": rec([0.5, 0.7])}
    assert C.alpha_raises_frequency(recs, ["a"], [0.1, 1, 10])[0] is True
    assert C.alpha_raises_frequency(recs, ["a", "b"], [0.1, 1, 10])[0] is False
    assert C.alpha_raises_frequency(recs, ["a", "c"], [0.1, 10])[0] is None  # c is missing: inconclusive
    near = {"lc": rec([2.0, 2.0]), "fc": rec([2.5, 2.5]), "fw": rec([1.0, 1.0])}
    assert C.nearer(near, "lc", "fc", "fw")[0] is True and C.nearer(near, "lc", "fw", "fc")[0] is False
    assert C.nearer(near, "lc", "fc", "missing")[0] is None
    noisy = {"lc": rec([1.0, 3.0]), "fc": rec([1.5, 3.5]), "fw": rec([0.5, 2.5])}  # D = 0 within a wide noise band
    verdict, text = C.nearer(noisy, "lc", "fc", "fw")
    assert verdict is None and "D = 0.000 ± 2.449" in text  # SE² = (1 − (−1))²·1 + 1 + 1: the subject counts twice
    apart = {"lc": rec([2.0, 2.2]), "fc": rec([2.4, 2.6]), "fw": rec([0.9, 1.1])}
    assert C.nearer(apart, "lc", "fc", "fw")[0] is True and C.nearer(apart, "lc", "fw", "fc")[0] is False


def test_display_helpers_centre_the_spectrum_and_draw_what_there_is():
    import matplotlib.pyplot as plt
    H, W = 8, 10
    m, n = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    wave = torch.cos(2 * math.pi * (2 * m / H + 3 * n / W)).view(1, H, W)
    s = C.log_spectrum(wave)
    peaks = {tuple(i) for i in (s >= s.max() - 1e-9).nonzero().tolist()}
    assert peaks == {(H // 2 + 2, W // 2 + 3), (H // 2 - 2, W // 2 - 3)}  # ±k, with zero frequency at the centre
    assert C.mean_spectrum_image({"n_success": 0}).shape == (2, 2)
    rec = {"n_success": 3, "radial_centres": [0, 1], "radial": [0.5, 0.5]}
    fig, ax = plt.subplots()
    C.alpha_energy_panel({"lc α=0.1": rec, "lc α=10": {**rec, "n_success": 0}}, "lc", [0.1, 1, 10])(ax)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["α=0.1"]  # α=1 absent, α=10 never succeeded
    fig2, ax2 = plt.subplots()
    C.mean_bars({"a": [1.0, 3.0], "b": [], "c": [4.0]}, "y")(ax2)
    heights = [p.get_height() for p in ax2.patches]
    assert heights[0] == 2.0 and math.isnan(heights[1]) and heights[2] == 4.0
    plt.close("all")


def test_starts_equal_ends_higher_follows_its_two_conditions():
    holds, d0, d1, se1 = C.starts_equal_ends_higher([0.1, -0.1, 0.0], [1.0, 1.2, 0.8])
    assert holds is True and d0 == pytest.approx(0.0) and d1 == pytest.approx(1.0)
    assert se1 == pytest.approx(np.std([1.0, 1.2, 0.8], ddof=1) / np.sqrt(3))
    assert C.starts_equal_ends_higher([0.6, 0.6], [1.0, 1.2, 0.8])[0] is False  # not equal at first: 0.6 > 1.0 / 2
    assert C.starts_equal_ends_higher([0.0, 0.0], [1.0, -1.0, 0.3])[0] is None  # the end is within noise
    assert C.starts_equal_ends_higher([0.0, 0.0], [-1.0, -1.2, -0.8])[0] is False  # lower at the end


def test_band_share_and_the_middle_band_comparison():
    centres = torch.arange(6.0)
    e = torch.tensor([[0.0, 0.1, 0.2, 0.3, 0.4, 0.0], [2.0, 0.0, 0.0, 0.0, 0.0, 2.0]])
    assert C.band_share(centres, e, 1, 3).tolist() == pytest.approx([0.5, 0.0])  # bins 2 and 3; the second unnormalised
    assert C.middle_band(28, 32) == pytest.approx((14 / 3, 28 / 3))
    # two records whose per-example distributions put 60 % and 20 % (± a little) in bins 2..3
    rec = lambda shares: {"n_success": len(shares), "radial_centres": list(range(6)),  # noqa: E731
                          "radial_each": [[0, (1 - s) / 2, s / 2, s / 2, (1 - s) / 2, 0] for s in shares]}
    recs = {"r": rec([0.58, 0.6, 0.62]), "b": rec([0.19, 0.2, 0.21]), "n": rec([0.1, 0.7, 0.3]), "one": rec([0.9])}
    verdict, text = C.more_energy_in_band(recs, "r", "b", 1, 3)
    assert verdict is True and "difference +0.400" in text
    assert C.more_energy_in_band(recs, "b", "r", 1, 3)[0] is False
    assert C.more_energy_in_band(recs, "n", "b", 1, 3)[0] is None  # 0.167 apart with an SE of 0.176: within noise
    assert C.more_energy_in_band(recs, "r", "one", 1, 3)[0] is None  # one successful attack: not measurable


def test_relative_difference_within_a_margin_by_the_delta_method():
    a, b = np.array([10.0, 11.0, 9.0, 10.0]), np.array([20.0, 22.0, 18.0, 20.0])
    verdict, d, se = C.relative_difference_within(a, b, 0.6)
    # r = 0.5; SE = 0.5·sqrt(var_a/4/100 + var_b/4/400) with var_a = 2/3, var_b = 8/3
    assert d == pytest.approx(0.6 - 0.5) and se == pytest.approx(0.5 * np.sqrt((2 / 3) / 400 + (8 / 3) / 1600))
    assert verdict is True
    assert C.relative_difference_within(a, b, 0.15)[0] is False  # 50 % apart, far beyond 15 %
    assert C.relative_difference_within([1.0, 3.0], [1.0, 3.0], 0.1)[0] is None  # equal means, a wide band
    assert C.relative_difference_within([1.0], [1.0, 2.0], 0.1)[0] is None


def test_energy_above_a_radius_of_waves_and_of_a_power_law():
    m, n = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    wave = lambda ky, kx: torch.cos(2 * math.pi * (ky * m + kx * n) / 16)  # noqa: E731
    x = torch.stack([wave(3, 4) + 0.7, wave(0, 2) + wave(6, 8)])[:, None]  # k_r 5; k_r 2 and 10 with equal energy
    assert C.energy_above(x, [1, 4, 5, 9, 10]) == pytest.approx([1.0, 0.75, 0.25, 0.25, 0.0])
    kr, _ = C.frequency_polar(16, 16)
    assert C.power_law_energy_above(16, 16, [0, 3], exponent=0) == pytest.approx(
        [1.0, float((kr > 3).sum() / (kr > 0).sum())])  # a flat spectrum: the share of frequencies
    above = C.power_law_energy_above(16, 16, [1, 2, 4, 8])
    assert all(u > v for u, v in zip(above, above[1:]))


def test_early_time_is_the_first_analysed_time_at_an_eighth_of_training():
    assert C.early_time([0, 1, 2, 3, 5, 10, 20, 25, 40], 40) == 5
    assert C.early_time([0, 0.25, 0.5, 1, 2, 4, 6, 10], 10) == 2
    assert C.early_time([3, 0, 0.25, 1], 3) == 1  # unsorted times; 3/8 falls on 1
    assert C.early_time([0, 0.25], 8) is None and C.early_time([0], 0) is None
    assert C.early_time([0, 1, 2], 8) == 1  # exactly at 1/8
