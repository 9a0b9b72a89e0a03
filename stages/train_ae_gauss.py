"""Stage train_ae_gauss: the Gaussian denoiser of denoised smoothing (Salman et al. 2020).

train_ae's architecture, trained to remove Gaussian noise of every sigma in certify.sigmas (one
blind denoiser, fresh noise per batch); the certify stage puts it in front of the frozen CNN.
"""

from __future__ import annotations

import advdenoise.portable  # noqa: F401 - loads first: the optional CPU kernel pin (see its docstring)

from collections.abc import Sequence

from advdenoise.core import cli
from advdenoise.core.errors import entrypoint
from advdenoise.data.splits import load_splits
from advdenoise.models.files import MODEL_FILE, load_classifier
from advdenoise.training.gaussian import train_gaussian_denoiser
from advdenoise.training.loops import live_curves, write_denoiser_outputs


@entrypoint
def main(argv: Sequence[str] | None = None) -> None:
    args = cli.parse_paths(__doc__, argv, "--data", "--classifier", "--out", "--metrics", "--plots")
    params, device = cli.start(args)
    cfg = params.train_ae_gauss
    splits = load_splits(args.data)
    cnn = load_classifier(args.classifier / MODEL_FILE, device, splits.image_size)
    with live_curves(args.plots / "live") as log:
        run = train_gaussian_denoiser(
            cnn, splits, params.certify.sigmas, channels=params.train_ae.channels,
            latent_channels=params.train_ae.latent_channels, epochs=cfg.epochs, lr=cfg.lr,
            batch_size=cfg.batch_size, stability_weight=cfg.stability_weight, seed=params.seed,
            device=device, eval_batch_size=cli.EVAL_BATCH,
            on_epoch=log,
        )  # fmt: skip

    write_denoiser_outputs(
        run, model_path=args.out / MODEL_FILE, plots=args.plots,
        title="Gaussian denoiser",
    )  # fmt: skip
    cli.write_metrics(args.metrics, run.metrics, device)


if __name__ == "__main__":
    raise SystemExit(main())
