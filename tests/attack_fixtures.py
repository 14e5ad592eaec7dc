"""Data and a small trained CNN shared by tests/test_attacks.py and tests/test_attack_peers.py (a plain module,
imported as `from attack_fixtures import ...`: pytest's default `prepend` import mode puts tests/ on sys.path)."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from advnb.models import Normalize


def stripes(n, size=10, classes=4, seed=0, noise=0.08):
    "Gratings whose orientation is the class, plus Gaussian pixel noise of std `noise`; (n, 3, size, size) in [0, 1]."
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    ang = y.float() * math.pi / classes
    freq = 0.6 + 0.6 * torch.rand(n, generator=g)
    ph = 2 * math.pi * torch.rand(n, generator=g)
    r, c = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    wave = torch.sin(freq[:, None, None] * (torch.cos(ang)[:, None, None] * c + torch.sin(ang)[:, None, None] * r)
                     + ph[:, None, None])
    x = 0.5 + 0.3 * wave[:, None] * (0.4 + 0.6 * torch.rand(n, 3, 1, 1, generator=g))
    return (x + noise * torch.randn(n, 3, size, size, generator=g)).clamp(0, 1), y


def small_cnn(widths=(12, 24), batchnorm=True, classes=4, seed=0):
    """Normalize(0.5, 0.25) → conv(3→w0) [→ BatchNorm] → ReLU → conv(w0→w1, stride 2) → ReLU → 2×2 pool → linear,
    initialised from `torch.manual_seed(seed)`. With BatchNorm, `model[1]` is the first conv and `model[2]` the BN."""
    torch.manual_seed(seed)
    w0, w1 = widths
    return nn.Sequential(Normalize([0.5] * 3, [0.25] * 3), nn.Conv2d(3, w0, 3, padding=1),
                         *([nn.BatchNorm2d(w0)] if batchnorm else []), nn.ReLU(),
                         nn.Conv2d(w0, w1, 3, padding=1, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(4 * w1, classes))


def train(model, x, y, epochs=4, batch=64, lr=3e-3):
    "Adam on cross-entropy, in order (no shuffling); returns the model in eval mode with no parameter gradients."
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for i in range(0, len(x), batch):
            opt.zero_grad()
            F.cross_entropy(model(x[i:i + batch]), y[i:i + batch]).backward()
            opt.step()
    model.eval()
    for p in model.parameters():
        p.grad = None
    return model
