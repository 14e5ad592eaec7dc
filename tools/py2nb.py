"""Developer helper: turn a jupytext percent-format script into a clean notebook in nbs/ (or back).

    python tools/py2nb.py draft.py nbs/00_core.ipynb     # script -> notebook
    python tools/py2nb.py nbs/00_core.ipynb draft.py     # notebook -> script, to edit in a text editor

The notebook in nbs/ is the source of truth; drafts are not committed.
"""
import sys
import jupytext

src, dst = sys.argv[1], sys.argv[2]
nb = jupytext.read(src)
if dst.endswith(".ipynb"):
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}}
    for c in nb.cells:
        c.metadata = {k: v for k, v in c.metadata.items() if k == "tags"}
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    jupytext.write(nb, dst, fmt="ipynb")
else:
    jupytext.write(nb, dst, fmt="py:percent")
