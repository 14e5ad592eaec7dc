"""Paper A §4: Figure 4's worked example and the per-layer max/total local-response differences."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from advnb.papers.a_local_response import (FIG4_KERNELS, FIG4_PERTURBATIONS, PAPER_A_LAYERS, figure4_example,
                                          last_layer_gap_excess, local_response_difference, local_response_differences,
                                          per_image_statistic, recovered_fraction, response_differences, success_gaps,
                                          summarize, transfer_ratio)


def test_figure4_numbers_come_out_exactly():
    t = figure4_example()  # units of 1/255
    assert t.loc["locally-disordered", "disordered kernel"] == pytest.approx(79, abs=1e-9)
    assert t.loc["locally-disordered", "smooth kernel"] == pytest.approx(1 / 9, abs=1e-9)
    assert round(t.loc["locally-disordered", "smooth kernel"], 2) == 0.11  # as printed in the paper
    assert t.loc["locally-consistent", "disordered kernel"] == pytest.approx(8, abs=1e-9)
    assert t.loc["locally-consistent", "smooth kernel"] == pytest.approx(8, abs=1e-9)
    # the two kernels have the same mean, as the paper sets them up
    assert float(FIG4_KERNELS["disordered kernel"].sum()) == pytest.approx(float(FIG4_KERNELS["smooth kernel"].sum()))
    # the two perturbations stay within the 8/255 bound
    assert all(float(p.abs().max()) <= 8 / 255 + 1e-12 for p in FIG4_PERTURBATIONS.values())


def test_local_response_difference_is_the_difference_of_responses():
    g = torch.Generator().manual_seed(0)
    x, d, m = (torch.rand(6, 7, generator=g, dtype=torch.float64), torch.rand(6, 7, generator=g, dtype=torch.float64) - 0.5,
               torch.randn(3, 3, generator=g, dtype=torch.float64))
    conv = lambda a: F.conv2d(a.double()[None, None], m.double()[None, None])[0, 0]
    delta = local_response_difference(d, m)
    assert delta.shape == (4, 5)
    assert torch.allclose(delta, conv(x + d) - conv(x), atol=1e-12)  # Δ = x̂⊗m − x⊗m = x_d⊗m
    # by hand at one position: the sum of the elementwise products c_ij · m_ij
    assert float(delta[1, 2]) == pytest.approx(float((d[1:4, 2:5].double() * m.double()).sum()), abs=1e-12)


class TinyNet(nn.Module):
    "conv (1→2 channels, 2×2, fixed weights) → ReLU → sum-pool readout."
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 2, bias=True)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[[[1., -1.], [0., 2.]]], [[[0.5, 0.5], [0.5, 0.5]]]]))
            self.conv.bias.copy_(torch.tensor([0.1, -1.0]))
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.conv(x)).sum(dim=(2, 3))


def _hand_conv(img, w, b):
    "Valid 2×2 cross-correlation with loops, in NumPy."
    H, W = img.shape
    out = np.zeros((H - 1, W - 1))
    for i in range(H - 1):
        for j in range(W - 1):
            out[i, j] = (img[i:i + 2, j:j + 2] * w).sum() + b
    return out


def test_differences_match_a_hand_computation_on_a_tiny_net():
    net = TinyNet()  # qualified submodule names work as feature names for any nn.Module
    x = torch.tensor([[[[0.2, 0.4, 0.1], [0.9, 0.0, 0.3], [0.5, 0.7, 0.6]]],
                      [[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]]])
    delta = torch.tensor([[[[0.1, -0.1, 0.1], [-0.1, 0.1, -0.1], [0.1, -0.1, 0.1]]],
                          [[[0.05, 0.05, 0.05], [0.05, 0.05, 0.05], [0.05, 0.05, 0.05]]]])
    d = local_response_differences(net, x, x + delta, names=["conv", "act"])
    W = net.conv.weight.detach().numpy()
    B = net.conv.bias.detach().numpy()
    for n in range(2):
        a, b = x[n, 0].numpy().astype(float), (x + delta)[n, 0].numpy().astype(float)
        conv_a = np.stack([_hand_conv(a, W[c, 0], B[c]) for c in range(2)])
        conv_b = np.stack([_hand_conv(b, W[c, 0], B[c]) for c in range(2)])
        for name, fa, fb in (("conv", conv_a, conv_b), ("act", np.maximum(conv_a, 0), np.maximum(conv_b, 0))):
            diff = np.abs(fb - fa)
            assert float(d[name]["max"][n]) == pytest.approx(diff.max(), abs=1e-6)
            assert float(d[name]["total"][n]) == pytest.approx(diff.sum(), abs=1e-6)
    # image 0: channel 0 conv of the ±0.1 checkerboard: every 2×2 patch gives ±0.1·(1+1+2)·... e.g. by hand
    # patch [[.1,-.1],[-.1,.1]]·[[1,-1],[0,2]] = .1+.1+0+.2 = 0.4; the averaging channel sees 0 (balanced patch)
    assert float(d["conv"]["max"][0]) == pytest.approx(0.4, abs=1e-6)
    assert float(d["conv"]["total"][0]) == pytest.approx(4 * 0.4 + 0.0, abs=1e-6)
    # image 1: a constant +0.05 shift gives 0.05·(1−1+0+2) = 0.1 and 0.05·2 = 0.1 at every position: 8 × 0.1
    assert float(d["conv"]["total"][1]) == pytest.approx(0.8, abs=1e-6)


def test_identical_inputs_give_zero_and_mode_is_restored():
    from advnb.models import build_model
    torch.manual_seed(0)
    m = build_model("resnet18", num_classes=10, in_shape=(3, 32, 32), mean=(0.5,) * 3, std=(0.25,) * 3, width=4)
    m.train()
    x = torch.rand(5, 3, 32, 32) * 0.9
    d = local_response_differences(m, x, x.clone(), batch_size=2)
    assert m.training  # restored
    assert list(d) == list(PAPER_A_LAYERS)
    for v in d.values():
        assert v["max"].shape == (5,) and float(v["max"].abs().max()) == 0 and float(v["total"].abs().max()) == 0
    d2 = local_response_differences(m, x, x + 0.03)
    assert all(float(v["total"].min()) > 0 for v in d2.values())
    # Conv1 is linear in the input: a constant shift of 0.03 is 0.03/0.25 = 0.12 after the normalisation, so the
    # difference at output channel c, position (i, j) is 0.12 times the sum of the kernel taps (over the input
    # channels) that fall inside the image (3×3 kernel, zero padding 1). Summed/maxed by hand:
    w = m.conv1.weight.detach().double().sum(1).numpy()  # (C, 3, 3)
    by_hand = np.zeros((w.shape[0], 32, 32))
    for i in range(32):
        for j in range(32):
            rows = [k for k in range(3) if 0 <= i + k - 1 < 32]
            cols = [k for k in range(3) if 0 <= j + k - 1 < 32]
            by_hand[:, i, j] = 0.12 * w[:, rows][:, :, cols].sum((1, 2))
    by_hand = np.abs(by_hand)
    assert d2["Conv1"]["total"].numpy() == pytest.approx(np.full(5, by_hand.sum()), rel=1e-4)
    assert d2["Conv1"]["max"].numpy() == pytest.approx(np.full(5, by_hand.max()), rel=1e-4)


def test_response_differences_and_summarize():
    fa = {"L": torch.zeros(3, 2, 2, 2)}
    fb = {"L": torch.zeros(3, 2, 2, 2)}
    fb["L"][0, 0, 0, 0] = 2.0
    fb["L"][1] = -0.5
    d = response_differences(fa, fb)
    assert d["L"]["max"].tolist() == [2.0, 0.5, 0.0]
    assert d["L"]["total"].tolist() == [2.0, 4.0, 0.0]
    s = summarize(d)
    assert s.loc["Max", "L"] == pytest.approx(2.5 / 3) and s.loc["Total", "L"] == pytest.approx(2.0)
    s = summarize(d, torch.tensor([True, True, False]))
    assert s.loc["Max", "L"] == pytest.approx(1.25) and s.loc["Total", "L"] == pytest.approx(3.0)
    assert np.isnan(summarize(d, torch.tensor([False, False, False])).loc["Max", "L"])
    with pytest.raises(ValueError):  # TinyNet has none of the default layers Conv1 … Layer4
        local_response_differences(TinyNet(), torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 3, 3))


def test_the_helpers_that_decide_the_43_claims_give_hand_computed_answers():
    T = np.array([[1.0, 2.0, 4.0], [1.0, 2.0, 2.0], [1.0, 1.0, 1.0], [1.0, 1.0, 3.0]])
    fooled = np.array([True, True, False, False])
    # successful means (1, 2, 3), failed means (1, 1, 2): gaps 0, 1, 0.5
    np.testing.assert_allclose(success_gaps(T, fooled), [0.0, 1.0, 0.5])
    assert last_layer_gap_excess(T, fooled) == pytest.approx(0.5 - 1.0)  # Layer4 below the largest other gap
    assert last_layer_gap_excess(T[:, [0, 2, 1]], fooled) == pytest.approx(1.0 - 0.5)  # Layer4's gap the largest
    assert np.isnan(success_gaps(T, np.ones(4, bool))).all() and np.isnan(success_gaps(T, np.zeros(4, bool))).all()
    assert transfer_ratio(np.array([2.0, 4.0]), np.array([1.0, 2.0])) == pytest.approx(0.5)
    clean, robust, transferred = np.array([1, 1, 1, 1, 0]), np.array([0, 0, 0, 1, 0]), np.array([1, 1, 0, 1, 0])
    assert recovered_fraction(clean, robust, transferred) == pytest.approx((0.6 - 0.2) / (0.8 - 0.2))
    assert np.isnan(recovered_fraction(clean, clean, transferred))  # PGD takes nothing away: no fraction


def test_per_image_statistic_is_images_by_layers_in_the_layers_order():
    diffs = {"Conv1": {"max": torch.tensor([1.0, 2.0]), "total": torch.tensor([3.0, 4.0])},
             "Layer0": {"max": torch.tensor([5.0, 6.0]), "total": torch.tensor([7.0, 8.0])}}
    np.testing.assert_array_equal(per_image_statistic(diffs, "total"), [[3.0, 7.0], [4.0, 8.0]])


def test_the_statistics_of_the_44_claims_give_hand_computed_answers():
    from advnb.papers.a_weight_decay import mean_layer_rho, overfitting_decrease, robust_overfitting, spearman_rho
    assert spearman_rho([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(1 - 6 * 4 / (5 * 24))
    assert spearman_rho([1, 2, 3], [1, 1, 2]) == pytest.approx(np.corrcoef([1, 2, 3], [1.5, 1.5, 3])[0, 1])  # tied ranks
    assert np.isnan(spearman_rho([1, 2, 3], [4, 4, 4]))
    assert spearman_rho([1, 2, 3, 4], [1, 10, 100, 1000]) == pytest.approx(1.0)  # monotone: 1 (Pearson's is 0.82)
    R = np.array([[[1, 1, 1], [1, 0, 0], [1, 1, 0]], [[1, 1, 1], [1, 1, 0], [0, 1, 0]]])  # 2 images, 3 runs, 3 epochs
    np.testing.assert_allclose(robust_overfitting(R), [0.0, 1.0, 1.0])
    assert overfitting_decrease(R, [5e-4, 1e-4, 3e-4]) == pytest.approx(0.5)  # [1, 1, 0] on the ranks: slope −0.5
    M = np.stack([np.tile([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]], (1, 1))] * 4)  # 4 images, 3 runs, 2 layers
    assert mean_layer_rho(M, [1e-4, 3e-4, 5e-4]) == pytest.approx(0.0)  # +1 at one layer, −1 at the other
