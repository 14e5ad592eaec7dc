"""Peer agreement: advnb.attacks against torchattacks and foolbox on the same small trained model and batch.

Needs the optional `peers` extra (`pip install torchattacks foolbox`); skipped cleanly without it.
Robust accuracy must agree within 2 points (of 100) for FGSM, PGD-L∞, PGD-L2, CW-L2 and DeepFool; FGSM and PGD
without a random start are deterministic and must give the same adversarial images as the peers.
Minimum-norm attacks (CW-L2, DeepFool) are scored at an L2 budget ε: an example counts as broken when it
was correct and the attack found a misclassified point within ε; ε is set at the median norm our attack
needs, so that the comparison is not trivially 0 % or 100 %.
"""
import pytest
import torch
from torch import nn

from advnb.attacks import attack_success, cw_l2, deepfool, fgsm, perturbation_norm, pgd, salt_and_pepper
from attack_fixtures import small_cnn, stripes, train

pytestmark = pytest.mark.peers

TOL = 0.02  # 2 points of robust accuracy


class Shift(nn.Module):
    "Adds a constant to every logit: softmax, margins and every correct attack objective are unchanged."
    def __init__(self, m, c=100.0):
        super().__init__(); self.m, self.c = m, c

    def forward(self, x): return self.m(x) + self.c


@pytest.fixture(scope="module")
def setup():
    xtr, ytr = stripes(2000, size=16, noise=0.1, seed=0)
    x, y = stripes(200, size=16, noise=0.1, seed=1)
    m = train(small_cnn(widths=(16, 32), batchnorm=False), xtr, ytr)
    with torch.no_grad():
        clean = m(x).argmax(1) == y
    assert clean.float().mean() > 0.9
    return m, x, y, clean


def robust(m, x, y, clean, xa, eps=None):
    "Robust accuracy: correct on x and not successfully attacked (misclassified on xa, within eps in L2 if given)."
    return (clean & ~attack_success(m, x, xa, y, eps, "l2")).float().mean().item()


def ta():
    return pytest.importorskip("torchattacks")


def fb():
    return pytest.importorskip("foolbox")


def peer(run):
    "`run()`, or None when the library it needs is not installed."
    try:
        return run()
    except pytest.skip.Exception:
        return None


def fb_run(m, attack, x, y, eps):
    f = fb()
    fm = f.PyTorchModel(m, bounds=(0, 1))
    _, clipped, _ = attack(fm, x, y, epsilons=eps)
    return clipped


def report(name, ours, **peers):
    print(f"\n[peers] {name}: advnb {ours:.3f} " + " ".join(f"{k} {v:.3f}" for k, v in peers.items()))


def agree(name, ours, peers):
    """Skip when no peer ran (all None); else print and assert each peer's robust accuracy is within TOL of ours.
    `ours` is a number, or a dict by peer where each peer is compared with a different configuration of ours."""
    peers = {k: v for k, v in peers.items() if v is not None}
    if not peers: pytest.skip("neither torchattacks nor foolbox is installed")
    if isinstance(ours, dict):
        for k, v in peers.items():
            report(f"{name} vs {k}", ours[k], **{k: v})
    else:
        report(name, ours, **peers)
    for k, v in peers.items():
        o = ours[k] if isinstance(ours, dict) else ours
        assert abs(o - v) <= TOL, f"{name}: advnb {o:.3f}, {k} {v:.3f}"


def same_images(ours, advs, atol=1e-5):
    "Deterministic attacks: each peer's adversarial images equal ours (up to float rounding)."
    for k, xa in advs.items():
        if xa is not None:
            assert torch.allclose(xa, ours, atol=atol), f"{k}: max |Δ| = {(xa - ours).abs().max():.3g}"


def test_fgsm_agrees(setup):
    m, x, y, clean = setup
    eps = 0.1
    xa = fgsm(m, x, y, eps)
    advs = {"torchattacks": peer(lambda: ta().FGSM(m, eps=eps)(x, y)),
            "foolbox": peer(lambda: fb_run(m, fb().attacks.FGSM(), x, y, eps))}
    same_images(xa, advs)
    ours = robust(m, x, y, clean, xa)
    assert 0.05 < ours < 0.95  # a non-trivial operating point
    agree("FGSM", ours, {k: None if v is None else robust(m, x, y, clean, v) for k, v in advs.items()})


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("random_start", [True, False])
def test_pgd_agrees(setup, norm, random_start):
    m, x, y, clean = setup
    eps, steps = (0.08, 10) if norm == "linf" else (1.75, 10)
    alpha = eps / 4
    xa = pgd(m, x, y, eps, alpha, steps, norm=norm, random_start=random_start)

    def _ta():
        T = ta()
        atk = T.PGD(m, eps=eps, alpha=alpha, steps=steps, random_start=random_start) if norm == "linf" else \
            T.PGDL2(m, eps=eps, alpha=alpha, steps=steps, random_start=random_start)
        return atk(x, y)

    def _fb():
        A = fb().attacks
        atk = A.LinfPGD(abs_stepsize=alpha, steps=steps, random_start=random_start) if norm == "linf" else \
            A.L2PGD(abs_stepsize=alpha, steps=steps, random_start=random_start)
        return fb_run(m, atk, x, y, eps)

    advs = {"torchattacks": peer(_ta)}
    # Foolbox's L2 random start is uniform in the ball (radius ≈ ε in high dimension), ours and torchattacks'
    # a random direction at a uniform radius in [0, ε]: different attacks, so L2 is compared without it.
    if not (norm == "l2" and random_start):
        advs["foolbox"] = peer(_fb)
    if not random_start:
        same_images(xa, {k: v for k, v in advs.items() if not (norm == "l2" and k == "torchattacks")})
        if norm == "l2" and advs["torchattacks"] is not None:
            # torchattacks normalises the gradient of the batch-*mean* loss by ‖g‖ + 1e-10; for the most
            # confident examples ‖g‖ is ~1e-8 (the mean divides by 200), so its steps come out slightly
            # shorter (max |Δ| ≈ 7e-3 here, 36 of 200 rows); the same images otherwise
            same_images(xa, {"torchattacks": advs["torchattacks"]}, atol=1e-2)
    ours = robust(m, x, y, clean, xa)
    assert 0.05 < ours < 0.95
    agree(f"PGD-{norm} random_start={random_start}", ours,
          {k: None if v is None else robust(m, x, y, clean, v) for k, v in advs.items()})


def test_cw_l2_agrees(setup):
    m, x, y, clean = setup
    # torchattacks' CW has no binary search over c: compare it with ours at binary_search_steps=1 (both with
    # early abort). Its f takes max((1 − onehot)·Z) as the best other logit, which is 0 instead of the true
    # maximum whenever all other logits are negative (40 % of this batch); on the logits shifted by +100
    # (`Shift`, which changes no correct CW objective) its f is the true one, so we compare there. `Shift` is put
    # in eval mode: torchattacks gives the model back the mode it found, and `Shift` wraps the shared model.
    shifted = Shift(m).eval()
    ours1 = cw_l2(m, x, y, c=1.0, kappa=0.0, steps=100, lr=0.01, binary_search_steps=1)
    assert torch.equal(ours1, cw_l2(shifted, x, y, c=1.0, kappa=0.0, steps=100, lr=0.01, binary_search_steps=1))
    ours3 = cw_l2(m, x, y, c=1.0, kappa=0.0, steps=100, lr=0.01, binary_search_steps=3)
    n1 = perturbation_norm(ours1, x)
    eps = float(n1[torch.isfinite(n1) & (n1 > 0)].median())
    o1, o3 = robust(m, x, y, clean, ours1, eps), robust(m, x, y, clean, ours3, eps)
    assert 0.05 < o3 < 0.95  # (o1 is ≈ 0.5 by the choice of eps)
    fb_atk = lambda: fb().attacks.L2CarliniWagnerAttack(binary_search_steps=3, steps=100, stepsize=0.01,
                                                        confidence=0, initial_const=1.0, abort_early=True)
    peers = {"torchattacks": peer(lambda: robust(m, x, y, clean, ta().CW(shifted, c=1.0, kappa=0, steps=100,
                                                                         lr=0.01)(x, y), eps)),
             "foolbox": peer(lambda: robust(m, x, y, clean, fb_run(m, fb_atk(), x, y, None), eps))}
    assert not m.training
    agree(f"CW-L2 at eps={eps:.3f}", {"torchattacks": o1, "foolbox": o3}, peers)


def test_deepfool_agrees(setup):
    m, x, y, clean = setup
    ours = deepfool(m, x, y, norm="l2", overshoot=0.02, steps=50, num_classes=4)
    n = perturbation_norm(ours, x)
    eps = float(n[n > 0].median())
    o = robust(m, x, y, clean, ours, eps)  # ≈ 0.5 by the choice of eps
    atk = lambda: fb().attacks.L2DeepFoolAttack(steps=50, candidates=4, overshoot=0.02, loss="logits")
    agree(f"DeepFool-L2 at eps={eps:.3f}", o,
          {"torchattacks": peer(lambda: robust(m, x, y, clean, ta().DeepFool(m, steps=50, overshoot=0.02)(x, y), eps)),
           "foolbox": peer(lambda: robust(m, x, y, clean, fb_run(m, atk(), x, y, None), eps))})


def test_salt_and_pepper_equals_foolbox(setup):
    # Foolbox draws its noise with torch.rand from the global generator; seeded alike, the same schedule
    # (restart at p_min after every success) gives the very same images
    m, x, y, clean = setup
    x, y = x[:64], y[:64]
    ours = salt_and_pepper(m, x, y, steps=100, seed=3)

    def _fb():
        A = fb().attacks.SaltAndPepperNoiseAttack(steps=100, across_channels=True)
        state = torch.get_rng_state()
        torch.manual_seed(3)
        try:
            return fb_run(m, A, x, y, None)
        finally:
            torch.set_rng_state(state)

    theirs = peer(_fb)
    if theirs is None: pytest.skip("foolbox is not installed")
    assert torch.equal(ours, theirs)
    med = lambda z: float(perturbation_norm(z, x)[perturbation_norm(z, x) > 0].median())
    print(f"\n[peers] Salt&Pepper median L2: advnb {med(ours):.3f} foolbox {med(theirs):.3f}")
