"""Benchmark advnb's PGD-L∞ against its floor and against torchattacks / foolbox (not a test).

    .venv/bin/python tools/bench_attacks.py                      # small CNN and ResNet-18, batch 128, k = 10
    .venv/bin/python tools/bench_attacks.py --models cnn --repeats 5

For each model, on the same batch (128 random CIFAR-sized images), it times, interleaved, `--repeats` times
(median, or with --stat min the minimum, after one warm-up):
  floor      k × (forward + backward w.r.t. the input only)   — the work PGD cannot avoid
  floor+W    k × (forward + loss.backward() incl. parameter grads) — a plain training-style step
  advnb      advnb.attacks.pgd(..., steps=k)
  torchattacks / foolbox  their L∞ PGD with the same ε, α, k and a random start (when installed)
and prints a Markdown table of seconds and ratios.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from advnb.attacks import pgd  # noqa: E402
from advnb.models import Normalize, build_model  # noqa: E402


CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def small_cnn(num_classes=10):
    return nn.Sequential(Normalize(CIFAR_MEAN, CIFAR_STD),
                         nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64 * 8 * 8, 256), nn.ReLU(), nn.Linear(256, num_classes))


def resnet18():
    return build_model("resnet18", num_classes=10, in_shape=(3, 32, 32), mean=CIFAR_MEAN, std=CIFAR_STD), \
        "ResNet-18 (advnb.models.build_model('resnet18'))"


def floor_input(model, x, y, k):
    for _ in range(k):
        xr = x.clone().requires_grad_(True)
        g, = torch.autograd.grad(F.cross_entropy(model(xr), y), xr)


def floor_full(model, x, y, k):
    for _ in range(k):
        xr = x.clone().requires_grad_(True)
        F.cross_entropy(model(xr), y).backward()
    model.zero_grad(set_to_none=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["cnn", "resnet18"], choices=["cnn", "resnet18"])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stat", choices=["min", "median"], default="median",
                    help="statistic over repeats (min is the robust one on a machine shared with other jobs)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall-clock seconds, or CPU seconds of this process (steadier when other jobs share the "
                         "cores; use with --threads 1)")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--device", default="cpu", help="cpu or cuda (timings wait for the device after each call)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    wait = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    eps, alpha, k = 8 / 255, 2 / 255, args.steps
    x = torch.rand(args.batch, 3, 32, 32).to(device)
    y = torch.randint(0, 10, (args.batch,)).to(device)

    peers = {}
    try:
        import torchattacks
        peers["torchattacks"] = lambda m: (lambda: torchattacks.PGD(m, eps=eps, alpha=alpha, steps=k,
                                                                    random_start=True)(x, y))
    except Exception as e:  # noqa: BLE001
        print(f"# torchattacks unavailable: {e!r}")
    try:
        import foolbox as fb
        def _fb(m):
            fm = fb.PyTorchModel(m, bounds=(0, 1))
            atk = fb.attacks.LinfPGD(abs_stepsize=alpha, steps=k, random_start=True)
            return lambda: atk(fm, x, y, epsilons=eps)
        peers["foolbox"] = _fb
    except Exception as e:  # noqa: BLE001
        print(f"# foolbox unavailable: {e!r}")

    rows = []
    for name in args.models:
        model, desc = (small_cnn(), "small CNN (5 conv/fc layers)") if name == "cnn" else resnet18()
        model.to(device).eval()
        fns = {"floor": lambda: floor_input(model, x, y, k), "floor+W": lambda: floor_full(model, x, y, k),
               "advnb": lambda: pgd(model, x, y, eps, alpha, k)}
        fns.update({p: mk(model) for p, mk in peers.items()})
        floor_input(model, x, y, 1); pgd(model, x, y, eps, alpha, 1)  # warm-up (allocator, one-time init)
        times = {n: [] for n in fns}
        cpu = {n: [] for n in fns}
        for _ in range(args.repeats):
            for n, f in fns.items():  # interleaved, so background load hits every method alike
                t0, c0 = time.perf_counter(), time.process_time()
                f()
                wait()
                times[n].append(time.perf_counter() - t0); cpu[n].append(time.process_time() - c0)
        if args.clock == "cpu":
            times, cpu = cpu, times
        stat = {n: (min(v) if args.stat == "min" else statistics.median(v)) for n, v in times.items()}
        other = {n: (min(v) if args.stat == "min" else statistics.median(v)) for n, v in cpu.items()}
        row = {"model": desc, **{f"{n} (s)": stat[n] for n in fns},
               "advnb / floor": stat["advnb"] / stat["floor"], "advnb / floor+W": stat["advnb"] / stat["floor+W"]}
        for p in peers:
            row[f"advnb / {p}"] = stat["advnb"] / stat[p]
        oc = "cpu" if args.clock == "wall" else "wall"
        row[f"advnb / floor ({oc})"] = other["advnb"] / other["floor"]
        for p in peers:
            row[f"advnb / {p} ({oc})"] = other["advnb"] / other[p]
        rows.append(row)
        print(f"# {desc}: " + ", ".join(f"{n} {', '.join(f'{t:.3f}' for t in v)}" for n, v in times.items()),
              flush=True)

    cols = list(rows[0])
    print(f"\nPGD-Linf, k = {k} steps, batch {args.batch}, 3×32×32, eps 8/255, alpha 2/255; "
          f"{args.stat} {args.clock}-clock time of {args.repeats}; "
          f"{datetime.date.today()}, {platform.processor() or platform.machine()}, {args.threads} threads, "
          f"torch {torch.__version__}\n")
    print("| " + " | ".join(cols) + " |")
    print("| " + " | ".join("---" for _ in cols) + " |")
    for r in rows:
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values()) + " |")


if __name__ == "__main__":
    main()
