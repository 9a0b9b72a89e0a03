"""Typed, validated parameters: one frozen dataclass per params.yaml section.

Every stage loads params.yaml through `load_params` once. Unknown keys, wrong types and values out of
range raise `ParamsError` naming the key (`attack.eps must be in [0, 1], got 1.5`).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from advdenoise.errors import ParamsError


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader that reads floats as YAML 1.2 does (and DVC with it): `1e-4` is 0.0001.

    PyYAML follows YAML 1.1, where a float needs a dot (`1.0e-4`) and `1e-4` is a string; DVC
    reads params.yaml with a YAML 1.2 parser, so both must agree on what a stage computes with.
    """


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)

AttackName = Literal["fgsm", "pgd"]
DefenceName = Literal[
    "none", "ae", "ae_adv", "ae_guided", "feature_squeezing", "spatial_smoothing", "jpeg"
]
NoiseName = Literal["gaussian", "salt_pepper", "speckle"]
CertifyModel = Literal["cnn", "ae", "ae_gauss"]

# The name registries: params validation, evaluation and the report all read these.
DEFENCES: tuple[str, ...] = typing.get_args(DefenceName)
AUTOENCODER_DEFENCES: tuple[str, ...] = ("ae", "ae_adv", "ae_guided")
CERTIFY_MODELS: tuple[str, ...] = typing.get_args(CertifyModel)


def _check(ok: bool, key: str, message: str, value: Any) -> None:
    if not ok:
        raise ParamsError(f"{key} {message}, got {value!r}")


def _check_fraction(key: str, value: float, low: float = 0.0, high: float = 1.0) -> None:
    _check(low <= value <= high, key, f"must be in [{low:g}, {high:g}]", value)


def _check_positive(key: str, value: float) -> None:
    _check(value > 0, key, "must be > 0", value)


def _check_grid(key: str, grid: tuple[float, ...]) -> None:
    _check(len(grid) > 0, key, "must not be empty", list(grid))
    for v in grid:
        _check_fraction(f"{key} entry", v)
    _check(
        list(grid) == sorted(set(grid)),
        key,
        "must be sorted ascending without duplicates",
        list(grid),
    )


@dataclass(frozen=True)
class DataParams:
    """Where images come from and how they are split (the `prepare` stage)."""

    source: str = (
        "synthetic"  # "synthetic" or a directory in the Kaggle layout <root>/<class>/*.png
    )
    image_size: int = 64
    classes: dict[str, int] = field(default_factory=lambda: {"non-COVID": 0, "COVID": 1})
    synthetic_counts: dict[str, int] = field(
        default_factory=lambda: {"non-COVID": 1230, "COVID": 1252}
    )
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    skip_bad_files: bool = False
    min_side: int = 16
    max_pixels: int = 40_000_000

    def __post_init__(self) -> None:
        _check(
            self.source.strip() != "",
            "data.source",
            "must be 'synthetic' or a directory",
            self.source,
        )
        _check(
            16 <= self.image_size <= 1024,
            "data.image_size",
            "must be in [16, 1024]",
            self.image_size,
        )
        _check(
            len(self.classes) >= 2,
            "data.classes",
            "must map at least two class folders",
            self.classes,
        )
        labels = sorted(self.classes.values())
        _check(
            labels == list(range(len(labels))),
            "data.classes",
            "labels must be 0..K-1, each once",
            self.classes,
        )
        if self.is_synthetic:  # a folder dataset ignores the generator's counts
            _check(
                set(self.synthetic_counts) == set(self.classes),
                "data.synthetic_counts",
                f"must have exactly the keys of data.classes {sorted(self.classes)}",
                self.synthetic_counts,
            )
            for name, n in self.synthetic_counts.items():
                _check(n >= 10, f"data.synthetic_counts.{name}", "must be >= 10", n)
        _check_fraction("data.test_fraction", self.test_fraction, 0.05, 0.5)
        _check_fraction("data.val_fraction", self.val_fraction, 0.0, 0.5)
        _check(self.min_side >= 1, "data.min_side", "must be >= 1", self.min_side)
        _check(
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

    lr: float = 1.0e-4
    batch_size: int = 16
    epochs: int = 10

    def _check_optim(self, section: str) -> None:
        _check_positive(f"{section}.lr", self.lr)
        _check(self.lr < 1.0, f"{section}.lr", "must be < 1", self.lr)
        _check(self.batch_size >= 1, f"{section}.batch_size", "must be >= 1", self.batch_size)
        _check(self.epochs >= 1, f"{section}.epochs", "must be >= 1", self.epochs)


@dataclass(frozen=True)
class TrainCnnParams(OptimParams):
    """The classifier: a compact batch-norm conv net (architecture in `models.Classifier`)."""

    channels: tuple[int, ...] = (16, 32, 64, 128)
    dropout: float = 0.2
    augment: bool = False  # light flips/shifts; off reproduces the paper

    def __post_init__(self) -> None:
        self._check_optim("train_cnn")
        _check(
            len(self.channels) >= 1 and min(self.channels) >= 1,
            "train_cnn.channels",
            "must be a non-empty list of positive widths",
            list(self.channels),
        )
        _check_fraction("train_cnn.dropout", self.dropout, 0.0, 0.9)


@dataclass(frozen=True)
class TrainAeParams(OptimParams):
    """The paper's denoising autoencoder, trained on clean + noisy ("combined") images."""

    lr: float = 1.0e-3
    channels: tuple[int, ...] = (16, 32, 64)
    latent_channels: int = 8
    noise: dict[str, float] = field(
        default_factory=lambda: {"gaussian": 0.1, "salt_pepper": 0.05, "speckle": 0.2}
    )

    def __post_init__(self) -> None:
        self._check_optim("train_ae")
        _check(
            len(self.channels) >= 1 and min(self.channels) >= 1,
            "train_ae.channels",
            "must be a non-empty list of positive widths",
            list(self.channels),
        )
        _check(
            self.latent_channels >= 1,
            "train_ae.latent_channels",
            "must be >= 1",
            self.latent_channels,
        )
        allowed = typing.get_args(NoiseName)
        _check(
            len(self.noise) >= 1,
            "train_ae.noise",
            f"must name at least one of {list(allowed)}",
            self.noise,
        )
        for name, level in self.noise.items():
            _check(name in allowed, "train_ae.noise", f"keys must be in {list(allowed)}", name)
            _check_fraction(f"train_ae.noise.{name}", level)


@dataclass(frozen=True)
class AttackParams:
    """FGSM and L-inf PGD through ART; `eps_grid` the curve, `eps` the headline bound on it.

    Why the headline must lie on the grid: the attack stage then depends on the grid only, so an
    experiment with another headline (`dvc exp run -S attack.eps=0.02`) re-runs no attack.
    """

    eps: float = 0.03
    eps_grid: tuple[float, ...] = (0.0, 0.001, 0.002, 0.004, 0.008, 0.016, 0.03, 0.05, 0.1)
    methods: tuple[AttackName, ...] = ("fgsm", "pgd")
    pgd_steps: int = 10
    pgd_step_fraction: float = 0.25  # PGD step size as a fraction of eps
    pgd_random_init: bool = True
    batch_size: int = 64  # images per attack batch; 32-64 is fastest on a CPU (cache-bound)

    def __post_init__(self) -> None:
        _check_fraction("attack.eps", self.eps)
        _check_grid("attack.eps_grid", self.eps_grid)
        _check(
            self.eps in self.eps_grid,
            "attack.eps",
            f"must be one of attack.eps_grid {list(self.eps_grid)} (add it to the grid)",
            self.eps,
        )
        _check(
            len(self.methods) >= 1 and len(set(self.methods)) == len(self.methods),
            "attack.methods",
            "must list distinct methods",
            list(self.methods),
        )
        _check(self.pgd_steps >= 1, "attack.pgd_steps", "must be >= 1", self.pgd_steps)
        _check_fraction("attack.pgd_step_fraction", self.pgd_step_fraction, 1e-4, 2.0)
        _check(self.batch_size >= 1, "attack.batch_size", "must be >= 1", self.batch_size)


@dataclass(frozen=True)
class DenoiseParams:
    """Passing clean and adversarial test sets through the autoencoder (paper Figs. 3, 4, 5, 7)."""

    batch_size: int = 128
    examples_per_class: int = 2

    def __post_init__(self) -> None:
        _check(self.batch_size >= 1, "denoise.batch_size", "must be >= 1", self.batch_size)
        _check(
            1 <= self.examples_per_class <= 8,
            "denoise.examples_per_class",
            "must be in [1, 8]",
            self.examples_per_class,
        )


@dataclass(frozen=True)
class EmbedParams:
    """Feature embeddings (PCA, t-SNE, UMAP) and the numbers that replace eyeballing them."""

    max_points: int = 400  # per group (clean / adversarial / denoised), subsampled with the seed
    tsne_perplexity: float = 30.0
    tsne_max_iter: int = 500  # sklearn default 1000; 500 halves the cost, enough on ~2k points
    umap_neighbors: int = 15
    probe_folds: int = 5
    batch_size: int = 128  # inference batch for features and reconstructions

    def __post_init__(self) -> None:
        _check(self.max_points >= 20, "embed.max_points", "must be >= 20", self.max_points)
        _check(self.batch_size >= 1, "embed.batch_size", "must be >= 1", self.batch_size)
        _check(
            250 <= self.tsne_max_iter <= 5000,
            "embed.tsne_max_iter",
            "must be in [250, 5000]",
            self.tsne_max_iter,
        )
        _check(
            2.0 <= self.tsne_perplexity <= 100.0,
            "embed.tsne_perplexity",
            "must be in [2, 100]",
            self.tsne_perplexity,
        )
        _check(
            2 <= self.umap_neighbors <= 200,
            "embed.umap_neighbors",
            "must be in [2, 200]",
            self.umap_neighbors,
        )
        _check(
            2 <= self.probe_folds <= 20, "embed.probe_folds", "must be in [2, 20]", self.probe_folds
        )


@dataclass(frozen=True)
class TrainAeAdvParams(OptimParams):
    """The paper's proposed fix: the same autoencoder retrained on adversarial training images."""

    lr: float = 1.0e-3
    methods: tuple[AttackName, ...] = ("fgsm", "pgd")
    eps: tuple[float, ...] = (0.01, 0.03, 0.05)
    copies: int = 1  # adversarial versions per training image, each (method, eps) drawn at random

    def __post_init__(self) -> None:
        self._check_optim("train_ae_adv")
        _check(
            len(self.methods) >= 1 and len(set(self.methods)) == len(self.methods),
            "train_ae_adv.methods",
            "must list distinct methods",
            list(self.methods),
        )
        _check_grid("train_ae_adv.eps", self.eps)
        _check(1 <= self.copies <= 16, "train_ae_adv.copies", "must be in [1, 16]", self.copies)


@dataclass(frozen=True)
class TrainAeGuidedParams(OptimParams):
    """A feature-guided denoiser (HGD-style): loss on the CNN's penultimate features + pixel MSE."""

    lr: float = 1.0e-3
    methods: tuple[AttackName, ...] = ("fgsm", "pgd")
    eps: tuple[float, ...] = (0.01, 0.03, 0.05)
    copies: int = 1  # adversarial versions per training image, each (method, eps) drawn at random
    pixel_weight: float = 10.0  # at 0.1 the features win and outputs stop looking like images

    def __post_init__(self) -> None:
        self._check_optim("train_ae_guided")
        _check(
            len(self.methods) >= 1 and len(set(self.methods)) == len(self.methods),
            "train_ae_guided.methods",
            "must list distinct methods",
            list(self.methods),
        )
        _check_grid("train_ae_guided.eps", self.eps)
        _check(1 <= self.copies <= 16, "train_ae_guided.copies", "must be in [1, 16]", self.copies)
        _check(
            self.pixel_weight >= 0,
            "train_ae_guided.pixel_weight",
            "must be >= 0",
            self.pixel_weight,
        )


@dataclass(frozen=True)
class RobustnessParams:
    """Every defence under the oblivious (paper) and adaptive (end-to-end, BPDA) threat models.

    `eps` is this stage's own headline (its table and checks), on `eps_grid`. Why not attack.eps:
    adaptive attacks on every defence are the costliest computation of the pipeline, and a
    headline-only experiment on the attack side should not repeat them.
    """

    defences: tuple[DefenceName, ...] = (
        "none",
        "ae",
        "ae_adv",
        "ae_guided",
        "feature_squeezing",
        "spatial_smoothing",
        "jpeg",
    )
    eps: float = 0.008
    eps_grid: tuple[float, ...] = (0.002, 0.004, 0.008, 0.016, 0.03)
    squeeze_bits: int = 4
    smoothing_window: int = 3
    jpeg_quality: int = 50
    max_images: int = 100  # seeded class-stratified subset of the test split; 0 = all of it
    apgd_steps: int = 20  # APGD-CE iterations per restart (AutoAttack: 100)
    apgd_restarts: int = 1  # AutoAttack: 5 for APGD-CE
    square_queries: int = 100  # Square Attack iterations (queries per image); AutoAttack: 5000
    square_p_init: float = 0.8  # initial fraction of pixels in a square (AutoAttack, L-inf)
    detector_eps: float = 0.03  # eps of the detector evaluation; one of attack.eps_grid
    detector_steps: int = 20  # PGD steps of the detector-aware attack on the reconstruction error
    detector_lambda: float = 10.0  # weight of the detector term (error over threshold) in its loss

    def __post_init__(self) -> None:
        _check(
            self.max_images == 0 or self.max_images >= 20,
            "robustness.max_images",
            "must be 0 (the whole test split) or >= 20",
            self.max_images,
        )
        _check(
            len(self.defences) >= 1 and len(set(self.defences)) == len(self.defences),
            "robustness.defences",
            "must list distinct defences",
            list(self.defences),
        )
        _check_grid("robustness.eps_grid", self.eps_grid)
        _check(
            self.eps in self.eps_grid,
            "robustness.eps",
            f"must be one of robustness.eps_grid {list(self.eps_grid)} (add it to the grid)",
            self.eps,
        )
        _check(
            1 <= self.squeeze_bits <= 8,
            "robustness.squeeze_bits",
            "must be in [1, 8]",
            self.squeeze_bits,
        )
        _check(
            self.smoothing_window in (2, 3, 5, 7),
            "robustness.smoothing_window",
            "must be one of [2, 3, 5, 7]",
            self.smoothing_window,
        )
        _check(
            1 <= self.jpeg_quality <= 95,
            "robustness.jpeg_quality",
            "must be in [1, 95]",
            self.jpeg_quality,
        )
        for key in ("apgd_steps", "apgd_restarts", "square_queries", "detector_steps"):
            value = getattr(self, key)
            _check(1 <= value <= 100_000, f"robustness.{key}", "must be in [1, 100000]", value)
        _check_fraction("robustness.square_p_init", self.square_p_init, 0.01, 1.0)
        _check(
            self.detector_lambda >= 0,
            "robustness.detector_lambda",
            "must be >= 0",
            self.detector_lambda,
        )


@dataclass(frozen=True)
class TrainAeGaussParams(OptimParams):
    """A Gaussian denoiser for denoised smoothing: train_ae's architecture, noise of certify.sigmas.

    Salman et al. 2020 train one denoiser per sigma; one blind denoiser (sigma drawn per image from
    certify.sigmas) costs a third of the training and serves every sigma.
    """

    lr: float = 1.0e-3
    epochs: int = 8
    stability_weight: float = 0.0  # Salman et al.'s stability loss through the frozen CNN (0 = MSE)

    def __post_init__(self) -> None:
        self._check_optim("train_ae_gauss")
        _check(
            self.stability_weight >= 0,
            "train_ae_gauss.stability_weight",
            "must be >= 0",
            self.stability_weight,
        )


@dataclass(frozen=True)
class CertifyParams:
    """Randomized smoothing (Cohen et al. 2019) through ART: certified L2 radii per model and sigma."""

    sigmas: tuple[float, ...] = (0.12, 0.25, 0.5)
    models: tuple[CertifyModel, ...] = ("cnn", "ae", "ae_gauss")
    radii: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 1.0)
    n0: int = 32  # noise samples that select the class (Cohen et al.: 100)
    n: int = 256  # noise samples that estimate its probability (Cohen et al.: 100000)
    alpha: float = 0.001  # failure probability of each certificate
    max_images: int = 50  # seeded class-stratified subset of the test split; 0 = all of it
    batch_size: int = 256  # noisy samples per forward pass
    attack_images: int = 8  # certified images attacked (L2 PGD + EOT) to test the certificates
    attack_samples: int = 16  # noise samples per gradient step of that attack (EOT)

    def __post_init__(self) -> None:
        _check(len(self.sigmas) >= 1, "certify.sigmas", "must not be empty", list(self.sigmas))
        for sigma in self.sigmas:
            _check(0 < sigma <= 2, "certify.sigmas entry", "must be in (0, 2]", sigma)
        _check(
            len(self.models) >= 1 and len(set(self.models)) == len(self.models),
            "certify.models",
            "must list distinct models",
            list(self.models),
        )
        _check(
            list(self.radii) == sorted(set(self.radii)) and min(self.radii, default=-1) >= 0,
            "certify.radii",
            "must be non-negative, sorted, without duplicates",
            list(self.radii),
        )
        _check(1 <= self.n0 <= 1_000_000, "certify.n0", "must be in [1, 1000000]", self.n0)
        _check(10 <= self.n <= 1_000_000, "certify.n", "must be in [10, 1000000]", self.n)
        _check(0 < self.alpha < 0.5, "certify.alpha", "must be in (0, 0.5)", self.alpha)
        _check(
            self.max_images == 0 or self.max_images >= 2,
            "certify.max_images",
            "must be 0 (the whole test split) or >= 2",
            self.max_images,
        )
        _check(self.batch_size >= 1, "certify.batch_size", "must be >= 1", self.batch_size)
        _check(
            0 <= self.attack_images <= 1000,
            "certify.attack_images",
            "must be in [0, 1000]",
            self.attack_images,
        )
        _check(
            1 <= self.attack_samples <= 1024,
            "certify.attack_samples",
            "must be in [1, 1024]",
            self.attack_samples,
        )


@dataclass(frozen=True)
class Params:
    """All of params.yaml. Cross-section constraints are checked here."""

    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = 2  # torch intra-op threads on CPU; fixed so that runs are reproducible
    data: DataParams = field(default_factory=DataParams)
    train_cnn: TrainCnnParams = field(default_factory=TrainCnnParams)
    train_ae: TrainAeParams = field(default_factory=TrainAeParams)
    attack: AttackParams = field(default_factory=AttackParams)
    denoise: DenoiseParams = field(default_factory=DenoiseParams)
    embed: EmbedParams = field(default_factory=EmbedParams)
    train_ae_adv: TrainAeAdvParams = field(default_factory=TrainAeAdvParams)
    train_ae_guided: TrainAeGuidedParams = field(default_factory=TrainAeGuidedParams)
    robustness: RobustnessParams = field(default_factory=RobustnessParams)
    train_ae_gauss: TrainAeGaussParams = field(default_factory=TrainAeGaussParams)
    certify: CertifyParams = field(default_factory=CertifyParams)

    def __post_init__(self) -> None:
        _check(0 <= self.seed < 2**32, "seed", "must be in [0, 2**32)", self.seed)
        _check(1 <= self.threads <= 256, "threads", "must be in [1, 256]", self.threads)
        size = self.data.image_size
        cnn_min = 2 ** (len(self.train_cnn.channels) + 1)
        _check(
            size >= cnn_min,
            "data.image_size",
            f"must be >= {cnn_min} for train_cnn.channels of length {len(self.train_cnn.channels)}",
            size,
        )
        depth = len(self.train_ae.channels)
        _check(
            size % 2**depth == 0,
            "data.image_size",
            f"must be divisible by {2**depth} (2**len(train_ae.channels)) for the autoencoders",
            size,
        )
        off_grid = [e for e in self.robustness.eps_grid if e not in self.attack.eps_grid]
        _check(
            not off_grid,
            "robustness.eps_grid",
            f"must lie within attack.eps_grid {list(self.attack.eps_grid)} (the oblivious attacks"
            f" come from the attack stage); not there: {off_grid}",
            list(self.robustness.eps_grid),
        )


# --------------------------------------------------------------------------- loading


def _convert(value: Any, hint: Any, key: str) -> Any:
    """Check `value` against a type hint and return it in the dataclass's representation."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is bool:
        _check(isinstance(value, bool), key, "must be true or false", value)
        return value
    if hint is int:
        _check(
            isinstance(value, int) and not isinstance(value, bool), key, "must be an integer", value
        )
        return value
    if hint is float:
        _check(
            isinstance(value, (int, float)) and not isinstance(value, bool),
            key,
            "must be a number",
            value,
        )
        return float(value)
    if hint is str:
        _check(isinstance(value, str), key, "must be a string", value)
        return value
    if origin is Literal:
        _check(value in args, key, f"must be one of {list(args)}", value)
        return value
    if origin is tuple:
        _check(isinstance(value, (list, tuple)), key, "must be a list", value)
        return tuple(_convert(v, args[0], key) for v in value)
    if origin is dict:
        _check(isinstance(value, dict), key, "must be a mapping", value)
        return {
            _convert(k, args[0], key): _convert(v, args[1], f"{key}.{k}") for k, v in value.items()
        }
    if origin in (typing.Union, types.UnionType):  # pragma: no cover - not used by the schema today
        raise TypeError(f"unsupported params hint for {key}: {hint}")
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    raise TypeError(f"unsupported params hint for {key}: {hint}")  # pragma: no cover


def _build(cls: type, raw: Any, prefix: str) -> Any:
    where = prefix or "params.yaml"
    _check(isinstance(raw, dict), where, "must be a mapping", raw)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else str(unknown[0])
        raise ParamsError(
            f"unknown key {key!r}; allowed keys{' in ' + prefix if prefix else ''}: {names}"
        )
    kwargs = {k: _convert(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in raw.items()}
    return cls(**kwargs)


def read_yaml(text: str) -> Any:
    """Parse params YAML as DVC does (YAML 1.2 numbers: `1e-4` is a float)."""
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass


def parse_params(raw: Any) -> Params:
    """Build validated params from an already-parsed YAML mapping."""
    return _build(Params, raw if raw is not None else {}, "")


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
