import inspect
import os
import subprocess
import sys
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import pytest
import torch

from advnb import core
from conftest import replace_everywhere
from advnb.core import Settings, SettingsError, load_settings


def write_ini(path: Path, **kv) -> Path:
    path.write_text("[advnb]\n" + "".join(f"{k} = {v}\n" for k, v in kv.items()))
    return path


def test_defaults_when_no_file_and_no_env(tmp_path):
    s = load_settings(path=None, environ={"ADVNB_SETTINGS": str(write_ini(tmp_path / "s.ini"))})
    assert (s.device, s.num_workers, s.scale, s.download) == ("auto", 0, "quick", False)
    assert s.data_root.is_absolute()


def test_ini_overrides_defaults_and_resolves_relative_to_file(tmp_path):
    ini = write_ini(tmp_path / "settings.ini", data_root="mydata", num_workers=3, scale="paper", download="yes")
    s = load_settings(ini, environ={})
    assert s.data_root == (tmp_path / "mydata").resolve()
    assert (s.num_workers, s.scale, s.download) == (3, "paper", True)
    assert s.source == str(ini)


def test_env_overrides_ini(tmp_path):
    ini = write_ini(tmp_path / "settings.ini", data_root="mydata", device="cpu", num_workers=3)
    env = {"ADVNB_DATA_ROOT": str(tmp_path / "elsewhere"), "ADVNB_NUM_WORKERS": "1", "ADVNB_DOWNLOAD": "0"}
    s = load_settings(ini, environ=env)
    assert s.data_root == tmp_path / "elsewhere"
    assert s.num_workers == 1 and s.device == "cpu" and s.download is False


def test_settings_file_found_by_walking_up_and_via_env(tmp_path, monkeypatch):
    write_ini(tmp_path / "settings.ini", scale="smoke")
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    assert core.find_settings_file(environ={}, start=sub) == tmp_path / "settings.ini"
    other = write_ini(tmp_path / "other.ini", scale="paper")
    assert load_settings(environ={"ADVNB_SETTINGS": str(other)}).scale == "paper"


@pytest.mark.parametrize("key,value,needle", [
    ("num_workers", "many", "not an integer"), ("num_workers", "-1", "0 or more"), ("download", "maybe", "boolean"),
    ("scale", "huge", "not one of"), ("device", "gpu0", "not a torch device")])
def test_bad_values_name_key_and_origin(tmp_path, key, value, needle):
    with pytest.raises(SettingsError, match=needle) as e:
        load_settings(write_ini(tmp_path / "settings.ini"), environ={f"ADVNB_{key.upper()}": value})
    assert f"ADVNB_{key.upper()}" in str(e.value)


def test_unknown_key_in_ini_is_an_error(tmp_path):
    with pytest.raises(SettingsError, match="unknown key 'colour'"):
        load_settings(write_ini(tmp_path / "settings.ini", colour="blue"), environ={})


def test_repository_settings_file_parses_and_gives_the_defaults_but_its_folders():
    "A value the file states beside its default overrides it in every run from here: they drifted once (dry_run_images)."
    import dataclasses
    s = load_settings(Path(__file__).resolve().parents[1] / "settings.ini", environ={})
    assert isinstance(s, Settings) and s.scale in core.SCALES
    differ = {f.name for f in dataclasses.fields(Settings) if getattr(s, f.name) != getattr(Settings(), f.name)}
    assert differ <= {"data_root", "cache_dir", "reports_dir", "source"}, differ  # paths: resolved against the file


def test_device_choice():
    assert core.get_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert core.get_device("auto").type in ("cpu", "mps")
        with pytest.raises(SettingsError, match="CUDA is not available"):
            core.get_device("cuda")


def test_seed_everything_repeats_all_streams():
    import random
    import numpy as np
    core.seed_everything(123)
    a = (random.random(), np.random.rand(), torch.rand(3))
    core.seed_everything(123)
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
    core.seed_everything(124)  # and another seed moves every stream
    c = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] != c[0] and a[1] != c[1] and not torch.equal(a[2], c[2])


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    p = tmp_path / "f.txt"
    core.atomic_write_text(p, "old")
    with pytest.raises(RuntimeError):
        with core.atomic_path(p) as tmp:
            tmp.write_text("new but interrupted")
            raise RuntimeError("interrupted")
    assert p.read_text() == "old"
    assert [x.name for x in tmp_path.iterdir()] == ["f.txt"]


def test_content_hash_is_order_independent_and_sensitive():
    assert core.content_hash({"a": 1, "b": [1, 2]}) == core.content_hash({"b": [1, 2], "a": 1})
    assert core.content_hash({"a": 1}) != core.content_hash({"a": 2})


def test_save_figure_and_table_use_paper_numbers(tmp_path):
    run = core.start_run("t", scale="smoke", seed=0, reports_dir=tmp_path)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    paths = core.save_figure(fig, "lowpass natural", paper="A", number="1a")
    plt.close(fig)
    assert [p.name for p in paths] == ["A_fig1a_lowpass_natural.png", "A_fig1a_lowpass_natural.pdf"]
    assert paths[0].read_bytes()[:4] == b"\x89PNG" and paths[1].read_bytes()[:4] == b"%PDF"
    df = pd.DataFrame({"model": ["STD", "ADV"], "acc": [0.9531, 0.8443]}).set_index("model")
    csv, md = core.save_table(df, "local responses", paper="A", number=1)
    assert csv.name == "A_table1_local_responses.csv" and md.name == "A_table1_local_responses.md"
    assert pd.read_csv(csv, index_col=0).loc["ADV", "acc"] == pytest.approx(0.8443)
    assert md.read_text().splitlines()[:3] == ["| model | acc |", "| --- | --- |", "| STD | 0.9531 |"]
    assert run.root == (tmp_path / "smoke").resolve()
    core._current_run = None


def test_start_run_rejects_unknown_scale(tmp_path):
    with pytest.raises(SettingsError, match="not one of"):
        core.start_run("t", scale="medium", reports_dir=tmp_path)


def test_atomic_writes_respect_the_umask(tmp_path):
    "mkstemp makes 0600 files; an atomically written file must get the mode open() would give it."
    old = os.umask(0o022)
    try:
        core.atomic_write_text(tmp_path / "a.txt", "x")
        assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
        os.umask(0o002)
        core.atomic_write_json(tmp_path / "b.json", {"a": 1})
        assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o664
    finally:
        os.umask(old)


def test_code_fingerprint_follows_calls_and_imports_inside_functions():
    ns = {"__name__": "__main__"}
    exec("def helper(x): return x + 1\ndef f(x): return helper(x)\ndef unrelated(x): return x", ns)
    before = core.code_fingerprint(ns["f"])
    exec("def unrelated(x): return -x", ns)
    assert core.code_fingerprint(ns["f"]) == before
    exec("def helper(x): return x + 2", ns)
    assert core.code_fingerprint(ns["f"]) != before
    # a function-level `from advnb.attacks import pgd` is followed; library code (torch) is not
    from advnb.train import pgd_at_objective
    from advnb import attacks
    seen = {f"{o.__module__}.{o.__qualname__}" for o in core._referenced(pgd_at_objective)}
    assert "advnb.gradient_attacks.pgd" in seen and not any(s.startswith("torch") for s in seen)
    assert not core._is_project_code(torch.nn.Linear) and core._is_project_code(attacks.pgd)


def test_package_docstring_and_llms_txt_name_every_module():
    import advnb
    root = Path(advnb.__file__).parent
    modules = sorted(".".join(p.relative_to(root).with_suffix("").parts) for p in root.rglob("*.py")
                     if not p.name.startswith("_"))
    assert "papers.d_rlfat" in modules and "workflow.runner" in modules  # the wings are covered too
    llms = (root.parent / "nbs" / "llms.txt").read_text()
    missing = [m for m in modules if f"`advnb.{m}`" not in advnb.__doc__ or f"`advnb.{m}`" not in llms]
    assert not missing, f"not named in advnb/__init__.py or nbs/llms.txt: {missing} (a module summary needs 4+ lines)"


def test_torch_threads_setting_is_applied_by_start_run(monkeypatch, tmp_path):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("ADVNB_TORCH_THREADS", "1")
        core.get_settings(reload=True)
        torch.set_num_threads(2)
        core.start_run("threads", "smoke", 0, reports_dir=tmp_path)
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("ADVNB_TORCH_THREADS", "0")
        monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")
        core.get_settings(reload=True)
        core.start_run("threads", "smoke", 0, reports_dir=tmp_path)
        assert torch.get_num_threads() == 2  # inside a Slurm job: the CPUs it was given
        monkeypatch.setenv("ADVNB_TORCH_THREADS", "many")
        with pytest.raises(core.SettingsError, match="torch_threads='many' is not an integer"):
            core.get_settings(reload=True)
    finally:
        monkeypatch.undo()
        core.get_settings(reload=True)
        core._current_run = None
        torch.set_num_threads(before)


# --- model keys: behaviour, not text or place ---------------------------------------------------------------------
def _module_from_source(monkeypatch, tmp_path, name: str, source: str, namespace: dict):
    "A real module file (so `inspect` finds its source) whose globals start as a copy of `namespace`."
    import importlib.util
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    mod.__dict__.update({k: v for k, v in namespace.items() if not k.startswith("__")})
    monkeypatch.setitem(sys.modules, name, mod)
    spec.loader.exec_module(mod)
    return mod


def test_spec_key_ignores_docstrings_comments_layout_and_module(tmp_path, monkeypatch):
    from advnb import attacks
    from advnb.train import TrainSpec
    spec = TrainSpec(arch="simple_cnn", dataset="synthetic-mnist", objective="ce")
    before = spec.key
    tidied = ('def model_device(model) -> torch.device:\n'
              '    """Where `model` lives: the device of its first parameter.\n\n    Reworded, as a tidy-up would."""\n'
              '    # a comment that was not there\n'
              '    p = (next(iter(model.parameters()), None)\n'
              '         if isinstance(model, nn.Module) else None)\n'
              "    return p.device if p is not None else torch.device('cpu')\n")
    moved = _module_from_source(monkeypatch, tmp_path, "advnb_keytest_moved", tidied, vars(attacks))
    replace_everywhere(monkeypatch, attacks.model_device, moved.model_device)  # reworded, reformatted, moved
    assert spec.key == before
    changed = tidied.replace("torch.device('cpu')", "torch.device('meta')")  # one line that behaves differently
    other = _module_from_source(monkeypatch, tmp_path, "advnb_keytest_changed", changed, vars(attacks))
    replace_everywhere(monkeypatch, attacks.model_device, other.model_device)
    assert spec.key != before  # so the helper is part of this key, and the check above could fail


def test_a_settings_default_or_the_progress_display_renames_no_model(tmp_path, monkeypatch):
    "They decide how a run is set up and shown, not what a model computes (`core.leave_out_of_fingerprints`)."
    import re
    from advnb.train import TrainSpec
    spec = TrainSpec(arch="simple_cnn", dataset="synthetic-mnist", objective="ce")
    before = spec.key
    assert {core.Settings, core.get_settings, core.atomic_write_json, core.progress} <= core._LEFT_OUT
    monkeypatch.setattr(core, "_LEFT_OUT", set(core._LEFT_OUT))
    for obj, pattern, new in [(core.Settings, r"dry_run_images: int = \d+", "dry_run_images: int = 999"),
                              (core.progress, r'"ncols", \d+', '"ncols", 999')]:
        source = inspect.getsource(obj)
        edited = re.sub(pattern, new, source)
        assert edited != source
        other = _module_from_source(monkeypatch, tmp_path, f"advnb_keytest_{obj.__name__}", edited, vars(core))
        replace_everywhere(monkeypatch, obj, getattr(other, obj.__name__))
        core.leave_out_of_fingerprints(getattr(other, obj.__name__))  # as core's own call does for an edited core
        assert spec.key == before, obj.__name__
    core._LEFT_OUT.clear()  # the same edits, with nothing left out, rename the model
    assert spec.key != before


def test_spec_key_changes_with_a_line_of_pgd(tmp_path, monkeypatch):
    from advnb import gradient_attacks as attacks  # where pgd is defined (advnb.attacks re-exports it)
    from advnb.train import TrainSpec
    spec = TrainSpec(arch="simple_cnn", dataset="synthetic-mnist", objective="pgd_at",
                     objective_kwargs=dict(eps=0.1, alpha=0.025, steps=3))
    before, source = spec.key, inspect.getsource(attacks.pgd)
    same = _module_from_source(monkeypatch, tmp_path, "advnb_keytest_pgd_same", source, vars(attacks))
    original = attacks.pgd
    replace_everywhere(monkeypatch, original, same.pgd)
    assert spec.key == before  # the same pgd, defined in another module
    edited = source.replace("random_start: bool = True", "random_start: bool = False")
    assert edited != source
    changed = _module_from_source(monkeypatch, tmp_path, "advnb_keytest_pgd_changed", edited, vars(attacks))
    replace_everywhere(monkeypatch, same.pgd, changed.pgd)
    assert spec.key != before


def test_normalized_source_without_source_is_deterministic_and_line_free():
    ns1, ns2 = {}, {}
    exec("f = lambda x: x in {'a', 'b', 'c'}", ns1)
    exec("\n\n\nf = lambda x: x in {'a', 'b', 'c'}", ns2)  # other line numbers
    assert core.normalized_source(ns1["f"]) == core.normalized_source(ns2["f"])
    assert "0x" not in core.normalized_source(ns1["f"])  # no object addresses
    exec("f = lambda x: x in {'a', 'b', 'd'}", ns2)
    assert core.normalized_source(ns1["f"]) != core.normalized_source(ns2["f"])


def test_normalized_source_of_a_set_literal_is_the_same_in_every_process():
    "A set's order follows the process's string-hash seed; the stand-in for a source must not."
    prog = ("from advnb.core import normalized_source; ns = {}; exec(\"f = lambda x: x in {'a', 'b', 'c', 'd'}\", ns);"
            " print(normalized_source(ns['f']))")
    outs = {subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2", "3")}
    assert len(outs) == 1


@pytest.mark.parametrize("holder", [
    "def f(xs): return [helper(x) for x in xs]",
    "def f(xs): return sum(helper(x) for x in xs)",
    "def f(xs): return {x: helper(x) for x in xs}",
    "def f(xs): return list(map(lambda x: helper(x), xs))",
    "def f(xs):\n    def g(x): return helper(x)\n    return [g(x) for x in xs]",
    "def f(xs):\n    class K:\n        def m(self, x): return helper(x)\n    return [K().m(x) for x in xs]",
    "def f(xs, h=helper): return [h(x) for x in xs]",
    "def f(xs, *, h=helper): return [h(x) for x in xs]",
    "import functools\ndef f(xs, h=functools.partial(helper)): return [h(x) for x in xs]",
    "def make(h):\n    def f(xs): return [h(x) for x in xs]\n    return f\nf = make(helper)",
    "STEPS = (helper, abs)\ndef f(xs): return [STEPS[0](x) for x in xs]",
    "STEPS = [[helper]]\ndef f(xs): return [STEPS[0][0](x) for x in xs]",
    "STEPS = {helper}\ndef f(xs): return [next(iter(STEPS))(x) for x in xs]",
    "def f(xs, hs=(helper,)): return [hs[0](x) for x in xs]",
    "class K:\n    def __call__(self, x): return helper(x)\nk = K()\ndef f(xs): return [k(x) for x in xs]",
])
def test_code_fingerprint_follows_code_held_in_every_construct(holder):
    "A helper reached only through a comprehension, a lambda, an inner function or class, a default or a closure."
    ns = {"__name__": "__main__"}
    exec("def helper(x): return x + 1\n" + holder, ns)
    before = core.code_fingerprint(ns["f"])
    exec("def helper(x): return x + 2", ns)
    exec(holder, ns)  # whatever holds the old helper (a default, a closure, a tuple) is built again
    assert core.code_fingerprint(ns["f"]) != before


def test_code_fingerprint_leaves_a_dictionarys_entries_to_the_roots():
    "A registry is a dict: keying every model by every architecture in it would retrain the zoo for any one's edit."
    ns = {"__name__": "__main__"}
    exec("def helper(x): return x + 1\nTABLE = {'a': helper}\ndef f(x): return TABLE['a'](x)", ns)
    before = core.code_fingerprint(ns["f"])
    exec("def helper(x): return x + 2\nTABLE = {'a': helper}", ns)
    assert core.code_fingerprint(ns["f"]) == before != core.code_fingerprint(ns["f"], ns["helper"])
