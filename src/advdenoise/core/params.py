"""The schema of params.yaml: one frozen dataclass per section, and the name registries.

params.yaml is the one source of every value: the classes have no defaults, and a missing key is an
error (see `config.build`). Every stage loads params.yaml through `load_params` once; unknown keys,
wrong types and values out of range raise `ParamsError` naming the key
(`attack.eps must be in [0, 1], got 1.5`).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from advdenoise.core.config import (
    build,
    check,
    check_distinct,
    check_grid,
    check_min,
    check_range,
    check_widths,
    read_yaml,
)
from advdenoise.core.errors import ParamsError

__all__ = ["Params", "load_params", "parse_params", "read_yaml"]

AttackName = Literal["fgsm", "pgd"]
NoiseName = Literal["gaussian", "salt_pepper", "speckle"]
CertifyModel = Literal["cnn", "ae", "ae_gauss"]

# The name registries (defences: `defences.specs`): params validation, evaluation and the report
# all read these.
CERTIFY_MODELS: tuple[str, ...] = typing.get_args(CertifyModel)


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
class TrainCnnParams(OptimParams):
    """The classifier: a compact batch-norm conv net (architecture in `models.classifier.Classifier`)."""

    channels: tuple[int, ...]
    dropout: float
    augment: bool  # light flips/shifts; off reproduces the paper

    def __post_init__(self) -> None:
        self._check_optim("train_cnn")
        check_widths("train_cnn.channels", self.channels)
        check_range("train_cnn.dropout", self.dropout, 0.0, 0.9)


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
class AttackParams:
    """FGSM and L-inf PGD through ART; `eps_grid` the curve, `eps` the headline bound on it.

    Why the headline must lie on the grid: the attack stage then depends on the grid only, so an
    experiment with another headline (`dvc exp run -S attack.eps=0.02`) re-runs no attack.
    """

    eps: float
    eps_grid: tuple[float, ...]
    methods: tuple[AttackName, ...]
    pgd_steps: int
    pgd_step_fraction: float  # PGD step size as a fraction of eps
    pgd_random_init: bool
    batch_size: int  # images per attack batch; 32-64 is fastest on a CPU (cache-bound)

    def __post_init__(self) -> None:
        check_range("attack.eps", self.eps, 0.0, 1.0)
        check_grid("attack.eps_grid", self.eps_grid)
        check(
            self.eps in self.eps_grid,
            "attack.eps",
            f"must be one of attack.eps_grid {list(self.eps_grid)} (add it to the grid)",
            self.eps,
        )
        check_distinct("attack.methods", self.methods, "methods")
        check_min("attack.pgd_steps", self.pgd_steps, 1)
        check_range("attack.pgd_step_fraction", self.pgd_step_fraction, 1e-4, 2.0)
        check_min("attack.batch_size", self.batch_size, 1)


@dataclass(frozen=True)
class DenoiseParams:
    """Passing clean and adversarial test sets through the autoencoder (paper Figs. 3, 4, 5, 7)."""

    batch_size: int
    examples_per_class: int

    def __post_init__(self) -> None:
        check_min("denoise.batch_size", self.batch_size, 1)
        check_range("denoise.examples_per_class", self.examples_per_class, 1, 8)


@dataclass(frozen=True)
class EmbedParams:
    """Feature embeddings (PCA, t-SNE, UMAP) and the numbers that replace eyeballing them."""

    max_points: int  # per group (clean / adversarial / denoised), subsampled with the seed
    tsne_perplexity: float
    tsne_max_iter: int  # sklearn default 1000; 500 halves the cost, enough on ~2k points
    umap_neighbors: int
    probe_folds: int
    batch_size: int  # inference batch for features and reconstructions

    def __post_init__(self) -> None:
        check_min("embed.max_points", self.max_points, 20)
        check_min("embed.batch_size", self.batch_size, 1)
        check_range("embed.tsne_max_iter", self.tsne_max_iter, 250, 5000)
        check_range("embed.tsne_perplexity", self.tsne_perplexity, 2.0, 100.0)
        check_range("embed.umap_neighbors", self.umap_neighbors, 2, 200)
        check_range("embed.probe_folds", self.probe_folds, 2, 20)


@dataclass(frozen=True)
class TrainAeAdvParams(OptimParams):
    """The paper's proposed fix: the same autoencoder retrained on adversarial training images."""

    methods: tuple[AttackName, ...]
    eps: tuple[float, ...]
    copies: int  # adversarial versions per training image, each (method, eps) drawn at random

    def __post_init__(self) -> None:
        self._check_adversarial("train_ae_adv")

    def _check_adversarial(self, section: str) -> None:
        self._check_optim(section)
        check_distinct(f"{section}.methods", self.methods, "methods")
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
class RobustnessParams:
    """Every defence under the oblivious (paper) and adaptive (end-to-end, BPDA) threat models.

    `eps` is this stage's own headline (its table and checks), on `eps_grid`. Why not attack.eps:
    adaptive attacks on every defence are the costliest computation of the pipeline, and a
    headline-only experiment on the attack side should not repeat them.
    """

    defences: tuple[str, ...]  # names of defences.specs.SPECS
    eps: float
    eps_grid: tuple[float, ...]
    squeeze_bits: int
    smoothing_window: int
    jpeg_quality: int
    max_images: int  # seeded class-stratified subset of the test split; 0 = all of it
    apgd_steps: int  # APGD-CE iterations per restart (AutoAttack: 100)
    apgd_restarts: int  # AutoAttack: 5 for APGD-CE
    apgd_check_restarts: int  # extra APGD-CE restarts at eps on the gradient attacks' survivors
    restarts_tolerance: int  # images those extra restarts may break (the restarts check)
    square_images: int  # the standalone Square's seeded subset of the evaluated images; 0 = all
    square_queries: int  # Square Attack iterations (queries per image); AutoAttack: 5000
    square_p_init: float  # initial fraction of pixels in a square (AutoAttack, L-inf)
    masking_alpha: float  # level of the one-sided exact McNemar test: Square vs gradient attacks
    detector_eps: float  # eps of the detector evaluation; one of attack.eps_grid
    detector_steps: int  # PGD steps of the detector-aware attack on the reconstruction error
    detector_lambda: float  # weight of the detector term (error over threshold) in its loss
    workers: int  # processes that evaluate (defence, eps) cells side by side; results do not change

    def __post_init__(self) -> None:
        check_range("robustness.workers", self.workers, 1, 256)
        check(
            self.max_images == 0 or self.max_images >= 20,
            "robustness.max_images",
            "must be 0 (the whole test split) or >= 20",
            self.max_images,
        )
        from advdenoise.defences.specs import DEFENCES  # data only: no torch

        for name in self.defences:
            check(name in DEFENCES, "robustness.defences", f"must be one of {list(DEFENCES)}", name)
        check_distinct("robustness.defences", self.defences, "defences")
        check_grid("robustness.eps_grid", self.eps_grid)
        check(
            self.eps in self.eps_grid,
            "robustness.eps",
            f"must be one of robustness.eps_grid {list(self.eps_grid)} (add it to the grid)",
            self.eps,
        )
        check_range("robustness.squeeze_bits", self.squeeze_bits, 1, 8)
        check(
            self.smoothing_window in (2, 3, 5, 7),
            "robustness.smoothing_window",
            "must be one of [2, 3, 5, 7]",
            self.smoothing_window,
        )
        check_range("robustness.jpeg_quality", self.jpeg_quality, 1, 95)
        for key in ("apgd_steps", "apgd_restarts", "apgd_check_restarts", "square_queries",
                    "detector_steps"):  # fmt: skip
            check_range(f"robustness.{key}", getattr(self, key), 1, 100_000)
        check_min("robustness.restarts_tolerance", self.restarts_tolerance, 0)
        check(
            self.square_images == 0 or self.square_images >= 10,
            "robustness.square_images",
            "must be 0 (every evaluated image) or >= 10",
            self.square_images,
        )
        check_range("robustness.square_p_init", self.square_p_init, 0.01, 1.0)
        check_range("robustness.masking_alpha", self.masking_alpha, 1e-6, 0.5)
        check_min("robustness.detector_lambda", self.detector_lambda, 0)


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


@dataclass(frozen=True)
class CertifyParams:
    """Randomized smoothing (Cohen et al. 2019) through ART: certified L2 radii per model and sigma."""

    sigmas: tuple[float, ...]
    models: tuple[CertifyModel, ...]
    radii: tuple[float, ...]
    n0: int  # noise samples that select the class (Cohen et al.: 100)
    n: int  # noise samples that estimate its probability (Cohen et al.: 100000)
    alpha: float  # failure probability of each certificate
    max_images: int  # seeded class-stratified subset of the test split; 0 = all of it
    batch_size: int  # noisy samples per forward pass
    attack_images: int  # certified images attacked (L2 PGD + EOT) to test the certificates
    attack_samples: int  # noise samples per gradient step of that attack (EOT)

    def __post_init__(self) -> None:
        check(len(self.sigmas) >= 1, "certify.sigmas", "must not be empty", list(self.sigmas))
        for sigma in self.sigmas:
            check(0 < sigma <= 2, "certify.sigmas entry", "must be in (0, 2]", sigma)
        check_distinct("certify.models", self.models, "models")
        check(
            list(self.radii) == sorted(set(self.radii)) and min(self.radii, default=-1) >= 0,
            "certify.radii",
            "must be non-negative, sorted, without duplicates",
            list(self.radii),
        )
        check_range("certify.n0", self.n0, 1, 1_000_000)
        check_range("certify.n", self.n, 10, 1_000_000)
        check(0 < self.alpha < 0.5, "certify.alpha", "must be in (0, 0.5)", self.alpha)
        check(
            self.max_images == 0 or self.max_images >= 2,
            "certify.max_images",
            "must be 0 (the whole test split) or >= 2",
            self.max_images,
        )
        check_min("certify.batch_size", self.batch_size, 1)
        check_range("certify.attack_images", self.attack_images, 0, 1000)
        check_range("certify.attack_samples", self.attack_samples, 1, 1024)


@dataclass(frozen=True)
class Params:
    """All of params.yaml. Cross-section constraints are checked here."""

    seed: int
    device: Literal["auto", "cpu", "cuda"]
    threads: int  # torch intra-op threads on CPU; fixed so that runs are reproducible
    data: DataParams
    train_cnn: TrainCnnParams
    train_ae: TrainAeParams
    attack: AttackParams
    denoise: DenoiseParams
    embed: EmbedParams
    train_ae_adv: TrainAeAdvParams
    train_ae_guided: TrainAeGuidedParams
    robustness: RobustnessParams
    train_ae_gauss: TrainAeGaussParams
    certify: CertifyParams

    def __post_init__(self) -> None:
        check(0 <= self.seed < 2**32, "seed", "must be in [0, 2**32)", self.seed)
        check_range("threads", self.threads, 1, 256)
        size = self.data.image_size
        cnn_min = 2 ** (len(self.train_cnn.channels) + 1)
        check(
            size >= cnn_min,
            "data.image_size",
            f"must be >= {cnn_min} for train_cnn.channels of length {len(self.train_cnn.channels)}",
            size,
        )
        depth = len(self.train_ae.channels)
        check(
            size % 2**depth == 0,
            "data.image_size",
            f"must be divisible by {2**depth} (2**len(train_ae.channels)) for the autoencoders",
            size,
        )
        off_grid = [e for e in self.robustness.eps_grid if e not in self.attack.eps_grid]
        check(
            not off_grid,
            "robustness.eps_grid",
            f"must lie within attack.eps_grid {list(self.attack.eps_grid)} (the oblivious attacks"
            f" come from the attack stage); not there: {off_grid}",
            list(self.robustness.eps_grid),
        )


def parse_params(raw: Any) -> Params:
    """Build validated params from an already-parsed YAML mapping."""
    return build(Params, raw if raw is not None else {})


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; every problem raises `ParamsError` naming the key."""
    path = Path(path)
    try:
        raw = read_yaml(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ParamsError(f"params file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {exc}") from exc
    return parse_params(raw)
