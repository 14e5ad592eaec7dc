"""Paper A §3.1: the centred-FFT filters, the frequency scale, the high-frequency swap and the spectrum helpers."""
import math

import pytest
import torch

from advnb.fourier import radius_nyquist_units
from advnb.papers.a_frequency import (FULL_SCALE, high_frequency_energy_fraction, high_pass, log_amplitude_spectrum,
                                     low_pass, low_pass_mask, region_mean, scale_grid, swap_high_frequency)
from advnb.papers.a_setup import paper_a_specs


def sinusoid(n: int, ku: int, kv: int, channels: int = 1, mean: float = 0.5, amp: float = 0.25) -> torch.Tensor:
    "A (1, C, n, n) image mean + amp·cos(2π(ku·i + kv·j)/n): a single frequency pair ±(ku, kv)."
    i = torch.arange(n, dtype=torch.float64)
    img = mean + amp * torch.cos(2 * math.pi * (ku * i[:, None] + kv * i[None, :]) / n)
    return img.expand(1, channels, n, n).clone().float()


@pytest.mark.parametrize("n,channels", [(32, 3), (28, 1)])
@pytest.mark.parametrize("ku,kv", [(4, 0), (0, 3), (5, 5), (2, 7)])
def test_sinusoid_passes_or_is_removed_at_its_radius(n, channels, ku, kv):
    x = sinusoid(n, ku, kv, channels)
    r = math.hypot(ku / (n / 2), kv / (n / 2))  # the documented normalised radius of frequency (ku, kv)
    const = torch.full_like(x, 0.5)
    # low-pass just above the sinusoid's radius keeps it; just below it leaves only the mean
    assert torch.allclose(low_pass(x, r + 0.01), x, atol=1e-5)
    assert torch.allclose(low_pass(x, r - 0.01), const, atol=1e-5)
    # high-pass is the complement
    assert torch.allclose(high_pass(x, r - 0.01), x - 0.5, atol=1e-5)
    assert torch.allclose(high_pass(x, r + 0.01), torch.zeros_like(x), atol=1e-5)
    # the energy-fraction helper agrees on which side of a threshold the sinusoid lies
    assert float(high_frequency_energy_fraction(x, r - 0.01)) == pytest.approx(1.0, abs=1e-6)
    assert float(high_frequency_energy_fraction(x, r + 0.01)) == pytest.approx(0.0, abs=1e-6)


def test_radius_mapping_axis_nyquist_is_one_and_corner_is_sqrt2():
    r = radius_nyquist_units(32, 32, centred=True)
    assert float(r[16, 16]) == 0.0  # DC sits at index n // 2 after fftshift
    assert float(r[0, 16]) == pytest.approx(1.0)  # Nyquist along one axis
    assert float(r[0, 0]) == pytest.approx(math.sqrt(2))  # the corner
    assert float(r.max()) == pytest.approx(FULL_SCALE)
    assert scale_grid(15)[-1] == pytest.approx(FULL_SCALE) and scale_grid(15)[0] == 0.0
    # at the paper's axis end 1.4 only the single corner coefficient of an even-size spectrum is still outside
    assert int((~low_pass_mask(32, 32, 1.4)).sum()) == 1


@pytest.mark.parametrize("shape", [(4, 3, 32, 32), (2, 1, 28, 28), (1, 2, 7, 9)])
def test_full_scale_low_pass_is_identity_and_low_plus_high_is_identity(shape):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=g)
    assert torch.allclose(low_pass(x, FULL_SCALE), x, atol=1e-6)
    assert torch.allclose(high_pass(x, FULL_SCALE), torch.zeros_like(x), atol=1e-6)
    for s in (0.0, 0.13, 0.5, 0.77, 1.0, 1.3):
        lo, hi = low_pass(x, s), high_pass(x, s)
        assert lo.shape == x.shape and lo.dtype == x.dtype
        assert torch.allclose(lo + hi, x, atol=1e-6)
    # scale 0 keeps the DC only: every channel becomes its mean
    assert torch.allclose(low_pass(x, 0.0), x.mean(dim=(-2, -1), keepdim=True).expand_as(x), atol=1e-6)
    # the filter is monotone: more scale never removes energy that a smaller scale kept
    e = [float(low_pass(x, s).pow(2).sum()) for s in scale_grid(8)]
    assert all(a <= b + 1e-6 for a, b in zip(e, e[1:]))


def test_swap_exchanges_high_frequencies():
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(3, 3, 16, 16, generator=g), torch.rand(3, 3, 16, 16, generator=g)
    ma, mb = swap_high_frequency(a, b, FULL_SCALE)  # nothing above the corners: no swap
    assert torch.allclose(ma, a, atol=1e-6) and torch.allclose(mb, b, atol=1e-6)
    ma, mb = swap_high_frequency(a, b, 0.0)  # everything but the mean is swapped
    mean = lambda t: t.mean(dim=(-2, -1), keepdim=True)
    assert torch.allclose(ma, b - mean(b) + mean(a), atol=1e-6)
    assert torch.allclose(mb, a - mean(a) + mean(b), atol=1e-6)
    for s in (0.3, 0.9):
        ma, mb = swap_high_frequency(a, b, s)
        assert torch.allclose(ma + mb, a + b, atol=1e-6)  # the parts are exchanged, not lost
        assert torch.allclose(low_pass(ma, s), low_pass(a, s), atol=1e-6)
        assert torch.allclose(high_pass(ma, s), high_pass(b, s), atol=1e-6)
        # a low sinusoid in a and a high one in b end up together in the merged image
    lo_img, hi_img = sinusoid(16, 2, 0), sinusoid(16, 0, 7)
    m, _ = swap_high_frequency(lo_img, hi_img, 0.5)
    assert torch.allclose(m, lo_img + hi_img - 0.5, atol=1e-5)
    with pytest.raises(ValueError):
        swap_high_frequency(a, b[:, :1], 0.5)


def test_log_amplitude_spectrum_and_region_mean():
    x = sinusoid(16, 0, 6, channels=3, amp=0.25)
    S = log_amplitude_spectrum(torch.cat([x, x]))
    assert S.shape == (16, 16)
    assert float(S[8, 8]) == pytest.approx(math.log(0.5 * 256), rel=1e-5)  # DC: mean · number of pixels
    assert float(S[8, 8 + 6]) == pytest.approx(math.log(0.25 * 256 / 2), rel=1e-5)  # each of ±(0, 6) gets half
    assert float(S[0, 0]) < -15  # an empty coefficient sits at log(1e-8)
    # adding a high-frequency sinusoid raises the mean of the outer ring and leaves the inner one
    # (on a noise image, so that no coefficient is empty and log-amplitudes are not round-off)
    z = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y = z + sinusoid(16, 7, 7, channels=3, mean=0.0, amp=0.1)
    d = log_amplitude_spectrum(y) - log_amplitude_spectrum(z)
    assert region_mean(d, 0.5) > 0 and region_mean(d, 0.0, 0.5) == pytest.approx(0.0, abs=1e-4)
    assert float(d.abs().max()) == pytest.approx(float(d[8 + 7, 8 + 7]))  # the change sits at ±(7, 7)


def test_paper_a_specs_default_to_the_papers_setting():
    specs = paper_a_specs()
    std, adv = specs["STD"], specs["ADV"]
    assert (std.arch, std.dataset, std.arch_kwargs) == ("resnet18", "cifar10", {"width": 64})
    assert (std.lr, std.momentum, std.weight_decay, std.epochs, std.milestones) == (0.1, 0.9, 5e-4, 100, (50, 75))
    assert std.objective == "ce" and std.n_per_class is None and std.optimizer == "sgd"
    assert adv.objective == "pgd_at"
    assert adv.objective_kwargs == {"eps": pytest.approx(8 / 255), "alpha": pytest.approx(2 / 255), "steps": 10}
    assert adv.replace(objective="ce", objective_kwargs={}) == std  # nothing else differs
    assert std.key != adv.key
    # the notebooks' smoke parameters reproduce the same spec whichever notebook builds it
    a = paper_a_specs(dataset="synthetic-cifar10", width=8, n_per_class=30, epochs=2, milestones=[], lr=0.05)
    b = paper_a_specs(dataset="synthetic-cifar10", width=8, n_per_class=30, epochs=2, milestones=(), lr=0.05)
    assert a["ADV"].key == b["ADV"].key


def test_log_amplitude_excess_is_the_per_image_region_mean_of_the_spectrum_difference():
    import torch
    from advnb.papers.a_frequency import log_amplitude_excess, log_amplitude_spectrum, region_mean
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 16, 16, generator=g) * 0.5 + 0.25
    checker = ((torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2 * 2 - 1).float() * 0.05
    adv = x + checker  # energy added at the highest frequency (the corner)
    per_image = log_amplitude_excess(adv, x)
    assert per_image.shape == (6,)
    assert float(log_amplitude_excess(x, x).abs().max()) == 0.0
    assert float(per_image.mean()) == pytest.approx(region_mean(log_amplitude_spectrum(adv) - log_amplitude_spectrum(x), 0.5), abs=1e-4)
    assert float(log_amplitude_excess(adv, x, lo=1.0).min()) > 0  # the corner r > 1 holds the checkerboard


def test_low_pass_drop_is_the_peak_before_the_last_scale_minus_the_last():
    from advnb.papers.a_frequency import low_pass_drop
    assert low_pass_drop([0.1, 0.45, 0.3, 0.0], [0.0, 0.5, 1.0, FULL_SCALE]) == pytest.approx((0.45, 0.45, 0.5, 0.0))
    assert low_pass_drop([0.2, 0.1, 0.9], [0.0, 1.0, FULL_SCALE]) == pytest.approx((-0.7, 0.2, 0.0, 0.9))  # no peak: negative


def test_paper_a_pgd_starts_at_a_random_point_drawn_from_its_seed():
    from advnb.papers.a_setup import adversarial
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
    x, y = torch.rand(6, 3, 8, 8), torch.arange(6)
    a0, a0_again, a1 = (adversarial(model, x, y, steps=1, seed=s, batch_size=4) for s in (0, 0, 1))
    assert torch.equal(a0, a0_again) and not torch.equal(a0, a1)  # one PGD step from a start only the seed decides
