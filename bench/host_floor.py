"""The floor of the robustness stage: the time its attacks and defences spend off the model.

JPEG runs through PIL on the host, image by image, whatever the device. The loops of APGD and
the Square Attack run in torch on the model's device (ART stepped both in NumPy on the host):
here, on the CPU, their figures are what the loops' own arithmetic costs, which a GPU takes
over, leaving a few numbers a step on the host (APGD's stop test, Square's scores). The model is
nearly free (the mean intensity, scaled into logits with a margin no eps of the grid can cross):
every image stays correct, so APGD runs all its steps and Square all its queries on every image
(the case of a robust defence, the upper bound). Per cell (one defence at one eps) on --images
images at --image-size px, with the attack settings of params.yaml; then the paper-scale estimate:
defences x eps cells on the 496 test images of the real data (`robustness.max_images: 0`).

    python bench/host_floor.py [--image-size 224] [--images 100] [--reps 3]

Writes bench/results/host_floor.json and .md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from advdenoise import attacks
from advdenoise.core import runtime
from advdenoise.core.params import load_params
from advdenoise.defences.jpeg import jpeg_compression

ROOT = Path(__file__).resolve().parents[1]
PAPER_TEST_IMAGES = 496  # test split of the real data (2481 images, 20%)


class MeanMargin(nn.Module):
    """Logits (-m, m) * (mean intensity - 1/2): class 1 for bright images, out of any eps's reach
    (the means are 0.2 from 1/2), with a loss above 0 (else APGD stops at once)."""

    def __init__(self, margin: float = 20.0) -> None:
        super().__init__()
        self.margin = nn.Parameter(torch.tensor(margin))  # ART places the model by its parameters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.margin * (x.mean((1, 2, 3)) - 0.5)
        return torch.stack([-d, d], 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args()
    params = load_params(ROOT / "params.yaml")
    rob, bs = params.robustness, params.attack.batch_size
    runtime.setup(0, args.threads, "cpu")

    rng = np.random.default_rng(0)
    y = np.arange(args.images) % 2
    shape = (args.images, 1, args.image_size, args.image_size)
    x = (0.3 + 0.4 * y[:, None, None, None] + 0.2 * rng.random(shape) - 0.1).astype(np.float32)
    classifier = attacks.make_art_classifier(MeanMargin(), x.shape[1:], 2, "cpu")
    jpeg = jpeg_compression(rob.jpeg_quality)
    eps = rob.eps
    apgd, square = f"apgd ({rob.apgd_steps} steps)", f"square ({rob.square_queries} queries)"
    runs: dict[str, Callable[[], object]] = {
        apgd: lambda: attacks.apgd(
            classifier, x, y, eps, rob.apgd_steps, rob.apgd_restarts, bs, seed=0
        ),
        square: lambda: attacks.square(
            classifier, x, y, eps, rob.square_queries, rob.square_p_init, bs, seed=0
        ),
        "jpeg (one forward pass)": lambda: jpeg(torch.from_numpy(x)),
    }
    seconds = {}
    for name, run in runs.items():
        times = []
        for _ in range(args.reps):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        seconds[name] = statistics.median(times)
        print(f"{name}: {seconds[name]:.2f} s per cell of {args.images} images", flush=True)

    cells = len(rob.defences) * len(rob.eps_grid)
    scale = PAPER_TEST_IMAGES / args.images
    loops = cells * (seconds[apgd] + seconds[square]) * scale
    result = {
        "machine": f"{runtime.cpu_model()}, {args.threads} torch threads",
        "torch": torch.__version__,
        "image_size": args.image_size,
        "images": args.images,
        "reps": args.reps,
        "seconds_per_cell": seconds,
        "cells": cells,
        "paper_scale_apgd_square_cpu_seconds": loops,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "host_floor.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# Host-side floor of `robustness` at {args.image_size} px (median of {args.reps})",
        "",
        f"- machine: {result['machine']}; torch {torch.__version__}",
        f"- a nearly free model (`MeanMargin`): nothing is broken, so every image takes every"
        f" step (the upper bound); eps {eps:g}, batch {bs}",
        "",
        f"| per cell ({args.images} images) | seconds |",
        "|---|---:|",
        *(f"| {name} | {s:.2f} |" for name, s in seconds.items()),
        "",
        f"Paper scale ({cells} cells = {len(rob.defences)} defences x {len(rob.eps_grid)} eps,"
        f" {PAPER_TEST_IMAGES} test images): the loops of APGD and Square take about"
        f" **{loops:.0f} s** of this CPU (fewer where attacks succeed: Square runs only on the"
        " images the gradient attacks left correct); on a GPU they run on the device.",
    ]
    (args.out / "host_floor.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
