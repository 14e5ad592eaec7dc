"""Fail when advnb/ differs from what the notebooks export, or when a notebook is not clean.

The notebooks in nbs/ are the source of truth. This script exports and cleans them in place and compares
file hashes before and after; any difference means a notebook was edited without exporting (or a module was
edited by hand), and is listed so that `git diff` shows it.
"""
import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def snapshot():
    files = sorted((ROOT / "advnb").rglob("*.py")) + sorted((ROOT / "nbs").glob("*.ipynb"))
    return {p.relative_to(ROOT).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


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
    print(f"sync check: {len(after)} files, package matches the notebooks and every notebook is clean")


if __name__ == "__main__":
    main()
