import collections
import importlib.util
import json

from conftest import ROOT


def _check_sync():
    spec = importlib.util.spec_from_file_location("check_sync", ROOT / "tools" / "check_sync.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _notebook(path, *cells):
    path.write_text(json.dumps({"cells": [{"cell_type": t, "source": s, "metadata": {}} for t, s in cells]}))


def test_text_check_rejects_control_characters_and_notebooks_missing_from_the_index(tmp_path):
    check = _check_sync()
    _notebook(tmp_path / "index.ipynb", ("markdown", "# advnb\n\n`00_core` then `a1_frequency`"))
    _notebook(tmp_path / "00_core.ipynb", ("markdown", "$$\\frac{a}{b}$$"), ("code", "x = '\\t'\n"))
    assert check.text_problems(tmp_path) == []
    _notebook(tmp_path / "a1_frequency.ipynb", ("markdown", "$$\x0crac{a}{b} \text{x}$$"))  # \f and \t eaten
    _notebook(tmp_path / "b9_new.ipynb", ("code", "pass"))
    problems = check.text_problems(tmp_path)
    assert len(problems) == 2
    assert problems[0].startswith("a1_frequency.ipynb markdown cell 0: control character(s) '\\t', '\\x0c'")
    assert problems[1] == "nbs/index.ipynb does not name `b9_new`: add it to the reading order"


def test_the_project_notebooks_pass_the_text_check():
    assert _check_sync().text_problems(ROOT / "nbs") == []


def test_a_module_no_notebook_exports_is_reported(tmp_path):
    check = _check_sync()
    (tmp_path / "nbs").mkdir()
    _notebook(tmp_path / "nbs" / "b1.ipynb", ("code", "#| default_exp papers.b_method"))
    for f in ("__init__.py", "_modidx.py", "papers/__init__.py", "papers/b_method.py", "b_method.py"):
        (tmp_path / "advnb" / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "advnb" / f).write_text("")
    assert check.orphan_modules(tmp_path) == ["advnb/b_method.py"]  # left behind when the notebook moved it


def test_every_project_module_is_exported_by_a_notebook():
    assert _check_sync().orphan_modules(ROOT) == []


def test_every_planted_bug_of_make_mutate_still_finds_its_line():
    "A mutant whose original text no longer occurs exactly once in its module tests nothing: rewrite it with the code."
    spec = importlib.util.spec_from_file_location("mutate", ROOT / "tools" / "mutate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    stale = [f"{m}: {what} ({(ROOT / 'advnb' / f'{m}.py').read_text().count(old)} matches)"
             for m, _, old, _, what in mod.MUTANTS if (ROOT / "advnb" / f"{m}.py").read_text().count(old) != 1]
    assert not stale, stale


def test_make_mutate_plants_at_least_three_bugs_in_every_module():
    "Every module of the package, a new one included, has at least three plausible bugs planted by `make mutate`."
    spec = importlib.util.spec_from_file_location("mutate", ROOT / "tools" / "mutate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    planted = collections.Counter(m for m, *_ in mod.MUTANTS)
    modules = [p.relative_to(ROOT / "advnb").with_suffix("").as_posix() for p in (ROOT / "advnb").rglob("*.py")
               if not p.name.startswith("_")]  # __init__, __main__ and the generated _modidx hold no logic
    assert modules and not {m: planted[m] for m in modules if planted[m] < 3}
