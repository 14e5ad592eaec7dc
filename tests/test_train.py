import json
import math

import pytest
import torch

from advnb import train as T
from advnb.train import CorruptCheckpointError, NonFiniteLossError, TrainSpec

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
    T.save_model(model, tmp_path / "m.safetensors", {"note": "x"})
    other = T.build_from_spec(TrainSpec(**{**TINY, "seed": 8}))
    assert not params_equal(model, other)
    meta = T.load_model_state(other, tmp_path / "m.safetensors")
    assert params_equal(model, other) and meta["note"] == "x"


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "drop_meta", "bad_json"])
def test_corrupted_checkpoint_is_rejected(tmp_path, isolated_settings, damage):
    model = T.build_from_spec(TrainSpec(**TINY))
    path = tmp_path / "m.safetensors"
    T.save_model(model, path)
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
        T.load_model_state(model, path)


@pytest.mark.parametrize("objective,kwargs", [("ce", {}), ("pgd_at", dict(eps=0.1, alpha=0.05, steps=2))])
def test_resume_gives_same_weights_as_uninterrupted(tmp_path, isolated_settings, objective, kwargs):
    spec = TrainSpec(**TINY, objective=objective, objective_kwargs=kwargs, augment=False)
    full, hist_full = T.train(spec, tmp_path / "full", device="cpu", show_progress=False)
    T.train(spec, tmp_path / "cut", device="cpu", show_progress=False, stop_after_epoch=1)  # "interrupted"
    assert T.completed_epochs(tmp_path / "cut") == [1]
    resumed, hist_resumed = T.train(spec, tmp_path / "cut", device="cpu", show_progress=False)
    assert params_equal(full, resumed)
    assert [h["train_loss"] for h in hist_full] == [h["train_loss"] for h in hist_resumed]
    assert T.completed_epochs(tmp_path / "full") == [1, 2, 3]


def test_every_epoch_checkpoint_is_kept_and_differs(tmp_path, isolated_settings):
    spec = TrainSpec(**TINY)
    T.train(spec, tmp_path, device="cpu", show_progress=False)
    m1, m3 = T.build_from_spec(spec), T.build_from_spec(spec)
    T.load_model_state(m1, T.checkpoint_path(tmp_path, 1))
    T.load_model_state(m3, T.checkpoint_path(tmp_path, 3))
    assert not params_equal(m1, m3)


def test_nan_loss_stops_with_clear_error(tmp_path, isolated_settings):
    @T.register_objective("test_nan")
    def nan_objective(model, x, y):
        logits = model(x)
        return logits.sum() * float("nan"), logits
    spec = TrainSpec(**{**TINY, "objective": "test_nan"})
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at epoch 1, step 1"):
        T.train(spec, tmp_path, device="cpu", show_progress=False)
    assert T.completed_epochs(tmp_path) == []
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
