"""Every exported function that returns tensors, called on a small input: the shape and dtype of each tensor it
returns, written out by hand from its docstring (N images of C×H×W, K classes). A measurement that returns one value
per class where it promises one per example, or float32 where the claims' statistics need float64, fails here.

`test_every_function_that_returns_tensors_has_a_case` finds each exported function annotated to return a tensor
(alone, or in a tuple, list or dict) and fails until it has a case in `CASES`: a new one brings its own."""
import importlib
import inspect
import pkgutil
from functools import cache
from types import SimpleNamespace

import pytest
import torch

import advnb
import advnb.papers
from advnb import attack_basics as AB, attacks as A, autoattack as AA, checkpoints as CK, data as D, fourier as FO, gradient_attacks as GA
from advnb import models as M, train as TR
from advnb.papers import a_frequency as AF, a_local_response as AL, a_setup as AS, a_spatial as ASP
from advnb.papers import b_smooth_kernels as B, c_implicit_fourier as C, d_rlfat as DR, e_spectral as E

N, CH, H, W, K = 4, 3, 8, 8, 10
f32, f64, c128, boolean, i64, u8 = torch.float32, torch.float64, torch.complex128, torch.bool, torch.long, torch.uint8


def T(*shape, dtype=f32):
    "What a function should return: a tensor of this shape and dtype."
    return (tuple(shape), dtype)


def described(out):
    "What a function did return, in the form of `T`: nested through tuples, lists and dicts."
    if isinstance(out, torch.Tensor):
        return (tuple(out.shape), out.dtype)
    if isinstance(out, dict):
        return {k: described(v) for k, v in out.items()}
    if isinstance(out, (tuple, list)):
        return type(out)(described(v) for v in out)
    if isinstance(out, D.ImageTensorDataset):
        return {"x": described(out.x), "y": described(out.y)}
    return out


def x():
    return torch.rand(N, CH, H, W, generator=torch.Generator().manual_seed(0))


def y():
    return torch.arange(N)


def logits():
    return torch.randn(N, K, generator=torch.Generator().manual_seed(1))


@cache
def cnn():
    torch.manual_seed(0)
    return M.build_model("simple_cnn", num_classes=K, in_shape=(CH, H, W), width=2, hidden=8).eval()


@cache
def resnet():
    torch.manual_seed(0)
    return M.build_model("resnet18", num_classes=K, in_shape=(CH, H, W), width=4).eval()


@cache
def linear_c():
    "A linear paper-C model: its predictor β is one C×H×W image per class."
    torch.manual_seed(0)
    return M.build_model("fully_connected", num_classes=K, in_shape=(CH, H, W), hidden=6)


@cache
def relu_c():
    torch.manual_seed(0)
    return M.build_model("fully_connected", num_classes=K, in_shape=(CH, H, W), hidden=6, nonlinear=True)


@cache
def strided_net():
    "A stride-2 convolution (8×8 in, 4×4 out: 4² phases of min(2, 2²·3) singular values) and a 32 → K linear layer."
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(CH, 2, 3, stride=2, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(2 * 4 * 4, K))


def saved_tensors(tmp_path):
    CK.save_tensors({"w": torch.zeros(2, 3), "step": torch.zeros((), dtype=i64)}, tmp_path / "t.safetensors", {"epoch": 1})
    tensors, meta = CK.load_tensors(tmp_path / "t.safetensors")
    return tensors, meta["epoch"]


LAYERS = {layer: {"max": T(N), "total": T(N)} for layer in AL.PAPER_A_LAYERS}
STRIDED = torch.randn(2, CH, 3, 3, generator=torch.Generator().manual_seed(2))  # c_out = 2, c_in = 3
DISTRIBUTION = torch.softmax(torch.randn(N, 5, dtype=f64, generator=torch.Generator().manual_seed(3)), -1)
SMOKE_SPEC = TR.TrainSpec(arch="simple_cnn", dataset="synthetic-mnist", n_per_class=3, eval_n_per_class=2)

CASES = {  # "module.function": (call, what it returns)
    # attacks: the shared pieces, the attacks themselves, their batching
    "attack_basics.check_logits": (lambda: AB.check_logits(logits(), x(), y()), T(N, K)),
    "attack_basics.flat_norm": (lambda: AB.flat_norm(x(), "l2"), T(N)),
    "attack_basics.perturbation_norm": (lambda: AB.perturbation_norm(x(), x() * 0, "linf"), T(N)),
    "attack_basics.per_example": (lambda: AB.per_example(torch.ones(N), x()), T(N, 1, 1, 1)),
    "attack_basics.largest_other_logit": (lambda: AB.largest_other_logit(logits(), y()), T(N)),
    "attack_basics.cw_margin": (lambda: AB.cw_margin(logits(), y(), kappa=5.0), T(N)),
    "attacks.predict": (lambda: A.predict(cnn(), x(), batch_size=3), T(N, dtype=i64)),
    "attacks.attack_batches": (lambda: A.attack_batches(A.Attack("fgsm", eps=0.1), cnn(), x(), y(), batch_size=3),
                               T(N, CH, H, W)),
    "gradient_attacks.fgsm": (lambda: A.fgsm(cnn(), x(), y(), eps=0.1), T(N, CH, H, W)),
    "gradient_attacks.pgd": (lambda: A.pgd(cnn(), x(), y(), eps=0.1, alpha=0.05, steps=2), T(N, CH, H, W)),
    "gradient_attacks.attack_success": (lambda: A.attack_success(cnn(), x(), x().flip(0), y(), eps=10.0),
                                        T(N, dtype=boolean)),
    "gradient_attacks.success_from_logits": (lambda: GA.success_from_logits(logits(), -logits(), y()), T(N, dtype=boolean)),
    "minimum_norm_attacks.cw_l2": (lambda: A.cw_l2(cnn(), x(), y(), steps=2, binary_search_steps=1), T(N, CH, H, W)),
    "minimum_norm_attacks.deepfool": (lambda: A.deepfool(cnn(), x(), y(), steps=2, num_classes=3), T(N, CH, H, W)),
    "minimum_norm_attacks.deform": (lambda: A.deform(x(), torch.zeros(N, 2, H, W)), T(N, CH, H, W)),
    "minimum_norm_attacks.adef": (lambda: A.adef(cnn(), x(), y(), steps=2), T(N, CH, H, W)),
    "query_attacks.salt_and_pepper": (lambda: A.salt_and_pepper(cnn(), x(), y(), steps=3), T(N, CH, H, W)),
    "query_attacks.nattack": (lambda: A.nattack(cnn(), x(), y(), eps=0.1, samples=4, iters=2), T(N, CH, H, W)),
    "autoattack.autoattack": (lambda: A.autoattack(cnn(), x(), y(), eps=0.1, steps=2, square_queries=4), T(N, CH, H, W)),
    "autoattack.linear_robust_set": (lambda: AA.linear_robust_set(torch.nn.Linear(CH * H * W, K), x(), y(), 0.1),
                                     T(N, dtype=boolean)),
    # foundation: checkpoints, data, Fourier grids, models, training
    "checkpoints.load_tensors": (saved_tensors, ({"w": T(2, 3), "step": T(dtype=i64)}, 1)),
    "data.crop_flip": (lambda: D.crop_flip(x(), torch.zeros(N, dtype=i64), torch.ones(N, dtype=i64),
                                           torch.tensor([True, False] * 2), 2), T(N, CH, H, W)),
    "data.render_synthetic": (lambda: D.render_synthetic(y(), torch.rand(N, 18), torch.randn(N, CH, H, W), (CH, H, W)),
                              T(N, CH, H, W)),
    "data.load_dataset": (lambda: D.load_dataset("synthetic-mnist", "test", n_per_class=2),
                          {"x": T(20, 1, 28, 28, dtype=u8), "y": T(20, dtype=i64)}),
    "data.subset": (lambda: D.subset(D.load_dataset("synthetic-mnist", "test", n_per_class=3), 1),
                    {"x": T(10, 1, 28, 28, dtype=u8), "y": T(10, dtype=i64)}),
    "data.take": (lambda: D.take(D.load_dataset("synthetic-mnist", "test", n_per_class=2), 5),
                  (T(5, 1, 28, 28), T(5, dtype=i64))),
    "fourier.radius_cycles_per_pixel": (lambda: FO.radius_cycles_per_pixel(H, W + 2, centred=True), T(H, W + 2)),
    "fourier.frequencies_cycles_per_image": (lambda: FO.frequencies_cycles_per_image(H, W + 2, centred=False),
                                             (T(H, W + 2, dtype=f64), T(H, W + 2, dtype=f64))),
    "fourier.radius_nyquist_units": (lambda: FO.radius_nyquist_units(H, W + 2, centred=True), T(H, W + 2, dtype=f64)),
    "models.extract_features": (lambda: M.extract_features(resnet(), x(), ["Conv1", "Layer4"]),
                                {"Conv1": T(N, 4, H, W), "Layer4": T(N, 32, 1, 1)}),
    "train.trades_kl": (lambda: TR.trades_kl(logits(), logits().flip(0)), T()),
    "train.eval_data": (lambda: TR.eval_data(SMOKE_SPEC), (T(20, 1, 28, 28), T(20, dtype=i64))),
    # paper A
    "papers.a_frequency.low_pass_mask": (lambda: AF.low_pass_mask(H, W, 0.5), T(H, W, dtype=boolean)),
    "papers.a_frequency.centred_spectrum": (lambda: AF.centred_spectrum(x()), T(N, CH, H, W, dtype=c128)),
    "papers.a_frequency.low_pass": (lambda: AF.low_pass(x(), 0.5), T(N, CH, H, W)),
    "papers.a_frequency.high_pass": (lambda: AF.high_pass(x(), 0.5), T(N, CH, H, W)),
    "papers.a_frequency.swap_high_frequency": (lambda: AF.swap_high_frequency(x(), x().flip(0), 0.5),
                                               (T(N, CH, H, W), T(N, CH, H, W))),
    "papers.a_frequency.log_amplitude_spectrum": (lambda: AF.log_amplitude_spectrum(x()), T(H, W)),
    "papers.a_frequency.log_amplitude_excess": (lambda: AF.log_amplitude_excess(x().flip(0), x()), T(N)),
    "papers.a_frequency.high_frequency_energy_fraction": (lambda: AF.high_frequency_energy_fraction(x()), T(N)),
    "papers.a_local_response.local_response_difference": (lambda: AL.local_response_difference(torch.ones(5, 5),
                                                                                               torch.ones(3, 3)),
                                                          T(3, 3, dtype=f64)),
    "papers.a_local_response.response_differences": (lambda: AL.response_differences(
        {"a": torch.zeros(N, 2, 3, 3)}, {"a": torch.ones(N, 2, 3, 3)}), {"a": {"max": T(N), "total": T(N)}}),
    "papers.a_local_response.local_response_differences": (lambda: AL.local_response_differences(resnet(), x(), x().flip(0),
                                                                                                  batch_size=3), LAYERS),
    "papers.a_setup.adversarial": (lambda: AS.adversarial(cnn(), x(), y(), steps=1, batch_size=3), T(N, CH, H, W)),
    "papers.a_spatial.neighbour_correlation": (lambda: ASP.neighbour_correlation(x()), T(N)),
    "papers.a_spatial.interior_mask": (lambda: ASP.interior_mask(x()), T(N, CH, H, W, dtype=boolean)),
    "papers.a_spatial.at_bound_fraction": (lambda: ASP.at_bound_fraction(x(), 0.5), T(N)),
    "papers.a_spatial.local_consistency": (lambda: ASP.local_consistency(x() - 0.5, 0.5, x()),
                                           {"neighbour correlation": T(N), "high-frequency energy share (r>0.5)": T(N),
                                            "share at the bound": T(N), "neighbour correlation, interior pixels": T(N)}),
    # paper B
    "papers.b_smooth_kernels.kernel_roughness": (lambda: B.kernel_roughness(STRIDED, per_kernel=True), T(2, CH)),
    "papers.b_smooth_kernels.smooth_kernel_penalty": (lambda: B.smooth_kernel_penalty(STRIDED), T()),
    "papers.b_smooth_kernels.conv_kernels": (lambda: B.conv_kernels(cnn()), [T(2, CH, 5, 5), T(4, 2, 5, 5)]),
    "papers.b_smooth_kernels.smooth_kernel_regularizer": (lambda: B.smooth_kernel_regularizer(cnn()), T()),
    "papers.b_smooth_kernels.named_conv_kernels": (lambda: B.named_conv_kernels(cnn()),
                                                   {"conv1": T(2, CH, 5, 5), "conv2": T(4, 2, 5, 5)}),
    "papers.b_smooth_kernels.kl_logit_pairing_loss": (lambda: B.kl_logit_pairing_loss(logits(), logits().flip(0), y()), T()),
    "papers.b_smooth_kernels.render_shape": (lambda: B.render_shape(2, torch.rand(4), size=16), T(1, 16, 16)),
    "papers.b_smooth_kernels.validation_split": (lambda: B.validation_split(SMOKE_SPEC, 2), (T(20, 1, 28, 28), T(20, dtype=i64))),
    "papers.b_smooth_kernels.fgsm_search": (lambda: B.fgsm_search(cnn(), x(), y(), n_eps=4), T(N, CH, H, W)),
    "papers.b_smooth_kernels.pgd_search": (lambda: B.pgd_search(cnn(), x(), y(), below=1, above=1, steps=2), T(N, CH, H, W)),
    "papers.b_smooth_kernels.perturbation_sizes": (lambda: B.perturbation_sizes(x(), x().flip(0)),
                                                   {"l0": T(N), "l2": T(N), "linf": T(N)}),
    "papers.b_smooth_kernels.robust_per_image": (lambda: B.robust_per_image(
        {"correct": [True, True, False], "fooled": [True, False, True], "linf": [0.1, 0.2, 0.3]}, 0.15), T(3, dtype=boolean)),
    "papers.b_smooth_kernels.correct_per_image": (lambda: B.correct_per_image(cnn(), SimpleNamespace(
        x=(x() * 255).to(u8), y=y()), batch_size=3), T(N, dtype=boolean)),
    "papers.b_smooth_kernels.high_frequency_fraction": (lambda: B.high_frequency_fraction(x()), T(N, CH, dtype=f64)),
    "papers.b_smooth_kernels.kernel_spectrum": (lambda: B.kernel_spectrum(STRIDED, n=8), T(2, CH, 8, 8)),
    "papers.b_smooth_kernels.activation_maximisation": (lambda: B.activation_maximisation(cnn(), 3, (CH, H, W), steps=2, n=2),
                                                        T(2, CH, H, W)),
    "papers.b_smooth_kernels.image_correlation": (lambda: B.image_correlation(x(), x().flip(0)), T(N, dtype=f64)),
    "papers.b_smooth_kernels.class_means": (lambda: B.class_means(x(), torch.tensor([0, 0, 2, 2]), 3), T(3, CH, H, W)),
    "papers.b_smooth_kernels.most_deceptive": (lambda: B.most_deceptive(cnn(), x(), y(), 5, k=2), T(5, CH, H, W)),
    # paper C
    "papers.c_implicit_fourier.relu_states": (lambda: C.relu_states(relu_c(), x()), T(N, 6, dtype=boolean)),
    "papers.c_implicit_fourier.relu_changes": (lambda: C.relu_changes(relu_c(), x(), x().flip(0), steps=2), T(N)),
    "papers.c_implicit_fourier.roughness": (lambda: C.roughness(relu_c(), x(), x().flip(0), torch.tensor([[0, 1]] * N),
                                                                steps=2), T(N)),
    "papers.c_implicit_fourier.random_direction": (lambda: C.random_direction(x(), x() - 0.5), T(N, CH, H, W)),
    "papers.c_implicit_fourier.dft2": (lambda: C.dft2(x()), T(N, CH, H, W, dtype=c128)),
    "papers.c_implicit_fourier.spectrum_norms": (lambda: C.spectrum_norms(x()), {"l1": T(N, dtype=f64), "l2": T(N, dtype=f64)}),
    "papers.c_implicit_fourier.frequency_polar": (lambda: C.frequency_polar(H, W), (T(H, W, dtype=f64), T(H, W, dtype=f64))),
    "papers.c_implicit_fourier.energy_spectrum": (lambda: C.energy_spectrum(x()), T(N, H, W, dtype=f64)),
    "papers.c_implicit_fourier.radial_energy": (lambda: C.radial_energy(x(), per_example=True),
                                                (T(7, dtype=f64), T(N, 7, dtype=f64))),
    "papers.c_implicit_fourier.angular_energy": (lambda: C.angular_energy(x(), bins=12),
                                                 (T(12, dtype=f64), T(12, dtype=f64))),
    "papers.c_implicit_fourier.mean_radius": (lambda: C.mean_radius(torch.arange(5, dtype=f64), DISTRIBUTION), T(N, dtype=f64)),
    "papers.c_implicit_fourier.angular_uniformity": (lambda: C.angular_uniformity(DISTRIBUTION), T(N, dtype=f64)),
    "papers.c_implicit_fourier.class_predictor": (lambda: C.class_predictor(linear_c(), 2),
                                                  (T(CH, H, W), {"l1": T(dtype=f64), "l2": T(dtype=f64)})),
    "papers.c_implicit_fourier.log_spectrum": (lambda: C.log_spectrum(x()[0]), T(H, W, dtype=f64)),
    "papers.c_implicit_fourier.band_share": (lambda: C.band_share(torch.arange(5, dtype=f64), DISTRIBUTION, 1, 3), T(N, dtype=f64)),
    "papers.c_implicit_fourier.end_to_end_weights": (lambda: C.end_to_end_weights(linear_c()), T(K, CH, H, W)),
    "papers.c_implicit_fourier.minimal_perturbations": (lambda: C.minimal_perturbations(cnn(), x(), y(), steps=2),
                                                        (T(N, CH, H, W), T(N, dtype=boolean))),
    # paper D
    "papers.d_rlfat.block_permutation_index": (lambda: DR.block_permutation_index([3, 5], [1, 0]), T(8, dtype=i64)),
    "papers.d_rlfat.rbs_indices": (lambda: DR.rbs_indices(N, H, W + 2, generator=torch.Generator().manual_seed(0)),
                                   (T(N, H, dtype=i64), T(N, W + 2, dtype=i64))),
    "papers.d_rlfat.apply_block_indices": (lambda: DR.apply_block_indices(x(), torch.arange(H).repeat(N, 1)), T(N, CH, H, W)),
    "papers.d_rlfat.rbs": (lambda: DR.rbs(x(), seed=0), T(N, CH, H, W)),
    "papers.d_rlfat.paint_blocks": (lambda: DR.paint_blocks(x()[0, :1], 3), T(3, H, W)),
    "papers.d_rlfat.rlft_loss": (lambda: DR.rlft_loss(logits(), logits().flip(0)), T()),
    "papers.d_rlfat.adversarial_examples": (lambda: DR.adversarial_examples(cnn(), x(), y(), "trades", steps=1), T(N, CH, H, W)),
    "papers.d_rlfat.hsv_brightness": (lambda: DR.hsv_brightness(x(), 0.1), T(N, CH, H, W)),
    "papers.d_rlfat.gamma_map": (lambda: DR.gamma_map(x(), 1.5), T(N, CH, H, W)),
    "papers.d_rlfat.input_gradients": (lambda: DR.input_gradients(cnn(), x(), y(), batch_size=3), T(N, CH, H, W)),
    "papers.d_rlfat.loss_sensitivity": (lambda: DR.loss_sensitivity(cnn(), x(), y(), per_example=True), T(N)),
    "papers.d_rlfat.smoothgrad": (lambda: DR.smoothgrad(cnn(), x(), n_samples=2), T(N, CH, H, W)),
    "papers.d_rlfat.salience_image": (lambda: DR.salience_image(x() - 0.5), T(N, H, W)),
    # paper E: at stride 2 an 8×8 input is m = 4 phases of 2²·c_in = 12 columns
    "papers.e_spectral.conv_transfer": (lambda: E.conv_transfer(STRIDED, 8, stride=2, padding=1), T(4, 4, 2, 12, dtype=c128)),
    "papers.e_spectral.conv_singular_values": (lambda: E.conv_singular_values(STRIDED, 8, stride=2, padding=1),
                                               T(16, 2)),
    "papers.e_spectral.layer_singular_values": (lambda: E.layer_singular_values(strided_net(), x()),
                                                {"0": T(16 * 2), "3": T(K)}),
    "papers.e_spectral.clip_conv_singular_values": (lambda: E.clip_conv_singular_values(STRIDED, 8, 0.5, stride=2, padding=1),
                                                    T(2, CH, 3, 3)),
    "papers.e_spectral.clip_linear_singular_values": (lambda: E.clip_linear_singular_values(torch.randn(5, 7), 0.5), T(5, 7)),
    "papers.e_spectral.margins": (lambda: E.margins(logits(), y()), T(N)),
    "papers.e_spectral.target_probability": (lambda: E.target_probability(logits(), y()), T(N)),
    "papers.e_spectral.loss_variation": (lambda: E.loss_variation(cnn(), x(), y(), eps=0.1, alpha=0.05, steps=1), T(N)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_shape_and_dtype(name, tmp_path, isolated_settings):
    call, expected = CASES[name]
    out = call(tmp_path) if call is saved_tensors else call()
    assert described(out) == expected


def _exported_tensor_functions():
    names = []
    for pkg in (advnb, advnb.papers):
        for info in pkgutil.iter_modules(pkg.__path__):
            if info.ispkg or info.name.startswith("_"):
                continue
            mod = importlib.import_module(f"{pkg.__name__}.{info.name}")
            for n in getattr(mod, "__all__", ()):
                f = getattr(mod, n)
                if inspect.isfunction(f) and f.__module__ == mod.__name__ \
                        and "Tensor" in str(inspect.signature(f).return_annotation):
                    names.append(f"{mod.__name__.removeprefix('advnb.')}.{n}")
    return names


def test_every_function_that_returns_tensors_has_a_case():
    found = _exported_tensor_functions()
    assert len(found) > 90  # the search sees the package (99 such functions when this test was written)
    assert not [n for n in found if n not in CASES], "add a case to CASES for each"
