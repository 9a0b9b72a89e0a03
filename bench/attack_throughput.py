"""Attack throughput (image-steps per second) of L-inf PGD or APGD: the project's ART path vs others.

One run, same model, batch, eps, step size, steps and random start for every variant:
  art_project       advdenoise.attacks.pgd: ART's ProjectedGradientDescentPyTorch core, weights
                    frozen for the call, no success-rate log pass, channels-last model (what
                    the pipeline runs);
  art_generate      ART's ProjectedGradientDescent.generate as documented, default estimator
                    options (ART preprocessing on, weights requiring grad) on a contiguous copy
                    of the model: the naive ART baseline;
  art_generate_nhwc the same on a channels-last copy (what the layout alone buys);
  art_generate_nhwc_frozen  ... with the weights frozen for the call (what skipping the weight
                    gradients buys); art_project then also drops generate's success-rate pass;
  plain_pytorch     a plain PyTorch PGD loop (torch.autograd.grad w.r.t. the input);
  plain_frozen      the same loop with frozen weights (the fastest loop we know how to write);
  torchattacks      torchattacks.PGD (benchmark-only dependency).
All variants but the art_generate ones share the same (channels-last) model object.
With --attack apgd (APGD-CE, step 2 eps, one start, AutoAttack's schedule):
  art_project       advdenoise.attacks.apgd: ART's AutoProjectedGradientDescent with its loop
                    re-expressed in torch on the model's device (one model pass a step);
  art_generate      the same ART attack as documented, on the same frozen channels-last model;
  torchattacks      torchattacks.APGD (loss "ce").
Variants run round-robin, in an order that rotates each round, for several rounds (the machine is
shared and noisy); medians, ratios of medians and paired per-round ratios are reported. Usage:

    python bench/attack_throughput.py [--attack pgd|apgd] [--batch 64] [--steps 10] [--reps 15]
        [--device auto|cpu|cuda] [--out DIR]

With `--device auto` (the default) every variant runs on the GPU where there is one, each timed
up to its adversarial images back on the host (ART's `generate` returns NumPy arrays).

Writes bench/results/attack_throughput.json and .md (PGD) or attack_throughput_apgd.* (APGD).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from art.attacks.evasion import AutoProjectedGradientDescent, ProjectedGradientDescent
from art.estimators.classification import PyTorchClassifier
from torch import nn

from advdenoise import attacks
from advdenoise.core import runtime
from advdenoise.data.splits import SPLITS_FILE, load_splits
from advdenoise.models.classifier import Classifier
from advdenoise.models.files import MODEL_FILE, load_classifier

ROOT = Path(__file__).resolve().parents[1]


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--attack", choices=("pgd", "apgd"), default="pgd")
    p.add_argument("--model", type=Path, default=ROOT / "data" / "train_cnn" / MODEL_FILE)
    p.add_argument("--data", type=Path, default=ROOT / "data" / "prepare")
    p.add_argument("--image-size", type=int, default=64, help="if --model does not exist")
    p.add_argument("--batch", type=int, default=64, help="images = ART batch (attack.batch_size)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--eps", type=float, default=0.03)
    p.add_argument("--step-fraction", type=float, default=0.25)
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    return p.parse_args()


def _model(args: argparse.Namespace) -> tuple[nn.Module, str]:
    if args.model.exists():
        return load_classifier(args.model), str(args.model.relative_to(ROOT))
    torch.manual_seed(0)  # throughput does not depend on the weights
    model = Classifier(args.image_size, (16, 32, 64, 128)).eval()
    return model, f"fresh Classifier({args.image_size}, [16, 32, 64, 128])"


def _images(args: argparse.Namespace, size: int) -> tuple[np.ndarray, np.ndarray, str]:
    """The first test images of the prepared data if they fit the model, else uniform noise.

    Real images matter for APGD: it attacks only correctly classified images and stops a batch
    once every loss is exactly 0, which a saturated model reaches at once on noise.
    """
    if (args.data / SPLITS_FILE).exists():
        test = load_splits(args.data).test
        if test.x.shape[-1] == size and len(test.x) >= args.batch:
            x = test.x[: args.batch].astype(np.float32) / 255
            return x, test.y[: args.batch], f"{args.batch} test images of {args.data.name}"
    rng = np.random.default_rng(0)
    x = rng.random((args.batch, 1, size, size), dtype=np.float32)
    return x, rng.integers(0, 2, args.batch).astype(np.int64), f"{args.batch} noise images"


def plain_pgd(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int
) -> torch.Tensor:
    """Textbook L-inf PGD with a uniform random start, clipped to [0, 1]."""
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        x_adv = x_adv.detach() + alpha * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


def _variants(
    model: nn.Module, x: np.ndarray, y: np.ndarray, args: argparse.Namespace
) -> dict[str, Callable[[], np.ndarray]]:
    import torchattacks

    eps, alpha, steps, n = args.eps, args.step_fraction * args.eps, args.steps, len(x)
    shape, device = tuple(x.shape[1:]), args.device
    project = attacks.make_art_classifier(model, shape, 2, device)  # channels-last, in place
    contiguous = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    nhwc = copy.deepcopy(model)

    def naive(net: nn.Module) -> PyTorchClassifier:
        kind = "gpu" if device.type == "cuda" else "cpu"
        return PyTorchClassifier(
            net, nn.CrossEntropyLoss(), shape, 2, clip_values=(0.0, 1.0), device_type=kind
        )

    def generate(classifier: PyTorchClassifier) -> np.ndarray:
        return ProjectedGradientDescent(
            classifier, norm=np.inf, eps=eps, eps_step=alpha, max_iter=steps,
            num_random_init=1, batch_size=n, verbose=False,
        ).generate(x, y)  # fmt: skip

    def generate_frozen() -> np.ndarray:
        with attacks.input_gradients_only(nhwc):
            return generate(nhwc_clf)

    naive_clf, nhwc_clf = naive(contiguous), naive(nhwc)
    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    ta = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)

    def frozen_plain() -> np.ndarray:
        with attacks.input_gradients_only(model):
            return plain_pgd(model, xt, yt, eps, alpha, steps).cpu().numpy()

    return {
        "art_project": lambda: attacks.pgd(project, x, y, eps, steps, args.step_fraction, True, n),
        "art_generate": lambda: generate(naive_clf),
        "art_generate_nhwc": lambda: generate(nhwc_clf),
        "art_generate_nhwc_frozen": generate_frozen,
        "plain_pytorch": lambda: plain_pgd(model, xt, yt, eps, alpha, steps).cpu().numpy(),
        "plain_frozen": frozen_plain,
        "torchattacks": lambda: ta(xt, yt).cpu().numpy(),
    }


def _apgd_variants(
    model: nn.Module, x: np.ndarray, y: np.ndarray, args: argparse.Namespace
) -> dict[str, Callable[[], np.ndarray]]:
    import torchattacks

    eps, steps, n = args.eps, args.steps, len(x)
    project = attacks.make_art_classifier(model, tuple(x.shape[1:]), 2, args.device)

    def generate() -> np.ndarray:
        attack = AutoProjectedGradientDescent(
            project, norm=np.inf, eps=eps, eps_step=2 * eps, max_iter=steps, targeted=False,
            nb_random_init=1, batch_size=n, loss_type="cross_entropy", verbose=False,
        )  # fmt: skip
        with attacks.input_gradients_only(model):
            return attack.generate(x=x, y=y)

    xt, yt = torch.from_numpy(x).to(args.device), torch.from_numpy(y).to(args.device)
    ta = torchattacks.APGD(model, eps=eps, steps=steps, n_restarts=1, loss="ce", seed=0)
    return {
        "art_project": lambda: attacks.apgd(project, x, y, eps, steps, 1, n),
        "art_generate": generate,
        "torchattacks": lambda: ta(xt, yt).detach().cpu().numpy(),
    }


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "the CPU"


def main() -> None:
    args = _parse()
    torch.set_num_threads(args.threads)
    args.device = runtime.select_device(args.device)
    model, model_name = _model(args)
    model.to(args.device)
    size = model.hparams["image_size"]
    x, y, images = _images(args, size)
    variants = (_apgd_variants if args.attack == "apgd" else _variants)(model, x, y, args)
    times: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    accuracy: dict[str, float] = {}
    for name, run in variants.items():  # warm-up, and every variant must respect the bound
        adv = run()
        assert np.abs(adv - x).max() <= args.eps + 1e-6 and 0 <= adv.min() <= adv.max() <= 1
        with torch.inference_mode():
            logits = model(torch.from_numpy(adv).to(args.device))
            accuracy[name] = float((logits.argmax(1).cpu().numpy() == y).mean())
    load = os.getloadavg()
    names = list(variants)
    for rep in range(args.reps):  # rounds; the order rotates so that no variant always goes first
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            start, start_cpu = time.perf_counter(), time.process_time()
            variants[name]()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    work = args.batch * args.steps
    rows = {
        k: {
            "median_s": statistics.median(v),
            "min_s": min(v),
            "image_steps_per_s": work / statistics.median(v),
            "cpu_median_s": statistics.median(cpu[k]),
            "times_s": v,
            "cpu_times_s": cpu[k],
            "adv_accuracy": accuracy[k],
        }
        for k, v in times.items()
    }
    ref = rows["art_project"]["median_s"]
    ref_min = rows["art_project"]["min_s"]
    ref_cpu = rows["art_project"]["cpu_median_s"]
    for k in rows:
        rows[k]["art_project_speedup"] = rows[k]["median_s"] / ref  # > 1: art_project is faster
    result = {
        "config": {
            "attack": args.attack, "images": images, "model": model_name, "image_size": size,
            "batch": args.batch, "steps": args.steps, "eps": args.eps,
            "step_fraction": args.step_fraction, "reps": args.reps, "threads": args.threads,
            "torch": torch.__version__, "cpu": runtime.cpu_model(),
            "cpu_kernels": runtime.environment(torch.device("cpu"))["env.cpu_kernels"],
            "cpus": os.cpu_count(), "loadavg_1_5_15": load, "device": _device_name(args.device),
        },
        "variants": rows,
        "ratios": {
            f"art_project_vs_{k}": rows[k]["median_s"] / ref for k in rows if k != "art_project"
        },
        # the machine is shared: best-of-reps wall time and median CPU time are less noisy
        "ratios_min_wall": {
            f"art_project_vs_{k}": rows[k]["min_s"] / ref_min for k in rows if k != "art_project"
        },
        "ratios_median_cpu": {
            f"art_project_vs_{k}": rows[k]["cpu_median_s"] / ref_cpu
            for k in rows
            if k != "art_project"
        },
        # paired: the ratio within each round, then the median; cancels slow drifts in load
        "ratios_paired": {
            f"art_project_vs_{k}": statistics.median(
                o / a for o, a in zip(times[k], times["art_project"], strict=True)
            )
            for k in rows
            if k != "art_project"
        },
    }  # fmt: skip
    stem = "attack_throughput" + ("" if args.attack == "pgd" else f"_{args.attack}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# {args.attack.upper()} attack throughput ({model_name}, {images}, {size} px, {args.steps} "
        f"steps, eps {args.eps}, {args.threads} threads, median of {args.reps})",
        "",
        f"Machine: {runtime.cpu_model()}; attacks on {_device_name(args.device)}.",
        "",
        "| variant | median s | min s | median CPU s | image-steps/s (median) "
        "| art_project speed-up | adv. accuracy |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for k, r in rows.items():
        lines.append(
            f"| {k} | {r['median_s']:.3f} | {r['min_s']:.3f} | {r['cpu_median_s']:.3f} | "
            f"{r['image_steps_per_s']:.0f} | "
            f"{r['art_project_speedup']:.2f}x | {r['adv_accuracy']:.3f} |"
        )
    lines += ["", "Throughput ratios art_project / other (> 1: art_project faster):", ""]
    lines += [
        "| vs | median wall | min wall | median CPU | paired (median of per-round ratios) |",
        "|---|---:|---:|---:|---:|",
    ]
    for k in rows:
        if k != "art_project":
            key = f"art_project_vs_{k}"
            lines.append(
                f"| {k} | {result['ratios'][key]:.2f} | {result['ratios_min_wall'][key]:.2f} | "
                f"{result['ratios_median_cpu'][key]:.2f} | {result['ratios_paired'][key]:.2f} |"
            )
    lines.append(f"\nLoad average before the timed runs (1, 5, 15 min): {load}")
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
