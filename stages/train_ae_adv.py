"""Stage train_ae_adv: the paper's autoencoder retrained on adversarial training images.

The paper proposes this as future work: inputs are clean and adversarial (FGSM/PGD against the CNN)
versions of the training split, the target is always the clean image.
"""

from __future__ import annotations

import advdenoise.portable  # noqa: F401 - loads first: pins the CPU kernels (see its docstring)

from collections.abc import Sequence

from advdenoise import cli
from advdenoise.adversarial_training import train_adversarial_denoiser
from advdenoise.data import load_splits
from advdenoise.errors import entrypoint
from advdenoise.models import MODEL_FILE, load_classifier
from advdenoise.training import live_curves, write_denoiser_outputs


@entrypoint
def main(argv: Sequence[str] | None = None) -> None:
    args = cli.parse_paths(__doc__, argv, "--data", "--classifier", "--out", "--metrics", "--plots")
    params, device = cli.start(args)
    cfg = params.train_ae_adv
    splits = load_splits(args.data)
    cnn = load_classifier(args.classifier / MODEL_FILE, device, splits.image_size)
    with live_curves(args.plots / "live") as log:
        run = train_adversarial_denoiser(
            cnn, splits, channels=params.train_ae.channels,
            latent_channels=params.train_ae.latent_channels, methods=cfg.methods, eps_values=cfg.eps,
            copies=cfg.copies, optim=cfg, attack=params.attack, seed=params.seed, device=device,
            eval_batch_size=cli.EVAL_BATCH, desc="train_ae_adv",
            on_epoch=log,
        )  # fmt: skip

    write_denoiser_outputs(
        run, model_path=args.out / MODEL_FILE, plots=args.plots,
        title="autoencoder retrained on adversarial images",
    )  # fmt: skip
    cli.write_metrics(args.metrics, run.metrics, device)


if __name__ == "__main__":
    raise SystemExit(main())
