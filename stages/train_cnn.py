"""Stage train_cnn: train the classifier on the prepared splits, keep the best-val epoch, evaluate."""

from __future__ import annotations

import advdenoise.portable  # noqa: F401 - loads first: the optional CPU kernel pin (see its docstring)

from collections.abc import Sequence

import torch

from advdenoise.core import cli
from advdenoise.core.errors import entrypoint
from advdenoise.core.io import save_figure, write_csv
from advdenoise.core.seeding import named_seed
from advdenoise.data.splits import load_splits
from advdenoise.evaluation import metrics
from advdenoise.figures import training as figs
from advdenoise.models.classifier import build_classifier
from advdenoise.models.files import MODEL_FILE, load_classifier, save_model
from advdenoise.models.inference import predict_logits
from advdenoise.training.loops import classifier_tables, fit_classifier, live_curves


@entrypoint
def main(argv: Sequence[str] | None = None) -> None:
    args = cli.parse_paths(__doc__, argv, "--data", "--out", "--metrics", "--plots")
    params, device = cli.start(args)
    cfg = params.train_cnn
    splits = load_splits(args.data)
    torch.manual_seed(named_seed(params.seed, "train_cnn.init"))  # the initial weights
    model = build_classifier(cfg, splits.image_size, len(splits.classes))
    xs = {s: torch.from_numpy(getattr(splits, s).x) for s in ("train", "val", "test")}
    ys = {s: torch.from_numpy(getattr(splits, s).y) for s in ("train", "val", "test")}
    with live_curves(args.plots / "live") as log:
        fit = fit_classifier(
            model, xs["train"], ys["train"], xs["val"], ys["val"],
            epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size,
            seed=named_seed(params.seed, "train_cnn.batches"),
            device=device, augment=cfg.augment, eval_batch_size=cli.EVAL_BATCH,
            on_epoch=log,
        )  # fmt: skip
    save_model(model, args.out / MODEL_FILE)
    frozen = load_classifier(args.out / MODEL_FILE, device)  # what every later stage evaluates
    logits = {s: predict_logits(frozen, xs[s], cli.EVAL_BATCH, device) for s in xs if len(ys[s])}
    test = metrics.classification_metrics(logits["test"], ys["test"])
    result = {f"test.{k}": v for k, v in test.items()}
    for s in ("train", "val"):
        if s in logits:
            result[f"{s}.accuracy"] = metrics.accuracy(ys[s], logits[s].argmax(1))
    result.update(best_epoch=fit.best_epoch, epochs=cfg.epochs)
    tables = classifier_tables(logits["test"], ys["test"], splits.classes)
    cm = metrics.confusion_matrix(ys["test"], logits["test"].argmax(1), len(splits.classes))
    rel = tables["reliability"]

    for name, frame in tables.items():
        write_csv(args.plots / f"{name}.csv", frame)
    save_figure(
        args.plots / "training_curves.png",
        figs.training_curves(fit.history, fit.best_epoch, "classifier training"),
    )
    save_figure(args.plots / "confusion.png", figs.confusion_figure(cm, splits.classes, "test"))
    roc = tables["roc"]
    save_figure(
        args.plots / "roc.png", figs.roc_figure(roc.fpr, roc.tpr, test["roc_auc"], "test ROC")
    )
    save_figure(
        args.plots / "reliability.png",
        figs.reliability_figure(
            rel.confidence, rel.accuracy, rel["count"], test["ece"], "test reliability"
        ),
    )
    cli.write_metrics(args.metrics, result, device)


if __name__ == "__main__":
    raise SystemExit(main())
