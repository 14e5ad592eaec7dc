import json

import pytest
import torch

from advnb import checkpoints as C
from advnb import train as T
from advnb.checkpoints import CorruptCheckpointError
from advnb.train import NonFiniteLossError, TrainSpec
from conftest import replace_everywhere

TINY = dict(arch="simple_cnn", dataset="synthetic-mnist", n_per_class=6, eval_n_per_class=3, batch_size=16,
            lr=0.05, epochs=3, milestones=(2,), seed=7)


def params_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_spec_key_is_content_hash():
    a, b = TrainSpec(**TINY), TrainSpec(**TINY)
    assert a.key == b.key and a.name.endswith(a.key)
    assert a.replace(lr=0.1).key != a.key
    assert TrainSpec.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    with pytest.raises(ValueError, match="unknown TrainSpec fields"):
        TrainSpec.from_dict({**a.to_dict(), "colour": 1})


def test_schedules():
    s = TrainSpec(**{**TINY, "lr": 0.1, "epochs": 100, "milestones": (50, 75)})
    assert [T.lr_at(s, e) for e in (0, 49.9, 50, 74.99, 75, 99)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    lin = s.replace(schedule="linear")
    assert T.lr_at(lin, 25) == pytest.approx(0.075) and T.lr_at(lin, 100) == 0
    assert T.lr_at(s.replace(schedule="constant"), 80) == 0.1


def test_checkpoint_round_trip_is_bit_exact(tmp_path, isolated_settings):
    model = T.build_from_spec(TrainSpec(**TINY))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    C.save_model(model, tmp_path / "m.safetensors", {"note": "x"})
    other = T.build_from_spec(TrainSpec(**{**TINY, "seed": 8}))
    assert not params_equal(model, other)
    meta = C.load_model_state(other, tmp_path / "m.safetensors")
    assert params_equal(model, other) and meta["note"] == "x"


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "drop_meta", "bad_json"])
def test_corrupted_checkpoint_is_rejected(tmp_path, isolated_settings, damage):
    model = T.build_from_spec(TrainSpec(**TINY))
    path = tmp_path / "m.safetensors"
    C.save_model(model, path)
    data = bytearray(path.read_bytes())
    if damage == "flip_byte":
        data[-10] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "drop_meta":
        path.with_suffix(".json").unlink()
    else:
        path.with_suffix(".json").write_text("{not json")
    with pytest.raises(CorruptCheckpointError):
        C.load_model_state(model, path)


@pytest.mark.parametrize("objective,kwargs", [("ce", {}), ("pgd_at", dict(eps=0.1, alpha=0.05, steps=2))])
def test_resume_gives_same_weights_as_uninterrupted(tmp_path, isolated_settings, objective, kwargs):
    spec = TrainSpec(**TINY, objective=objective, objective_kwargs=kwargs, augment=False)
    full, hist_full = T.train(spec, tmp_path / "full", device="cpu", show_progress=False)
    T.train(spec, tmp_path / "cut", device="cpu", show_progress=False, stop_after_epoch=1)  # "interrupted"
    assert C.completed_epochs(tmp_path / "cut") == [1]
    resumed, hist_resumed = T.train(spec, tmp_path / "cut", device="cpu", show_progress=False)
    assert params_equal(full, resumed)
    assert [h["train_loss"] for h in hist_full] == [h["train_loss"] for h in hist_resumed]
    assert C.completed_epochs(tmp_path / "full") == [1, 2, 3]


def test_every_epoch_checkpoint_is_kept_and_differs(tmp_path, isolated_settings):
    spec = TrainSpec(**TINY)
    T.train(spec, tmp_path, device="cpu", show_progress=False)
    m1, m3 = T.build_from_spec(spec), T.build_from_spec(spec)
    C.load_model_state(m1, C.checkpoint_path(tmp_path, 1))
    C.load_model_state(m3, C.checkpoint_path(tmp_path, 3))
    assert not params_equal(m1, m3)


def test_nan_loss_stops_with_clear_error(tmp_path, isolated_settings):
    @T.register_objective("test_nan")
    def nan_objective(model, x, y):
        logits = model(x)
        return logits.sum() * float("nan"), logits
    spec = TrainSpec(**{**TINY, "objective": "test_nan"})
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at epoch 1, step 1"):
        T.train(spec, tmp_path, device="cpu", show_progress=False)
    assert C.completed_epochs(tmp_path) == []
    del T.OBJECTIVES["test_nan"]


def test_unknown_objective_lists_registered():
    with pytest.raises(KeyError, match="registered: .*'ce'"):
        T.get_objective("no_such_objective")


def test_training_learns_synthetic_data(tmp_path, isolated_settings):
    spec = TrainSpec(**{**TINY, "dataset": "synthetic-cifar10", "n_per_class": 40, "eval_n_per_class": 20,
                        "epochs": 4, "milestones": (3,)})
    model, hist = T.train(spec, tmp_path, device="cpu", show_progress=False)
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert hist[-1]["test_acc"] > 0.3  # chance is 0.1


def test_a_model_that_learned_nothing_is_said_loudly_when_trained_loaded_and_evaluated(tmp_path, isolated_settings):
    import warnings
    from advnb import zoo
    from advnb.attacks import evaluate
    from advnb.data import load_dataset, take
    good = TrainSpec(**{**TINY, "dataset": "synthetic-cifar10", "n_per_class": 40, "eval_n_per_class": 20,
                        "epochs": 4, "milestones": (3,)})
    stuck = good.replace(lr=0.0)  # no step moves it: it stays where it began, at chance
    with pytest.warns(T.TrainingFailedWarning, match="not above chance"):
        zoo.get(stuck, device="cpu", show_progress=False)
    with pytest.warns(T.TrainingFailedWarning, match="cached .* not above chance"):  # again, from the cache
        model = zoo.get(stuck, device="cpu", show_progress=False)
    x, y = take(load_dataset("synthetic-cifar10", "test", n_per_class=20), 200)
    with pytest.warns(UserWarning, match="not above chance"):
        evaluate(model, x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a model that learned: no word
        evaluate(zoo.get(good, device="cpu", show_progress=False), x, y)
    exploded = [{"epoch": 3, "test_acc": 0.9, "test_n": 200, "train_loss": 133.8}]
    assert "over twice a uniform guess" in T.training_failure(good, exploded)


# --- plug-ins: regularisers, callbacks, in-epoch checkpoints --------------------------------------------------------

ONE_STEP = dict(TINY, n_per_class=2, batch_size=20, epochs=1, momentum=0.0, weight_decay=0.0, schedule="constant")


@pytest.fixture
def probe_plugins():
    "Register a squared-weight regulariser and a stateful callback for one test, and remove them afterwards."
    @T.register_regularizer("test_sq")
    def sq(model, x, y):
        return sum((p ** 2).sum() for p in model.parameters())

    @T.register_callback("test_shrink")
    class Shrink(T.Callback):
        "Scales the weights by a factor that depends on a counter, so a resume without its state changes the result."
        events: list = []

        def __init__(self, rate=0.01):
            self.rate, self.count = rate, 0

        def before_step(self, ctx): Shrink.events.append(("before", ctx.epoch, ctx.step))
        def after_step(self, ctx):
            Shrink.events.append(("after", ctx.epoch, ctx.step))
            self.count += 1

        def after_epoch(self, ctx):
            Shrink.events.append(("epoch", ctx.epoch, ctx.step))
            with torch.no_grad():
                for p in ctx.model.parameters():
                    p.mul_(1 - self.rate * self.count)
            ctx.row["shrink_count"] = self.count

        def state_dict(self): return {"count": self.count}
        def load_state_dict(self, state): self.count = state["count"]

    yield Shrink
    del T.REGULARIZERS["test_sq"], T.CALLBACKS["test_shrink"]


def test_regulariser_changes_the_step_by_exactly_lambda_grad_r(tmp_path, isolated_settings, probe_plugins):
    "One plain SGD step: w1 = w0 - lr (dL + lam dR) with R = sum w^2, so w1(no reg) - w1(reg) = 2 lr lam w0."
    spec = TrainSpec(**ONE_STEP)
    lam, lr = 0.3, spec.lr
    w0 = T.build_from_spec(spec).state_dict()
    plain, _ = T.train(spec, tmp_path / "plain", device="cpu", show_progress=False)
    reg, hist = T.train(spec.replace(regularizers=(("test_sq", {"lam": lam}),)), tmp_path / "reg", device="cpu",
                        show_progress=False)
    for k, p in plain.named_parameters():
        assert torch.allclose(p - dict(reg.named_parameters())[k], 2 * lr * lam * w0[k], atol=1e-6), k
    assert hist[0]["reg_test_sq"] == pytest.approx(sum(float((v ** 2).sum()) for k, v in w0.items()
                                                      if k in dict(plain.named_parameters())), rel=1e-5)


def test_callback_hooks_run_at_the_promised_points(tmp_path, isolated_settings, probe_plugins):
    spec = TrainSpec(**{**ONE_STEP, "n_per_class": 4, "epochs": 2, "callbacks": (("test_shrink", {}),)})
    probe_plugins.events.clear()
    _, hist = T.train(spec, tmp_path, device="cpu", show_progress=False)
    steps = 2  # 40 images, batch 20
    expect = []
    for e in range(2):
        for i in range(steps):
            expect += [("before", e, e * steps + i), ("after", e, e * steps + i + 1)]
        expect.append(("epoch", e, (e + 1) * steps))
    assert probe_plugins.events == expect
    assert [h["shrink_count"] for h in hist] == [2, 4]


def test_resume_with_a_stateful_callback_is_bit_exact(tmp_path, isolated_settings, probe_plugins):
    spec = TrainSpec(**{**TINY, "callbacks": (("test_shrink", {"rate": 0.02}),)})
    full, _ = T.train(spec, tmp_path / "full", device="cpu", show_progress=False)
    T.train(spec, tmp_path / "cut", device="cpu", show_progress=False, stop_after_epoch=1)
    resumed, _ = T.train(spec, tmp_path / "cut", device="cpu", show_progress=False)
    assert params_equal(full, resumed)
    # without its saved state the callback restarts its counter and the weights differ: the state matters
    T.train(spec, tmp_path / "lost", device="cpu", show_progress=False, stop_after_epoch=1)
    meta_path = tmp_path / "lost" / "resume.json"
    meta = json.loads(meta_path.read_text()); meta["callbacks"] = [{"count": 0}]
    meta_path.write_text(json.dumps(meta))
    lost, _ = T.train(spec, tmp_path / "lost", device="cpu", show_progress=False)
    assert not params_equal(full, lost)


def test_objective_sees_epoch_and_step(tmp_path, isolated_settings):
    seen = []

    @T.register_objective("test_ramp")
    def ramp(model, x, y, epoch, step, scale=1.0):
        seen.append((epoch, step))
        logits = model(x)
        return scale * torch.nn.functional.cross_entropy(logits, y), logits
    try:
        T.train(TrainSpec(**{**ONE_STEP, "n_per_class": 4, "epochs": 2, "objective": "test_ramp"}), tmp_path,
                device="cpu", show_progress=False)
    finally:
        del T.OBJECTIVES["test_ramp"]
    assert seen == [(0, 0), (0, 1), (1, 2), (1, 3)]


def test_checkpoint_every_keeps_in_epoch_weights(tmp_path, isolated_settings):
    from advnb import zoo
    spec = TrainSpec(**{**TINY, "checkpoint_every": 2})  # 60 images, batch 16: 4 steps an epoch, 12 in all
    model = zoo.get(spec, show_progress=False)
    assert zoo.checkpoint_steps(spec) == [0, 2, 4, 6, 8, 10, 12]
    assert params_equal(zoo.load_checkpoint(spec, step=12), model)
    assert params_equal(zoo.load_checkpoint(spec, step=4), zoo.load_checkpoint(spec, epoch=1))
    assert params_equal(zoo.load_checkpoint(spec, step=0), T.build_from_spec(spec))
    assert not params_equal(zoo.load_checkpoint(spec, step=2), zoo.load_checkpoint(spec, step=4))
    with pytest.raises(FileNotFoundError, match="no checkpoint of step 3"):
        zoo.load_checkpoint(spec, step=3)
    with pytest.raises(ValueError, match="exactly one"):
        zoo.load_checkpoint(spec)


def test_plugin_module_failing_to_import_surfaces_as_itself(monkeypatch):
    import importlib.metadata
    from advnb import registry
    broken = importlib.metadata.EntryPoint(name="broken", value="advnb_test_missing_dependency", group=registry.PLUGIN_GROUP)
    real = importlib.metadata.entry_points
    monkeypatch.setattr(registry.importlib.metadata, "entry_points",
                        lambda group: [*real(group=group), broken] if group == registry.PLUGIN_GROUP else real(group=group))
    with pytest.raises(ModuleNotFoundError, match="advnb_test_missing_dependency"):  # its own error, not "no objective"
        T.get_objective("not_registered_anywhere")


def test_paper_plugins_are_found_through_their_entry_points():
    import sys
    sys.modules.pop("advnb.papers.d_rlfat", None)
    T.OBJECTIVES.pop("rlfat_t", None)
    assert T.get_objective("rlfat_t").__module__ == "advnb.papers.d_rlfat"  # loaded by its `advnb.plugins` entry point
    assert T.get_objective("trades").__module__ == "advnb.train"  # TRADES is a foundation objective


# --- stale models: the key follows the code ---------------------------------------------------------------------

def _helper_a(z):
    return z * 1.0


def _helper_b(z):
    return z * 2.0


def test_key_changes_with_the_objective_and_what_it_calls(monkeypatch):
    import advnb.attacks as A
    import sys

    def probe(model, x, y):
        logits = model(x)
        return _helper_a(torch.nn.functional.cross_entropy(logits, y)), logits

    def probe_edited(model, x, y):
        logits = model(x)
        return _helper_a(torch.nn.functional.cross_entropy(logits, y)) + 0.0, logits
    spec = TrainSpec(**{**TINY, "objective": "test_probe"})
    try:
        T.register_objective("test_probe")(probe)
        k0 = spec.key
        T.register_objective("test_probe")(probe_edited)
        assert spec.key != k0                                   # the objective's source changed
        T.register_objective("test_probe")(probe)
        assert spec.key == k0
        monkeypatch.setattr(sys.modules[__name__], "_helper_a", _helper_b)
        assert spec.key != k0                                   # a function it calls changed
        monkeypatch.undo()
        assert spec.key == k0
        monkeypatch.setattr(A, "deepfool", _helper_b)           # an attack it does not use: same key
        monkeypatch.setattr(A, "adef", _helper_b)
        assert spec.key == k0
    finally:
        T.OBJECTIVES.pop("test_probe", None)
    adv = TrainSpec(**{**TINY, "objective": "pgd_at"})
    k1 = adv.key
    replace_everywhere(monkeypatch, A.pgd, _helper_b)         # PGD-AT runs pgd: editing pgd retrains
    assert adv.key != k1


# --- the training loop's arithmetic (issue: mutants that survived) ----------------------------------------------

def test_history_lr_follows_the_schedule_per_epoch(tmp_path, isolated_settings):
    spec = TrainSpec(**{**TINY, "epochs": 4, "milestones": (2, 3), "lr": 0.1})
    _, hist = T.train(spec, tmp_path, device="cpu", show_progress=False)
    assert [h["lr"] for h in hist] == pytest.approx([0.1, 0.1, 0.01, 0.001])


def test_resume_restores_the_global_rng_for_objectives_that_draw_from_it(tmp_path, isolated_settings):
    @T.register_objective("test_noise")
    def noisy(model, x, y):
        logits = model((x + 0.1 * torch.randn_like(x)).clamp(0, 1))  # draws from the global generator
        return torch.nn.functional.cross_entropy(logits, y), logits
    try:
        spec = TrainSpec(**{**TINY, "objective": "test_noise"})
        full, _ = T.train(spec, tmp_path / "full", device="cpu", show_progress=False)
        T.train(spec, tmp_path / "cut", device="cpu", show_progress=False, stop_after_epoch=1)
        torch.manual_seed(12345)  # a new process would start from some other state
        resumed, _ = T.train(spec, tmp_path / "cut", device="cpu", show_progress=False)
    finally:
        del T.OBJECTIVES["test_noise"]
    assert params_equal(full, resumed)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_weight_decay_shrinks_weights_when_the_gradient_is_zero(tmp_path, isolated_settings, optimizer):
    @T.register_objective("test_zero")
    def zero(model, x, y):
        logits = model(x)
        return 0.0 * logits.sum(), logits
    try:
        spec = TrainSpec(**{**ONE_STEP, "objective": "test_zero", "optimizer": optimizer, "lr": 0.1,
                            "weight_decay": 0.01})
        w0 = T.build_from_spec(spec).state_dict()
        model, _ = T.train(spec, tmp_path, device="cpu", show_progress=False)
    finally:
        del T.OBJECTIVES["test_zero"]
    for k, p in model.named_parameters():
        if optimizer == "sgd":  # coupled L2: w1 = w0 - lr * wd * w0
            assert torch.allclose(p, w0[k] * (1 - 0.1 * 0.01), atol=1e-7), k
        else:  # Adam's first step, bias-corrected: m = g, sqrt(v) = |g| with g = wd * w0, so w1 = w0 - lr g / (|g| + eps)
            g = 0.01 * w0[k]
            assert torch.allclose(p, w0[k] - 0.1 * g / (g.abs() + 1e-8), atol=1e-6), k
