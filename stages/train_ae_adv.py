"""Stage train_ae_adv: the paper's autoencoder retrained on adversarial training images.

The paper proposes this as future work: inputs are clean and adversarial (FGSM/PGD against the CNN)
versions of the training split, the target is always the clean image.
"""

from __future__ import annotations

import advdenoise.portable  # noqa: F401 - loads first: the optional CPU kernel pin (see its docstring)

from collections.abc import Sequence

from advdenoise import adversarial_cli
from advdenoise.errors import entrypoint


@entrypoint
def main(argv: Sequence[str] | None = None) -> None:
    adversarial_cli.main(
        "train_ae_adv", "autoencoder retrained on adversarial images", __doc__, argv
    )


if __name__ == "__main__":
    raise SystemExit(main())
