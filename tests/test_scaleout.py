"""Paper scale beyond this machine: grids and seeds, the submitit executor (local, same code path as Slurm), and the
shared cache and ledger under concurrent processes."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from advnb import claims
from advnb.workflow import runner
from advnb.workflow.runner import RunnerError
from notebook_fixtures import make_notebook, make_project

ROOT = Path(__file__).resolve().parents[1]
quiet = lambda *_: None  # noqa: E731

REPORT = ("from advnb.core import start_run\nfrom advnb.claims import across_seeds\n"
          "run = start_run('99_report', scale=scale, seed=seed)\nprint(across_seeds(scale).to_string())")


@pytest.fixture
def project(tmp_path):
    return make_project(tmp_path, {
        "c_claim": ('scale = "smoke"\nseed = 0\nepochs = 2',
                    "from advnb.core import start_run\nfrom advnb import claims\n"
                    "run = start_run('c_claim', scale=scale, seed=seed)\n"
                    "claims.record('T.1.always', paper='T', section='1', statement='s', paper_value=1, our_value=seed, holds=True)\n"
                    "claims.record('T.1.seed0', paper='T', section='1', statement='s', paper_value=1, our_value=seed, holds=seed == 0)\n"
                    "print('epochs', epochs, 'seed', seed)"),
        "b_fail": ('scale = "smoke"\nseed = 0', "raise ValueError('boom at smoke')"),
        "99_report": ('scale = "smoke"\nseed = 0', REPORT)})


def test_expand_grid_is_the_product_named_by_the_varied_values():
    combos = runner.expand_grid({"epochs": 3, "grid": {"lr": [0.1, 0.01], "seed": [5]}}, seeds=[0, 1])
    assert [v for _, v in combos] == [{"lr": 0.1, "seed": 0}, {"lr": 0.1, "seed": 1}, {"lr": 0.01, "seed": 0}, {"lr": 0.01, "seed": 1}]
    assert all(p["epochs"] == 3 and "grid" not in p and p["lr"] == v["lr"] for p, v in combos)  # --seeds replaces seed
    assert runner.expand_grid({"epochs": 3}) == [({"epochs": 3}, {})]
    # a value the set also gives outside its grid is varied by the grid (the render is named for what it ran)
    assert [p["lr"] for p, _ in runner.expand_grid({"lr": 0.5, "grid": {"lr": [0.1, 0.01]}})] == [0.1, 0.01]


@pytest.mark.parametrize("grid,needle", [
    ({"colour": [1]}, "grid: 'colour' is not a parameter"),
    ({"epochs": 3}, "grid: epochs must be a non-empty list"),
    ({"epochs": []}, "grid: epochs must be a non-empty list"),
    ({"epochs": [1, "two"]}, "grid: epochs='two' is a str"),
    ([1, 2], "grid must map parameter names"),
])
def test_grid_is_validated_before_anything_runs(project, grid, needle):
    (project / "params" / "quick.yaml").write_text(yaml.safe_dump({"c_claim": {"grid": grid}}))
    with pytest.raises(RunnerError, match=needle):
        runner.run("quick", project=project, reports_dir=project / "reports", log=quiet)
    assert not (project / "reports" / "quick").exists()


def test_seeds_render_one_notebook_each_and_the_report_combines_verdicts(project):
    reports = project / "reports"
    assert runner.run("smoke", ["c_claim"], project=project, reports_dir=reports, log=quiet, seeds=[0, 1]) == 0
    out = reports / "smoke"
    assert (out / "c_claim@seed=0.html").exists() and (out / "c_claim@seed=1.html").exists()
    assert not (out / "c_claim.html").exists()
    table = claims.across_seeds("smoke", reports)
    assert table.loc["T.1.always", "combined"] == "holds in every seed"
    assert table.loc["T.1.seed0", "combined"] == "mixed"
    assert list(table.loc["T.1.seed0", ["seed 0", "seed 1"]]) == ["holds", "does not hold"]
    assert "mixed" in (out / "99_report.html").read_text()  # the report notebook ran after both and shows them
    logs = []  # unchanged: both skipped
    runner.run("smoke", ["c_claim"], project=project, reports_dir=reports, log=logs.append, seeds=[0, 1])
    assert sum(l.startswith("skip  c_claim@seed=") for l in logs) == 2


def test_grid_entry_in_a_parameter_file(project):
    (project / "params" / "quick.yaml").write_text(yaml.safe_dump({"c_claim": {"epochs": 7, "grid": {"seed": [0, 1]}}}))
    assert runner.run("quick", ["c_claim"], project=project, reports_dir=project / "reports", log=quiet) == 0
    html = (project / "reports" / "quick" / "c_claim@seed=1.html").read_text()
    assert "epochs 7 seed 1" in html
    assert claims.across_seeds("quick", project / "reports").loc["T.1.seed0", "combined"] == "mixed"


def test_seed_list_argument():
    assert runner._seed_list("0,1, 2") == [0, 1, 2]
    for bad in ("a,b", "1,1", ""):
        with pytest.raises(Exception, match="seeds|numbers"):
            runner._seed_list(bad)


def test_submitit_local_executor_renders_reports_failures_and_gathers_logs(project):
    pytest.importorskip("submitit")
    reports = project / "reports"
    logs = []
    failed = runner.run("smoke", project=project, reports_dir=reports, log=logs.append, executor="submitit-local")
    out = reports / "smoke"
    assert failed == 1
    assert any(l.startswith("submitted c_claim as job") for l in logs)
    assert any("b_fail" in l and "boom at smoke" in l for l in logs)
    assert json.loads((out / ".state" / "b_fail.json").read_text())["status"] == "failed"
    ok = json.loads((out / ".state" / "c_claim.json").read_text())
    assert ok["status"] == "ok" and ok["log"] == "c_claim.log"
    assert "job" in (out / "c_claim.log").read_text() and (out / "b_fail.log").exists()
    assert (out / "c_claim.html").exists() and (out / "99_report.html").exists() and (out / "index.html").exists()
    logs.clear()  # the same skip logic as local runs
    runner.run("smoke", project=project, reports_dir=reports, log=logs.append, executor="submitit-local")
    assert any(l.startswith("skip  c_claim") for l in logs) and any("b_fail" in l and "failed" in l for l in logs)


def test_a_job_that_dies_is_reported_failed_not_ok(project):
    pytest.importorskip("submitit")
    make_notebook(project / "nbs" / "d_dies.ipynb", 'scale = "smoke"\nseed = 0', "import os\nos._exit(3)")
    failed = runner.run("smoke", ["d_dies"], project=project, reports_dir=project / "reports", log=quiet,
                        executor="submitit-local")
    state = json.loads((project / "reports" / "smoke" / ".state" / "d_dies.json").read_text())
    assert failed == 1 and state["status"] == "failed"


def test_slurm_options_from_settings_then_command_line(tmp_path):
    ini = tmp_path / "settings.ini"
    ini.write_text("[advnb]\nscale = quick\n[slurm]\npartition = gpu\ntime = 12:00:00\ngpus_per_job = 1\n")
    opts = runner.slurm_options({"partition": "a100", "time": None, "mem_gb": 64}, settings_file=ini)
    assert opts == {"partition": "a100", "time": "12:00:00", "gpus_per_job": 1, "mem_gb": 64}
    assert runner.submitit_parameters(opts) == {"nodes": 1, "tasks_per_node": 1, "timeout_min": 720,
                                                "slurm_partition": "a100", "gpus_per_node": 1, "mem_gb": 64}
    assert [runner._minutes(t) for t in ("90", "1:30", "1-00", "0-1:30:01")] == [90, 2, 1440, 91]
    ini.write_text("[advnb]\n[slurm]\ngpu = 1\n")
    with pytest.raises(RunnerError, match="'gpu'.*unknown"):
        runner.slurm_options(settings_file=ini)
    with pytest.raises(RunnerError, match="not a Slurm time"):
        runner.slurm_options({"time": "noon"}, settings_file=tmp_path / "none.ini")
    with pytest.raises(RunnerError, match="gpus_per_job='two' must be int"):
        runner.slurm_options({"gpus_per_job": "two"}, settings_file=tmp_path / "none.ini")


def test_slurm_options_reach_the_sbatch_script(tmp_path, monkeypatch):
    "Without a cluster: a stand-in `srun` lets submitit build its Slurm executor, whose sbatch script we read."
    submitit = pytest.importorskip("submitit")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    ex = submitit.AutoExecutor(folder=tmp_path / "jobs", cluster="slurm")
    ex.update_parameters(**runner.submitit_parameters({"partition": "gpu", "gpus_per_job": 2, "time": "2:00:00", "qos": "high"}))
    script = ex._executor._make_submission_file_text("python -c pass", "UID")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=2", "#SBATCH --time=120", "#SBATCH --qos=high"):
        assert line in script


def test_unknown_executor_and_grid_override_are_errors(project):
    with pytest.raises(RunnerError, match="--executor 'pbs'"):
        runner.run("smoke", project=project, reports_dir=project / "r", log=quiet, executor="pbs")
    with pytest.raises(RunnerError, match="grid:"):
        runner.run("smoke", ["c_claim"], project=project, reports_dir=project / "r", log=quiet, overrides={"grid": {"seed": [1]}})


WORKER = textwrap.dedent("""
    import sys
    from advnb import zoo, core, claims
    from advnb.train import TrainSpec
    spec = TrainSpec(arch="simple_cnn", dataset="synthetic-mnist", n_per_class=6, eval_n_per_class=3, batch_size=16,
                     lr=0.05, epochs=2, milestones=(), seed=11)
    core.start_run("w" + sys.argv[1], scale="smoke", seed=0)
    for i in range(25):  # the ledger is rewritten under its lock by both processes
        claims.record(f"W{sys.argv[1]}-{i}", paper="W", section="0", statement="s", paper_value=0, our_value=i, holds=True)
    model = zoo.get(spec, show_progress=True)
    print("SUM", float(sum(p.double().sum() for p in model.parameters())))
""")


def test_two_processes_share_one_training_and_one_ledger(tmp_path):
    env = {**os.environ, "ADVNB_CACHE_DIR": str(tmp_path / "cache"), "ADVNB_REPORTS_DIR": str(tmp_path / "reports"),
           "ADVNB_DEVICE": "cpu", "ADVNB_PLAIN_PROGRESS": "1", "PYTHONPATH": str(ROOT)}
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    procs = [subprocess.Popen([sys.executable, str(script), str(i)], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in (1, 2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    trained = ["train_loss=" in o for o in outs]
    assert sorted(trained) == [False, True], outs  # one trained it, the other waited on the lock and loaded it
    sums = {l for o in outs for l in o.splitlines() if l.startswith("SUM")}
    assert len(sums) == 1  # the same weights
    ids = [json.loads(l)["id"] for l in (tmp_path / "reports" / "smoke" / "claims.jsonl").read_text().splitlines()]
    assert len(ids) == 50 == len(set(ids))
