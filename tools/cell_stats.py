"""Print, per notebook, the number of exported cells and their median and largest length in lines.

    python tools/cell_stats.py [nbs/*.ipynb ...]

The literate style wants exported cells of a few lines, each followed by a demonstration or a check.
"""
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def exported_lengths(path: Path) -> list[int]:
    out = []
    for c in json.loads(path.read_text())["cells"]:
        src = "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        lines = src.strip().splitlines()
        if c["cell_type"] == "code" and lines and lines[0].strip() == "#| export":
            out.append(len(lines) - 1)
    return out


def main(paths):
    paths = [Path(p) for p in paths] or sorted((ROOT / "nbs").glob("*.ipynb"))
    print(f"{'notebook':24} {'exported cells':>14} {'median lines':>12} {'largest':>8}")
    for p in paths:
        n = exported_lengths(p)
        if n:
            print(f"{p.stem:24} {len(n):14d} {statistics.median(n):12.1f} {max(n):8d}")


if __name__ == "__main__":
    main(sys.argv[1:])
