"""Training throughput (images per second) of the CNN and the autoencoder, default config.

Random images (throughput does not depend on content) at the configured size and at the paper's
224 px, one epoch per repetition with the paper's batch size, medians over repetitions; the 224 px
figures give the CPU time of a paper-scale run. Usage:

    python bench/training_throughput.py [--images 512] [--reps 3] [--sizes 64 224]

Writes bench/results/training_throughput.json and .md.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from advdenoise.core import runtime
from advdenoise.core.params import load_params
from advdenoise.models.autoencoder import Autoencoder
from advdenoise.models.classifier import build_classifier
from advdenoise.training.loops import fit_classifier, fit_denoiser

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--sizes", type=int, nargs="+", help="image sizes (default: params, 224)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args()
    params = load_params(args.params)
    device = runtime.setup(params.seed, params.threads, params.device)
    cnn, ae = params.train_cnn, params.train_ae
    sizes = args.sizes or sorted({params.data.image_size, 224})
    rates: dict[str, list[float]] = {}
    for size in sizes:
        gen = torch.Generator().manual_seed(params.seed)
        n = args.images if size <= 64 else max(args.images // 4, 64)  # same wall time, roughly
        x = torch.randint(0, 256, (n, 1, size, size), generator=gen, dtype=torch.uint8)
        y = torch.randint(0, 2, (n,), generator=gen)
        for rep in range(args.reps):
            model = build_classifier(cnn, size, 2)
            fit = fit_classifier(model, x, y, x[:0], y[:0], epochs=1, lr=cnn.lr,
                                 batch_size=cnn.batch_size, seed=rep, device=device, progress=False)  # fmt: skip
            rates.setdefault(f"train_cnn {size} px", []).append(fit.images_per_second)
            model = Autoencoder(size, ae.channels, ae.latent_channels)
            fit = fit_denoiser(model, x, x, x[:0], x[:0], epochs=1, lr=ae.lr,
                               batch_size=ae.batch_size, seed=rep, device=device, progress=False)  # fmt: skip
            rates.setdefault(f"train_ae {size} px", []).append(fit.images_per_second)
    result = {
        "config": {
            "image_sizes": sizes,
            "images": args.images,
            "reps": args.reps,
            "threads": params.threads,
            "device": str(device),
        },  # fmt: skip
        "images_per_s": {k: statistics.median(v) for k, v in rates.items()},
        "all_images_per_s": rates,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "training_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# Training throughput (batch {cnn.batch_size}, {params.threads} threads, "
        f"{device}, median of {args.reps})",
        "",
        f"Machine: {runtime.cpu_model()}.",
        "",
        "| network | images/s |",
        "|---|---:|",
    ] + [f"| {k} | {v:.0f} |" for k, v in result["images_per_s"].items()]
    (args.out / "training_throughput.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
