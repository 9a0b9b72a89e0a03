"""The training sections of params.yaml: the data, and every network a stage trains.

See `params` for how they are read and validated.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

from advdenoise.core.config import (
    check,
    check_grid,
    check_min,
    check_names,
    check_range,
    check_widths,
    registered,
)

NoiseName = Literal["gaussian", "salt_pepper", "speckle"]


@dataclass(frozen=True)
class DataParams:
    """Where images come from and how they are split (the `prepare` stage)."""

    source: str  # "synthetic" or a directory in the Kaggle layout <root>/<class>/*.png
    image_size: int
    classes: dict[str, int]
    synthetic_counts: dict[str, int]
    synthetic_slices: tuple[int, ...]  # [min, max] slices per generated scan; [1, 1]: no scans
    test_fraction: float
    val_fraction: float
    split: Literal["random", "grouped"]  # random: the paper's slice-level split; grouped: by scan
    groups: str  # "auto" or a `file,group` CSV (see data.groups)
    group_threshold: float  # RMS distance of consecutive thumbnails that starts a new scan group
    skip_bad_files: bool
    min_side: int
    max_pixels: int
    external: str  # "" or another site's folder in data.source's layout: tested, never trained on
    external_classes: dict[str, int]  # its class folder -> label of data.classes

    def __post_init__(self) -> None:
        check(
            self.source.strip() != "",
            "data.source",
            "must be 'synthetic' or a directory",
            self.source,
        )
        check_range("data.image_size", self.image_size, 16, 1024)
        check(
            len(self.classes) >= 2,
            "data.classes",
            "must map at least two class folders",
            self.classes,
        )
        labels = sorted(self.classes.values())
        check(
            labels == list(range(len(labels))),
            "data.classes",
            "labels must be 0..K-1, each once",
            self.classes,
        )
        if self.is_synthetic:  # a folder dataset ignores the generator's counts
            check(
                set(self.synthetic_counts) == set(self.classes),
                "data.synthetic_counts",
                f"must have exactly the keys of data.classes {sorted(self.classes)}",
                self.synthetic_counts,
            )
            for name, n in self.synthetic_counts.items():
                check_min(f"data.synthetic_counts.{name}", n, 10)
        lo_hi = self.synthetic_slices
        check(
            len(lo_hi) == 2 and 1 <= lo_hi[0] <= lo_hi[1] <= 64,
            "data.synthetic_slices",
            "must be [min, max] slices per scan with 1 <= min <= max <= 64",
            list(lo_hi),
        )
        check_range("data.test_fraction", self.test_fraction, 0.05, 0.5)
        check_range("data.val_fraction", self.val_fraction, 0.0, 0.5)
        check(
            self.groups == "auto" or self.groups.endswith(".csv"),
            "data.groups",
            "must be 'auto' or the path of a .csv file with the header 'file,group'",
            self.groups,
        )
        check(
            self.groups == "auto" or not self.is_synthetic,
            "data.groups",
            "must be 'auto' when data.source is synthetic (a groups CSV names a dataset's files)",
            self.groups,
        )
        # z-scored thumbnails lie at RMS distance sqrt(2 - 2r) of each other: 0 (equal) to 2
        check_range("data.group_threshold", self.group_threshold, 0.0, 2.0)
        check_min("data.min_side", self.min_side, 1)
        check(
            self.max_pixels >= self.min_side**2,
            "data.max_pixels",
            "must be >= min_side**2",
            self.max_pixels,
        )
        if self.external:
            check(
                sorted(self.external_classes.values()) == labels,
                "data.external_classes",
                f"must map one class folder of data.external to each label of data.classes {labels}",
                self.external_classes,
            )
            check(
                self.external.rstrip("/") != self.source.rstrip("/"),
                "data.external",
                "must not be data.source: an external test set comes from another site",
                self.external,
            )

    @property
    def is_synthetic(self) -> bool:
        return self.source == "synthetic"


@dataclass(frozen=True)
class OptimParams:
    """Adam settings shared by every trained network (paper: lr 1e-4, batch 16)."""

    lr: float
    batch_size: int
    epochs: int

    def _check_optim(self, section: str) -> None:
        check(0 < self.lr < 1.0, f"{section}.lr", "must be > 0 and < 1", self.lr)
        check_min(f"{section}.batch_size", self.batch_size, 1)
        check_min(f"{section}.epochs", self.epochs, 1)


@dataclass(frozen=True)
class PaperCnnParams:
    """`arch: paper`: the compact batch-norm conv net of `models.classifier.Classifier`."""

    channels: tuple[int, ...]
    dropout: float

    def __post_init__(self) -> None:
        check_widths("train_cnn.paper.channels", self.channels)
        check_range("train_cnn.paper.dropout", self.dropout, 0.0, 0.9)


@dataclass(frozen=True)
class ResNet18Params:
    """`arch: resnet18`: torchvision's ResNet-18 with a one-channel stem (`models.resnet`)."""

    zero_init_residual: bool  # each block's last BN starts at zero (Goyal et al. 2017)


@dataclass(frozen=True)
class TrainCnnParams(OptimParams):
    """The classifier: `arch` (a name of `models.architectures`), trained with Adam; each
    architecture's own settings are its section, `train_cnn.<arch>`, read only when chosen."""

    arch: str
    augment: bool  # light flips/shifts; off reproduces the paper
    paper: PaperCnnParams
    resnet18: ResNet18Params

    def __post_init__(self) -> None:
        self._check_optim("train_cnn")
        check(self.arch in registered("archs"), "train_cnn.arch",
              f"must be one of {list(registered('archs'))}", self.arch)  # fmt: skip


@dataclass(frozen=True)
class TrainAeParams(OptimParams):
    """The paper's denoising autoencoder, trained on clean + noisy ("combined") images."""

    channels: tuple[int, ...]
    latent_channels: int
    noise: dict[str, float]

    def __post_init__(self) -> None:
        self._check_optim("train_ae")
        check_widths("train_ae.channels", self.channels)
        check_min("train_ae.latent_channels", self.latent_channels, 1)
        allowed = typing.get_args(NoiseName)
        check(
            len(self.noise) >= 1,
            "train_ae.noise",
            f"must name at least one of {list(allowed)}",
            self.noise,
        )
        for name, level in self.noise.items():
            check(name in allowed, "train_ae.noise", f"keys must be in {list(allowed)}", name)
            check_range(f"train_ae.noise.{name}", level, 0.0, 1.0)


@dataclass(frozen=True)
class TrainAeAdvParams(OptimParams):
    """The paper's proposed fix: the same autoencoder retrained on adversarial training images."""

    methods: tuple[str, ...]  # oblivious attacks of attacks.specs.ATTACKS
    eps: tuple[float, ...]
    copies: int  # adversarial versions per training image, each (method, eps) drawn at random

    def __post_init__(self) -> None:
        self._check_adversarial("train_ae_adv")

    def _check_adversarial(self, section: str) -> None:
        self._check_optim(section)
        check_names(f"{section}.methods", self.methods, registered("attacks"), "methods")
        check_grid(f"{section}.eps", self.eps)
        check_range(f"{section}.copies", self.copies, 1, 16)


@dataclass(frozen=True)
class TrainAeGuidedParams(TrainAeAdvParams):
    """A feature-guided denoiser (HGD-style): loss on the CNN's penultimate features + pixel MSE."""

    pixel_weight: float  # at 0.1 the features win and outputs stop looking like images

    def __post_init__(self) -> None:
        self._check_adversarial("train_ae_guided")
        check_min("train_ae_guided.pixel_weight", self.pixel_weight, 0)


@dataclass(frozen=True)
class TrainAeGaussParams(OptimParams):
    """A Gaussian denoiser for denoised smoothing: train_ae's architecture, noise of certify.sigmas.

    Salman et al. 2020 train one denoiser per sigma; one blind denoiser (sigma drawn per image from
    certify.sigmas) costs a third of the training and serves every sigma.
    """

    stability_weight: float  # Salman et al.'s stability loss through the frozen CNN (0 = MSE)

    def __post_init__(self) -> None:
        self._check_optim("train_ae_gauss")
        check_min("train_ae_gauss.stability_weight", self.stability_weight, 0)
