import json
import shutil

import pytest
import torch

from advnb import checkpoints as C
from advnb import train as T
from advnb import zoo
from advnb.train import TrainSpec

SPEC = TrainSpec(arch="simple_cnn", dataset="synthetic-mnist", n_per_class=6, eval_n_per_class=3, batch_size=16,
                 lr=0.05, epochs=2, milestones=(), seed=3)


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_get_trains_once_then_loads(isolated_settings, monkeypatch):
    m1 = zoo.get(SPEC, show_progress=False)
    assert zoo.is_trained(SPEC) and zoo.checkpoint_epochs(SPEC) == [1, 2]
    assert [h["epoch"] for h in zoo.history(SPEC)] == [1, 2]
    monkeypatch.setattr(zoo, "train", lambda *a, **k: pytest.fail("zoo retrained a cached model"))
    m2 = zoo.get(SPEC, show_progress=False)
    assert same(m1, m2) and not m2.training
    assert not same(zoo.load_epoch(SPEC, 1), m2)


def test_corrupted_cache_is_retrained_not_loaded(isolated_settings):
    m1 = zoo.get(SPEC, show_progress=False)
    final = C.checkpoint_path(zoo.spec_dir(SPEC), 2)
    data = bytearray(final.read_bytes())
    data[len(data) // 2] ^= 0xFF
    final.write_bytes(bytes(data))
    calls = []
    orig = zoo.train
    zoo.train = lambda *a, **k: (calls.append(1), orig(*a, **k))[1]
    try:
        m2 = zoo.get(SPEC, show_progress=False)
    finally:
        zoo.train = orig
    assert calls == [1]
    assert same(m1, m2)  # deterministic training reproduces the lost weights
    C.load_model_state(T.build_from_spec(SPEC), final)  # and the file on disk is sound again


def test_interrupted_training_resumes(isolated_settings):
    d = zoo.spec_dir(SPEC)
    T.train(SPEC, d, device="cpu", show_progress=False, stop_after_epoch=1)
    assert not zoo.is_trained(SPEC)
    first = json.loads((d / "resume.json").read_text())["history"]  # what the interrupted run recorded
    m = zoo.get(SPEC, show_progress=False)
    ref, _ = T.train(SPEC, isolated_settings / "ref", device="cpu", show_progress=False)
    assert same(m, ref)
    # a resume, not a restart: the first epoch's record (its measured seconds too) is the interrupted run's own
    assert zoo.history(SPEC)[:1] == first[:1] and len(zoo.history(SPEC)) == SPEC.epochs


def test_missing_model_without_training_is_an_error(isolated_settings):
    with pytest.raises(FileNotFoundError, match="not in the zoo"):
        zoo.get(SPEC.replace(seed=99), train_if_missing=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint of epoch 5"):
        zoo.load_epoch(SPEC.replace(seed=98), 5)


def test_cached_result_computes_once_per_spec_key_and_code(tmp_path):
    from advnb.train import TrainSpec
    spec = TrainSpec(arch="simple_cnn", dataset="synthetic-mnist")
    calls = []

    def compute():
        calls.append(1)
        return {"acc": 0.5, "n": len(calls)}

    def code_a(): return 1

    def code_b(): return 2

    r1 = zoo.cached_result(spec, "probe", {"n": 10}, compute, code=(code_a,), cache_dir=tmp_path)
    r2 = zoo.cached_result(spec, "probe", {"n": 10}, compute, code=(code_a,), cache_dir=tmp_path)
    assert r1 == r2 == {"acc": 0.5, "n": 1} and len(calls) == 1
    zoo.cached_result(spec, "probe", {"n": 11}, compute, code=(code_a,), cache_dir=tmp_path)
    zoo.cached_result(spec, "probe", {"n": 10}, compute, code=(code_b,), cache_dir=tmp_path)
    zoo.cached_result(spec.replace(seed=1), "probe", {"n": 10}, compute, code=(code_a,), cache_dir=tmp_path)
    assert len(calls) == 4
    for p in (tmp_path / "probe").glob("*.json"):
        p.write_text("{not json")
    assert zoo.cached_result(spec, "probe", {"n": 10}, compute, code=(code_a,), cache_dir=tmp_path)["n"] == 5


def _file_under_old_key(spec: TrainSpec, old_key: str):
    "File `spec`'s run as an older code's key would have: folder name and metadata; returns the old folder."
    d = zoo.spec_dir(spec)
    for p in d.glob("*.json"):
        meta = json.loads(p.read_text())
        if "spec_key" in meta:
            p.write_text(json.dumps({**meta, "spec_key": old_key}))
    old = d.with_name(d.name.replace(spec.key, old_key))
    d.rename(old)
    return old


def test_rekey_carries_finished_and_interrupted_runs_to_the_current_key(isolated_settings, monkeypatch):
    done_model = zoo.get(SPEC, show_progress=False)
    old_done = _file_under_old_key(SPEC, "0" * 16)
    other = SPEC.replace(seed=4)  # an interrupted run: resume.json records its spec and key
    T.train(other, zoo.spec_dir(other), device="cpu", show_progress=False, stop_after_epoch=1)
    old_partial = _file_under_old_key(other, "1" * 16)
    (zoo.zoo_dir() / "stray").mkdir()
    expected = sorted([(old_done.name, SPEC.name), (old_partial.name, other.name)])
    assert sorted(zoo.rekey(dry_run=True)["renamed"]) == expected and old_done.exists()  # a dry run renames nothing
    out = zoo.rekey()
    assert sorted(out["renamed"]) == expected and out["current"] == []
    assert [name for name, _ in out["skipped"]] == ["stray"]
    assert not old_done.exists() and not old_partial.exists()
    with monkeypatch.context() as m:
        m.setattr(zoo, "train", lambda *a, **k: pytest.fail("zoo retrained a model rekey carried"))
        assert same(zoo.get(SPEC, show_progress=False), done_model)
    metas = [json.loads(p.read_text()) for p in zoo.spec_dir(other).glob("*.json")]
    assert len(metas) == 2 and all(m["spec_key"] == other.key for m in metas)  # epoch_001.json and resume.json
    resumed = zoo.get(other, show_progress=False)  # resumes from epoch 1: resume.json carries the current key
    ref, _ = T.train(other, isolated_settings / "ref", device="cpu", show_progress=False)
    assert same(resumed, ref)
    copy = zoo.zoo_dir() / old_done.name  # the same run under an old key beside the current one: never merged
    shutil.copytree(zoo.spec_dir(SPEC), copy)
    assert (old_done.name, f"{SPEC.name} exists already; remove one of the two") in zoo.rekey()["skipped"]


def test_rekey_command_reports_what_it_did(isolated_settings, capsys):
    from advnb.workflow import runner
    zoo.get(SPEC, show_progress=False)
    old = _file_under_old_key(SPEC, "0" * 16)
    assert runner.main(["rekey", "--dry-run"]) == 0 and old.exists()
    assert f"would rename {old.name} -> {SPEC.name}" in capsys.readouterr().out
    assert runner.main(["rekey"]) == 0 and zoo.is_trained(SPEC)
    assert "1 renamed, 0 already current, 0 skipped" in capsys.readouterr().out


def test_rekey_migrates_a_spec_recorded_before_a_field_and_a_plug_in_were_renamed(isolated_settings, monkeypatch):
    spec = SPEC.replace(callbacks=(("spectral_normalization", {"sigma": 5.0, "mode": "clip"}),))
    trained = zoo.get(spec, show_progress=False)
    old = _file_under_old_key(spec, "2" * 16)
    for p in old.glob("*.json"):  # as the code before the renames recorded it
        meta = json.loads(p.read_text())
        if "spec" in meta:
            s = dict(meta["spec"])
            s["gamma"] = s.pop("lr_decay")
            s["callbacks"] = [["spectral_normalisation", kw] for _, kw in s["callbacks"]]
            p.write_text(json.dumps({**meta, "spec": s}))
    assert TrainSpec.from_dict(json.loads((old / "done.json").read_text())["spec"]) == spec
    assert zoo.rekey()["renamed"] == [(old.name, spec.name)]
    assert json.loads((zoo.spec_dir(spec) / "done.json").read_text())["spec"] == spec.to_dict()  # the record is current
    with monkeypatch.context() as m:
        m.setattr(zoo, "train", lambda *a, **k: pytest.fail("zoo retrained a model rekey carried"))
        assert same(zoo.get(spec, show_progress=False), trained)
    with pytest.raises(KeyError, match="renamed to 'spectral_normalization'"):
        T.CALLBACKS.lookup("spectral_normalisation")


def _epochs_on_disk(d, losses):
    "Checkpoints of epochs 1..len(losses) of a fresh SPEC model in `d`, each with its history up to then."
    model, hist = T.build_from_spec(SPEC), []
    for e, loss in enumerate(losses, 1):
        hist.append({"epoch": e, "test_loss": loss})
        C.save_model(model, C.checkpoint_path(d, e), {"spec_key": SPEC.key, "epoch": e, "history": list(hist)})
    return model


def test_discard_from_an_epoch_removes_that_epoch_and_later(tmp_path):
    _epochs_on_disk(tmp_path, [1.0, 1.0, 1.0])
    C.discard_from(tmp_path, 2)
    assert C.completed_epochs(tmp_path) == [1]


def test_a_checkpoint_lost_between_two_others_is_the_first_unsound(tmp_path):
    _epochs_on_disk(tmp_path, [1.0, 1.0, 1.0])
    for suffix in (".safetensors", ".json"):
        C.checkpoint_path(tmp_path, 2).with_suffix(suffix).unlink()
    assert C.first_unsound(tmp_path) == (2, None)


def test_the_last_good_epoch_has_a_finite_test_loss(tmp_path):
    _epochs_on_disk(tmp_path, [1.0, float("nan")])
    assert C.last_good_epoch(tmp_path) == 1


def test_a_finished_runs_lost_last_checkpoint_is_repaired(isolated_settings):
    final = zoo.get(SPEC, show_progress=False)
    for suffix in (".safetensors", ".json"):
        C.checkpoint_path(zoo.spec_dir(SPEC), SPEC.epochs).with_suffix(suffix).unlink()
    assert same(zoo.load_epoch(SPEC, SPEC.epochs), final)  # retrained, the very same weights
