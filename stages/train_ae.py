"""Stage train_ae: the denoising autoencoder on clean + noisy ("combined") training images."""

from __future__ import annotations

import advdenoise.portable  # noqa: F401 - loads first: the optional CPU kernel pin (see its docstring)

from collections.abc import Sequence

import torch

from advdenoise.core import cli
from advdenoise.core.errors import entrypoint
from advdenoise.core.io import save_figure
from advdenoise.core.seeding import named_seed
from advdenoise.data.splits import load_splits
from advdenoise.figures import training as figs
from advdenoise.models.autoencoder import Autoencoder
from advdenoise.models.files import MODEL_FILE, load_classifier, save_model
from advdenoise.training.combined import combined_images, denoiser_metrics
from advdenoise.training.loops import fit_denoiser, live_curves

cli.EVAL_BATCH = 256
EXAMPLES_PER_NOISE = 3
STREAMS = {s: f"train_ae.noise.{s}" for s in ("train", "val", "test")}  # one per split


@entrypoint
def main(argv: Sequence[str] | None = None) -> None:
    args = cli.parse_paths(__doc__, argv, "--data", "--classifier", "--out", "--metrics", "--plots")
    params, device = cli.start(args)
    cfg = params.train_ae
    splits = load_splits(args.data)
    classifier = load_classifier(args.classifier / MODEL_FILE, device, splits.image_size)
    torch.manual_seed(named_seed(params.seed, "train_ae.init"))  # the initial weights
    model = Autoencoder(splits.image_size, cfg.channels, cfg.latent_channels)
    train = combined_images(splits.train.x, cfg.noise, params.seed, STREAMS["train"])
    val = combined_images(splits.val.x, cfg.noise, params.seed, STREAMS["val"])
    with live_curves(args.plots / "live") as log:
        fit = fit_denoiser(
            model, train.inputs, train.targets, val.inputs, val.targets,
            target_index=train.target_index, val_target_index=val.target_index,
            epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size,
            seed=named_seed(params.seed, "train_ae.batches"),
            device=device, eval_batch_size=cli.EVAL_BATCH,
            on_epoch=log,
        )  # fmt: skip
    test = combined_images(splits.test.x, cfg.noise, params.seed, STREAMS["test"])
    result, examples = denoiser_metrics(
        model, classifier, test, torch.from_numpy(splits.test.y), cli.EVAL_BATCH, device,
        EXAMPLES_PER_NOISE,
    )  # fmt: skip
    if fit.history and "val.loss" in fit.history[fit.best_epoch - 1]:
        result["val.loss"] = fit.history[fit.best_epoch - 1]["val.loss"]
    result.update(best_epoch=fit.best_epoch, epochs=cfg.epochs)

    save_model(model, args.out / MODEL_FILE)
    save_figure(
        args.plots / "training_curves.png",
        figs.training_curves(fit.history, fit.best_epoch, "denoising autoencoder training"),
    )
    save_figure(args.plots / "examples.png", figs.denoising_examples(*examples))
    cli.write_metrics(args.metrics, result, device)


if __name__ == "__main__":
    raise SystemExit(main())
