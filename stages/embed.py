"""Stage embed: PCA / t-SNE / UMAP of clean, adversarial and denoised features, and their overlap."""

from __future__ import annotations

import advdenoise.portable  # noqa: F401 - loads first: the optional CPU kernel pin (see its docstring)

from collections.abc import Sequence

from threadpoolctl import threadpool_limits

from advdenoise.attacks.sets import load_adversarial
from advdenoise.core import cli
from advdenoise.core.errors import entrypoint
from advdenoise.core.io import save_figure, write_csv
from advdenoise.core.seeding import named_rng
from advdenoise.data.splits import load_splits, to_float
from advdenoise.evaluation import embed
from advdenoise.figures import embed as figs
from advdenoise.models.files import MODEL_FILE, load_autoencoder, load_classifier


@entrypoint
def main(argv: Sequence[str] | None = None) -> None:
    args = cli.parse_paths(
        __doc__,
        argv,
        "--data",
        "--classifier",
        "--autoencoder",
        "--adversarial",
        "--metrics",
        "--plots",
    )
    params, device = cli.start(args)
    splits = load_splits(args.data)
    clean = to_float(splits.test.x).numpy()
    sets = load_adversarial(args.adversarial, clean)
    adversarial = {m: sets.get(m, params.attack.eps) for m in params.attack.methods}
    cnn = load_classifier(args.classifier / MODEL_FILE, device, splits.image_size)
    ae = load_autoencoder(args.autoencoder / MODEL_FILE, device, splits.image_size)
    rng = named_rng(params.seed, embed.SUBSAMPLE_STREAM)
    # NumPy/scikit-learn single-threaded: UMAP is anyway once seeded, and on a shared CPU t-SNE's
    # OpenMP threads cost more CPU time than they save
    with threadpool_limits(limits=1):
        result = embed.run_embed(
            cnn, ae, clean, splits.test.y, adversarial, splits.classes, params.embed,
            params.seed, rng, device,
        )  # fmt: skip
    result.metrics["eps"] = params.attack.eps
    for key, seconds in sorted(result.seconds.items()):
        print(f"embed: {key} took {seconds:.1f} s on {len(result.groups)} points")

    methods = tuple(adversarial)
    figures = {
        f"{space}_embeddings.png": figs.embedding_grid(
            space,
            result.coords[space],
            result.groups,
            result.labels,
            embed.group_names(methods),
            splits.classes,
            embed.probe_notes(result.metrics, space, methods),
        )  # fmt: skip
        for space in embed.SPACES
    }
    rocs = {m: (r.fpr, r.tpr, r.auroc) for m, r in result.rocs.items()}
    figures["detector_roc.png"] = figs.detector_figure(rocs, result.errors, params.attack.eps)

    for name, frame in sorted(result.scatter.items()):
        write_csv(args.plots / f"{name}.csv", frame)
    for m, roc in result.rocs.items():
        write_csv(args.plots / f"detector_roc_{m}.csv", roc.frame())
    for name, fig in figures.items():
        save_figure(args.plots / name, fig)
    cli.write_metrics(args.metrics, result.metrics, device)


if __name__ == "__main__":
    raise SystemExit(main())
