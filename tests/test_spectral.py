"""Paper E's measurements: every singular value of a convolution (FFT method) against the SVD of its explicit operator
matrix, spectral normalisation, margins, target probabilities, loss variation, robust accuracy on clean-correct examples."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from advnb.papers import e_spectral as S
from advnb.train import fgsm_at_objective


def circular_conv_matrix(weight: torch.Tensor, n: int) -> torch.Tensor:
    "The explicit (c_out·n², c_in·n²) matrix of the stride-1 circular cross-correlation with `weight` (nn.Conv2d's)."
    c_out, c_in, kh, kw = weight.shape
    basis = torch.eye(c_in * n * n, dtype=torch.float64).reshape(-1, c_in, n, n)
    # circular padding so that output pixel (i, j) sees input pixels (i + a − p, j + b − q) mod n
    pt, pl = (kh - 1) // 2, (kw - 1) // 2
    padded = F.pad(basis, (pl, kw - 1 - pl, pt, kh - 1 - pt), mode="circular")
    out = F.conv2d(padded, weight.double())
    assert out.shape[-2:] == (n, n)
    return out.reshape(c_in * n * n, -1).T


@pytest.mark.parametrize("c_out,c_in,k,n", [(1, 1, 3, 5), (3, 2, 3, 4), (2, 3, 1, 4), (4, 4, 3, 6), (2, 5, 2, 3)])
def test_conv_singular_values_equal_the_svd_of_the_explicit_operator(c_out, c_in, k, n):
    w = torch.randn(c_out, c_in, k, k, generator=torch.Generator().manual_seed(c_out * 10 + c_in), dtype=torch.float64)
    ours = S.conv_singular_values(w, n).double().flatten().sort().values
    explicit = torch.linalg.svdvals(circular_conv_matrix(w, n))
    explicit = explicit.sort().values[-len(ours):]  # the operator has c_out·n² or c_in·n² of them; the rest are 0
    assert ours.shape == (n * n * min(c_out, c_in),)
    assert torch.allclose(ours, explicit, rtol=1e-5, atol=1e-5)


def strided_conv_matrix(weight: torch.Tensor, n: int, stride: int, padding: int) -> torch.Tensor:
    "The explicit matrix of nn.Conv2d's cross-correlation with `stride` and `padding`, the padding circular."
    c_in = weight.shape[1]
    basis = torch.eye(c_in * n * n, dtype=torch.float64).reshape(-1, c_in, n, n)
    out = F.conv2d(F.pad(basis, (padding,) * 4, mode="circular"), weight.double(), stride=stride)
    assert out.shape[-2:] == (n // stride, n // stride)
    return out.reshape(c_in * n * n, -1).T


@pytest.mark.parametrize("c_out,c_in,k,padding,stride,n", [
    (3, 2, 3, 1, 2, 8), (2, 3, 1, 0, 2, 8), (9, 2, 3, 1, 2, 4), (5, 1, 3, 1, 2, 6), (2, 2, 3, 1, 1, 6), (4, 4, 3, 1, 2, 4)])
def test_strided_conv_singular_values_equal_the_svd_of_the_explicit_operator(c_out, c_in, k, padding, stride, n):
    w = torch.randn(c_out, c_in, k, k, generator=torch.Generator().manual_seed(c_out + 7 * c_in + k), dtype=torch.float64)
    ours = S.conv_singular_values(w, n, stride, padding).double()
    m = n // stride
    assert ours.shape == (m * m, min(c_out, stride * stride * c_in))
    explicit = torch.linalg.svdvals(strided_conv_matrix(w, n, stride, padding)).sort().values[-ours.numel():]
    assert torch.allclose(ours.flatten().sort().values, explicit, rtol=1e-5, atol=1e-5)


def test_a_stride_2_layer_is_not_its_stride_1_operator():
    "The stride-1 operator at the input size, subsampled, has other singular values (what the layers reported before)."
    w = torch.randn(4, 4, 3, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert not torch.allclose(S.conv_singular_values(w, 8, stride=2, padding=1).max(), S.conv_singular_values(w, 8).max())


def sedghi_clip_reference(weight: torch.Tensor, n: int, beta: float) -> torch.Tensor:
    "Sedghi et al.'s Clip_OperatorNorm_NP (conv-sv), written from its definition, in PyTorch's (c_out, c_in, k, k) layout."
    k = weight.shape[-1]
    f = weight.permute(2, 3, 1, 0).numpy()  # theirs: (k, k, c_in, c_out)
    t = np.fft.fft2(f, (n, n), axes=[0, 1])
    u, d, v = np.linalg.svd(t, full_matrices=False)
    back = np.fft.ifft2(u @ (np.minimum(d, beta)[..., None] * v), axes=[0, 1]).real[:k, :k]
    return torch.from_numpy(back).permute(3, 2, 0, 1)


@pytest.mark.parametrize("c_out,c_in", [(3, 2), (2, 3), (4, 4)])
def test_clip_agrees_with_sedghi_et_al(c_out, c_in):
    w = torch.randn(c_out, c_in, 3, 3, generator=torch.Generator().manual_seed(c_out * c_in), dtype=torch.float64)
    beta = 0.5 * float(S.conv_singular_values(w, 6).max())
    assert torch.allclose(S.clip_conv_singular_values(w, 6, beta), sedghi_clip_reference(w, 6, beta), atol=1e-10)


def test_clip_known_answers():
    g = torch.Generator().manual_seed(5)
    w1 = torch.randn(3, 2, 1, 1, generator=g, dtype=torch.float64)  # a 1×1 kernel: the cut to the support loses nothing
    sv = torch.linalg.svdvals(w1[:, :, 0, 0])
    clipped = S.clip_conv_singular_values(w1, 4, float(sv[1]), stride=2)
    assert torch.allclose(torch.linalg.svdvals(clipped[:, :, 0, 0]), sv.clamp(max=sv[1]), atol=1e-12)
    w3 = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64)
    top = float(S.conv_singular_values(w3, 8, 2, 1).max())
    assert torch.allclose(S.clip_conv_singular_values(w3, 8, 2 * top, 2, 1), w3, atol=1e-12)  # nothing above β: unchanged
    half = S.clip_conv_singular_values(w3, 8, top / 2, 2, 1)
    assert top / 2 <= float(S.conv_singular_values(half, 8, 2, 1).max()) < top  # clipped, bar the cut to 3×3 taps
    lin = torch.randn(5, 3, generator=g, dtype=torch.float64)
    assert torch.allclose(torch.linalg.svdvals(S.clip_linear_singular_values(lin, 1.0)),
                          torch.linalg.svdvals(lin).clamp(max=1.0), atol=1e-12)


def test_clip_mode_bounds_a_strided_network():
    torch.manual_seed(4)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    x = torch.zeros(1, 2, 8, 8)
    before = {k: float(v.max()) for k, v in S.layer_singular_values(net, x).items()}
    S.SpectralNormalization(0.3).apply(net, x)  # the default mode: Sedghi et al.'s clip
    after = {k: float(v.max()) for k, v in S.layer_singular_values(net, x).items()}
    assert after["3"] == pytest.approx(0.3, rel=1e-6) and before["3"] > 0.3
    assert after["0"] < before["0"]
    with pytest.raises(ValueError, match="no dilation"):
        S.layer_singular_values(nn.Sequential(nn.Conv2d(1, 1, 3, dilation=2, padding=2)), torch.zeros(1, 1, 8, 8))


def test_conv_singular_values_name_bad_inputs():
    with pytest.raises(ValueError, match="n ≥ the kernel and divisible by the stride"):
        S.conv_singular_values(torch.randn(1, 1, 5, 5), 3)
    with pytest.raises(ValueError, match="divisible by the stride"):
        S.conv_singular_values(torch.randn(1, 1, 3, 3), 7, stride=2)
    with pytest.raises(ValueError, match="c_out, c_in, kh, kw"):
        S.conv_singular_values(torch.randn(3, 3), 3)


def test_layer_singular_values_use_each_convolutions_input_size():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.MaxPool2d(2), nn.Conv2d(2, 3, 3, padding=1), nn.Flatten(),
                        nn.Linear(3 * 4 * 4, 5))
    sv = S.layer_singular_values(net, torch.zeros(2, 1, 8, 8))
    assert sv["0"].numel() == 8 * 8 * 1 and sv["2"].numel() == 4 * 4 * 2 and sv["4"].numel() == 5
    assert torch.allclose(sv["4"].double(), torch.linalg.svdvals(net[4].weight.double()), atol=1e-6)
    stats = S.singular_value_stats(net, torch.zeros(1, 1, 8, 8))
    assert list(stats.index) == ["0", "2", "4"] and stats.loc["2", "max"] == pytest.approx(float(sv["2"].max()), rel=1e-6)


@pytest.mark.parametrize("sigma", [0.5, 2.0])
def test_spectral_normalization_sets_every_largest_singular_value(sigma):
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.Flatten(), nn.Linear(4 * 6 * 6, 7))
    x = torch.zeros(1, 3, 6, 6)
    S.SpectralNormalization(sigma, mode="set").apply(net, x)
    for name, v in S.layer_singular_values(net, x).items():
        assert float(v.max()) == pytest.approx(sigma, rel=1e-5), name
    with pytest.raises(ValueError, match="sigma > 0"):
        S.SpectralNormalization(0.0)
    with pytest.raises(ValueError, match="mode in"):
        S.SpectralNormalization(1.0, mode="clamp")


def test_clipped_spectral_normalization_only_scales_down():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))
    with torch.no_grad():
        net[1].weight.mul_(10.0); net[3].weight.mul_(0.01)
    x = torch.zeros(1, 6)
    small = float(S.layer_singular_values(net, x)["3"].max())
    S.SpectralNormalization(1.0, mode="cap").apply(net, x)
    after = S.layer_singular_values(net, x)
    assert float(after["1"].max()) == pytest.approx(1.0, rel=1e-5) and float(after["3"].max()) == pytest.approx(small, rel=1e-6)


def test_margins_and_target_probability_by_hand():
    z = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0], [2.0, 2.0, -1.0]])
    y = torch.tensor([0, 2, 1])
    assert S.margins(z, y).tolist() == [1.0, -4.0, 0.0]
    p = S.target_probability(z, y)
    assert p[2].item() == pytest.approx(torch.exp(torch.tensor(2.0)) / (2 * torch.exp(torch.tensor(2.0)) + torch.exp(torch.tensor(-1.0))))


def test_loss_variation_is_the_loss_increase_of_pgd_inside_the_ball():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.rand(6, 1, 4, 4) * 0.5 + 0.25, torch.tensor([0, 1, 2, 0, 1, 2])
    d = S.loss_variation(model, x, y, eps=0.1, alpha=0.05, steps=5)
    assert d.shape == (6,) and (d >= -1e-6).all() and (d > 0).any()
    assert torch.allclose(S.loss_variation(model, x, y, eps=1e-12, alpha=1e-12, steps=1), torch.zeros(6), atol=1e-5)


def test_robust_accuracy_counts_only_clean_correct_examples():
    from advnb.attacks import evaluate
    # a model that gets example 0 right, example 1 wrong; the "attack" flips nothing
    model = nn.Sequential(nn.Flatten(), nn.Identity())
    x, y = torch.tensor([[[[1.0, 0.0]]], [[[1.0, 0.0]]]]), torch.tensor([0, 1])
    ev = evaluate(model, x, y, {"none": lambda m, xb, yb, seed=0: xb})
    assert ev.robust_accuracy("none") == 0.5 and ev.robust_accuracy("none", clean_first=True) == 1.0


def test_spectral_normalization_as_a_training_callback(isolated_settings):
    from advnb.train import TrainSpec, train
    spec = TrainSpec(arch="simple_cnn", dataset="synthetic-mnist", arch_kwargs={"width": 2, "hidden": 8}, n_per_class=4,
                     epochs=1, batch_size=20, callbacks=(("spectral_normalization", {"sigma": 0.7, "mode": "set"}),))
    model, _ = train(spec, isolated_settings / "run", show_progress=False)
    for name, v in S.layer_singular_values(model, torch.zeros(1, 1, 28, 28)).items():
        assert float(v.max()) == pytest.approx(0.7, rel=1e-4), name


def test_paper_e_specs_one_model_per_strength():
    specs = S.paper_e_specs("synthetic-cifar10", eps_unit=0.01, step_units=2.0, steps=7, sn=1.5)
    assert list(specs) == [0, 4, 8, 16]
    assert specs[0].objective == "ce" and specs[16].objective == "pgd_at"
    assert specs[16].objective_kwargs == {"eps": pytest.approx(0.16), "alpha": pytest.approx(0.02), "steps": 7}
    assert specs[4].callbacks == (("spectral_normalization", {"sigma": 1.5, "mode": "clip"}),)
    f = S.paper_e_specs("synthetic-cifar10", strengths=[8], attack="fgsm")
    assert f[8].objective == "fgsm_at" and f[8].objective_kwargs == {"eps": pytest.approx(8 / 255)}
    with pytest.raises(ValueError, match="'pgd' or 'fgsm'"):
        S.paper_e_specs("synthetic-cifar10", attack="cw")


def test_fgsm_at_objective_is_the_cross_entropy_at_the_fgsm_example():
    from advnb.attacks import fgsm
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.rand(5, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1])
    loss, logits = fgsm_at_objective(model, x, y, eps=0.05)  # a foundation objective (advnb.train)
    xa = fgsm(model, x, y, eps=0.05)
    assert torch.allclose(logits, model(xa)) and loss.item() == pytest.approx(F.cross_entropy(model(xa), y).item())


def test_generalisation_record_and_gap_se():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    tr = (torch.rand(20, 1, 4, 4), torch.randint(0, 3, (20,)))
    te = (torch.rand(10, 1, 4, 4), torch.randint(0, 3, (10,)))
    r = S.generalisation_record(model, tr, te, eps=0.05, alpha=0.02, steps=2)
    with torch.no_grad():
        assert r["train loss"] == pytest.approx(F.cross_entropy(model(tr[0]), tr[1]).item(), rel=1e-5)
        err = (model(te[0]).argmax(1) != te[1]).float().mean().item()
    assert r["test error"] == pytest.approx(err) and r["test accuracy"] == pytest.approx(1 - err)
    assert r["loss gap"] == pytest.approx(r["test loss"] - r["train loss"]) and len(r["test margins"]) == 10
    tl, te_l = torch.tensor(r["train losses"]), torch.tensor(r["test losses"])
    assert S.gap_se(r) == pytest.approx(float((tl.var() / 20 + te_l.var() / 10).sqrt()), rel=1e-6)


def test_paper_e_data_gives_the_images_the_models_trained_on():
    from advnb.data import take
    from advnb.train import train_data
    spec = S.paper_e_specs("synthetic-mnist", n_per_class=3, seed=2)[0]
    (xtr, ytr), (xte, yte) = S.paper_e_data("synthetic-mnist", n_per_class=3, n_test=20, seed=2)
    x_seen, y_seen = take(train_data(spec), len(train_data(spec)))
    assert torch.equal(xtr, x_seen) and torch.equal(ytr, y_seen) and len(ytr) == 30
    assert len(yte) == 20 and torch.bincount(yte, minlength=10).min() == 2  # seeded, class-balanced
    assert S.paper_e_label("cifar10", "fixup_resnet", {"depth": 110}, "paper") == "cifar10, fixup_resnet-110, paper scale"


def test_error_gap_change_and_its_binomial_se():
    def rec(train_err, test_err, n_train, n_test):
        return {"train error": train_err, "test error": test_err, "error gap": test_err - train_err,
                "train losses": [0.0] * n_train, "test losses": [0.0] * n_test}
    before, after = rec(0.1, 0.3, 100, 50), rec(0.2, 0.3, 100, 50)
    d, se = S.error_gap_change(before, after)
    assert d == pytest.approx(-0.1)
    v = 0.1 * 0.9 / 100 + 0.3 * 0.7 / 50 + 0.2 * 0.8 / 100 + 0.3 * 0.7 / 50
    assert se == pytest.approx(v ** 0.5)


def test_rms_about_zero_measures_concentration_around_zero_not_the_mean():
    rms, se = S.rms_about_zero([3.0, -4.0, 0.0, 5.0, -0.0])
    assert rms == pytest.approx(10 ** 0.5)
    v2 = torch.tensor([9.0, 16.0, 0.0, 25.0, 0.0], dtype=torch.float64)
    assert se == pytest.approx(float(v2.std()) / (2 * 10 ** 0.5 * 5 ** 0.5))
    # a distribution shifted away from zero is less concentrated around zero, though its spread about the mean is equal
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    assert S.rms_about_zero(x + 3)[0] > S.rms_about_zero(x)[0] + 2
    assert S.rms_about_zero([0.0, 0.0]) == (0.0, 0.0)


def test_std_change_sums_and_magnitude_larger_by_hand():
    d, i = S.std_change_sums([1.0, 0.5, 0.2, 0.3], [0.4, 0.7, 0.2, 0.1])
    assert (d, i) == (pytest.approx(0.8), pytest.approx(0.2))  # falls 0.6 and 0.2; rises 0.2; one layer unchanged
    assert S.magnitude_larger(3.7511, 0.4372) and S.magnitude_larger(4.7465, 0.4372)  # B.2's own ratios, 8.6 and 10.9
    assert S.magnitude_larger(3.17, 1.0) and not S.magnitude_larger(3.16, 1.0)  # the boundary: √10 ≈ 3.1623
    assert not S.magnitude_larger(0.6, 0.2)  # ratio 3


def test_each_layer_is_measured_at_the_size_of_its_input():
    "A stride-2 layer's operator acts on its 8×8 input (16 frequencies of 2×2 phases), the next layer's on 4×4."
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1))
    sv = S.layer_singular_values(net, torch.zeros(1, 2, 8, 8))
    assert sv["0"].shape == (16 * 3,) and sv["2"].shape == (16 * 3,)
    explicit = torch.linalg.svdvals(strided_conv_matrix(net[0].weight.detach(), 8, 2, 1)).sort().values[-48:]
    assert torch.allclose(sv["0"].double().sort().values, explicit, rtol=1e-5, atol=1e-5)


def test_accuracy_rises_by_the_one_rule():
    from advnb.papers.e_spectral import accuracy_rises
    n = {0: 400, 4: 400, 8: 400}
    assert accuracy_rises({0: 0.1, 4: 0.3, 8: 0.5}, n)[0] is True
    assert accuracy_rises({0: 0.1, 4: 0.6, 8: 0.3}, n)[0] is False   # the span rises, the step 4 -> 8 falls beyond noise
    assert accuracy_rises({0: 0.5, 4: 0.45, 8: 0.3}, n)[0] is False  # the span falls
    assert accuracy_rises({0: 0.30, 8: 0.32}, {0: 100, 8: 100})[0] is None
    verdict, stats = accuracy_rises({8: 0.5, 0: 0.1, 4: 0.3}, n)  # strengths in any order: sorted
    assert verdict is True and list(stats) == ["span", "0->4", "4->8"] and stats["span"][0] == 0.4
    se = (0.5 * 0.5 / 400 + 0.1 * 0.9 / 400) ** 0.5
    assert stats["span"][1] == round(se, 4)


def test_autoattack_record_on_a_linear_model():
    "Robust accuracy among the clean-correct examples of the first n, AutoAttack's equal to the exact answer."
    from advnb.autoattack import linear_robust_set
    from advnb.papers.e_spectral import autoattack_record
    torch.manual_seed(0)
    layer = torch.nn.Linear(3 * 8 * 8, 10)
    model = torch.nn.Sequential(torch.nn.Flatten(), layer)
    x = torch.rand(70, 3, 8, 8)
    with torch.no_grad():
        pred = model(x).argmax(1)
    y = pred.roll(1).where(torch.arange(70) % 4 == 0, pred)
    rec = autoattack_record(model, (x, y), eps=0.02, alpha=0.005, steps=5, n=60)
    correct = pred[:60] == y[:60]
    exact = linear_robust_set(layer, x[:60], y[:60], 0.02)
    assert rec["n"] == 60 and rec["clean-correct"] == int(correct.sum())
    assert rec["AutoAttack accuracy"] == pytest.approx(float(exact[correct].float().mean()))
    assert rec["PGD accuracy"] >= rec["AutoAttack accuracy"]


def test_trained_is_the_regimes_rule_on_clean_training_accuracy():
    assert S.trained({"train error": 0.5}) and not S.trained({"train error": 0.51})  # accuracy 0.5 passes, 0.49 does not
    assert S.trained({"train error": 0.75}, min_accuracy=0.2) and not S.trained({"train error": 0.9}, min_accuracy=0.2)
