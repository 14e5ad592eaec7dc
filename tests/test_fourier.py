"""advnb.fourier: the DFT's frequencies in the papers' three units, against numpy's fftfreq and a sinusoid's peak."""
import math

import numpy as np
import pytest
import torch

from advnb.fourier import frequencies_cycles_per_image, radius_cycles_per_pixel, radius_nyquist_units


@pytest.mark.parametrize("h,w", [(8, 8), (7, 10), (28, 28)])
def test_every_unit_against_numpy_in_the_dft_order(h, w):
    fy, fx = np.fft.fftfreq(h), np.fft.fftfreq(w)
    expected = np.hypot(fy[:, None], fx[None, :])
    np.testing.assert_allclose(radius_cycles_per_pixel(h, w, centred=False, dtype=torch.float64).numpy(), expected)
    ky, kx = frequencies_cycles_per_image(h, w, centred=False)
    np.testing.assert_allclose(ky.numpy(), np.broadcast_to(fy[:, None] * h, (h, w)), atol=1e-12)
    np.testing.assert_allclose(kx.numpy(), np.broadcast_to(fx[None, :] * w, (h, w)), atol=1e-12)
    np.testing.assert_allclose(radius_nyquist_units(h, w, centred=False).numpy(),
                               np.hypot(2 * fy[:, None], 2 * fx[None, :]), atol=1e-12)


@pytest.mark.parametrize("h,w", [(8, 8), (7, 10)])
def test_centred_is_the_fftshift_of_the_dft_order(h, w):
    for grid in (lambda c: radius_cycles_per_pixel(h, w, centred=c), lambda c: radius_nyquist_units(h, w, centred=c),
                 lambda c: frequencies_cycles_per_image(h, w, centred=c)[1]):
        assert torch.equal(grid(True), torch.fft.fftshift(grid(False)))
    r = radius_nyquist_units(h, w, centred=True)
    assert float(r[h // 2, w // 2]) == 0.0  # the zero frequency in the middle


def test_a_sinusoids_energy_sits_at_its_frequency_in_every_unit():
    n, k = 16, (3, 4)  # cos(2π(3i + 4j)/16): cycles per image (3, 4), radius 5
    i = torch.arange(n, dtype=torch.float64)
    img = torch.cos(2 * math.pi * (k[0] * i[:, None] + k[1] * i[None, :]) / n)
    peak = torch.fft.fft2(img).abs() > 1
    ky, kx = frequencies_cycles_per_image(n, n, centred=False)
    assert sorted(zip(ky[peak].tolist(), kx[peak].tolist())) == [(-3.0, -4.0), (3.0, 4.0)]
    f = radius_cycles_per_pixel(n, n, centred=False, dtype=torch.float64)
    assert torch.allclose(f[peak], torch.tensor(5 / 16, dtype=torch.float64))
    assert torch.allclose(radius_nyquist_units(n, n, centred=False)[peak], torch.tensor(5 / 8, dtype=torch.float64))
