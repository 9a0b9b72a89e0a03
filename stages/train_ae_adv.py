"""Stage train_ae_adv: the paper's autoencoder retrained on adversarial training images.

The paper proposes this as future work: inputs are clean and adversarial (FGSM/PGD against the CNN)
versions of the training split, the target is always the clean image.
"""

from __future__ import annotations

import advdenoise.portable  # noqa: F401 - loads first: the optional CPU kernel pin (see its docstring)

from collections.abc import Sequence

from advdenoise.core import cli
from advdenoise.core.errors import entrypoint
from advdenoise.data.splits import load_splits
from advdenoise.models.files import MODEL_FILE, load_classifier
from advdenoise.training.adversarial import train_stage
from advdenoise.training.loops import live_curves, write_denoiser_outputs


@entrypoint
def main(argv: Sequence[str] | None = None) -> None:
    args = cli.parse_paths(__doc__, argv, "--data", "--classifier", "--out", "--metrics", "--plots")
    params, device = cli.start(args)
    splits = load_splits(args.data)
    cnn = load_classifier(args.classifier / MODEL_FILE, device, splits.image_size)
    with live_curves(args.plots / "live") as log:
        run = train_stage("train_ae_adv", params, cnn, splits, device, cli.EVAL_BATCH, log)
    write_denoiser_outputs(
        run,
        model_path=args.out / MODEL_FILE,
        plots=args.plots,
        title="autoencoder retrained on adversarial images",
    )
    cli.write_metrics(args.metrics, run.metrics, device)


if __name__ == "__main__":
    raise SystemExit(main())
