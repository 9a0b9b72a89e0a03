"""An independent check of the robustness stage: torchattacks PGD, many steps and restarts.

For every defence of robustness.defences, on the robustness stage's own evaluation subset and at
robustness.eps, runs torchattacks' L-inf PGD (not ART: another implementation) with `--steps`
steps of 2.5 * eps / steps and `--restarts` random starts through defence + CNN, and counts an
image robust only if it survives every restart. The project's worst case over all its attacks
(metrics/robustness.json) should not be notably higher; if it is, the stage's attacks are too weak.
Needs the pipeline's outputs (run `dvc repro` first). Usage:

    python bench/independent_attack.py [--steps 100] [--restarts 5]

Writes bench/results/independent_attack.json and .md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torchattacks

from advdenoise.core import runtime
from advdenoise.core.params import load_params
from advdenoise.data.splits import evaluation_subset, load_splits, to_float
from advdenoise.defences.registry import build_defence, defended_classifier
from advdenoise.evaluation.robustness.evaluation import SUBSET_STREAM
from advdenoise.models.files import MODEL_FILE, load_autoencoder, load_classifier
from advdenoise.models.inference import predict_labels

ROOT = Path(__file__).resolve().parents[1]
AUTOENCODERS = {"ae": "train_ae", "ae_adv": "train_ae_adv", "ae_guided": "train_ae_guided"}


def torchattacks_worst(
    model: torch.nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    steps: int,
    restarts: int,
    batch_size: int,
    device: torch.device | str,
    seed: int,
) -> np.ndarray:
    """Per image: correct under every restart of torchattacks PGD (and on the clean image)."""
    alive = predict_labels(model, x, batch_size, device) == y
    attack = torchattacks.PGD(
        model, eps=eps, alpha=2.5 * eps / steps, steps=steps, random_start=True
    )
    for r in range(restarts):
        torch.manual_seed(seed + r)
        for s in range(0, len(x), batch_size):
            xb = torch.from_numpy(x[s : s + batch_size]).to(device)
            yb = torch.from_numpy(y[s : s + batch_size]).to(device)
            adv = attack(xb, yb)
            if float((adv - xb).abs().max()) > eps + 1e-6:
                raise AssertionError("torchattacks left the eps-ball")
            with torch.no_grad():
                alive[s : s + batch_size] &= (model(adv).argmax(1) == yb).cpu().numpy()
    return alive


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--restarts", type=int, default=5)
    args = p.parse_args()
    params = load_params(ROOT / "params.yaml")
    cfg = params.robustness
    device = runtime.setup(params.seed, params.threads, params.device)
    splits = load_splits(ROOT / "data/prepare")
    x, y = to_float(splits.test.x).numpy(), splits.test.y
    subset = evaluation_subset(y, cfg.max_images, params.seed, SUBSET_STREAM)
    x, y = x[subset], y[subset]
    cnn = load_classifier(ROOT / "data/train_cnn" / MODEL_FILE, device, splits.image_size)
    aes = {
        name: load_autoencoder(ROOT / "data" / stage / MODEL_FILE, device, splits.image_size)
        for name, stage in AUTOENCODERS.items()
    }
    project = json.loads((ROOT / "metrics/robustness.json").read_text())
    rows = []
    for name in cfg.defences:
        start = time.perf_counter()
        model = defended_classifier(build_defence(name, cfg, aes), cnn)
        alive = torchattacks_worst(
            model, x, y, cfg.eps, args.steps, args.restarts, params.attack.batch_size, device,
            params.seed,
        )  # fmt: skip
        rows.append(
            {
                "defence": name,
                "clean": project[f"{name}.clean_accuracy"],
                "project_worst": project[f"{name}.worst.accuracy"],
                "torchattacks_pgd": float(alive.mean()),
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
        print(rows[-1], flush=True)
    out = ROOT / "bench/results"
    meta = {"eps": cfg.eps, "images": len(y), "steps": args.steps, "restarts": args.restarts}
    (out / "independent_attack.json").write_text(json.dumps({**meta, "rows": rows}, indent=2))
    lines = [
        f"# Independent PGD (torchattacks {torchattacks.__version__}) vs the project's worst case",
        "",
        f"robustness.eps = {cfg.eps:g}, {len(y)} images (the robustness subset), "
        f"{args.steps} steps x {args.restarts} restarts; device {device}.",
        "",
        "| defence | clean | project worst case | torchattacks PGD | s |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['defence']} | {r['clean']:.1%} | {r['project_worst']:.1%} | "
        f"{r['torchattacks_pgd']:.1%} | {r['seconds']} |"
        for r in rows
    ]
    (out / "independent_attack.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
