"""Tiny notebooks for the runner's tests: a parameters cell and a body, written with nbformat."""
from pathlib import Path

import nbformat


def make_notebook(path: Path, params_src: str, body: str) -> Path:
    "Write a notebook with a `parameters`-tagged cell holding `params_src` and one code cell holding `body`."
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell(params_src)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# test"), p, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def make_project(root: Path, notebooks: dict) -> Path:
    "A project folder: `nbs/` with `notebooks` ({stem: (params_src, body)}) and `params/` with empty parameter sets."
    (root / "nbs").mkdir(parents=True)
    (root / "params").mkdir()
    for stem, (params_src, body) in notebooks.items():
        make_notebook(root / "nbs" / f"{stem}.ipynb", params_src, body)
    for s in ("smoke", "quick", "paper"):
        (root / "params" / f"{s}.yaml").write_text("{}\n")
    return root
