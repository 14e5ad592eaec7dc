"""Paper A §3.2: the local-consistency statistics of perturbations."""
import pytest
import torch

from advnb.papers.a_spatial import at_bound_fraction, local_consistency, neighbour_correlation


def test_neighbour_correlation_known_patterns():
    n = 16
    i = torch.arange(n, dtype=torch.float32)
    ramp = (i[:, None] + i[None, :]).expand(2, 3, n, n).clone()  # smooth: neighbours nearly equal
    checker = ((-1.0) ** (i[:, None] + i[None, :])).expand(1, 1, n, n).clone()  # every neighbour flips sign
    noise = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert neighbour_correlation(ramp).shape == (2,)
    assert float(neighbour_correlation(ramp).min()) > 0.95
    assert float(neighbour_correlation(checker)) == pytest.approx(-1.0, abs=1e-6)
    assert abs(float(neighbour_correlation(noise).mean())) < 0.05
    # blocks of 4×4 constant values: 3 of 4 neighbour pairs equal, the rest independent -> about 0.75
    blocks = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)).repeat_interleave(4, 2).repeat_interleave(4, 3)
    assert float(neighbour_correlation(blocks).mean()) == pytest.approx(0.75, abs=0.1)
    # a constant perturbation has no correlation to speak of: 0, not NaN
    assert float(neighbour_correlation(torch.full((1, 3, 8, 8), 0.03))) == 0.0
    # invariant to the perturbation's scale and sign
    assert torch.allclose(neighbour_correlation(-3 * noise), neighbour_correlation(noise), atol=1e-5)


def test_bound_share_and_bundle():
    eps = 8 / 255
    d = torch.zeros(2, 1, 4, 4)
    d[0, 0, :2] = eps
    d[0, 0, 2, 0] = -eps
    d[1] = eps / 2
    assert at_bound_fraction(d, eps).tolist() == pytest.approx([9 / 16, 0.0])
    s = local_consistency(d, eps)
    assert set(s) == {"neighbour correlation", "high-frequency energy share (r>0.5)", "share at the bound"}
    assert all(v.shape == (2,) for v in s.values())
    sign_noise = eps * torch.sign(torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2)))
    hf = local_consistency(sign_noise, eps)["high-frequency energy share (r>0.5)"]
    assert float(hf.mean()) == pytest.approx(0.80, abs=0.05)  # white noise: the ring's share of the plane


def test_masked_neighbour_correlation_counts_only_pairs_inside_the_mask():
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(6, 2, 16, 16, generator=g)
    smooth = torch.arange(16.0)[None, None, None, :].expand(6, 2, 16, 16)
    everywhere = torch.ones_like(noise, dtype=torch.bool)
    assert torch.allclose(neighbour_correlation(noise, everywhere), neighbour_correlation(noise), atol=1e-6)
    # smooth ramp on the left half, white noise on the right: the mask picks either half's behaviour
    d = torch.where(torch.arange(16) < 8, smooth, noise)
    left = (torch.arange(16) < 8).expand_as(d)
    assert float(neighbour_correlation(d, left).min()) > 0.95
    assert abs(float(neighbour_correlation(d, ~left).mean())) < 0.1
    # a pair counts only when both pixels are inside: a checkerboard mask has no such pair -> NaN
    checker = ((torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2 == 0).expand_as(d)
    assert torch.isnan(neighbour_correlation(d, checker)).all()


def test_interior_mask_and_the_interior_statistic():
    from advnb.papers.a_spatial import interior_mask
    x = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0]).reshape(1, 1, 1, 5)
    assert interior_mask(x).flatten().tolist() == [False, False, True, False, False]
    d = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    s = local_consistency(d, 0.1, x=torch.full((2, 1, 8, 8), 0.5))
    assert torch.allclose(s["neighbour correlation, interior pixels"], s["neighbour correlation"], atol=1e-6)
    assert "neighbour correlation, interior pixels" not in local_consistency(d, 0.1)


def test_a_channel_without_a_pair_in_the_mask_is_left_out_of_the_mean():
    d = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(5))
    mask = torch.zeros_like(d, dtype=torch.bool)
    mask[:, 1] = True  # channel 0 has no pixel inside, channel 1 every pixel
    assert torch.allclose(neighbour_correlation(d, mask), neighbour_correlation(d[:, 1:]), atol=1e-6)
