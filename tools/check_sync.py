"""Fail when advnb/ differs from what the notebooks export, when a notebook is not clean, when a markdown cell holds a
control character (a LaTeX `\\frac` or `\\text` written in a Python string whose escape turned it into a form feed or a
TAB), when nbs/index.ipynb does not give the reading order of every notebook, or when a module under advnb/ is exported
by no notebook (nbdev does not delete a module whose notebook moved it: `#| default_exp papers.x` leaves the old x.py).

The notebooks in nbs/ are the source of truth. This script exports and cleans them in place and compares
file hashes before and after; any difference means a notebook was edited without exporting (or a module was
edited by hand), and is listed so that `git diff` shows it.
"""
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def snapshot():
    files = sorted((ROOT / "advnb").rglob("*.py")) + sorted((ROOT / "nbs").glob("*.ipynb"))
    return {p.relative_to(ROOT).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def text_problems(nbs: Path) -> list[str]:
    "Control characters in markdown cells, and notebooks that nbs/index.ipynb does not name, as readable lines."
    problems = []
    for p in sorted(nbs.glob("*.ipynb")):
        for i, cell in enumerate(json.loads(p.read_text())["cells"]):
            text = "".join(cell["source"])
            bad = sorted({repr(ch) for ch in text if ord(ch) < 32 and ch != "\n"})
            if cell["cell_type"] == "markdown" and bad:
                problems.append(f"{p.name} markdown cell {i}: control character(s) {', '.join(bad)}; a LaTeX "
                                "command such as \\frac or \\text lost its backslash to a string escape: write it again")
    index = nbs / "index.ipynb"
    if index.exists():
        text = "".join("".join(c["source"]) for c in json.loads(index.read_text())["cells"])
        for p in sorted(nbs.glob("*.ipynb")):
            if p.stem != "index" and f"`{p.stem}`" not in text:
                problems.append(f"nbs/index.ipynb does not name `{p.stem}`: add it to the reading order")
    return problems


GENERATED_BY_NBDEV = {"__init__.py", "_modidx.py"}  # nbdev writes these itself (every package folder has an __init__.py)


def orphan_modules(root: Path) -> list[str]:
    "Modules under advnb/ that no notebook exports (`#| default_exp` of every notebook in nbs/), as repository paths."
    exported = set()
    for p in (root / "nbs").glob("*.ipynb"):
        for cell in json.loads(p.read_text())["cells"]:
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("#| default_exp "):
                    exported.add(line.split()[-1].replace(".", "/") + ".py")
    lib = root / "advnb"
    return sorted(f"advnb/{p.relative_to(lib).as_posix()}" for p in lib.rglob("*.py")
                  if p.name not in GENERATED_BY_NBDEV and p.relative_to(lib).as_posix() not in exported)


def main():
    import os
    os.chdir(ROOT)
    from nbdev.doclinks import nbdev_export
    from nbdev.clean import nbdev_clean
    before = snapshot()
    nbdev_export()
    nbdev_clean()
    after = snapshot()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if changed:
        print("advnb/ and nbs/ are out of sync (or a notebook is not clean). Exporting/cleaning changed:")
        for k in changed:
            print("   ", k)
        print("Fix: run `make export`, check `git diff`, and commit the notebooks together with advnb/.")
        sys.exit(1)
    problems = text_problems(ROOT / "nbs") + [f"{m} is exported by no notebook: delete it (git rm) if its notebook now "
                                              "exports it elsewhere" for m in orphan_modules(ROOT)]
    if problems:
        print("notebook and module check failed:")
        for line in problems:
            print("   ", line)
        sys.exit(1)
    print(f"sync check: {len(after)} files, package matches the notebooks and every notebook is clean")


if __name__ == "__main__":
    main()
