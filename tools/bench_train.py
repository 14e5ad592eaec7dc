"""Benchmark `advnb.train` against its floor: a minimal hand-written loop of the same model, objective and batch (not a test).

    .venv/bin/python tools/bench_train.py                 # CE and PGD-AT (k = 10), ResNet-18 at width 8 on CIFAR-sized images
    .venv/bin/python tools/bench_train.py --objectives ce --repeats 5 --arch simple_cnn
    .venv/bin/python tools/bench_train.py --device cuda --precision fp32,bf16,fp16   # on a GPU: with and without AMP

Both loops train the same spec from the same initial weights on the same images in the same batches:
  floor   for x, y in batches: loss = CE(model(x'), y); zero_grad; backward; step, with x' = x (CE) or a plain
          hand-written L∞ PGD of k steps with a random start (PGD-AT); under the same autocast, memory layout,
          gradient scaler (fp16) and device-held data as advnb uses on the device
  advnb   advnb.train.train(spec, ...): the learning-rate schedule, callbacks, metrics, NaN check, per-epoch
          evaluation on `--eval-images` test images and a safetensors checkpoint + resume state every epoch
Each is timed `--repeats` times, interleaved, after a warm-up; the table gives the median training images per second
and the ratio floor / advnb (1.00 = no overhead; the target is <= 1.05). Prints Markdown.
"""
from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from advnb.core import get_device, mixed_precision, seed_everything, use_channels_last  # noqa: E402
from advnb.data import make_loader  # noqa: E402
from advnb.train import TrainSpec, build_from_spec, hold_on_device, make_optimizer, train, train_data  # noqa: E402

EPS, ALPHA = 8 / 255, 2 / 255


def spec_for(objective: str, arch: str, n_per_class: int, epochs: int, steps: int, eval_images: int,
             precision: str = "fp32") -> TrainSpec:
    kw = {"width": 8} if arch == "resnet18" else {}
    return TrainSpec(arch=arch, dataset="synthetic-cifar10", arch_kwargs=kw, n_per_class=n_per_class, epochs=epochs,
                     objective=objective, objective_kwargs=dict(eps=EPS, alpha=ALPHA, steps=steps) if objective == "pgd_at" else {},
                     batch_size=128, lr=0.05, milestones=(), eval_n_per_class=max(1, eval_images // 10), seed=0,
                     precision=precision)


def hand_pgd(model, x, y, steps: int, gen: torch.Generator):
    "The textbook L∞ PGD: random start, k signed-gradient steps, projection onto the ε-ball and [0, 1]."
    was_training = model.training
    model.eval()
    delta = (torch.rand(x.shape, generator=gen, device=x.device) * 2 - 1) * EPS
    x_adv = (x + delta).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        g, = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        x_adv = (x + (x_adv.detach() + ALPHA * g.sign() - x).clamp(-EPS, EPS)).clamp(0, 1)
    model.train(was_training)
    return x_adv.detach()


def floor(spec: TrainSpec, device) -> float:
    "Seconds of the minimal loop over `spec.epochs` epochs."
    layout = torch.channels_last if use_channels_last(device) else torch.preserve_format
    model = build_from_spec(spec).to(device, memory_format=layout)
    opt, ds = make_optimizer(spec, model), hold_on_device(train_data(spec), device)
    scaler = torch.amp.GradScaler(device.type, enabled=spec.precision == "fp16")
    gen = torch.Generator(device).manual_seed(0)
    t0 = time.perf_counter()
    for epoch in range(spec.epochs):
        model.train()
        for x, y in make_loader(ds, spec.batch_size, shuffle=True, seed=epoch, num_workers=0):
            x, y = x.to(device, memory_format=layout), y.to(device)
            with mixed_precision(spec.precision, device):
                if spec.objective == "pgd_at":
                    x = hand_pgd(model, x, y, spec.objective_kwargs["steps"], gen)
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def advnb(spec: TrainSpec, device) -> float:
    "Seconds of `advnb.train` over the same epochs (a fresh output folder each time, so nothing is resumed)."
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        train(spec, d, device=device, resume=False, show_progress=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objectives", default="ce,pgd_at")
    ap.add_argument("--arch", default="resnet18", help="an advnb architecture (resnet18 at width 8)")
    ap.add_argument("--n-per-class", type=int, default=128, help="training images per class (10 classes)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10, help="PGD steps of PGD-AT")
    ap.add_argument("--eval-images", type=int, default=100, help="test images advnb.train evaluates after each epoch")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default=None)
    ap.add_argument("--precision", default="fp32", help="comma-separated: fp32, bf16, fp16 (autocast; fp16 with a scaler)")
    a = ap.parse_args(argv)
    device = get_device(a.device)
    print(f"# advnb.train vs its floor — {datetime.date.today()}, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}\n")
    print("| objective | precision | images/epoch | floor img/s | advnb img/s | floor / advnb |\n|---|---|---|---|---|---|")
    for objective, precision in [(o, p) for o in a.objectives.split(",") for p in a.precision.split(",")]:
        spec = spec_for(objective, a.arch, a.n_per_class, a.epochs, a.steps, a.eval_images, precision)
        n = 10 * a.n_per_class * a.epochs
        seed_everything(0)
        floor(spec.replace(epochs=1), device), advnb(spec.replace(epochs=1), device)  # warm-up
        times = {"floor": [], "advnb": []}
        for _ in range(a.repeats):
            times["floor"].append(floor(spec, device))
            times["advnb"].append(advnb(spec, device))
        f, t = (statistics.median(times[k]) for k in ("floor", "advnb"))
        print(f"| {objective} | {precision} | {10 * a.n_per_class} | {n / f:.0f} | {n / t:.0f} | {t / f:.3f} |", flush=True)


if __name__ == "__main__":
    main()
