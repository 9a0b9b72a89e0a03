"""The command line that stages train_ae_adv and train_ae_guided share (they differ in params only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from advdenoise import cli
from advdenoise.adversarial_training import train_stage
from advdenoise.data import load_splits
from advdenoise.models import MODEL_FILE, load_classifier
from advdenoise.training import live_curves, write_denoiser_outputs


def main(
    stage: Literal["train_ae_adv", "train_ae_guided"],
    title: str,
    doc: str | None,
    argv: Sequence[str] | None,
) -> None:
    """Train `stage`'s denoiser against the frozen CNN; write the model, curves and metrics."""
    args = cli.parse_paths(doc, argv, "--data", "--classifier", "--out", "--metrics", "--plots")
    params, device = cli.start(args)
    splits = load_splits(args.data)
    cnn = load_classifier(args.classifier / MODEL_FILE, device, splits.image_size)
    with live_curves(args.plots / "live") as log:
        run = train_stage(stage, params, cnn, splits, device, cli.EVAL_BATCH, log)
    write_denoiser_outputs(run, model_path=args.out / MODEL_FILE, plots=args.plots, title=title)
    cli.write_metrics(args.metrics, run.metrics, device)
