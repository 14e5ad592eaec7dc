"""A small mutation run: plant plausible one-line bugs in the package, one at a time, and see whether the tests
that cover the module catch each one. Prints each mutant's fate and the kill rate per module.

    .venv/bin/python tools/mutate.py            # every mutant (a few minutes on 2 cores)
    .venv/bin/python tools/mutate.py attacks    # the mutants of one module

The mutants are hand-written (`MUTANTS` below), each the kind of slip a reviewer would expect to see: an
off-by-one epoch, a dropped term, a seed reused, a sign flipped. A mutant *survives* when the tests still pass
with it in place: then a test is missing. Each set of test files must first pass with no mutant planted, or no kill
would mean anything. The package is restored after every mutant, also on Ctrl-C. Not part of
`make test` (it runs the test files once per mutant); `make mutate` runs it.
"""
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# the site's tests, and the fault tests that check what it shows of damaged or half-written outputs (the whole fault
# file takes minutes; pytest takes single tests by their node ids)
SITE_TESTS = " ".join(["tests/test_site.py"] + [f"tests/test_faults.py::test_{t}" for t in (
    "leftovers_of_killed_writes_are_removed_and_never_shown", "a_sidecar_cannot_make_a_link_to_anything_but_a_notebook")])

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
    ("attacks", "tests/test_attacks.py", "return _mean(robust_correct[self.clean_correct]) if clean_first else _mean(robust_correct)",
     "return _mean(robust_correct)", "the clean-first robust accuracy ignores its option"),
    ("gradient_attacks", "tests/test_attacks.py", "ok &= norms <= float(eps) + 1e-6 * (1 + float(eps))", "pass",
     "success ignores the budget"),
    ("train", "tests/test_train.py", "step, lr = epoch * steps_per_epoch + i, lr_at(spec, epoch + i / steps_per_epoch)",
     "step, lr = epoch * steps_per_epoch + i, lr_at(spec, epoch + 1 + i / steps_per_epoch)",
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
    # claims: the statistics every verdict rests on
    ("claims", "tests/test_claims.py", "p2 * (1 - p2) / max(n2, 1)", "p2 * (1 - p2) / max(n1, 1)",
     "the second accuracy's SE uses the first one's sample size"),
    ("claims", "tests/test_claims.py", "accuracy_difference_se(p1, n, p2) ** 2 for p1, n, p2 in pairs)) / len(pairs)",
     "accuracy_difference_se(p1, n, p2) ** 2 for p1, n, p2 in pairs)) / math.sqrt(len(pairs))",
     "the SE of a mean of k differences divided by sqrt(k), not k"),
    ("claims", "tests/test_claims.py", "return float(d.mean()), float(d.std(ddof=1) / len(d) ** 0.5)",
     "return float(d.mean()), float(d.std(ddof=0) / len(d) ** 0.5)", "the paired SE uses the biased variance"),
    ("claims", "tests/test_claims.py", "b.var(ddof=1) / len(b)) ** 0.5)", "b.var(ddof=1) / len(a)) ** 0.5)",
     "the unpaired SE divides the second sample's variance by the first one's size"),
    ("claims", "tests/test_claims.py", "    bound = z * se + ROUNDING", "    bound = se + ROUNDING",
     "the rule's bound ignores z (1 SE, not 2)"),
    ("claims", "tests/test_claims.py", "return exceeds(accuracy - 1 / num_classes,", "return exceeds(accuracy - 1 / (num_classes + 1),",
     "chance is 1/(K+1)"),
    ("claims", "tests/test_claims.py", '    return float(vals.std(ddof=1)) if len(vals) > 1 else float("nan")',
     '    return float(vals.std(ddof=1) / len(vals) ** 0.5) if len(vals) > 1 else float("nan")',
     "the bootstrap reports the SE of its own mean, not the statistic's SE"),
    ("claims", "tests/test_claims.py", "draws = [rng.integers(0, len(g[0]), size=(n_boot, len(g[0]))) for g in groups]",
     "draws = [np.random.default_rng(seed).integers(0, len(g[0]), size=(n_boot, len(g[0]))) for g in groups]",
     "every group of the bootstrap resampled with the same draws"),
    ("claims", "tests/test_claims.py", 'return "holds in none" if all(v is not True for v in verdicts) else "mixed"',
     'return "holds in none" if all(v is False for v in verdicts) else "mixed"', "inconclusive seeds make a verdict mixed"),
    # data: subsets, augmentation and their seeds
    ("data", "tests/test_data.py", "return keys % m, (keys // m) % m, (keys // (m * m)) % 2 == 1",
     "return keys % m, keys % m, (keys // (m * m)) % 2 == 1", "the vertical offset is the horizontal one"),
    ("data", "tests/test_data.py", 'generator=torch_generator(derive_seed("advnb.subset", int(seed), c)))',
     'generator=torch_generator(derive_seed("advnb.subset", int(seed))))', "every class of a subset drawn by one permutation"),
    ("data", "tests/test_data.py", "keys = torch.randint(0, _KEY_HIGH, (self.n,), generator=self.generator)",
     "keys = torch.randint(0, _KEY_HIGH, (self.n,), generator=torch_generator(0))",
     "every epoch augments every image alike"),
    ("data", "tests/test_data.py", "    x = ds.x[:n].float().div_(255)", "    x = ds.x[:n].float().div_(256)",
     "take's images fall short of 1"),
    # core: settings, seeds and the code fingerprint behind every model key
    ("core", "tests/test_core.py", "    for cell in obj.__closure__ or ():", "    for cell in ():",
     "the fingerprint ignores what a closure holds"),
    ("core", "tests/test_core.py", "    for code in _code_objects(obj.__code__):", "    for code in [obj.__code__]:",
     "the fingerprint ignores code in comprehensions, lambdas and inner functions"),
    ("core", "tests/test_core.py tests/test_train.py", "    np.random.seed(seed % 2**32)", "    np.random.seed(0)",
     "numpy is seeded alike whatever the seed"),
    ("core", "tests/test_core.py", '    if threads == 0 and environ.get("SLURM_CPUS_PER_TASK", "").isdigit():',
     "    if threads == 0 and False:", "a Slurm job's CPUs are ignored"),
    ("core", "tests/test_core.py", "_COLLECTIONS = (tuple, list, set, frozenset)", "_COLLECTIONS = (tuple,)",
     "the fingerprint ignores functions held in a list or a set"),
    ("core", "tests/test_core.py", "return [type(v)] if v is not None and not inspect.ismodule(v) and _is_project_code(type(v)) else []",
     "return []", "the fingerprint ignores the class of a callable object"),
    # zoo: resume is a resume
    ("zoo", "tests/test_zoo.py", "    model, history = train(spec, d, device=device, resume=True, show_progress=show_progress)",
     "    model, history = train(spec, d, device=device, resume=False, show_progress=show_progress)",
     "an interrupted run restarts from epoch 0"),
    # runner and project: what runs, with which parameters, on how many threads
    ("workflow/project", "tests/test_runner.py", "        return isinstance(value, int) and not isinstance(value, bool)",
     "        return isinstance(value, int)", "a boolean accepted where the notebook declares an integer"),
    ("workflow/runner", "tests/test_runner.py", "    return max(1, cores // jobs)", "    return max(1, cores)",
     "every kernel under --jobs takes every core"),
    ("workflow/runner", "tests/test_runner.py", 'and st.get("fingerprint") == fp \\', "and True \\",
     "a notebook whose parameters changed is skipped"),
    ("workflow/runner", "tests/test_runner.py",
     "    ratio = sum(spent.values()) / sum(estimates[s] for s in spent) if spent else 1.0",
     "    ratio = sum(estimates[s] for s in spent) / sum(spent.values()) if spent else 1.0",
     "the time left corrected the wrong way"),
    ("workflow/runner", "tests/test_runner.py",
     "    spent |= {s: running[s] for s in overruns(estimates, finished, running) if estimates.get(s)}",
     "    spent |= {}", "a notebook past its estimate leaves the time left as planned"),
    ("workflow/runner", "tests/test_runner.py",
     "            if s not in finished and estimates.get(s) is not None and t > estimates[s] * ratio}",
     "            if s not in finished and estimates.get(s) and t > estimates[s] * ratio}",
     "a notebook estimated at 0 is never named as past its estimate"),
    ("workflow/runner", "tests/test_runner.py", '''        expected = sum(seen) / len(seen) if seen else e * ratio''',
     '''        expected = e * ratio''', "a render's finished seeds are not what its other seeds take"),
    ("workflow/runner", "tests/test_runner.py", '''            if seedless(f.stem) == seedless(stem)]''',
     '''            if f.stem.startswith(stem.partition("@")[0])]''', "another variant's time taken for a render's other seeds"),
    ("workflow/runner", "tests/test_runner.py", '                and (reports / f"{stem}.html").exists() and isinstance(written, list) \\',
     "                and isinstance(written, list) \\", "a notebook whose rendered page is gone is skipped"),
    ("workflow/runner", "tests/test_runner.py", '                and all(isinstance(f, str) and (reports / f).exists() for f in written):',
     '                and all(isinstance(f, str) for f in written):', "a notebook whose figure or table is gone is skipped"),
    ("workflow/project", "tests/test_runner.py", "        return isinstance(value, (int, float)) and not isinstance(value, bool)",
     "        return isinstance(value, (int, float))", "a boolean accepted where the notebook declares a float"),
    ("workflow/project", "tests/test_runner.py", "        return isinstance(value, (list, tuple))", "        return True",
     "anything accepted where the notebook declares a list"),
    # paper B: the penalty, its losses and the measurements its claims rest on
    ("papers/b_smooth_kernels", "tests/test_smooth_kernels.py tests/test_b_selection.py",
     "pairs += [(w[..., 1:, 1:], w[..., :-1, :-1]), (w[..., 1:, :-1], w[..., :-1, 1:])]",
     "pairs += [(w[..., 1:, 1:], w[..., :-1, :-1]), (w[..., 1:, :-1], w[..., :-1, :-1])]",
     "R0's anti-diagonal pairs pair an entry with its diagonal neighbour"),
    ("papers/b_smooth_kernels", "tests/test_smooth_kernels.py tests/test_b_selection.py",
     "z = kernel_roughness(weight, neighbourhood, per_kernel=True) - weight.pow(2).sum((-2, -1))",
     "z = kernel_roughness(weight, neighbourhood, per_kernel=True) + weight.pow(2).sum((-2, -1))",
     "R adds the kernel's energy instead of subtracting it"),
    ("papers/b_smooth_kernels", "tests/test_smooth_kernels.py tests/test_b_selection.py",
     "kl = F.kl_div(F.log_softmax(logits_clean, 1), F.log_softmax(logits_adv, 1), reduction=\"batchmean\", log_target=True)",
     "kl = F.kl_div(F.log_softmax(logits_adv, 1), F.log_softmax(logits_clean, 1), reduction=\"batchmean\", log_target=True)",
     "the L loss's KL taken the other way round"),
    ("papers/b_smooth_kernels", "tests/test_smooth_kernels.py tests/test_b_selection.py",
     "return {\"l0\": (d.abs() > 1e-6).any(1).sum(1).float(),", "return {\"l0\": (d.abs() > 1e-6).sum((1, 2)).float(),",
     "l0 counts changed channels, not changed pixels"),
    ("papers/b_smooth_kernels", "tests/test_smooth_kernels.py tests/test_b_selection.py",
     "    return c & ~(f & (s <= bound))", "    return c & ~(f & (s < bound))",
     "an attack exactly at the bound does not count"),
    ("papers/b_smooth_kernels", "tests/test_smooth_kernels.py tests/test_b_selection.py",
     "ms_e = ((d - rows[:, None] - cols[None] + m) ** 2).sum() / ((r - 1) * (c - 1))",
     "ms_e = ((d - rows[:, None] - cols[None] + m) ** 2).sum() / (r * c)", "the residual mean square's degrees of freedom"),
    ("papers/b_smooth_kernels", "tests/test_smooth_kernels.py tests/test_b_selection.py",
     "order = sorted(scores, key=lambda k: -math.inf if k is None else k)",
     "order = sorted(scores, key=lambda k: -math.inf if k is None else k, reverse=True)",
     "ties in the selection go to the larger λ"),
    ("papers/b_smooth_kernels", "tests/test_smooth_kernels.py tests/test_b_selection.py",
     "a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)", "a, b = a, b",
     "the image correlation is not centred"),
    # paper C: the measurements of the perturbations' spectra
    ("papers/c_implicit_fourier", "tests/test_implicit_fourier.py",
     "scale = delta.flatten(1).norm(dim=1) / r.flatten(1).norm(dim=1).clamp_min(1e-12)",
     "scale = delta.norm() / r.norm().clamp_min(1e-12)", "one random-direction scale for the batch, not one per example"),
    ("papers/c_implicit_fourier", "tests/test_implicit_fourier.py", "    bins = kr.round().long()", "    bins = kr.floor().long()",
     "radial bins floor the radius instead of rounding it"),
    ("papers/c_implicit_fourier", "tests/test_implicit_fourier.py",
     "e = _marginal(energy_spectrum(delta) * (kr > 0), idx, bins + 1, per_example)[..., :bins]",
     "e = _marginal(energy_spectrum(delta), idx, bins + 1, per_example)[..., :bins]",
     "the angular distribution keeps the DC term's share"),
    ("papers/c_implicit_fourier", "tests/test_implicit_fourier.py",
     "return -(p * p.clamp_min(1e-300).log()).sum(-1) / math.log(energy.shape[-1])",
     "return -(p * p.clamp_min(1e-300).log()).sum(-1) / math.log(energy.shape[-1] + 1)",
     "uniformity normalised by the wrong number of bins"),
    ("papers/c_implicit_fourier", "tests/test_implicit_fourier.py",
     "return max(hist, key=lambda r: (r[\"test_acc\"], -r[\"epoch\"]))[\"epoch\"]",
     "return max(hist, key=lambda r: (r[\"test_acc\"], r[\"epoch\"]))[\"epoch\"]", "the best epoch is the last of equals"),
    ("papers/c_implicit_fourier", "tests/test_implicit_fourier.py",
     "    return out if per_example else out.mean(0)", "    return out.mean(0) if per_example else out",
     "per-example distributions averaged, and the average per example"),
    # paper E: the operators' singular values, the clip and the statistics
    ("papers/e_spectral", "tests/test_spectral.py",
     "            phases[:, :, p, q, da % m, db % m] += weight[:, :, a, b].detach().double()",
     "            phases[:, :, q, p, da % m, db % m] += weight[:, :, a, b].detach().double()",
     "a strided operator's phases transposed"),
    ("papers/e_spectral", "tests/test_spectral.py", "            sizes.setdefault(name, inputs[0].shape[-1])",
     "            sizes.setdefault(name, output.shape[-1])", "each convolution measured at its output size"),
    ("papers/e_spectral", "tests/test_spectral.py",
     "other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float(\"-inf\")).amax(1)",
     "other = logits.amax(1)", "the margin's rival includes the true class"),
    ("papers/e_spectral", "tests/test_spectral.py", "return rms, float(v2.std() / (2 * rms * len(v2) ** 0.5)) if rms > 0 else 0.0",
     "return rms, float(v2.std() / (rms * len(v2) ** 0.5)) if rms > 0 else 0.0", "the RMS's delta-method SE doubled"),
    ("papers/e_spectral", "tests/test_spectral.py", "return float(d[d > 0].sum()), float(-d[d < 0].sum())",
     "return float(d[d > 0].sum()), float(d[d < 0].sum())", "the summed increase is negative"),
    ("papers/e_spectral", "tests/test_spectral.py", "    return bool(a >= 10 ** 0.5 * b)", "    return bool(a >= 10 * b)",
     "an order of magnitude by rounding taken as a factor of 10"),
    # attack basics, minimum-norm and query attacks
    ("attack_basics", "tests/test_attacks.py::test_looks_like_probabilities_by_hand", " and ((o > 0) & (o < 1)).any()", "",
     "one-hot rows taken for probabilities"),
    ("attack_basics", "tests/test_attacks.py", '    if norm == "l1": return f.abs().sum(1)', '    if norm == "l1": return f.sum(1)',
     "the l1 norm forgets the absolute value"),
    ("attack_basics", "tests/test_attacks.py", 'return logits.scatter(1, y[:, None], float("-inf")).amax(1)',
     "return logits.scatter(1, y[:, None], 0.0).amax(1)", "the true class masked with 0, not −∞"),
    ("attack_basics", "tests/test_attacks.py", "    return m.clamp(min=-kappa)", "    return m.clamp(min=kappa)",
     "C&W's confidence clamp has the wrong sign"),
    ("attack_basics", "tests/test_attacks.py", "        return -l if targeted else l", "        return l",
     "a targeted attack climbs the target's loss"),
    ("minimum_norm_attacks", "tests/test_attacks.py",
     'wn = w.abs().sum(1) if norm == "linf" else w.norm(dim=1)', "wn = w.norm(dim=1)",
     "L∞ DeepFool divides by the l2 norm, not its dual l1"),
    ("minimum_norm_attacks", "tests/test_attacks.py",
     "x_adv[idx] = (x[idx] + (1 + overshoot) * r_tot[idx]).clamp(0, 1)", "x_adv[idx] = (x[idx] + r_tot[idx]).clamp(0, 1)",
     "DeepFool's overshoot ignored"),
    ("minimum_norm_attacks", "tests/test_attacks.py",
     "r = per_example((f + 1e-4) / wn.clamp_min(1e-12) ** 2, xa) * w.view_as(xa)",
     "r = per_example((f + 1e-4) / wn.clamp_min(1e-12), xa) * w.view_as(xa)", "L2 DeepFool's step not divided by ‖w‖²"),
    ("query_attacks", "tests/test_attacks.py", "            take = adv & (nrm < best_n)", "            take = adv",
     "salt-and-pepper keeps a later, larger perturbation"),
    ("query_attacks", "tests/test_attacks.py", "            d = ((torch.tanh(wx + z) + 1) / 2 - xx).clamp_(-eps, eps)",
     "            d = ((torch.tanh(wx + z) + 1) / 2 - xx).clamp_(-2 * eps, 2 * eps)", "NAttack leaves its ε-ball"),
    ("query_attacks", "tests/test_attacks.py",
     "            mu[idx] = mu[idx] - lr / (samples * sigma) * torch.einsum(\"ms,ms...->m...\", a, e)",
     "            mu[idx] = mu[idx] + lr / (samples * sigma) * torch.einsum(\"ms,ms...->m...\", a, e)",
     "NAttack climbs the true class's margin"),
    # checkpoints and the plug-in registry
    ("checkpoints", "tests/test_train.py tests/test_zoo.py",
     "    doomed = [checkpoint_path(d, e) for e in completed_epochs(d) if e >= epoch]",
     "    doomed = [checkpoint_path(d, e) for e in completed_epochs(d) if e > epoch]",
     "discarding from an epoch keeps that epoch's checkpoint"),
    ("checkpoints", "tests/test_train.py tests/test_zoo.py", "            have = sorted(have + gaps)", "            have = sorted(have)",
     "a checkpoint lost between two others goes unnoticed"),
    ("checkpoints", "tests/test_train.py tests/test_zoo.py",
     "        if rows and math.isfinite(rows[-1].get(\"test_loss\", float(\"nan\"))):", "        if rows:",
     "an epoch whose test loss is not finite counts as good"),
    ("registry", "tests/test_plugins.py",
     "        return next((n for n, info in self.infos.items() if name in info.get(\"formerly\", ())), name)",
     "        return name", "a renamed plug-in no longer answers to its former name"),
    ("registry", "tests/test_plugins.py", "            self[name], self.infos[name] = obj, info",
     "            self[name], self.infos[name] = obj, {}", "what a plug-in declares is dropped"),
    ("registry", "tests/test_plugins.py",
     "            hint = (f\"it was renamed to {renamed!r}\" if renamed != name else",
     "            hint = (f\"it was renamed to {name!r}\" if renamed != name else",
     "the error names the old name as the new one"),
    # models and the Fourier grids
    ("models", "tests/test_models.py", "        return (x - self.mean) / self.std", "        return (x - self.std) / self.mean",
     "normalisation swaps mean and std"),
    ("models", "tests/test_models.py", "    return (depth - offset) // 6", "    return (depth - offset) // 6 + 1",
     "one block too many per stage"),
    ("models", "tests/test_models.py", "        if name.rsplit(\".\", 1)[-1] == \"weight\":", "        if True:",
     "paper C's weight scale also scales the biases"),
    ("fourier", "tests/test_fourier.py tests/test_frequency.py",
     "    return _order((fy[:, None] ** 2 + fx[None, :] ** 2).sqrt(), centred, False)",
     "    return _order((fy[:, None] ** 2 + fx[None, :] ** 2).sqrt(), centred, True)",
     "cycles-per-pixel radii shifted the wrong way"),
    ("fourier", "tests/test_fourier.py tests/test_frequency.py", "    kx = torch.fft.fftfreq(w, 1 / w, dtype=dtype, device=device)",
     "    kx = torch.fft.fftfreq(w, 1 / h, dtype=dtype, device=device)", "k_x counted in cycles of the image's height"),
    # zoo and project: which checkpoints a finished run has, cached results, grids of renders
    ("zoo", "tests/test_zoo.py", "        return 1 <= epoch <= int(done[\"epochs\"])", "        return 1 <= epoch < int(done[\"epochs\"])",
     "the last epoch's checkpoint is not expected of a finished run"),
    ("zoo", "tests/test_zoo.py",
     "    h = content_hash({\"spec\": spec.key, \"key\": key, \"code\": code_fingerprint(*code) if code else \"\"})",
     "    h = content_hash({\"spec\": spec.key, \"key\": key})", "a cached result ignores the code that computed it"),
    ("workflow/project", "tests/test_runner.py tests/test_scaleout.py",
     "    grid = {**(params.get(\"grid\") or {}), **({\"seed\": list(seeds)} if seeds else {})}",
     "    grid = {**({\"seed\": list(seeds)} if seeds else {}), **(params.get(\"grid\") or {})}",
     "a grid's seeds win over --seeds"),
    ("workflow/project", "tests/test_runner.py tests/test_scaleout.py",
     "    return [({**base, **dict(zip(names, combo))}, dict(zip(names, combo)))",
     "    return [({**dict(zip(names, combo)), **base}, dict(zip(names, combo)))",
     "a grid value loses to the parameter set's own value"),
    # the plan: passes, memory and its clock
    ("workflow/plan", "tests/test_plan.py", "            \"train passes\": spec.epochs * n_train * per_image,",
     "            \"train passes\": spec.epochs * n_train,", "the plan forgets an objective's extra passes"),
    ("workflow/plan", "tests/test_plan.py", "            \"eval passes\": spec.epochs * n_eval * (1 if atk is None else k_eval + 2)}",
     "            \"eval passes\": n_eval * (1 if atk is None else k_eval + 2)}", "the plan evaluates once, not every epoch"),
    ("workflow/plan", "tests/test_plan.py", "    return 2 if spec.optimizer == \"adam\" else int(spec.momentum != 0)",
     "    return 2 if spec.optimizer == \"adam\" else 1", "SGD without momentum keeps a buffer"),
    ("workflow/plan", "tests/test_plan.py",
     "    return m[\"seconds per step\"] / (b * passes_per_image(spec.objective, spec.objective_kwargs))",
     "    return m[\"seconds per step\"] / passes_per_image(spec.objective, spec.objective_kwargs)",
     "seconds per pass not divided by the batch"),
    # attacks and paper A's frequency filters: one more each
    ("attacks", "tests/test_attacks.py", 'r["r"].append((correct & ~succ).cpu())', 'r["r"].append((~succ).cpu())',
     "an image the model gets wrong counts as robust when the attack fails"),
    ("attacks", "tests/test_attacks.py tests/test_frequency.py",
     "    out = [attack(model, x[s:s + batch_size].to(dev), y[s:s + batch_size].to(dev), seed=seed + i).detach().cpu()",
     "    out = [attack(model, x[s:s + batch_size].to(dev), y[s:s + batch_size].to(dev), seed=seed).detach().cpu()",
     "attack_batches seeds every batch alike"),
    ("papers/a_frequency", "tests/test_frequency.py", "    total = P[:, r > 0].sum(-1)", "    total = P.sum((-2, -1))",
     "the high-frequency share counts the DC term in the total"),
    ("papers/a_frequency", "tests/test_frequency.py", "return float(a[:-1].max() - a[-1]), float(a[:-1].max()),",
     "return float(a.max() - a[-1]), float(a[:-1].max()),", "the low-pass drop's peak includes the end itself"),
    # paper A: spatial consistency, local responses, weight decay, setup
    ("papers/a_spatial", "tests/test_a2_spatial.py",
     "vertical, nv = corr(d[..., :-1, :], d[..., 1:, :], m[..., :-1, :] & m[..., 1:, :])",
     "vertical, nv = corr(d[..., :-1, :], d[..., 1:, :].flip(-1), m[..., :-1, :] & m[..., 1:, :])",
     "the lower neighbour taken from the mirrored row"),
    ("papers/a_spatial", "tests/test_a2_spatial.py", "    return (x > lo) & (x < hi)", "    return (x >= lo) & (x <= hi)",
     "a pixel exactly at the clip's margin counts as interior"),
    ("papers/a_spatial", "tests/test_a2_spatial.py", "    return (delta.abs() >= eps - tol).flatten(1).float().mean(1)",
     "    return (delta >= eps - tol).flatten(1).float().mean(1)", "only positive entries at the bound count"),
    ("papers/a_spatial", "tests/test_a2_spatial.py", "    return r.nanmean(1).float()", "    return r.mean(1).float()",
     "a channel without a pair inside the mask makes the image NaN"),
    ("papers/a_local_response", "tests/test_local_response.py", "        d = (feats_hat[name] - f).abs().flatten(1)",
     "        d = (feats_hat[name] - f).flatten(1)", "the response differences are signed, not absolute"),
    ("papers/a_local_response", "tests/test_local_response.py",
     "    return totals[success].mean(0) / totals[~success].mean(0) - 1",
     "    return totals[success].mean(0) / totals.mean(0) - 1", "the gap compares the successful attacks with all of them"),
    ("papers/a_local_response", "tests/test_local_response.py", "    return transferred.mean() / own.mean()",
     "    return own.mean() / transferred.mean()", "the transfer ratio inverted"),
    ("papers/a_local_response", "tests/test_local_response.py",
     "(clean.mean() - robust.mean()) if clean.mean() - robust.mean() > 0 else np.nan",
     "clean.mean() if clean.mean() - robust.mean() > 0 else np.nan", "the recovered share divided by the clean accuracy, not the gap"),
    ("papers/a_local_response", "tests/test_local_response.py", "    return g[-1] - np.max(g[:-1])", "    return g[-1] - np.max(g)",
     "the last layer's gap compared with itself"),
    ("papers/a_weight_decay", "tests/test_local_response.py",
     "    ra, rb = (pd.Series(np.asarray(v, dtype=float)).rank() for v in (a, b))",
     "    ra, rb = (pd.Series(np.asarray(v, dtype=float)) for v in (a, b))", "Pearson's correlation, not Spearman's"),
    ("papers/a_weight_decay", "tests/test_local_response.py", "    return acc.max(1) - acc[:, -1]", "    return acc.max(1) - acc[:, 0]",
     "robust overfitting measured at the first epoch"),
    ("papers/a_weight_decay", "tests/test_local_response.py", "robust_overfitting(robust)[np.argsort(wds)], 1)[0])",
     "robust_overfitting(robust), 1)[0])", "the slope taken in the runs' order, not the weight decays'"),
    ("papers/a_setup", "tests/test_frequency.py",
     "objective_kwargs=dict(eps=float(eps), alpha=float(train_alpha), steps=int(train_steps)))",
     "objective_kwargs=dict(eps=float(eps), alpha=float(eps), steps=int(train_steps)))", "ADV trained with a step of ε"),
    ("papers/a_setup", "tests/test_frequency.py",
     'return Attack("pgd", norm="linf", eps=eps, alpha=alpha, steps=steps, random_start=True)',
     'return Attack("pgd", norm="linf", eps=eps, alpha=alpha, steps=steps, random_start=False)', "PGD-20 without its random start"),
    ("papers/a_setup", "tests/test_frequency.py",
     "return attack_batches(paper_a_attack(attack, eps, alpha, steps), model, x, y, batch_size=batch_size, seed=seed)",
     "return attack_batches(paper_a_attack(attack, eps, alpha, steps), model, x, y, batch_size=batch_size, seed=0)",
     "adversarial ignores its seed"),
    # paper D's setup: epochs from steps, the six specs, per-data-set settings, Table 1's attacks
    ("papers/d_setup", "tests/test_rlfat.py", "    per_epoch = -(-n_train // batch_size)", "    per_epoch = n_train // batch_size",
     "an epoch's last partial batch not counted as a step"),
    ("papers/d_setup", "tests/test_rlfat.py",
     '"RLFAT-T": base.replace(objective="rlfat_t", objective_kwargs=dict(atk, lam=lam, eta=eta_t, **rb)),',
     '"RLFAT-T": base.replace(objective="rlfat_t", objective_kwargs=dict(atk, lam=lam, eta=eta_p, **rb)),',
     "RLFAT-T takes RLFAT-P's η"),
    ("papers/d_setup", "tests/test_rlfat.py", "    cfg.update((overrides or {}).get(dataset, {}))", "    pass",
     "a data set's own settings ignored"),
    ("papers/d_setup", "tests/test_rlfat.py", 'loss="cw", kappa=cw_kappa),', 'loss="ce", kappa=cw_kappa),',
     "Table 1's CW attack climbs the cross-entropy"),
    # plots: what a figure shows
    ("plots", "tests/test_plots.py", "    return a.transpose(1, 2, 0).clip(0, 1)", "    return a.transpose(2, 1, 0).clip(0, 1)",
     "images drawn transposed"),
    ("plots", "tests/test_plots.py", '        lo, hi, cmap = -v, v, cmap or "bwr"', '        lo, hi, cmap = 0, v, cmap or "bwr"',
     "a signed heat map's scale starts at zero"),
    ("plots", "tests/test_plots.py", '"gray"), vmin=-lim if signed[c] else None,', '"gray"), vmin=None,',
     "a signed grid cell's scale not centred on zero"),
    ("plots", "tests/test_plots.py tests/test_explorers.py", "        key = self.values.index(v)\n        if key not in self._cache:",
     "        key = 0\n        if key not in self._cache:",
     "the explorer shows the first value's figure for every value"),
    # shapes: one value per example where one per example is promised (tests/test_shapes.py)
    ("papers/e_spectral", "tests/test_spectral.py tests/test_shapes.py",
     "return logits.softmax(1).gather(1, y[:, None]).squeeze(1)", "return logits.softmax(1).gather(1, y[:, None])",
     "the true class's probability an (N, 1) column that broadcasts against (N,)"),
    ("papers/a_spatial", "tests/test_a2_spatial.py tests/test_shapes.py",
     "    return (delta.abs() >= eps - tol).flatten(1).float().mean(1)", "    return (delta.abs() >= eps - tol).float().mean((0, 2, 3))",
     "the share at the bound per channel, not per image"),
    ("papers/c_implicit_fourier", "tests/test_implicit_fourier.py tests/test_shapes.py",
     "return beta[c], {k: v[0] for k, v in spectrum_norms(beta[c:c + 1]).items()}",
     "return beta[c], spectrum_norms(beta[c:c + 1])", "one class's norms of β̂ a one-element batch, not a number"),
    ("plots", "tests/test_explorers.py", "        change = max(change, float(np.nanmax(np.abs(x - y))) / span if span > 0 else 0.0)",
     "        change = max(change, float(np.nanmean(np.abs(x - y))) / span if span > 0 else 0.0)",
     "an explorer's change is the mean change, which one changed block hardly moves"),
    ("papers/d_rlfat", "tests/test_rlfat.py", "tint = torch.stack([i / max(k - 1, 1), 0.3 + 0.4 * ((i + j) % 2), j / max(k - 1, 1)])",
     "tint = torch.stack([i / max(k - 1, 1), 0.3 + 0.4 * ((i + j) % 2), i / max(k - 1, 1)])",
     "the painted blocks' colour ignores the column"),
    # the site: which outputs it shows, where, and in what order
    ("workflow/site", SITE_TESTS, "        if f.name.startswith(\".\"):", "        if False:",
     "a write in progress shown as a figure"),
    ("workflow/site", SITE_TESTS,
     "        nb = nb if isinstance(nb, str) and _NOTEBOOK_NAME.fullmatch(nb) else \"\"",
     "        nb = nb if isinstance(nb, str) else \"\"", "a sidecar's notebook becomes a link whatever it holds"),
    ("workflow/site", SITE_TESTS, "    return (m[1], int(m[2]) if m[2] else -1, m[3])", "    return (m[1], m[2], m[3])",
     "figure numbers sorted as text (10 before 2)"),
    ("workflow/site", SITE_TESTS, 'and o["notebook"].partition("@")[0] == nb and o["variant"] == variant]',
     'and o["notebook"].partition("@")[0] == nb]', "a claim links the figures its notebook drew in every variant run"),
    ("workflow/site", SITE_TESTS, "        if now - p.stat().st_mtime > older_than_s:", "        if True:",
     "a write still in progress removed as a leftover"),
    ("autoattack", "tests/test_autoattack.py",
     "    worst = torch.minimum(dw * lo[:, None], dw * hi[:, None]).sum(-1)       # the lowest (w_y - w_j)·δ",
     "    worst = torch.maximum(dw * lo[:, None], dw * hi[:, None]).sum(-1)       # the lowest (w_y - w_j)·δ",
     "the linear model's exact robust set takes each pixel's most helpful move, not its worst"),
    ("autoattack", "tests/test_autoattack.py", "    common = dict(norm=tnorm, eps=eps, n_restarts=1, seed=seed)",
     "    common = dict(norm=tnorm, eps=eps / 2, n_restarts=1, seed=seed)", "the components search half the budget"),
    ("autoattack", "tests/test_autoattack.py",
     '        return ta.Square(model, n_queries=square_queries, p_init=0.8, resc_schedule=False, **common)',
     '        return ta.Square(model, n_queries=square_queries, p_init=0.8, **common)',
     "Square with torchattacks' rescaled schedule, not the authors'"),
    ("autoattack", "tests/test_autoattack.py",
     "        with eval_mode(model), torch.random.fork_rng(devices=devices):  # the components reseed torch's generator",
     "        with eval_mode(model):  # the components reseed torch's generator",
     "AutoAttack leaves the caller's random generator reseeded"),
    ("papers/d_setup", "tests/test_autoattack.py",
     "    ev = evaluate(model, x[:autoattack_n], y[:autoattack_n], atk, batch_size=batch_size, seed=seed)",
     "    ev = evaluate(model, x, y, atk, batch_size=batch_size, seed=seed)", "D's AutoAttack row attacks every image"),
    ("papers/e_spectral", "tests/test_spectral.py",
     "    if exceeds(*span) is False or any(exceeds(d, se) is False for d, se in steps.values()):",
     "    if exceeds(*span) is False:", "an ordering rises over a step that falls beyond noise"),
    ("papers/e_spectral", "tests/test_spectral.py",
     '            "AutoAttack accuracy": ev.robust_accuracy("AutoAttack", clean_first=True),',
     '            "AutoAttack accuracy": ev.robust_accuracy("AutoAttack"),',
     "E's AutoAttack accuracy counts the examples wrong when clean"),
    ("papers/b_smooth_kernels", "tests/test_smooth_kernels.py",
     "    verdict = True if ahead > len(cells) / 2 else False if behind >= len(cells) / 2 else None",
     "    verdict = True if ahead >= len(cells) / 2 else False if behind >= len(cells) / 2 else None",
     "half the cells ahead counts as most"),
    ("papers/b_smooth_kernels", "tests/test_smooth_kernels.py",
     "    verdict = True if ahead > len(cells) / 2 else False if behind >= len(cells) / 2 else None",
     "    verdict = True if ahead > len(cells) / 2 else False if ahead <= behind else None",
     "cells all within noise count against the claim"),
    ("papers/d_rlfat", "tests/test_rlfat.py", "    xs, dev = rbs(x, k=k, seed=seed), next(model.parameters()).device",
     "    xs, dev = rbs(x, k=k, seed=seed + 1), next(model.parameters()).device", "the shuffle ignores the call's seed"),
    ("papers/d_rlfat", "tests/test_rlfat.py",
     "right = [model(xs[s:s + batch_size].to(dev))", "right = [model(x[s:s + batch_size].to(dev))",
     "the accuracy on RBS(x) is the clean one"),
    ("external", "tests/test_external.py::test_a_model_that_does_not_take_the_images_is_stopped_with_what_it_was_given",
     "        if missing - own or unexpected:", "        if unexpected:", "a checkpoint that lacks weights loads, leaving them at random"),
    ("external", "tests/test_external.py::test_a_checkpoint_loads_into_its_architecture_and_computes_the_same",
     "    elif has_own:", "    elif False:", "a model's own normalisation is replaced by the data set's"),
    ("external", "tests/test_external.py::test_a_functions_model_is_put_behind_the_data_sets_normalisation_unless_told",
     "tuple(out.shape) != (2, info.num_classes)", "out.ndim != 2", "a model with another number of classes is accepted"),
    ("attacks", "tests/test_autoattack.py", "            rc &= self.attacks[k].robust_correct",
     "            rc = self.attacks[k].robust_correct", "the worst case is the last attack's robust set"),
]


def tests_pass(tests: str) -> bool:
    "Whether the test files `tests` pass (stopping at the first failure)."
    r = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests.split()],
                       cwd=ROOT, capture_output=True, text=True)
    return r.returncode == 0


def run_mutant(module, tests, old, new):
    path = ROOT / "advnb" / f"{module}.py"
    src = path.read_text()
    if src.count(old) != 1:
        return "stale"  # the code moved on: the mutant needs rewriting
    try:
        path.write_text(src.replace(old, new))
        return "SURVIVED" if tests_pass(tests) else "killed"
    finally:
        path.write_text(src)


def main(only):
    tally, survivors, stale = defaultdict(lambda: [0, 0]), [], []
    chosen = [m for m in MUTANTS if not only or m[0] in only]
    # a failing test would "kill" every mutant: each set of test files must pass with no mutant planted first
    failing = [t for t in dict.fromkeys(m[1] for m in chosen) if not tests_pass(t)]
    if failing:
        print("these tests fail with no mutant planted, so no kill they report would mean anything; fix them first:\n  "
              + "\n  ".join(failing))
        return 2
    for module, tests, old, new, what in chosen:
        fate = run_mutant(module, tests, old, new)
        print(f"{fate:9} {module:20} {what}", flush=True)
        if fate == "stale":
            stale.append(f"{module}: {what}")
            continue
        tally[module][0] += fate == "killed"
        tally[module][1] += 1
        if fate == "SURVIVED":
            survivors.append(f"{module}: {what} (tests: {tests})")
    print("\nkill rate per module:")
    for module, (k, n) in tally.items():
        print(f"  {module:20} {k}/{n}")
    killed, planted = sum(k for k, _ in tally.values()), sum(n for _, n in tally.values())
    print(f"  {'overall':20} {killed}/{planted}")
    for title, rows in (("survived (a test is missing)", survivors), ("stale (the code moved on: rewrite them)", stale)):
        if rows:
            print(f"\n{title}:\n  " + "\n  ".join(rows))
    return 0 if killed == planted and not stale else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
