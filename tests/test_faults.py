"""Fault injection: interrupt, kill and damage runs and caches, then check the next run recovers with nothing lost
(the same final weights, the same rendered result) or stops with one clear line naming the file and the fix.

Run alone with `pytest -m faults`; the session ends with the tally (faults injected, recovered, clear stops)."""
import json
import re
import shutil
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat
import pytest
import torch

from advnb import checkpoints as C
from advnb import core, zoo
from advnb.workflow import runner
from advnb.train import NonFiniteLossError, TrainSpec, build_from_spec, register_callback, Callback
from fault_tally import record
from notebook_fixtures import make_notebook

pytestmark = pytest.mark.faults
ROOT = Path(__file__).resolve().parents[1]
TINY = dict(arch="simple_cnn", arch_kwargs={"width": 4, "hidden": 16}, dataset="synthetic-mnist", n_per_class=6,
            eval_n_per_class=3, batch_size=16, lr=0.05, epochs=3, milestones=(2,), seed=3)
SPEC = TrainSpec(**TINY)


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    "The uninterrupted run of SPEC, trained once for the module."
    cache = tmp_path_factory.mktemp("reference")
    return zoo.get(SPEC, device="cpu", cache_dir=cache, show_progress=False)


def settle(spec, cache, reference, capsys=None) -> str:
    "The next `zoo.get` after a fault: `recovered` when it returns the uninterrupted run's weights."
    model = zoo.get(spec, device="cpu", cache_dir=cache, show_progress=False)
    ok = same_weights(model, reference)
    for e in (1, 2, 3):  # every epoch still loads (a damaged one is retrained on the way)
        zoo.load_epoch(spec, e, device="cpu", cache_dir=cache)
    ok = ok and same_weights(zoo.get(spec, device="cpu", cache_dir=cache, show_progress=False), reference)
    ok = ok and bool(zoo.history(spec, cache)) and C.completed_epochs(zoo.spec_dir(spec, cache)) == [1, 2, 3]
    outcome = "recovered" if ok else "failure"
    record(outcome)
    return outcome


# ---------------------------------------------------------------------------------------------------- cache damage
def _truncate(p: Path): p.write_bytes(p.read_bytes()[: max(1, p.stat().st_size // 2)])
def _flip(p: Path):
    b = bytearray(p.read_bytes()); b[len(b) // 2] ^= 0xFF; p.write_bytes(bytes(b))
def _empty(p: Path): p.write_bytes(b"")
def _delete(p: Path): p.unlink()


def _other_model(p: Path):
    "A sound checkpoint (valid hash) of another model's tensors in place of this one."
    meta = json.loads(p.with_suffix(".json").read_text())
    other = torch.nn.Linear(3, 2)
    if p.name.startswith("resume"):
        C.save_tensors({f"model.{k}": v for k, v in other.state_dict().items()}, p, meta)
    else:
        C.save_model(other, p, meta)


FAULTS = {"truncated": _truncate, "byte-flipped": _flip, "emptied": _empty, "deleted": _delete,
          "another model's tensors": _other_model}
FILES = ["epoch_001.safetensors", "epoch_002.json", "epoch_003.safetensors", "epoch_003.json", "resume.safetensors",
         "resume.json", "done.json"]


@pytest.mark.parametrize("name,fault", [(n, f) for n in FILES for f in FAULTS
                                        if n.endswith(".safetensors") or f != "another model's tensors"])
def test_damaged_cache_file_is_recovered(tmp_path, reference, name, fault, capsys):
    zoo.get(SPEC, device="cpu", cache_dir=tmp_path, show_progress=False)
    p = zoo.spec_dir(SPEC, tmp_path) / name
    FAULTS[fault](p)
    assert settle(SPEC, tmp_path, reference) == "recovered", f"{name} {fault}: {capsys.readouterr().out}"


@pytest.mark.parametrize("name,fault", [(n, f) for n in ("epoch_002.safetensors", "epoch_002.json", "resume.safetensors",
                                                           "resume.json") for f in FAULTS
                                        if n.endswith(".safetensors") or f != "another model's tensors"])
def test_damage_in_the_middle_of_a_run_is_recovered(tmp_path, reference, name, fault):
    "Training stopped after epoch 2 (the resume state is needed to go on), then a file damaged: it finishes exactly."
    from advnb import train as T
    d = zoo.spec_dir(SPEC, tmp_path)
    T.train(SPEC, d, device="cpu", show_progress=False, stop_after_epoch=2)
    FAULTS[fault](d / name)
    assert settle(SPEC, tmp_path, reference) == "recovered"


@pytest.mark.parametrize("epochs", [1, 2, 5])
def test_a_done_file_that_names_another_epoch_count_does_not_choose_the_model(tmp_path, reference, epochs):
    "A one-digit edit of `done.json` (its epochs) must not make the zoo return another epoch's weights as final."
    zoo.get(SPEC, device="cpu", cache_dir=tmp_path, show_progress=False)
    p = zoo.spec_dir(SPEC, tmp_path) / "done.json"
    p.write_text(json.dumps({**json.loads(p.read_text()), "epochs": epochs}))
    assert settle(SPEC, tmp_path, reference) == "recovered"


@pytest.mark.parametrize("name", ["epoch_002", "epoch_003"])
def test_another_specs_checkpoint_is_not_taken_for_this_ones(tmp_path, reference, name):
    "A sound checkpoint pair of another spec (seed 4) copied into this spec's folder is retrained, not loaded."
    other = SPEC.replace(seed=4)
    zoo.get(SPEC, device="cpu", cache_dir=tmp_path, show_progress=False)
    zoo.get(other, device="cpu", cache_dir=tmp_path, show_progress=False)
    for suffix in (".safetensors", ".json"):
        (zoo.spec_dir(SPEC, tmp_path) / (name + suffix)).write_bytes((zoo.spec_dir(other, tmp_path) / (name + suffix)).read_bytes())
    assert settle(SPEC, tmp_path, reference) == "recovered"
    epoch = int(name[-3:])  # and the epoch itself is this spec's again, not the copy
    assert not same_weights(zoo.load_epoch(SPEC, epoch, "cpu", tmp_path), zoo.load_epoch(other, epoch, "cpu", tmp_path))


# ---------------------------------------------------------------------------------------------- killed training
KILLER = textwrap.dedent("""
    import os, signal, sys
    import torch
    from advnb import zoo
    from advnb.train import TrainSpec
    spec = TrainSpec(**{TINY!r})
    where, k = sys.argv[1], int(sys.argv[2])
    count = [0]
    def kill_on_kth(fn):
        def wrapped(*a, **kw):
            count[0] += 1
            if count[0] == k:
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*a, **kw)
        return wrapped
    if where == "rename":          # between writing a temporary file and renaming it into place
        os.replace = kill_on_kth(os.replace)
    elif where == "fsync":         # while a file is being written
        os.fsync = kill_on_kth(os.fsync)
    elif where == "step":          # in the middle of an epoch, between optimiser steps
        torch.optim.SGD.step = kill_on_kth(torch.optim.SGD.step)
    zoo.get(spec, device="cpu", cache_dir=sys.argv[3], show_progress=False)
""").replace("{TINY!r}", repr(TINY))


@pytest.mark.parametrize("where,k", [("step", 2), ("step", 5), ("fsync", 1), ("fsync", 4), ("rename", 2),
                                     ("rename", 5), ("rename", 9)])
def test_training_killed_resumes_to_the_same_weights(tmp_path, reference, where, k):
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    cache = tmp_path / "cache"
    r = subprocess.run([sys.executable, str(script), where, str(k), str(cache)], capture_output=True, text=True,
                       timeout=600, env={**os.environ, "ADVNB_DEVICE": "cpu",
                                         "OMP_NUM_THREADS": str(torch.get_num_threads())})  # as the reference's: bit-exact
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    d = zoo.spec_dir(SPEC, cache)
    try:  # the epochs a sound resume state says were finished; without one, training starts over by design
        done_before = C.check_resume(d, build_from_spec(SPEC))[1]["epoch"]
    except (C.CorruptCheckpointError, KeyError):
        done_before = 0
    kept = {e: C.checkpoint_path(d, e).stat() for e in C.completed_epochs(d) if e <= done_before}
    assert settle(SPEC, cache, reference) == "recovered"
    assert not [p.name for p in zoo.spec_dir(SPEC, cache).glob(".*")], "temporary files left behind"
    for e, st in kept.items():  # a resume: the epochs finished before the kill are not trained again
        now = C.checkpoint_path(d, e).stat()
        assert (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns), f"epoch {e} was trained again"


# ---------------------------------------------------------------------------------- NaN and what is "last good"
@register_callback("test_blow_up_after_epoch")
class BlowUp(Callback):
    "Makes the weights huge after epoch `at`, so that its evaluation is NaN while its weights stay finite."
    def __init__(self, at=1): self.at = at
    def after_epoch(self, ctx):
        if ctx.epoch + 1 >= self.at:
            with torch.no_grad():
                for p in ctx.model.parameters():
                    p.mul_(1e30)


def test_nan_names_the_last_checkpoint_with_a_finite_evaluation(tmp_path):
    spec = SPEC.replace(callbacks=(("test_blow_up_after_epoch", {"at": 2}),))
    with pytest.raises(NonFiniteLossError, match=r"last good checkpoint \(finite test loss\) is epoch 1"):
        zoo.get(spec, device="cpu", cache_dir=tmp_path, show_progress=False)
    record("clear stop")


def test_nan_with_no_good_checkpoint_says_there_is_none(tmp_path):
    spec = SPEC.replace(callbacks=(("test_blow_up_after_epoch", {"at": 1}),))
    with pytest.raises(NonFiniteLossError, match="No checkpoint .* has a finite test loss"):
        zoo.get(spec, device="cpu", cache_dir=tmp_path, show_progress=False)
    record("clear stop")


# ----------------------------------------------------------------------------------------------- damaged data
FMNIST = ROOT.parent / "shared" / "data" / "FashionMNIST" / "raw"


@pytest.fixture
def fmnist_copy(tmp_path, monkeypatch):
    if not (FMNIST / "t10k-images-idx3-ubyte").exists():
        pytest.skip("FashionMNIST (uncompressed) is not under ../shared/data")
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in FMNIST.iterdir():
        if not f.name.endswith(".gz"):
            (raw / f.name).write_bytes(f.read_bytes())
    from advnb import data
    monkeypatch.setattr(data, "_REAL_CACHE", {})
    return raw


def test_truncated_data_file_names_the_folder_and_the_fix(fmnist_copy):
    from advnb.data import DamagedDatasetError, load_dataset
    _truncate(fmnist_copy / "t10k-images-idx3-ubyte")
    with pytest.raises(DamagedDatasetError, match=r"FashionMNIST/raw are damaged .*Copy them again"):
        load_dataset("fashionmnist", "test", root=fmnist_copy.parents[1])
    record("clear stop")


def test_labels_out_of_range_are_caught(fmnist_copy):
    from advnb.data import DamagedDatasetError, load_dataset
    p = fmnist_copy / "t10k-labels-idx1-ubyte"
    b = bytearray(p.read_bytes()); b[100] = 57; p.write_bytes(bytes(b))  # a label no 10-class dataset has
    with pytest.raises(DamagedDatasetError, match=r"labels in \[0, 57\]; expected 10 classes"):
        load_dataset("fashionmnist", "test", root=fmnist_copy.parents[1])
    record("clear stop")


# ------------------------------------------------------------------------------------------ the runner
PARAMS = 'scale = "smoke"\nseed = 0'


@pytest.fixture
def slow_project(tmp_path):
    (tmp_path / "nbs").mkdir()
    (tmp_path / "params").mkdir()
    for s in ("smoke", "quick", "paper"):
        (tmp_path / "params" / f"{s}.yaml").write_text("{}\n")
    make_notebook(tmp_path / "nbs" / "a_first.ipynb", PARAMS, "print('first done')")
    slow = "import time, pathlib\npathlib.Path('started').write_text('1')\ntime.sleep(60)\nprint('finished')"
    make_notebook(tmp_path / "nbs" / "b_slow.ipynb", PARAMS, slow)
    make_notebook(tmp_path / "nbs" / "99_report.ipynb", PARAMS, "print('report')")
    return tmp_path


def advnb_cmd(project, *args, **popen):
    env = {**os.environ, "ADVNB_CACHE_DIR": str(project / "cache"), "ADVNB_DEVICE": "cpu"}
    return subprocess.Popen([sys.executable, "-m", "advnb", *args, "--project", str(project),
                             "--reports-dir", str(project / "reports")], env=env, cwd=project, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=_default_sigint, **popen)


def _default_sigint():
    "A shell without job control starts background jobs with SIGINT ignored; give the runner Ctrl-C back."
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for(path: Path, timeout=300):
    t0 = time.time()
    while not path.exists():
        if time.time() - t0 > timeout:
            raise TimeoutError(path)
        time.sleep(0.2)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_notebook_is_never_taken_for_ok(slow_project, sig):
    p = advnb_cmd(slow_project, "run", "--scale", "smoke")
    wait_for(slow_project / "nbs" / "started")
    (slow_project / "nbs" / "started").unlink()
    (os.kill if sig == signal.SIGINT else os.killpg)(p.pid, sig)
    out, _ = p.communicate(timeout=120)
    with __import__("contextlib").suppress(ProcessLookupError):
        os.killpg(p.pid, signal.SIGKILL)  # the kernel of a SIGKILLed runner
    state = json.loads((slow_project / "reports" / "smoke" / ".state" / "b_slow.json").read_text())
    assert state["status"] == ("interrupted" if sig == signal.SIGINT else "running"), out
    if sig == signal.SIGINT:
        assert p.returncode == 130 and "interrupted (b_slow.ipynb)" in out, out
        rendered = nbformat.read(str(slow_project / "reports" / "smoke" / "b_slow.ipynb"), as_version=4)
        outputs = "".join(o.get("text", "") for c in rendered.cells for o in c.get("outputs", []))
        assert "finished" not in outputs and (slow_project / "reports" / "smoke" / "b_slow.html").exists()
        assert "interrupted" in (slow_project / "reports" / "smoke" / "index.html").read_text()
    # the next run runs it again (and not the notebook that had finished)
    make_notebook(slow_project / "nbs" / "b_slow.ipynb", PARAMS, "print('finished')")
    assert runner.run("smoke", project=slow_project, reports_dir=slow_project / "reports", log=lambda m: None) == 0
    state = json.loads((slow_project / "reports" / "smoke" / ".state" / "b_slow.json").read_text())
    assert state["status"] == "ok"
    record("recovered")


def _run_with_environment(project, env: dict, monkeypatch, capsys) -> tuple[int, str]:
    "`advnb run --scale smoke` on `project` with the variables of `env` set: its exit code and what it wrote to stderr."
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    try:
        rc = runner.main(["run", "--scale", "smoke", "--project", str(project), "--reports-dir", str(project / "reports")])
    finally:
        monkeypatch.undo()
        core.get_settings(reload=True)
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("env,needle", [({"ADVNB_SCALE": "huge"}, "scale='huge' is not one of"),
                                        ({"ADVNB_DEVICE": "nonsense"}, "is not a torch device"),
                                        ({"ADVNB_DEVCE": "cpu"}, "ADVNB_DEVCE names no advnb setting; did you mean ADVNB_DEVICE"),
                                        ({"ADVNB_DEVICE": "cuda"}, "CUDA is not available"),
                                        ({"ADVNB_DEVICE": "meta"}, "device='meta' cannot train or attack a model"),
                                        ({"ADVNB_REPORTS_DIR": ""}, "reports_dir is empty; give a folder"),
                                        ({"ADVNB_CACHE_DIR": ""}, "cache_dir is empty; give a folder")])
def test_settings_errors_are_one_line_and_exit_2(slow_project, env, needle, monkeypatch, capsys):
    if env.get("ADVNB_DEVICE") == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    rc, err = _run_with_environment(slow_project, env, monkeypatch, capsys)
    assert rc == 2 and err.startswith("advnb: ") and needle in err and "Traceback" not in err, err
    assert not (slow_project / "reports" / "smoke" / ".state").exists()  # nothing ran
    record("clear stop")


def test_reports_folder_under_a_file_is_one_line(slow_project, capsys):
    (slow_project / "afile").write_text("x")
    rc = runner.main(["run", "--scale", "smoke", "--project", str(slow_project), "--reports-dir",
                      str(slow_project / "afile" / "reports")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("advnb: cannot create the reports folder") and "Traceback" not in err, err
    record("clear stop")


def test_dead_kernel_is_reported_as_such(slow_project):
    make_notebook(slow_project / "nbs" / "b_slow.ipynb", PARAMS, "import os\nos._exit(1)")
    logs = []
    assert runner.run("smoke", ["b_slow"], project=slow_project, reports_dir=slow_project / "reports",
                      log=logs.append) == 1
    text = "\n".join(logs)
    assert "cell None" not in text and "the kernel died?" in text, text
    record("clear stop")


def test_missing_dataset_leaves_no_empty_spec_folder(tmp_path, monkeypatch):
    from advnb.data import MissingDatasetError
    monkeypatch.setenv("ADVNB_DATA_ROOT", str(tmp_path / "nodata"))
    core.get_settings(reload=True)
    spec = SPEC.replace(dataset="cifar10")
    try:
        with pytest.raises(MissingDatasetError):
            zoo.get(spec, device="cpu", cache_dir=tmp_path / "cache", show_progress=False)
        assert not zoo.spec_dir(spec, tmp_path / "cache").exists()
    finally:
        monkeypatch.undo()
        core.get_settings(reload=True)
    record("clear stop")


# ------------------------------------------------------------------------------- hostile names, ledgers and sites
def _files_under(root: Path) -> set[Path]:
    return {p.resolve() for p in root.rglob("*")}


def test_a_variant_or_a_paper_that_is_a_path_writes_nothing_outside_the_reports(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    reports, outside = tmp_path / "reports", tmp_path
    before = _files_under(outside)
    monkeypatch.setenv("ADVNB_VARIANT", "x/../../../../ESCAPED")
    with pytest.raises(core.SettingsError, match="may hold only letters"):
        core.start_run("a1_demo", "smoke", 0, reports_dir=reports)
    monkeypatch.delenv("ADVNB_VARIANT")
    run = core.start_run("a1_demo", "smoke", 0, reports_dir=reports)
    fig = plt.figure()
    for bad in (dict(paper="../../ESCAPED"), dict(paper="A", number="1/../../../ESCAPED")):
        with pytest.raises(ValueError):
            core.save_figure(fig, "x", run=run, **bad)
    plt.close(fig)
    assert not any(p.name.startswith("ESCAPED") for p in _files_under(outside) - before)
    assert all(reports.resolve() in p.parents or p == reports.resolve() for p in _files_under(outside) - before)
    core._current_run = None
    record("clear stop")


def test_two_overrides_that_differ_only_in_replaced_characters_get_two_names():
    names = {core.variant_name({"label": v}) for v in ("a/b", "a b", "a_b")}
    assert len(names) == 3 and core.variant_name({"epochs": 40}) == "epochs=40"  # a plain override keeps its name
    assert all(set(n) <= core.VARIANT_CHARS for n in names)
    record("recovered")


def _ledger_demo(tmp_path):
    from advnb import claims
    core.start_run("a1_demo", "smoke", 0, reports_dir=tmp_path)
    claims.record("A.1.good", "A", "1", "s", 1, 2, True)
    return claims, tmp_path / "smoke" / "claims.jsonl"


@pytest.mark.parametrize("bad", ["not json at all", '{"id": "A.1.x"}', '[1, 2]',
                                 json.dumps({"id": "A.1.str", "paper": "A", "section": "1", "statement": "s",
                                             "paper_value": 1, "our_value": 2, "holds": "false"}),
                                 json.dumps({"id": "A.1.path", "paper": "/../../ESCAPED", "section": "1",
                                             "statement": "s", "paper_value": 1, "our_value": 2, "holds": True})])
def test_a_bad_ledger_line_is_left_out_kept_and_breaks_nothing(tmp_path, bad, capsys):
    from advnb.workflow import site
    claims, ledger = _ledger_demo(tmp_path)
    ledger.write_text(ledger.read_text() + bad + "\n")
    rows = claims.load_claims("smoke", tmp_path)
    assert list(rows["id"]) == ["A.1.good"] and "is not a claim and is left out" in capsys.readouterr().err
    claims.record("A.1.next", "A", "1", "s", 1, 2, None)  # recording goes on, and the bad line is kept aside
    assert sorted(claims.load_claims("smoke", tmp_path)["id"]) == ["A.1.good", "A.1.next"]
    assert (ledger.parent / "claims.jsonl.unreadable").read_text() == bad + "\n"
    before = _files_under(tmp_path.parent)
    site.build_site(tmp_path, "smoke")
    assert all(tmp_path.resolve() in p.parents for p in _files_under(tmp_path.parent) - before)
    assert claims.claims_table("smoke", tmp_path)["verdict"].tolist() == ["holds", "inconclusive"]
    core._current_run = None
    record("recovered")


def test_a_verdict_written_as_a_string_is_not_taken_for_holding():
    from advnb import claims
    with pytest.raises(ValueError, match="True, False or None"):
        claims.verdict("false")
    record("clear stop")


def test_a_sidecar_cannot_make_a_link_to_anything_but_a_notebook(tmp_path):
    from advnb.workflow import site
    figs = tmp_path / "smoke" / "figures"
    figs.mkdir(parents=True)
    (figs / "A_fig1_x.png").write_bytes(b"")
    (figs / "A_fig1_x.json").write_text(json.dumps({"notebook": "javascript:alert(1)//", "scale": "smoke"}))
    (figs / "A_fig2_y.png").write_bytes(b"")
    (figs / "A_fig2_y.json").write_text(json.dumps(["a", "list"]))
    out = {f["stem"]: f for f in site.outputs(tmp_path / "smoke", "figures")}
    assert out["A_fig1_x"]["notebook"] == "" and out["A_fig2_y"]["notebook"] == ""
    site.build_site(tmp_path, "smoke")
    assert "javascript:" not in (tmp_path / "smoke" / "paper-A.html").read_text()
    record("recovered")


def test_a_damaged_mathjax_copy_is_reinstalled(tmp_path):
    from advnb.workflow import site
    mj = site.install_mathjax(tmp_path)
    (mj / "MathJax.js").unlink()
    assert (site.install_mathjax(tmp_path) / "MathJax.js").exists()
    assert not [p for p in tmp_path.glob("_static/.mathjax*")]  # no half-copied folder left
    record("recovered")


def _project_with(tmp_path, body: str):
    from notebook_fixtures import make_project
    return make_project(tmp_path / "proj", {"a1_demo": (PARAMS, body)})


def test_relative_path_settings_mean_the_same_folder_in_the_runner_and_in_the_kernel(tmp_path, monkeypatch):
    body = ("import json, pathlib\nfrom advnb.core import get_settings\ns = get_settings()\n"
            "pathlib.Path('seen.json').write_text(json.dumps([str(s.cache_dir), str(s.data_root)]))")
    proj = _project_with(tmp_path, body)
    monkeypatch.chdir(proj)
    monkeypatch.setenv("ADVNB_CACHE_DIR", "relcache")
    monkeypatch.setenv("ADVNB_DATA_ROOT", "../reldata")
    core.get_settings(reload=True)
    try:
        assert runner.run("smoke", project=proj, reports_dir=proj / "reports", log=lambda m: None) == 0
    finally:
        monkeypatch.undo()
        core.get_settings(reload=True)
    seen = json.loads((proj / "nbs" / "seen.json").read_text())  # the kernel runs in nbs/
    assert seen == [str((proj / "relcache").resolve()), str((tmp_path / "reldata").resolve())]
    record("recovered")


def test_a_rerun_replaces_the_claims_and_figures_the_notebook_recorded_before(tmp_path):
    body = ("import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
            "from advnb.core import start_run, save_figure\nfrom advnb.claims import record\n"
            "run = start_run('a1_demo', scale=scale, seed=0)\nfig = plt.figure()\n"
            "save_figure(fig, NAME, paper='A', number=1)\nrecord('A.1.' + NAME, 'A', '1', 's', 1, 2, True)")
    proj = _project_with(tmp_path, body)
    reports = proj / "reports"
    for name in ("old", "new"):
        nbpath = proj / "nbs" / "a1_demo.ipynb"
        nb = nbformat.read(str(nbpath), as_version=4)
        nb.cells[2].source = f"NAME = {name!r}\n" + body
        nbformat.write(nb, str(nbpath))
        assert runner.run("smoke", project=proj, reports_dir=reports, log=lambda m: None) == 0
    figures = sorted(p.name for p in (reports / "smoke" / "figures").glob("*.png"))
    ledger = [json.loads(l)["id"] for l in (reports / "smoke" / "claims.jsonl").read_text().splitlines()]
    assert figures == ["A_fig1_new.png"] and ledger == ["A.1.new"]
    assert "A_fig1_old" not in (reports / "smoke" / "paper-A.html").read_text()
    record("recovered")


def test_forgetting_a_variants_outputs_takes_its_files_by_name_not_by_pattern(tmp_path):
    figs = tmp_path / "figures"
    figs.mkdir()
    stem = "A_fig1_x@alphas=[0.1,1]"  # brackets: a glob pattern would not match this name
    for ext in ("png", "pdf"):
        (figs / f"{stem}.{ext}").write_bytes(b"")
    (figs / f"{stem}.json").write_text(json.dumps({"notebook": "c3_linear@alphas=[0.1,1]"}))
    (figs / "A_fig1_x.png").write_bytes(b"")  # the scale's own run of the same figure stays
    core.forget_outputs("c3_linear@alphas=[0.1,1]", tmp_path)
    assert sorted(p.name for p in figs.iterdir()) == ["A_fig1_x.png"]
    record("recovered")


# ------------------------------------------------------------------------ bad values given on the command line or in a spec
LABELLED = 'scale = "smoke"\nseed = 0\nlr = 0.1\nlabel = "x"'


@pytest.fixture
def labelled_project(tmp_path):
    "A one-notebook project whose parameters cell declares a float (`lr`) and a string (`label`)."
    for d in ("nbs", "params"):
        (tmp_path / d).mkdir()
    for s in ("smoke", "quick", "paper"):
        (tmp_path / "params" / f"{s}.yaml").write_text("{}\n")
    make_notebook(tmp_path / "nbs" / "a_first.ipynb", LABELLED, "print(lr, len(label))")
    return tmp_path


def main_in(project, *args) -> list[str]:
    return [*args, "--project", str(project), "--reports-dir", str(project / "reports")]


@pytest.mark.parametrize("args,needle", [(["run", "--jobs", "-3"], "argument --jobs: '-3': give a whole number of at least 1"),
                                         (["run", "--jobs", "0"], "argument --jobs: '0': give a whole number of at least 1"),
                                         (["run", "--cpus-per-job", "x"], "'x': give a whole number of at least 1"),
                                         (["plan", "--device", "nonsense"], "--device 'nonsense' is not a device torch knows"),
                                         (["plan", "--device", "meta"], "--device 'meta' holds no data, so no pass can be timed")])
def test_a_count_or_a_device_that_cannot_be_is_one_line_and_exit_2(labelled_project, args, needle, capsys):
    try:
        rc = runner.main(main_in(labelled_project, *args))
    except SystemExit as e:  # argparse's own stop for a value its type refuses
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and "Traceback" not in err, err
    assert not (labelled_project / "reports").exists()  # nothing ran
    record("clear stop")


def test_a_number_yaml_reads_as_text_says_how_to_write_it(labelled_project, capsys):
    assert runner.main(main_in(labelled_project, "run", "a_first", "--set", "lr=1e-3")) == 2
    err = capsys.readouterr().err
    assert "lr='1e-3' is a str" in err and "write 0.001" in err and "Traceback" not in err, err
    record("clear stop")


def test_a_grid_that_lists_a_value_twice_is_refused(labelled_project, capsys):
    (labelled_project / "params" / "smoke.yaml").write_text("a_first: {grid: {seed: [0, 0]}}\n")
    assert runner.main(main_in(labelled_project, "run", "--scale", "smoke")) == 2
    err = capsys.readouterr().err
    assert "grid: seed lists a value twice" in err and "Traceback" not in err, err
    assert not (labelled_project / "reports" / "smoke" / ".state").exists()
    record("clear stop")


def test_a_long_override_renders_under_a_short_name(labelled_project):
    logs = []
    assert runner.run("smoke", ["a_first"], project=labelled_project, reports_dir=labelled_project / "reports", log=logs.append,
                      overrides={"label": "y" * 300}) == 0, logs
    written = [p for p in (labelled_project / "reports").rglob("*")]
    assert any(p.name.startswith("a_first@label=yyy") for p in written)
    assert max(len(p.name) for p in written) <= 140
    record("recovered")


@pytest.mark.parametrize("field", ["n_per_class", "eval_n_per_class"])
@pytest.mark.parametrize("value", [0, -2, True])
def test_a_spec_that_trains_or_evaluates_on_nothing_is_refused(field, value):
    with pytest.raises(ValueError, match=f"{field} must be None .* or a whole number of at least 1, got {value!r}"):
        TrainSpec(**{**TINY, field: value})
    record("clear stop")


# ------------------------------------------------------------------ what a killed write or a job leaves, what a site reads
def _aged(p: Path, seconds: float = 3600) -> Path:
    t = time.time() - seconds
    for q in [p, *(p.rglob("*") if p.is_dir() else [])]:
        os.utime(q, (t, t))
    return p


def test_leftovers_of_killed_writes_are_removed_and_never_shown(tmp_path):
    from advnb.workflow import site
    figs, static = tmp_path / "smoke" / "figures", tmp_path / "smoke" / "_static"
    figs.mkdir(parents=True)
    (figs / "A_fig1_x.png").write_bytes(b"png")
    (figs / ".A_fig1_x.png.k3j9.png").write_bytes(b"half")  # save_figure killed between write and rename
    _aged(figs / ".A_fig1_x.png.k3j9.png")
    half = static / ".mathjax-4242-1.5"  # install_mathjax killed while copying
    (half / "jax").mkdir(parents=True)
    (half / "jax" / "a.js").write_text("x")
    _aged(half)
    fresh = figs / ".A_fig2_y.png.zz.png"  # another process writing right now: left alone
    fresh.write_bytes(b"")
    site.build_site(tmp_path, "smoke")
    assert not (figs / ".A_fig1_x.png.k3j9.png").exists() and not half.exists() and fresh.exists()
    assert [f["stem"] for f in site.outputs(tmp_path / "smoke", "figures")] == ["A_fig1_x"]
    record("recovered")


@pytest.mark.parametrize("content", [b"", b"\xff\xfe\x00garbage\x00\x9c", b'a,b\n1,2,3,4\n"unclosed'])
def test_an_unreadable_table_is_named_on_its_page_and_the_site_is_built(tmp_path, content):
    from advnb.workflow import site
    tables = tmp_path / "smoke" / "tables"
    tables.mkdir(parents=True)
    (tables / "A_tab1_x.csv").write_bytes(content)
    (tables / "A_tab2_y.csv").write_text("a,b\n1,2\n")
    site.build_site(tmp_path, "smoke")
    page = (tmp_path / "smoke" / "paper-A.html").read_text()
    assert "A_tab1_x.csv cannot be read" in page and "<td>" in page  # the good table is still there
    record("recovered")


def test_the_mathjax_copy_is_the_users_to_delete_whatever_the_packages_modes(tmp_path, monkeypatch):
    import stat
    from advnb.workflow import site
    pkg = tmp_path / "pkg"
    (pkg / "jax").mkdir(parents=True)
    (pkg / "MathJax.js").write_text("x")
    (pkg / "jax" / "a.js").write_text("x")
    for p in [pkg / "MathJax.js", pkg / "jax" / "a.js"]:
        p.chmod(0o444)
    for d in [pkg / "jax", pkg]:
        d.chmod(0o555)  # a read-only system install
    monkeypatch.setattr(site, "mathjax_source", lambda: pkg)
    try:
        mj = site.install_mathjax(tmp_path / "reports")
        assert all(stat.S_IMODE(p.stat().st_mode) & 0o200 for p in [mj, *mj.rglob("*")])
    finally:
        for d in [pkg, pkg / "jax"]:
            d.chmod(0o755)
    record("recovered")


def test_a_deleted_figure_makes_its_notebook_run_again(tmp_path):
    from notebook_fixtures import make_project
    body = ("import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\nfrom advnb.core import save_figure, start_run\n"
            "start_run('a1_demo', scale=scale, seed=seed)\nfig, ax = plt.subplots(); ax.plot([0, 1])\n"
            "save_figure(fig, 'line', paper='A', number=1)")
    project = make_project(tmp_path / "proj", {"a1_demo": (PARAMS, body)})
    reports = project / "reports"
    assert runner.run("smoke", project=project, reports_dir=reports, log=lambda m: None) == 0
    png = reports / "smoke" / "figures" / "A_fig1_line.png"
    assert png.exists()
    png.unlink()
    logs = []
    assert runner.run("smoke", project=project, reports_dir=reports, log=logs.append) == 0
    assert png.exists() and not any(line.startswith("skip  a1_demo") for line in logs), logs
    logs.clear()
    runner.run("smoke", project=project, reports_dir=reports, log=logs.append)
    assert any(line.startswith("skip  a1_demo") for line in logs)  # nothing missing: skipped as unchanged
    record("recovered")


def test_submitit_jobs_leave_nothing_in_the_published_reports(tmp_path):
    pytest.importorskip("submitit")
    from notebook_fixtures import make_project
    project = make_project(tmp_path / "proj", {"a1_demo": (PARAMS, "print('ok')")})
    assert runner.run("smoke", project=project, reports_dir=project / "reports", log=lambda m: None,
                      executor="submitit-local") == 0
    assert (project / "reports" / "smoke" / "a1_demo.log").exists()
    assert not list((project / "reports").rglob("*.pkl")) and not (project / "reports" / "smoke" / ".jobs").exists()
    record("recovered")


def test_ctrl_c_under_submitit_local_stops_the_jobs_and_says_so(slow_project):
    pytest.importorskip("submitit")
    make_notebook(slow_project / "nbs" / "b_slow.ipynb", PARAMS,
                  "import os, time, pathlib\npathlib.Path('started').write_text(str(os.getpid()))\ntime.sleep(120)")
    p = advnb_cmd(slow_project, "run", "--scale", "smoke", "b_slow", "--executor", "submitit-local")
    wait_for(slow_project / "nbs" / "started")
    time.sleep(0.5)
    kernel = int((slow_project / "nbs" / "started").read_text())
    os.killpg(p.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the runner's process group
    out, _ = p.communicate(timeout=120)
    assert "were stopped" in out and "scancel" not in out, out
    t0 = time.time()
    while time.time() - t0 < 60:
        try:
            os.kill(kernel, 0)
        except ProcessLookupError:
            break
        time.sleep(0.5)
    else:
        os.kill(kernel, signal.SIGKILL)
        pytest.fail("the notebook's kernel was still running a minute after Ctrl-C")
    record("clear stop")


# ------------------------------------------------------------------------------------------ the zoo's folder and its locks
def test_a_file_where_the_zoo_belongs_is_one_clear_error(tmp_path):
    (tmp_path / "zoo").write_text("not a folder")
    with pytest.raises(NotADirectoryError, match="is a file where advnb keeps its trained models; move it away"):
        zoo.get(SPEC, device="cpu", cache_dir=tmp_path, show_progress=False)
    record("clear stop")


def test_history_repairs_a_truncated_done_file(tmp_path, reference):
    zoo.get(SPEC, device="cpu", cache_dir=tmp_path, show_progress=False)
    expected = zoo.history(SPEC, tmp_path)
    _truncate(zoo.spec_dir(SPEC, tmp_path) / "done.json")
    assert zoo.history(SPEC, tmp_path) == expected
    assert same_weights(zoo.get(SPEC, device="cpu", cache_dir=tmp_path, show_progress=False), reference)
    record("recovered")


HOLD = ("import sys, time\nfrom pathlib import Path\nfrom advnb import zoo\n"
        "with zoo.model_lock(Path(sys.argv[1])):\n    Path(sys.argv[1] + '.held').write_text('1')\n    time.sleep(120)\n")


def _hold_lock(d: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(d)], env={**os.environ, "PYTHONPATH": str(ROOT)})
    wait_for(Path(f"{d}.held"), timeout=120)
    return p


def test_waiting_for_a_model_lock_says_whose_it_is(tmp_path, reference, capsys):
    d = zoo.spec_dir(SPEC, tmp_path)
    d.parent.mkdir(parents=True)
    holder = _hold_lock(d)
    try:
        import threading
        threading.Timer(3.0, holder.kill).start()  # the holder ends; the waiting get goes on
        model = zoo.get(SPEC, device="cpu", cache_dir=tmp_path, show_progress=False)
    finally:
        holder.kill()
        holder.wait()
    out = capsys.readouterr().out
    assert f"waiting for {d.name}: process {holder.pid} on " in out and " since " in out, out
    assert same_weights(model, reference)
    record("recovered")


def test_a_lock_whose_holder_is_gone_stops_with_what_to_do(tmp_path, monkeypatch):
    d = zoo.spec_dir(SPEC, tmp_path)
    d.parent.mkdir(parents=True)
    holder = _hold_lock(d)  # stands for a lock that stays held after its process died (a network file system)
    try:
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        owner = Path(f"{d}.lock.owner")
        owner.write_text(json.dumps({**json.loads(owner.read_text()), "pid": int(dead.stdout)}))
        monkeypatch.setattr(zoo, "LOCK_POLL_S", 0.2)
        with pytest.raises(TimeoutError, match=r"no longer runs; if no other process uses this cache, delete .*\.lock"):
            zoo.get(SPEC, device="cpu", cache_dir=tmp_path, show_progress=False)
    finally:
        holder.kill()
        holder.wait()
    record("clear stop")


@pytest.mark.parametrize("content", ['{"cells": [', "not json at all", '{"metadata": {}}', "[]"])
def test_a_damaged_notebook_is_named_by_list_and_stops_run_with_one_line(labelled_project, content, capsys):
    (labelled_project / "nbs" / "b_broken.ipynb").write_text(content)
    assert runner.main(main_in(labelled_project, "list")) == 0
    out = capsys.readouterr().out
    assert "a_first" in out and "parameters: scale, seed, lr, label" in out  # the sound notebook is still listed
    assert "b_broken.ipynb is not a readable notebook" in out and "git checkout -- nbs/b_broken.ipynb" in out, out
    assert runner.main(main_in(labelled_project, "run", "--scale", "smoke")) == 1  # the sound notebook still runs
    said = "".join(capsys.readouterr())
    assert "ok     a_first" in said and "failed b_broken" in said and "Traceback" not in said, said
    record("clear stop")


# ------------------------------------------------------------------- a damaged settings file, data files and checkpoints
@pytest.mark.parametrize("content,needle", [(b"[advnb\nscale = quick\n", "is not a valid settings file (File contains no section"),
                                            (b"[advnb]\nscale = quick\nscale = smoke\n", "is not a valid settings file (While reading"),
                                            (b"[advnb]\ncache_dir = \xff\xfe\n", "is not a valid settings file ('utf-8' codec")])
def test_a_malformed_settings_file_is_one_line_and_exit_2(slow_project, content, needle, monkeypatch, capsys):
    ini = slow_project / "bad.ini"
    ini.write_bytes(content)
    rc, err = _run_with_environment(slow_project, {"ADVNB_SETTINGS": str(ini)}, monkeypatch, capsys)
    assert rc == 2 and needle in err and "Traceback" not in err, err
    record("clear stop")


def test_a_percent_sign_in_a_settings_path_is_a_character(tmp_path):
    ini = tmp_path / "settings.ini"
    ini.write_text("[advnb]\ncache_dir = runs/100%done\n")
    assert core.load_settings(ini, environ={}).cache_dir == (tmp_path / "runs" / "100%done").resolve()
    record("recovered")


@pytest.mark.parametrize("magic", [b"\x00\x00\x08\x07", b"\x00\x00\x20\x03", b"\x00\x00\x08\x02"])
def test_an_idx_file_with_a_wrong_magic_number_is_named(fmnist_copy, magic):
    from advnb.data import DamagedDatasetError, load_dataset
    p = fmnist_copy / "t10k-images-idx3-ubyte"
    p.write_bytes(magic + p.read_bytes()[4:])
    with pytest.raises(DamagedDatasetError, match=r"FashionMNIST/raw are damaged"):
        load_dataset("fashionmnist", "test", root=fmnist_copy.parents[1])
    record("clear stop")


def _tiny_imagenet(tmp_path):
    sys.path.insert(0, str(ROOT / "tests"))
    from test_data import _fake_tiny_imagenet
    return _fake_tiny_imagenet(tmp_path)


@pytest.mark.parametrize("damage,needle", [
    (lambda t: (t / "wnids.txt").write_bytes(b"n0\xff\xfe1443537\n"), "wnids.txt is not UTF-8 text"),
    (lambda t: [f.unlink() for f in (t / "train" / "n01443537" / "images").iterdir()], "train/n01443537/images/ holds no images"),
    (lambda t: _bomb(next((t / "train" / "n01443537" / "images").iterdir())), "could be decompression bomb"),
])
def test_damaged_tiny_imagenet_files_are_named(tmp_path, damage, needle):
    from advnb.data import DamagedDatasetError, load_dataset
    tin = _tiny_imagenet(tmp_path)
    damage(tin)
    with pytest.raises(DamagedDatasetError, match=re.escape(needle)):
        load_dataset("tinyimagenet", "train", root=tmp_path)
    record("clear stop")


def _bomb(jpeg: Path) -> None:
    "A PNG header that claims 100,000 × 100,000 pixels (10 gigapixels) over a few bytes of data."
    import struct
    import zlib
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    jpeg.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("fault", ["metadata holds []", "weights are a folder", "metadata is a folder"])
def test_a_checkpoint_of_the_wrong_shape_is_unsound_and_retrained(tmp_path, reference, fault):
    zoo.get(SPEC, device="cpu", cache_dir=tmp_path, show_progress=False)
    w = C.checkpoint_path(zoo.spec_dir(SPEC, tmp_path), 2)
    target = w.with_suffix(".json") if "metadata" in fault else w
    target.unlink()
    if fault == "metadata holds []":
        target.write_text("[]")
    else:
        target.mkdir()
        (target / "x").write_text("x")
    with pytest.raises(C.CorruptCheckpointError):
        C.load_tensors(w)
    shutil.rmtree(target) if target.is_dir() else None
    assert settle(SPEC, tmp_path, reference) == "recovered"


HOSTILE = "../../../../ESCAPED/a b"


def test_a_run_fed_hostile_values_writes_only_under_the_reports_and_the_cache(tmp_path, monkeypatch):
    "Every channel a value reaches a path through — an override, a figure's and a table's name, a claim's id, dataset and "
    "notes, a sidecar rewritten by hand, a ledger line written by hand — and every path written checked afterwards."
    from notebook_fixtures import make_project
    body = ("import matplotlib\nmatplotlib.use('Agg')\nimport json, pathlib\nimport matplotlib.pyplot as plt\n"
            "import pandas as pd\nfrom advnb.core import start_run, save_figure, save_table\nfrom advnb import claims\n"
            "run = start_run('a1_demo', scale=scale, seed=seed)\n"
            "fig = plt.figure()\npng = save_figure(fig, label, paper='A', number=1)[0]\n"
            "save_table(pd.DataFrame({'a': [1]}), label, paper='A', number=2)\n"
            "claims.record(label.replace(' ', ''), paper='A', section=label, statement=label, paper_value=label, our_value=label, "
            "holds=True, criterion=label, dataset=label, notes=label)\n"
            "png.with_suffix('.json').write_text(json.dumps({'notebook': label, 'scale': label, 'caption': label}))\n")
    project = make_project(tmp_path / "proj", {"a1_demo": ('scale = "smoke"\nseed = 0\nlabel = "x"', body)})
    reports, cache = tmp_path / "reports", tmp_path / "cache"
    monkeypatch.setenv("ADVNB_CACHE_DIR", str(cache))
    core.get_settings(reload=True)
    before = _files_under(tmp_path)
    try:
        logs = []
        assert runner.run("smoke", ["a1_demo"], project=project, reports_dir=reports, log=logs.append,
                          overrides={"label": HOSTILE}) == 0, logs
        with (reports / "smoke" / "claims.jsonl").open("a") as f:
            f.write(json.dumps({"id": HOSTILE, "paper": "/../../ESCAPED", "holds": True}) + "\n")
        assert runner.main(["report", "--scale", "smoke", "--project", str(project), "--reports-dir", str(reports)]) == 0
    finally:
        monkeypatch.undo()
        core.get_settings(reload=True)
    written = _files_under(tmp_path) - before
    assert written and any("ESCAPED" in p.name for p in written)  # the hostile value did reach file names, made safe
    outside = [p for p in written if not (p.is_relative_to(reports.resolve()) or p.is_relative_to(cache.resolve()))]
    assert outside == [] and not any(p.name.startswith("ESCAPED") for p in tmp_path.parent.iterdir())
    record("recovered")


@pytest.mark.parametrize("value", ["true", "1.0", "'3'"])
def test_a_value_of_another_type_than_the_declared_integer_is_refused(labelled_project, value, capsys):
    (labelled_project / "params" / "smoke.yaml").write_text(f"a_first: {{seed: {value}}}\n")
    assert runner.main(main_in(labelled_project, "run", "--scale", "smoke")) == 2
    err = capsys.readouterr().err
    assert "a_first: seed=" in err and "but the notebook's default 0 is a int" in err, err
    record("clear stop")


def test_an_image_bomb_in_restricted_imagenet_is_named(tmp_path):
    from advnb.data import DamagedDatasetError, load_dataset
    sys.path.insert(0, str(ROOT / "tests"))
    from test_data import _fake_imagenet
    inet = _fake_imagenet(tmp_path)
    _bomb(inet / "train" / "n00000151" / "img_151.JPEG")
    with pytest.raises(DamagedDatasetError, match="img_151.JPEG: .*could be decompression bomb"):
        load_dataset("restricted_imagenet", "train", root=tmp_path)
    record("clear stop")
