import json
from pathlib import Path

import pytest
import yaml

from advnb.workflow import runner
from advnb.workflow.runner import RunnerError
from notebook_fixtures import make_notebook, make_project

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path):
    return make_project(tmp_path, {
        "a_ok": ('scale = "smoke"\nseed = 0\nn = 3\nrate = 0.5\nname = "x"\nflag = False',
                 "from advnb.core import start_run, save_table\nimport pandas as pd\n"
                 "run = start_run('a_ok', scale=scale, seed=seed)\n"
                 "save_table(pd.DataFrame({'n': [n], 'rate': [rate]}), 'result', paper='T', number=1)\nprint(n * rate)"),
        "b_fail": ('scale = "smoke"\nseed = 0', "x = 1\nraise ValueError('boom at smoke')")})


def test_notebook_parameters_parsed(project):
    assert runner.notebook_parameters(project / "nbs" / "a_ok.ipynb") == \
        {"scale": "smoke", "seed": 0, "n": 3, "rate": 0.5, "name": "x", "flag": False}


def test_non_literal_parameter_is_rejected(tmp_path):
    nb = make_notebook(tmp_path / "x.ipynb", "import math\nn = 3", "")
    with pytest.raises(RunnerError, match="only `name = literal`"):
        runner.notebook_parameters(nb)


@pytest.mark.parametrize("overrides,needle", [
    ({"a_ok": {"colour": 1}}, "a_ok: unknown parameter 'colour'"),
    ({"a_ok": {"n": "three"}}, "a_ok: n='three' is a str"),
    ({"a_ok": {"n": 2.5}}, "a_ok: n=2.5 is a float"),
    ({"a_ok": {"flag": 1}}, "a_ok: flag=1 is a int"),
    ({"a_ok": {"n": True}}, "a_ok: n=True is a bool"),
    ({"a_ok": {"scale": "paper"}}, "'scale' is set by --scale"),
    ({"zz_missing": {"n": 1}}, "no notebook 'zz_missing'"),
])
def test_validation_names_notebook_and_key_and_runs_nothing(project, overrides, needle):
    (project / "params" / "quick.yaml").write_text(yaml.safe_dump(overrides))
    reports = project / "reports"
    with pytest.raises(RunnerError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        runner.run("quick", project=project, reports_dir=reports, log=lambda *_: None)
    assert not (reports / "quick").exists()


@pytest.mark.parametrize("default,accepted,refused", [
    (3, [0, -2], [True, 2.5, "3", None, [3]]),
    (0.5, [1, 0.25], [True, "0.5", None]),
    (False, [True], [0, 1, "yes", None]),
    ("x", ["y", ""], [1, None, ["x"]]),
    ([1, 2], [[], (3,)], ["1,2", 1, {"a": 1}]),
    ({"a": 1}, [{}], [[("a", 1)], "a"]),
    (None, [1, "x", None, [1]], []),
])
def test_each_declared_type_takes_its_own_values_only(default, accepted, refused):
    "An override must be of the type the notebook's default declares: a bool is not an int, an int is a float."
    from advnb.workflow.project import _type_ok
    assert all(_type_ok(default, v) for v in accepted) and not any(_type_ok(default, v) for v in refused)


@pytest.mark.parametrize("damage", ["page deleted", "output deleted", "last run failed", "outputs unreadable"])
def test_a_notebook_is_skipped_only_when_its_last_run_and_everything_it_wrote_are_there(project, damage):
    reports = project / "reports"
    assert runner.run("smoke", ["a_ok"], project=project, reports_dir=reports, log=lambda *_: None) == 0
    out, state = reports / "smoke", reports / "smoke" / ".state" / "a_ok.json"
    st = json.loads(state.read_text())
    assert st["outputs"] and all((out / f).exists() for f in st["outputs"])
    if damage == "page deleted":
        (out / "a_ok.html").unlink()
    elif damage == "output deleted":
        (out / st["outputs"][0]).unlink()
    else:
        st.update(status="failed") if damage == "last run failed" else st.update(outputs="tables/T_table1_result.csv")
        state.write_text(json.dumps(st))
    logs = []
    runner.run("smoke", ["a_ok"], project=project, reports_dir=reports, log=logs.append)
    assert not any(line.startswith("skip") for line in logs) and (out / "a_ok.html").exists()
    logs.clear()
    runner.run("smoke", ["a_ok"], project=project, reports_dir=reports, log=logs.append)
    assert any(line.startswith("skip  a_ok") for line in logs)  # the rerun repaired it: unchanged now


def test_valid_overrides_accepted(project):
    (project / "params" / "quick.yaml").write_text(yaml.safe_dump({"a_ok": {"n": 5, "rate": 1, "name": "y"}}))
    runner.validate_param_sets(runner.load_param_sets(project, "quick"), runner.list_notebooks(project), "quick")


def test_end_to_end_failure_reporting_and_skip_logic(project):
    reports = project / "reports"
    logs = []
    failed = runner.run("smoke", project=project, reports_dir=reports, log=logs.append)
    assert failed == 1
    out = reports / "smoke"
    # the good notebook rendered, with its table; the failing one rendered up to the failing cell
    assert (out / "a_ok.ipynb").exists() and (out / "a_ok.html").exists()
    assert (out / "tables" / "T_table1_result.csv").exists()
    assert (out / "b_fail.html").exists() and "boom at smoke" in (out / "b_fail.html").read_text()
    state = json.loads((out / ".state" / "b_fail.json").read_text())
    assert state["status"] == "failed" and "ValueError: boom at smoke" in state["error"] and state["failed_cell"]
    assert any("b_fail" in l and "boom at smoke" in l for l in logs)
    index = (out / "index.html").read_text()
    assert "a_ok.html" in index and "T_table1_result" in index and "failed" in index
    # second run: the successful notebook is skipped, the failed one runs again
    logs.clear()
    runner.run("smoke", project=project, reports_dir=reports, log=logs.append)
    assert any(l.startswith("skip  a_ok") for l in logs) and any("b_fail" in l and "failed" in l for l in logs)
    # a changed parameter, or --force, runs it again
    (project / "params" / "smoke.yaml").write_text(yaml.safe_dump({"a_ok": {"n": 4}}))
    logs.clear()
    runner.run("smoke", ["a_ok"], project=project, reports_dir=reports, log=logs.append)
    assert not any(l.startswith("skip") for l in logs)
    assert "2.0" in (out / "a_ok.html").read_text()
    logs.clear()
    runner.run("smoke", ["a_ok"], force=True, project=project, reports_dir=reports, log=logs.append)
    assert not any(l.startswith("skip") for l in logs)


def test_cli_exit_codes(project, capsys):
    (project / "params" / "quick.yaml").write_text(yaml.safe_dump({"a_ok": {"bogus": 1}}))
    assert runner.main(["run", "--scale", "quick", "--project", str(project), "--reports-dir", str(project / "r")]) == 2
    assert "unknown parameter 'bogus'" in capsys.readouterr().err
    assert runner.main(["run", "nope", "--scale", "smoke", "--project", str(project), "--reports-dir", str(project / "r")]) == 2


def test_repository_param_sets_are_valid():
    nbs = runner.list_notebooks(ROOT)
    for scale in ("smoke", "quick", "paper"):
        runner.validate_param_sets(runner.load_param_sets(ROOT, scale), nbs, scale)


def test_every_notebook_has_a_tagged_parameters_cell_with_scale_and_seed():
    # nbdev-clean must keep the papermill tag (pyproject: allowed_cell_metadata_keys = ["tags"])
    for nb in runner.list_notebooks(ROOT):
        if nb.stem == "index":
            continue
        params = runner.notebook_parameters(nb)
        assert params.get("scale") == "smoke" and "seed" in params, f"{nb.name}: parameters cell missing or untagged"


def test_report_notebook_runs_last_and_again_whenever_another_ran(project):
    (project / "nbs" / "b_fail.ipynb").unlink()
    make_notebook(project / "nbs" / "99_summary.ipynb", 'scale = "smoke"\nseed = 0',
                  "from pathlib import Path\nprint(sorted(p.name for p in Path('.').glob('*.ipynb')))")
    make_notebook(project / "nbs" / "c_ok.ipynb", 'scale = "smoke"\nseed = 0', "print('c')")
    reports, logs = project / "reports", []
    assert runner.run("smoke", project=project, reports_dir=reports, log=logs.append) == 0
    ran = [l.split()[1] for l in logs if l.startswith(("ok ", "failed "))]
    assert ran == ["a_ok", "c_ok", "99_summary"]
    # only c_ok is asked for and changed: the report, unchanged itself, is re-rendered after it
    make_notebook(project / "nbs" / "c_ok.ipynb", 'scale = "smoke"\nseed = 0', "print('c2')")
    logs.clear()
    runner.run("smoke", ["c_ok"], project=project, reports_dir=reports, log=logs.append)
    assert [l.split()[1] for l in logs if l.startswith(("ok ", "failed "))] == ["c_ok", "99_summary"]
    assert any(" 0 skipped" in l for l in logs)
    # c_ok ran but the process died before the report: the next run renders the report, and only the report
    make_notebook(project / "nbs" / "c_ok.ipynb", 'scale = "smoke"\nseed = 0', "print('c3')")
    c_ok = project / "nbs" / "c_ok.ipynb"
    runner._run_one((c_ok, "smoke", {}, reports, runner.notebook_fingerprint(c_ok, {}, "smoke")))
    logs.clear()
    runner.run("smoke", project=project, reports_dir=reports, log=logs.append)
    assert [l.split()[1] for l in logs if l.startswith(("ok ", "failed "))] == ["99_summary"]
    assert any(" 2 skipped" in l for l in logs)
    # nothing changed: nothing runs, the report included
    logs.clear()
    runner.run("smoke", project=project, reports_dir=reports, log=logs.append)
    assert not [l for l in logs if l.startswith(("ok ", "failed "))]
    assert sum(l.startswith("skip") for l in logs) == 3


def test_duplicate_keys_in_a_param_file_are_an_error(project):
    "PyYAML keeps the last of two equal keys silently; a param file that sets a notebook twice is a mistake."
    (project / "params" / "quick.yaml").write_text("a_ok: {n: 1}\nb_fail: {}\na_ok: {rate: 0.1}\n")
    with pytest.raises(RunnerError, match="duplicate key 'a_ok'"):
        runner.load_param_sets(project, "quick")
    (project / "params" / "quick.yaml").write_text(".base: &b {n: 1}\na_ok: {<<: *b, n: 2}\n")  # merge + override: fine
    assert runner.load_param_sets(project, "quick") == {"a_ok": {"n": 2}}


def test_set_renders_a_variant_beside_the_scale_run_with_its_own_claims_and_tables(project):
    make_notebook(project / "nbs" / "c_claim.ipynb", 'scale = "smoke"\nseed = 0\nepochs = 2',
                  "from advnb.core import start_run, save_table\nfrom advnb import claims\nimport pandas as pd\n"
                  "run = start_run('c_claim', scale=scale, seed=seed)\n"
                  "save_table(pd.DataFrame({'epochs': [epochs]}), 'result', paper='T', number=2)\n"
                  "claims.record('T.1.c', paper='T', section='1', statement='s', paper_value=1, our_value=epochs, holds=epochs > 5)")
    reports = project / "reports"
    quiet = lambda *_: None  # noqa: E731
    assert runner.run("smoke", ["c_claim"], project=project, reports_dir=reports, log=quiet) == 0
    logs = []
    assert runner.run("smoke", ["c_claim"], project=project, reports_dir=reports, log=logs.append,
                      overrides=runner.parse_overrides(["epochs=10"])) == 0
    out = reports / "smoke"
    assert (out / "c_claim.html").exists() and (out / "c_claim@epochs=10.html").exists()
    assert (out / "tables" / "T_table2_result.csv").read_text().strip().endswith("2")  # the scale's own, untouched
    assert (out / "tables" / "T_table2_result@epochs=10.csv").read_text().strip().endswith("10")
    ledger = {r["id"]: r for r in map(json.loads, (out / "claims.jsonl").read_text().splitlines())}
    assert ledger["T.1.c"]["holds"] is False and ledger["T.1.c"]["our_value"] == 2
    v = ledger["T.1.c@epochs=10"]
    assert v["holds"] is True and v["our_value"] == 10 and v["notebook"] == "c_claim@epochs=10" and "variant epochs=10" in v["notes"]
    assert json.loads((out / ".state" / "c_claim@epochs=10.json").read_text())["variant"] == "epochs=10"
    index = (out / "index.html").read_text()
    assert "c_claim@epochs=10.html" in index and "T.1.c@epochs=10" in index
    # the same override again is skipped; the plain run is not affected by it
    logs.clear()
    runner.run("smoke", ["c_claim"], project=project, reports_dir=reports, log=logs.append, overrides={"epochs": 10})
    assert any(l.startswith("skip  c_claim@epochs=10") for l in logs)
    logs.clear()
    runner.run("smoke", ["c_claim"], project=project, reports_dir=reports, log=logs.append)
    assert any(l.startswith("skip  c_claim ") for l in logs)


@pytest.mark.parametrize("items,needle", [
    (["epochs"], "write NAME=VALUE"),
    (["=3"], "write NAME=VALUE"),
    (["epochs=[1,"], "not valid YAML"),
])
def test_set_values_are_checked(items, needle):
    with pytest.raises(RunnerError, match=needle):
        runner.parse_overrides(items)


def test_set_is_validated_against_every_named_notebook_and_needs_names(project):
    reports = project / "reports"
    with pytest.raises(RunnerError, match="unknown parameter 'n'"):  # b_fail has no n
        runner.run("smoke", ["a_ok", "b_fail"], project=project, reports_dir=reports, log=lambda *_: None, overrides={"n": 4})
    with pytest.raises(RunnerError, match="n='four' is a str"):
        runner.run("smoke", ["a_ok"], project=project, reports_dir=reports, log=lambda *_: None, overrides={"n": "four"})
    with pytest.raises(RunnerError, match="notebooks you name"):
        runner.run("smoke", project=project, reports_dir=reports, log=lambda *_: None, overrides={"n": 4})
    assert not (reports / "smoke").exists()
    assert runner.parse_overrides(["n=4", "rate=0.5", "name=y", "ls=[1, 2]"]) == {"n": 4, "rate": 0.5, "name": "y", "ls": [1, 2]}


def test_kernels_under_jobs_share_the_cores(tmp_path):
    import torch
    body = ("import torch, pandas as pd\nfrom advnb.core import start_run, save_table\n"
            "run = start_run(NAME, scale=scale, seed=seed)\n"
            "save_table(pd.DataFrame({'threads': [torch.get_num_threads()]}), NAME, paper='K', number=1)")
    project = make_project(tmp_path, {s: ('scale = "smoke"\nseed = 0', body.replace("NAME", repr(s)))
                                      for s in ("k_one", "k_two")})
    logs, reports = [], project / "reports"
    assert runner.run("smoke", project=project, reports_dir=reports, jobs=2, log=logs.append) == 0, logs
    used = [int(next((reports / "smoke" / "tables").glob(f"K_table1_{s}.csv")).read_text().split(",")[-1])
            for s in ("k_one", "k_two")]
    cores = torch.get_num_threads()
    assert used == [max(1, cores // 2)] * 2, (used, cores)  # each its share, at least one thread
    if cores >= 2:
        assert sum(used) <= cores, (used, cores)  # together no more than the cores


def test_the_display_shows_a_model_training_inside_a_papermill_kernel(tmp_path, isolated_settings, monkeypatch):
    monkeypatch.setattr(runner, "POLL_SECONDS", 0.05)
    body = ("from advnb.train import TrainSpec\nfrom advnb import zoo\n"
            "spec = TrainSpec(arch='simple_cnn', dataset='synthetic-mnist', n_per_class=150, eval_n_per_class=3,"
            " batch_size=4, lr=0.05, epochs=2, milestones=(), seed=3)\nzoo.get(spec, device='cpu')\nprint(spec.name)")
    project = make_project(tmp_path / "p", {"t_train": ('scale = "smoke"\nseed = 0', body)})
    logs = []
    assert runner.run("smoke", project=project, reports_dir=tmp_path / "r", log=logs.append) == 0, logs
    from advnb.train import TrainSpec
    name = TrainSpec(arch="simple_cnn", dataset="synthetic-mnist", n_per_class=150, eval_n_per_class=3, batch_size=4,
                     lr=0.05, epochs=2, milestones=(), seed=3).name
    epochs = [line for line in logs if line.strip().startswith(f"t_train: {name} epoch")]
    assert [line.split(" · ")[0].split()[-1] for line in epochs] == ["1/2", "2/2"], logs  # a line per epoch, in a log
    assert not (tmp_path / "r" / "smoke" / runner.PROGRESS_FOLDER / "t_train.json").exists()  # removed when it ended


def test_the_time_left_follows_how_the_finished_notebooks_compared_with_their_estimates():
    assert runner.time_left({"a": 60, "b": 120}, {"a": 30}, {}) == 60  # a took half its estimate: b will take 60 s
    assert runner.time_left({"a": 60, "b": 120}, {"a": 120}, {"b": 40}) == 200  # twice: 240 s, 40 of them run
    assert runner.time_left({"a": 60, "b": 120, "c": 60}, {}, {}, jobs=2) == 120  # two kernels share 240 s
    assert runner.time_left({"a": 60, "b": None}, {}, {}) is None


def test_a_notebook_past_its_estimate_raises_the_time_left_and_is_named(monkeypatch):
    assert runner.time_left({"a": 60, "b": 120}, {}, {"a": 120}) == 240  # a has run twice its estimate: so will b
    assert runner.time_left({"a": 60, "b": 60, "c": 60}, {"a": 60}, {"b": 120}) == 90  # (60 + 120) / 120: c takes 90 s
    assert runner.overruns({"a": 60, "b": 0, "c": 60}, {}, {"a": 90, "b": 5, "c": 30}) == {"a": 30, "b": 5}
    display = runner.RunDisplay(Path("."), {"a": 60, "b": 120}, interactive=False)
    monkeypatch.setattr(runner.time, "time", lambda: 1000.0)  # a fixed clock: the words cannot drift with a slow machine
    display.started = {"a": 1000.0 - 120}
    assert display._left() == "about 4 min left besides a 60 s past its estimate"


def test_a_render_is_expected_to_take_what_its_other_seeds_took(tmp_path):
    assert runner.seedless("b3@lam=[1,2],seed=2") == "b3@lam=[1,2]" and runner.seedless("b3@seed=0") == "b3"
    assert runner.time_left({"a@seed=0": 60, "a@seed=1": 60, "b": 60}, {"a@seed=0": 30}, {}) == 60  # a@seed=1 30 s, b 30 s
    assert runner.time_left({"a@seed=0": 60, "a@seed=1": None}, {"a@seed=0": 30}, {"a@seed=1": 10}) == 20
    for stem, status, seconds in (("nb@seed=0", "ok", 100), ("nb@seed=1", "ok", 200), ("nb@seed=2", "failed", 1),
                                  ("nb_other", "ok", 7), ("nb@x=1,seed=0", "ok", 9)):
        path = runner.state_path(tmp_path, stem)
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps({"status": status, "seconds": seconds}))
    assert runner.past_seconds(tmp_path, "nb@seed=1") == 200  # its own last run
    assert runner.past_seconds(tmp_path, "nb@seed=3") == 150  # its other seeds' that succeeded: not nb_other's, not x=1's
    assert runner.past_seconds(tmp_path, "nb@x=1,seed=5") == 9 and runner.past_seconds(tmp_path, "nb@x=2") is None
