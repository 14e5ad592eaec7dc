"""A small mutation run: plant plausible one-line bugs in the package, one at a time, and see whether the tests
that cover the module catch each one. Prints each mutant's fate and the kill rate per module.

    .venv/bin/python tools/mutate.py            # every mutant (a few minutes on 2 cores)
    .venv/bin/python tools/mutate.py attacks    # the mutants of one module

The mutants are hand-written (`MUTANTS` below), each the kind of slip a reviewer would expect to see: an
off-by-one epoch, a dropped term, a seed reused, a sign flipped. A mutant *survives* when the tests still pass
with it in place: then a test is missing. The package is restored after every mutant, also on Ctrl-C. Not part of
`make test` (it runs the test files once per mutant); `make mutate` runs it.
"""
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (module, tests, original text, mutated text, what the bug is)
MUTANTS = [
    ("gradient_attacks", "tests/test_attacks.py", "return self.x + (2 * u - 1) * self.eps", "return self.x + (2 * u - 1) * 2 * self.eps",
     "PGD's L-inf random start drawn from a 2-eps box"),
    ("gradient_attacks", "tests/test_attacks.py", "x_adv.add_(g.sign(), alpha=alpha)", "x_adv.add_(g.sign(), alpha=-alpha)",
     "PGD descends instead of ascending"),
    ("gradient_attacks", "tests/test_attacks.py", "return (x + eps * g.sign()).clamp_(0, 1).detach()",
     "return (x + eps * g.sign()).detach()", "FGSM leaves [0, 1]"),
    ("attacks", "tests/test_attacks.py", "xa = atk(model, xb, yb, seed=seed + i)", "xa = atk(model, xb, yb, seed=seed)",
     "evaluate seeds every batch alike"),
    ("attacks", "tests/test_attacks.py", "return _mean(rc[self.clean_correct]) if clean_first else _mean(rc)",
     "return _mean(rc)", "the clean-first robust accuracy ignores its option"),
    ("gradient_attacks", "tests/test_attacks.py", "ok &= norms <= float(eps) + 1e-6 * (1 + float(eps))", "pass",
     "success ignores the budget"),
    ("train", "tests/test_train.py", "lr_at(spec, epoch + i / steps_per_epoch)", "lr_at(spec, epoch + 1 + i / steps_per_epoch)",
     "learning-rate milestones one epoch early"),
    ("train", "tests/test_train.py", "total = total + lam * r", "total = total + r", "regulariser weight ignored"),
    ("train", "tests/test_train.py", "        cb.load_state_dict(state)", "        pass", "callback state not restored on resume"),
    ("train", "tests/test_train.py", "momentum=spec.momentum, weight_decay=spec.weight_decay)",
     "momentum=spec.momentum)", "weight decay dropped from SGD"),
    ("train", "tests/test_train.py", "roots = [train, get_objective(spec.objective), ARCHITECTURES.lookup(spec.arch),",
     "roots = [train, ARCHITECTURES.lookup(spec.arch),", "the key ignores the objective's code"),
    ("checkpoints", "tests/test_train.py tests/test_zoo.py", '    _set_rng_state(tensors, meta["rng"])', "    pass",
     "resume skips the random-number state"),
    ("checkpoints", "tests/test_train.py tests/test_zoo.py",
     'if meta.get("sha256") != _sha256(path):', "if False:", "the checkpoint hash is not verified"),
    ("papers/d_rlfat", "tests/test_rlfat.py", "loss = parts[\"ce\"] + lam * parts[\"kl\"]", "loss = parts[\"ce\"] + parts[\"kl\"]",
     "TRADES' lambda ignored"),
    ("papers/d_rlfat", "tests/test_rlfat.py", "loss = loss + eta * parts[\"rlft\"]", "loss = loss - eta * parts[\"rlft\"]",
     "the RLFT term's sign flipped"),
    ("papers/d_rlfat", "tests/test_rlfat.py", "generator=torch_generator(seed + RBS_SEED_OFFSET)) if rlfl",
     "generator=torch_generator(seed)) if rlfl", "RBS shares PGD's seed"),
    ("papers/a_frequency", "tests/test_frequency.py", "return radius_nyquist_units(h, w, centred=True, device=device) <= scale + 1e-9",
     "return radius_nyquist_units(h, w, centred=True, device=device) < scale", "a radius exactly at the scale counts as outside"),
    ("papers/a_frequency", "tests/test_frequency.py",
     "return (low_pass(x_a, scale) + high_pass(x_b, scale), low_pass(x_b, scale) + high_pass(x_a, scale))",
     "return (low_pass(x_a, scale) + high_pass(x_b, scale), low_pass(x_b, scale) + high_pass(x_b, scale))",
     "the swap keeps x_b's high frequencies in both"),
    ("fourier", "tests/test_fourier.py tests/test_frequency.py", "u = (torch.arange(h, device=device, dtype=dtype) - h // 2) / (h / 2)",
     "u = (torch.arange(h, device=device, dtype=dtype) - h // 2) / h", "the radius is not normalised to Nyquist"),
]


def run_mutant(module, tests, old, new):
    path = ROOT / "advnb" / f"{module}.py"
    src = path.read_text()
    if src.count(old) != 1:
        return "stale"  # the code moved on: the mutant needs rewriting
    try:
        path.write_text(src.replace(old, new))
        r = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests.split()],
                           cwd=ROOT, capture_output=True, text=True)
        return "killed" if r.returncode != 0 else "SURVIVED"
    finally:
        path.write_text(src)


def main(only):
    tally = defaultdict(lambda: [0, 0])
    for module, tests, old, new, what in MUTANTS:
        if only and module not in only:
            continue
        fate = run_mutant(module, tests, old, new)
        print(f"{fate:9} {module:20} {what}", flush=True)
        if fate != "stale":
            tally[module][0] += fate == "killed"
            tally[module][1] += 1
    print("\nkill rate per module:")
    for module, (k, n) in tally.items():
        print(f"  {module:20} {k}/{n}")
    return 0 if all(k == n for k, n in tally.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
