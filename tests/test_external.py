"""advnb.external: a model trained elsewhere, loaded in the pixel-space convention, and analysed by the papers'
notebooks beside their own models (`advnb run --set external_model=...`)."""
import json
import sys
import textwrap

import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

from advnb.core import variant_name
from advnb.data import dataset_info
from advnb.external import ExternalModelError, check_external_source, external_models, load_external_model
from advnb.models import Normalize, build_model

DS = "synthetic-cifar10"
KNOBS = {"width": 4, "hidden": 16}


def saved(tmp_path, model, name="mine"):
    path = tmp_path / f"{name}.safetensors"
    save_file(model.state_dict(), str(path))
    return str(path)


def source(path, **more):
    return {"name": "mine", "checkpoint": path, "arch": "simple_cnn", "arch_kwargs": KNOBS, **more}


@pytest.fixture
def trained_elsewhere():
    torch.manual_seed(1)
    return build_model("simple_cnn", dataset=DS, **KNOBS).eval()


def test_a_checkpoint_loads_into_its_architecture_and_computes_the_same(tmp_path, trained_elsewhere):
    model = load_external_model(source(saved(tmp_path, trained_elsewhere)), DS)
    x = torch.rand(5, 3, 32, 32)
    assert torch.equal(model(x), trained_elsewhere(x)) and not model.training
    assert model.external_name == "mine" and model.external_note == "normalisation: the model's own"


def test_a_checkpoint_without_normalize_gets_the_data_sets_or_the_one_asked_for(tmp_path, trained_elsewhere):
    bare = {k: v for k, v in trained_elsewhere.state_dict().items() if not k.startswith("normalize.")}
    path = str(tmp_path / "bare.safetensors")
    save_file(bare, path)
    info, x = dataset_info(DS), torch.rand(3, 3, 32, 32)
    auto = load_external_model(source(path), DS)
    assert torch.allclose(auto.normalize.mean.flatten(), torch.tensor(info.mean)) and "as the first layer" in auto.external_note
    raw = load_external_model(source(path, normalize="none"), DS)
    assert torch.equal(raw.normalize.mean, torch.zeros(1, 3, 1, 1)) and torch.equal(raw.normalize.std, torch.ones(1, 3, 1, 1))
    given = load_external_model(source(path, normalize={"mean": [0.5] * 3, "std": [0.25] * 3}), DS)
    with torch.no_grad():
        assert torch.allclose(given(x), raw((x - 0.5) / 0.25), atol=1e-6)


def factory_module(tmp_path, monkeypatch, body):
    (tmp_path / "elsewhere.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("elsewhere", None)


def test_a_functions_model_is_put_behind_the_data_sets_normalisation_unless_told(tmp_path, monkeypatch):
    factory_module(tmp_path, monkeypatch, """
        import torch.nn as nn
        def pixels(classes=10):
            return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, classes))
    """)
    wrapped = load_external_model({"factory": "elsewhere:pixels"}, DS)
    assert isinstance(wrapped[0], Normalize) and wrapped.external_name == "pixels"
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(wrapped(x), wrapped[1](wrapped[0](x)))
    alone = load_external_model({"factory": "elsewhere:pixels", "normalize": "none"}, DS)
    assert not any(isinstance(m, Normalize) for m in alone.modules())
    with pytest.raises(ExternalModelError, match=r"returned \(2, 4\).*\(2, 10\)"):  # another number of classes
        load_external_model({"factory": "elsewhere:pixels", "factory_kwargs": {"classes": 4}}, DS)
    with pytest.raises(ExternalModelError, match="cannot import"):
        load_external_model({"factory": "elsewhere:absent"}, DS)


def test_a_model_that_does_not_take_the_images_is_stopped_with_what_it_was_given(tmp_path, trained_elsewhere):
    path = saved(tmp_path, trained_elsewhere)
    with pytest.raises(ExternalModelError, match="(?s)does not fit simple_cnn.*conv1.weight"):  # 3-channel weights, grey data
        load_external_model(source(path), "synthetic-mnist")
    with pytest.raises(ExternalModelError, match="does not fit"):
        load_external_model(source(path, arch_kwargs={"width": 8, "hidden": 16}), DS)
    partial = {k: v for k, v in trained_elsewhere.state_dict().items() if k != "conv1.bias"}
    save_file(partial, str(tmp_path / "partial.safetensors"))
    with pytest.raises(ExternalModelError, match=r"missing \['conv1.bias'\]"):  # no weight is left at its initial value
        load_external_model(source(str(tmp_path / "partial.safetensors")), DS)
    with pytest.raises(ExternalModelError, match=r"does not take synthetic-cifar10's images, a batch of shape \(2, 3, 32, 32\)"):
        from advnb.external import check_takes_images
        check_takes_images(nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10)), DS, "grey")


def test_probabilities_are_allowed_with_a_warning():
    from advnb.external import check_takes_images
    with pytest.warns(UserWarning, match="probabilities"):
        check_takes_images(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10), nn.Softmax(1)), DS)


@pytest.mark.parametrize("bad, message", [
    ({"checkpoint": "mine.safetensors", "arch": "simple_cnn"}, "absolute path"),
    ({"checkpoint": "/tmp/mine.pt", "arch": "simple_cnn"}, "never unpickles"),
    ({"checkpoint": "/nonexistent/mine.safetensors", "arch": "simple_cnn"}, "no checkpoint at"),
    ({"factory": "a:b", "checkpoint": "/x.safetensors"}, "one of 'checkpoint'"),
    ({"factory": "no_colon"}, "package.module:function"),
    ({"factory": "a:b", "weights": 1}, "unknown key"),
    ({"factory": "a:b", "normalize": "yes"}, "normalize must be"),
    ("mine.safetensors", "must be a dict"),
])
def test_a_bad_source_is_refused_before_anything_loads(bad, message):
    with pytest.raises(ExternalModelError, match=message):
        check_external_source(bad)


def test_a_checkpoint_needs_its_architecture(tmp_path, trained_elsewhere):
    with pytest.raises(ExternalModelError, match="needs its architecture"):
        check_external_source({"checkpoint": saved(tmp_path, trained_elsewhere)})


def test_external_models_is_empty_without_a_source_and_keeps_the_notebooks_names(tmp_path, trained_elsewhere):
    assert external_models({}, DS) == {}
    path = saved(tmp_path, trained_elsewhere)
    assert list(external_models(source(path), DS, taken=["PGDAT"])) == ["mine"]
    with pytest.raises(ExternalModelError, match="one of this notebook's models"):
        external_models(source(path, name="PGDAT"), DS, taken=["PGDAT", "TRADES"])


def test_a_named_source_names_its_variant():
    a = variant_name({"external_model": {"name": "mine", "factory": "a:b"}})
    b = variant_name({"external_model": {"name": "mine", "factory": "a:c"}})
    assert a.startswith("external_model=mine-") and a != b  # two models of one name do not share a render


# one notebook per paper that analyses trained models, with the data set of its smoke defaults
EXTERNAL_NOTEBOOKS = {"a1_frequency": ("A", DS), "b2_shapes": ("B", "fourshapes"), "c4_nonlinear": ("C", DS),
                      "d3_sensitivity": ("D", DS), "e3_margins_singular": ("E", DS)}


@pytest.mark.slow
def test_an_external_checkpoint_through_one_notebook_per_paper(smoke_site, tmp_path, monkeypatch):
    from advnb import core
    from advnb.workflow import runner
    smoke_reports, _, _ = smoke_site
    monkeypatch.setenv("ADVNB_CACHE_DIR", str(smoke_reports.parent / "cache"))  # the smoke run's models: nothing retrains
    monkeypatch.setenv("ADVNB_DEVICE", "cpu")
    core.get_settings(reload=True)
    reports, variants, rcs = tmp_path / "reports", {}, []
    try:
        for ds in sorted({d for _, d in EXTERNAL_NOTEBOOKS.values()}):
            torch.manual_seed(2)  # a model saved outside the zoo by this test, for the data set's images
            src = source(saved(tmp_path, build_model("simple_cnn", dataset=ds, **KNOBS), name=f"mine-{ds}"))
            names = [nb for nb, (_, d) in EXTERNAL_NOTEBOOKS.items() if d == ds]
            rcs.append(runner.main(["run", "--scale", "smoke", "--set", f"external_model={json.dumps(src)}", *names,
                                    "--reports-dir", str(reports)]))
            variants.update({nb: variant_name({"external_model": src}) for nb in names})
    finally:
        monkeypatch.undo()
        core.get_settings(reload=True)
        core._current_run = None
    states = {p.stem: json.loads(p.read_text()) for p in (reports / "smoke" / ".state").glob("*.json")}
    assert rcs == [0, 0] and {f"{nb}@{v}" for nb, v in variants.items()} <= set(states), states
    for nb, (paper, _) in EXTERNAL_NOTEBOOKS.items():  # the model has a row, column or series of its own in a table
        tables = list((reports / "smoke" / "tables").glob(f"{paper}_*@{variants[nb]}.md"))
        assert any("mine" in t.read_text() for t in tables), (nb, [t.name for t in tables])
    claims = [json.loads(line) for line in (reports / "smoke" / "claims.jsonl").read_text().splitlines()]
    assert {c["paper"] for c in claims} == set("ABCDE") and all("@external_model=mine-" in c["id"] for c in claims)
