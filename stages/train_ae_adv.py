"""Stage train_ae_adv: the paper's autoencoder retrained on adversarial training images.

The paper proposes this as future work: inputs are clean and adversarial (FGSM/PGD against the CNN)
versions of the training split, the target is always the clean image.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from advdenoise import runtime
from advdenoise.adversarial_training import train_adversarial_denoiser
from advdenoise.data import load_splits
from advdenoise.errors import entrypoint
from advdenoise.figures import training as figs
from advdenoise.io import save_figure, write_csv, write_json
from advdenoise.models import MODEL_FILE, load_classifier, save_model
from advdenoise.params import load_params
from advdenoise.training import write_live

EVAL_BATCH = 256


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    for name in ("--params", "--data", "--classifier", "--out", "--metrics", "--plots"):
        p.add_argument(name, required=True, type=Path)
    return p.parse_args(argv)


@entrypoint
def main(argv: Sequence[str] | None = None) -> None:
    args = _parse(argv)
    params = load_params(args.params)
    cfg = params.train_ae_adv
    device = runtime.setup(params.seed, params.threads, params.device)
    splits = load_splits(args.data)
    cnn = load_classifier(args.classifier / MODEL_FILE, device, splits.image_size)
    run = train_adversarial_denoiser(
        cnn, splits, channels=params.train_ae.channels,
        latent_channels=params.train_ae.latent_channels, methods=cfg.methods, eps_values=cfg.eps,
        copies=cfg.copies, optim=cfg, attack=params.attack, seed=params.seed, device=device,
        eval_batch_size=EVAL_BATCH, desc="train_ae_adv",
    )  # fmt: skip

    save_model(run.model, args.out / MODEL_FILE)
    write_csv(args.plots / "history.csv", pd.DataFrame(run.fit.history))
    write_live(run.fit.history, args.plots / "live")
    save_figure(
        args.plots / "training_curves.png",
        figs.training_curves(
            run.fit.history, run.fit.best_epoch, "autoencoder retrained on adversarial images"
        ),
    )
    write_json(args.metrics, run.metrics)


if __name__ == "__main__":
    raise SystemExit(main())
