"The GPU-fast training path, checked on the CPU: no per-step host sync, mixed precision, channels-last, device-held data."
import json
import sys

import pytest
import torch

import advnb.papers.d_rlfat  # noqa: F401  (registers paper D's objectives)
from advnb import core
from advnb import train as T
from advnb.data import load_dataset, make_loader
from advnb.train import TrainSpec
from test_train import params_equal  # (tests/ is on sys.path: pytest's prepend import mode)

TINY = dict(arch="simple_cnn", dataset="synthetic-mnist", n_per_class=6, eval_n_per_class=3, batch_size=8,
            lr=0.02, epochs=2, seed=3)
PGD = dict(objective="pgd_at", objective_kwargs=dict(eps=0.1, alpha=0.05, steps=2))
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]
# host-side helpers that read CPU tensors only (paper D's RBS draws its cut points from a CPU generator)
HOST_SIDE = ("block_sizes",)
# the calls that make the host wait for a device tensor
SYNCS = ("item", "tolist", "__bool__", "__float__", "__int__")


def _reload(monkeypatch, **env):
    for k, v in env.items():
        monkeypatch.setenv(f"ADVNB_{k.upper()}", v)
    core.get_settings(reload=True)


@pytest.fixture
def count_syncs(monkeypatch):
    "Count, by name, the tensor-to-host calls made from anywhere but the CPU data pipeline and `HOST_SIDE` helpers."
    counts = {}
    for name in SYNCS:
        original = getattr(torch.Tensor, name)

        def wrapper(self, *a, _name=name, _original=original, **kw):
            code = sys._getframe(1).f_code
            caller = code.co_filename
            if "advnb/data.py" not in caller and "torch/utils/data" not in caller and code.co_name not in HOST_SIDE:
                counts[_name] = counts.get(_name, 0) + 1
            return _original(self, *a, **kw)
        monkeypatch.setattr(torch.Tensor, name, wrapper)
    return counts


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("objective", [{}, PGD, {**PGD, "objective": "rlfat_t"}], ids=["ce", "pgd_at", "rlfat_t"])
def test_an_epoch_waits_for_the_device_a_fixed_number_of_times(tmp_path, isolated_settings, count_syncs, objective,
                                                               device):
    "Host syncs per epoch do not grow with the number of steps (fewer than READ_EVERY here): none is per step."
    totals = []
    for n_per_class in (4, 12):  # 5 and 15 steps of 8 images
        spec = TrainSpec(**{**TINY, **objective, "n_per_class": n_per_class, "epochs": 1})
        assert -(-10 * n_per_class // spec.batch_size) < T.READ_EVERY
        count_syncs.clear()
        T.train(spec, tmp_path / f"{n_per_class}", device=device, show_progress=False)
        totals.append(dict(count_syncs))
    assert totals[0] == totals[1], totals


def test_epoch_sums_match_python_floats_and_keep_the_first_bad_step():
    sums = T.EpochSums(torch.device("cpu"))
    losses = [0.5, 0.25, float("inf"), float("nan")]
    for step, loss in enumerate(losses):
        logits = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
        sums.add(step, torch.tensor(loss), torch.tensor(loss), logits, torch.tensor([0, 0, 0]),
                 {"r": torch.tensor(float(step))})
    v = sums.read()
    assert sums.n == 12 and v["correct"] == 8 and v["reg_r"] == 3 * (0 + 1 + 2 + 3)
    assert v["first_bad"] == 2 and v["bad_value"] == float("inf")
    clean = T.EpochSums(torch.device("cpu"))
    clean.add(0, torch.tensor(0.1), torch.tensor(0.1, dtype=torch.float32), torch.eye(2), torch.tensor([0, 1]), {})
    assert clean.read()["loss"] == torch.tensor(0.1, dtype=torch.float32).item() * 2  # float64 sums of float32 losses


def test_nan_is_caught_between_reads_and_nothing_it_produced_is_saved(tmp_path, isolated_settings):
    calls = []

    @T.register_objective("test_late_nan")
    def late_nan(model, x, y, step=0):
        logits = model(x)
        calls.append(step)
        return torch.nn.functional.cross_entropy(logits, y) * (float("nan") if step == 2 else 1.0), logits
    try:
        spec = TrainSpec(**{**TINY, "objective": "test_late_nan", "checkpoint_every": 100})
        with pytest.raises(T.NonFiniteLossError, match=r"loss became nan at epoch 1, step 3 \(lr=0.02\)"):
            T.train(spec, tmp_path, show_progress=False)
        assert len(calls) > 3  # it was noticed at a read, not at once
        assert not list(tmp_path.glob("epoch_*")) and not (tmp_path / "resume.safetensors").exists()
    finally:
        del T.OBJECTIVES["test_late_nan"]


def test_precision_is_part_of_the_key_and_defaults_to_fp32_off_cuda(monkeypatch, isolated_settings):
    assert TrainSpec(**TINY).precision == "fp32"
    _reload(monkeypatch, precision="bf16")  # a GPU setting; this machine trains on the CPU
    a = TrainSpec(**TINY)
    b = a.replace(precision="bf16")
    assert a.precision == "fp32" and b.precision == "bf16" and a.key != b.key != a.replace(precision="fp16").key
    assert TrainSpec.from_dict(json.loads(json.dumps(b.to_dict()))) == b
    with pytest.raises(ValueError, match="precision 'fp8'"):
        a.replace(precision="fp8")
    monkeypatch.setenv("ADVNB_PRECISION", "fp8")
    with pytest.raises(core.SettingsError, match="precision='fp8' is not one of fp32, bf16, fp16"):
        core.get_settings(reload=True)


def test_precision_setting_applies_where_training_runs_on_cuda(monkeypatch, isolated_settings):
    _reload(monkeypatch, precision="bf16")
    monkeypatch.setattr(T, "get_device", lambda *a: torch.device("cuda"))
    assert T.default_precision() == "bf16" and TrainSpec(**TINY).precision == "bf16"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision,dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_the_step_runs_under_the_specs_precision(tmp_path, isolated_settings, precision, dtype, device):
    seen = []

    @T.register_objective("test_dtype")
    def record(model, x, y):
        logits = model(x)
        seen.append(logits.dtype)
        return torch.nn.functional.cross_entropy(logits, y), logits
    try:
        model, hist = T.train(TrainSpec(**{**TINY, "objective": "test_dtype", "precision": precision}), tmp_path,
                              device=device, show_progress=False)
    finally:
        del T.OBJECTIVES["test_dtype"]
    assert set(seen) == {dtype}
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: the weights stay float32
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in hist)


def test_fp16_with_its_gradient_scaler_resumes_bit_exactly(tmp_path, isolated_settings):
    spec = TrainSpec(**{**TINY, "epochs": 3, "precision": "fp16"})
    full, _ = T.train(spec, tmp_path / "full", show_progress=False)
    T.train(spec, tmp_path / "split", show_progress=False, stop_after_epoch=1)
    scaler = json.loads((tmp_path / "split" / "resume.json").read_text())["grad_scaler"]
    assert scaler["scale"] > 0 and "_growth_tracker" in scaler
    resumed, _ = T.train(spec, tmp_path / "split", show_progress=False)
    assert params_equal(full, resumed)
    final = [json.loads((tmp_path / d / "resume.json").read_text())["grad_scaler"] for d in ("full", "split")]
    assert final[0] == final[1] and final[0]["_growth_tracker"] > 0  # the scaler resumed, not restarted


@pytest.mark.parametrize("device", DEVICES)
def test_channels_last_is_a_layout_not_a_new_model(tmp_path, monkeypatch, isolated_settings, device):
    spec = TrainSpec(**{**TINY, **PGD})
    _reload(monkeypatch, channels_last="false")
    plain, h_plain = T.train(spec, tmp_path / "plain", device=device, show_progress=False)
    _reload(monkeypatch, channels_last="true")
    assert core.use_channels_last(device) and TrainSpec(**{**TINY, **PGD}).key == spec.key
    last, h_last = T.train(spec, tmp_path / "last", device=device, show_progress=False)
    conv = next(p for p in last.parameters() if p.dim() == 4 and p.shape[1] > 1)  # (one input channel: both layouts)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    for a, b in zip(plain.parameters(), last.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    reloaded = T.build_from_spec(spec).to(device)
    from advnb.checkpoints import checkpoint_path, load_model_state
    load_model_state(reloaded, checkpoint_path(tmp_path / "last", spec.epochs), device)
    assert params_equal(reloaded, last)


def test_channels_last_setting_is_checked(monkeypatch, isolated_settings):
    assert core.use_channels_last("cuda", "auto") and not core.use_channels_last("cpu", "auto")
    assert not core.use_channels_last("cuda", "false")
    monkeypatch.setenv("ADVNB_CHANNELS_LAST", "sideways")
    with pytest.raises(core.SettingsError, match="channels_last='sideways' is not auto, true or false"):
        core.get_settings(reload=True)


@pytest.mark.parametrize("device", DEVICES)
def test_data_held_on_the_device_gives_the_same_batches(device):
    "On CUDA, batches gathered on the device equal the CPU loader's. (On the CPU nothing moves: that is all it checks.)"
    ds = load_dataset("synthetic-cifar10", "train", n_per_class=4, augment=True)  # (random crops and flips)
    held = T.hold_on_device(ds, torch.device(device))
    assert (held is ds) == (device == "cpu") and held.device.type == device
    assert torch.equal(held.indices, ds.indices)
    a = list(make_loader(ds, 8, shuffle=True, seed=5))
    b = list(make_loader(held, 8, shuffle=True, seed=5, num_workers=0))
    assert len(a) == len(b) == 5
    assert all(torch.equal(xa, xb.cpu()) and torch.equal(ya, yb.cpu()) for (xa, ya), (xb, yb) in zip(a, b))


def test_pgd_without_checks_is_the_same_attack():
    from advnb.attacks import pgd
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    x, y = torch.rand(5, 3, 2, 2), torch.tensor([0, 1, 2, 0, 1])
    for loss in ("ce", "kl"):
        a = pgd(model, x, y, eps=0.1, alpha=0.03, steps=4, loss=loss, seed=2)
        b = pgd(model, x, y, eps=0.1, alpha=0.03, steps=4, loss=loss, seed=2, check=False)
        assert torch.equal(a, b)
