"""Stage attack: FGSM and L-inf PGD (ART) on the test split at every eps of attack.eps_grid.

Writes data/attack/adversarial.npz (bound- and range-checked), metrics/attack.json (every cell and
the sanity checks) and plots/attack/accuracy.csv (one row per method x eps). The headline
attack.eps is not read here: it is one of the grid, and the later stages pick it.
"""

from __future__ import annotations

import advdenoise.portable  # noqa: F401 - loads first: the optional CPU kernel pin (see its docstring)

import sys
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from advdenoise import attacks as atk
from advdenoise.attacks import runs as attack_runs
from advdenoise.attacks.sets import save_adversarial
from advdenoise.core import cli
from advdenoise.core.errors import entrypoint
from advdenoise.core.io import write_csv
from advdenoise.data.splits import load_splits, to_float
from advdenoise.evaluation import attack as am
from advdenoise.evaluation import metrics
from advdenoise.models.files import load_classifier
from advdenoise.models.inference import predict_logits


@entrypoint
def main(argv: Sequence[str] | None = None) -> None:
    args = cli.parse_paths(__doc__, argv, "--data", "--classifier", "--out", "--metrics", "--plots")
    params, device = cli.start(args)
    cfg = params.attack
    start = time.perf_counter()
    splits = load_splits(args.data)
    model = load_classifier(args.classifier, device, splits.image_size)
    x, y = to_float(splits.test.x).numpy(), splits.test.y
    classifier = atk.make_art_classifier(model, x.shape[1:], len(splits.classes), device)
    eps_values = cfg.eps_grid
    attack_start = time.perf_counter()
    images = attack_runs.attack_grid(classifier, cfg.methods, eps_values, x, y, cfg, params.seed)
    attack_seconds = time.perf_counter() - attack_start

    def predict(a: np.ndarray) -> np.ndarray:
        logits = predict_logits(model, torch.from_numpy(a), cfg.batch_size, device)
        return logits.argmax(1).numpy()

    clean_pred = predict(x)
    clean_accuracy = metrics.accuracy(y, clean_pred)
    cells = [
        am.evaluate_cell(m, eps, x, images[m][i], y, clean_pred, predict(images[m][i]))
        for m in cfg.methods
        for i, eps in enumerate(eps_values)
    ]
    checks = am.sanity_checks(cells, len(y))
    for name, ok in checks.items():
        if not ok:
            print(f"warning: attack sanity check {name} failed (see {args.plots})", file=sys.stderr)
    result = am.grid_metrics(cells, clean_accuracy, checks)
    table = pd.DataFrame([vars(c) for c in cells])
    wide = table.pivot(index="eps", columns="method", values="accuracy")[list(cfg.methods)]

    save_adversarial(args.out, eps_values, images, x)
    write_csv(args.plots / "accuracy.csv", table)
    write_csv(args.plots / "accuracy_vs_eps.csv", wide.reset_index())
    cli.write_metrics(args.metrics, result, device)
    n_eps = sum(e > 0 for e in eps_values)  # eps = 0 is the clean set, not attacked
    n_steps = sum(cfg.pgd_steps if m == "pgd" else 1 for m in cfg.methods) * n_eps
    print(
        f"attack: {len(cfg.methods)} methods x {len(eps_values)} eps on {len(y)} test images in "
        f"{attack_seconds:.1f} s ({n_steps * len(y) / max(attack_seconds, 1e-9):.0f} image-steps/s); "
        f"stage {time.perf_counter() - start:.1f} s; clean accuracy {clean_accuracy:.4f}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
