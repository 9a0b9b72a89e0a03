"""Stage train_ae_guided: a feature-guided denoiser (HGD-style) on clean + adversarial images.

Same architecture as the paper's autoencoder; the loss is the L1 distance between the frozen CNN's
penultimate features of the denoised input and of the clean image, plus pixel_weight * pixel MSE.
"""

from __future__ import annotations

import advdenoise.portable  # noqa: F401 - loads first: the optional CPU kernel pin (see its docstring)

from collections.abc import Sequence

from advdenoise import adversarial_cli
from advdenoise.errors import entrypoint


@entrypoint
def main(argv: Sequence[str] | None = None) -> None:
    adversarial_cli.main("train_ae_guided", "feature-guided denoiser", __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
