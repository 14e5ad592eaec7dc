"""How long `advnb rekey` takes on the whole zoo of a scale, without training it.

Every `TrainSpec` the notebooks of a scale build (found as `advnb plan` finds them: their `models` cells, at the
scale's parameters and grids) is filed in a temporary cache under a stale key, as the metadata a finished run leaves
(`done.json` with the spec; no weights), and `advnb.zoo.rekey` is timed on it. rekey reads only that metadata and
renames folders, so the weights would not change its time; what it costs is keying each spec with the current code.

    .venv/bin/python tools/bench_rekey.py --scale quick
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", default="quick", choices=["smoke", "quick", "paper"])
    args = ap.parse_args()
    from advnb import zoo
    from advnb.workflow.plan import notebook_specs
    from advnb.workflow.project import expand_grid, list_notebooks, load_param_sets

    param_sets = load_param_sets(ROOT, args.scale)
    specs = {}
    for nb in list_notebooks(ROOT):
        for params, _ in expand_grid(param_sets.get(nb.stem, {})):
            specs.update({s.key: s for s in notebook_specs(nb, params, args.scale)})
    with tempfile.TemporaryDirectory() as tmp:
        for i, spec in enumerate(specs.values()):
            stale = zoo.spec_dir(spec, tmp).with_name(f"{spec.arch}-{spec.dataset}-{spec.objective}-{i:016x}")
            stale.mkdir(parents=True)
            (stale / "done.json").write_text(json.dumps({"spec": spec.to_dict(), "spec_key": f"{i:016x}"}))
        t0 = time.perf_counter()
        out = zoo.rekey(tmp)
        seconds = time.perf_counter() - t0
        assert {d.name for d in zoo.zoo_dir(tmp).iterdir()} == {s.name for s in specs.values()}, "a run under a wrong key"
    print(f"{args.scale}: {len(specs)} specs; rekey renamed {len(out['renamed'])}, skipped {len(out['skipped'])} "
          f"in {seconds:.1f} s")


if __name__ == "__main__":
    main()
