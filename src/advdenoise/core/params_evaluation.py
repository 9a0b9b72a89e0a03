"""The evaluation sections of params.yaml: attacks, denoising, embeddings, robustness, certificates.

See `params` for how they are read and validated.
"""

from __future__ import annotations

from dataclasses import dataclass

from advdenoise.core.config import (
    check,
    check_headline,
    check_min,
    check_names,
    check_range,
    check_subset,
    registered,
)


@dataclass(frozen=True)
class AttackParams:
    """FGSM and L-inf PGD through ART; `eps_grid` the curve, `eps` the headline bound on it.

    Why the headline must lie on the grid: the attack stage then depends on the grid only, so an
    experiment with another headline (`dvc exp run -S attack.eps=0.02`) re-runs no attack.
    """

    eps: float
    eps_grid: tuple[float, ...]
    methods: tuple[str, ...]  # oblivious attacks of attacks.specs.ATTACKS
    pgd_steps: int
    pgd_step_fraction: float  # PGD step size as a fraction of eps
    pgd_random_init: bool
    batch_size: int  # images per attack batch; 32-64 is fastest on a CPU (cache-bound)

    def __post_init__(self) -> None:
        check_range("attack.eps", self.eps, 0.0, 1.0)
        check_headline("attack", self.eps, self.eps_grid)
        check_names("attack.methods", self.methods, registered("attacks"), "methods")
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
    external_images: int  # seeded class-stratified subset of data.external attacked; 0 = all of it
    l2_images: int  # L2 APGD's seeded subset of the evaluated images (at certify.radii); 0 = all
    l2_steps: int  # its iterations per radius (with robustness.apgd_restarts restarts)

    def __post_init__(self) -> None:
        check_range("robustness.workers", self.workers, 1, 256)
        check_min("robustness.external_images", self.external_images, 0)
        check_subset("robustness.l2_images", self.l2_images, 10, "every evaluated image")
        check_subset("robustness.max_images", self.max_images, 20, "the whole test split")
        check_names("robustness.defences", self.defences, registered("defences"), "defences")
        check_headline("robustness", self.eps, self.eps_grid)
        check_range("robustness.squeeze_bits", self.squeeze_bits, 1, 8)
        check(
            self.smoothing_window in (2, 3, 5, 7),
            "robustness.smoothing_window",
            "must be one of [2, 3, 5, 7]",
            self.smoothing_window,
        )
        check_range("robustness.jpeg_quality", self.jpeg_quality, 1, 95)
        for key in ("apgd_steps", "apgd_restarts", "apgd_check_restarts", "square_queries",
                    "detector_steps", "l2_steps"):  # fmt: skip
            check_range(f"robustness.{key}", getattr(self, key), 1, 100_000)
        check_min("robustness.restarts_tolerance", self.restarts_tolerance, 0)
        check_subset("robustness.square_images", self.square_images, 10, "every evaluated image")
        check_range("robustness.square_p_init", self.square_p_init, 0.01, 1.0)
        check_range("robustness.masking_alpha", self.masking_alpha, 1e-6, 0.5)
        check_min("robustness.detector_lambda", self.detector_lambda, 0)


@dataclass(frozen=True)
class CertifyParams:
    """Randomized smoothing (Cohen et al. 2019) through ART: certified L2 radii per model and sigma."""

    sigmas: tuple[float, ...]
    models: tuple[str, ...]  # names of evaluation.smoothed.SMOOTHED
    radii: tuple[float, ...]
    n0: int  # noise samples that select the class (Cohen et al.: 100)
    n: int  # noise samples that estimate its probability (Cohen et al.: 100000)
    alpha: float  # failure probability of each certificate
    max_images: int  # seeded class-stratified subset of the test split; 0 = all of it
    batch_size: int  # noisy samples per forward pass
    attack_images: int  # certified images attacked (L2 PGD + EOT) to test the certificates
    attack_samples: int  # noise samples per gradient step of that attack (EOT)
    l2_steps: int  # steps of the L2 PGD + EOT at every radius (the empirical bound); 0 = none
    l2_images: int  # its seeded class-stratified subset of the certified images; 0 = all of them

    def __post_init__(self) -> None:
        check(len(self.sigmas) >= 1, "certify.sigmas", "must not be empty", list(self.sigmas))
        for sigma in self.sigmas:
            check(0 < sigma <= 2, "certify.sigmas entry", "must be in (0, 2]", sigma)
        check_names("certify.models", self.models, registered("certify"), "models")
        check(
            list(self.radii) == sorted(set(self.radii)) and min(self.radii, default=-1) >= 0,
            "certify.radii",
            "must be non-negative, sorted, without duplicates",
            list(self.radii),
        )
        check_range("certify.n0", self.n0, 1, 1_000_000)
        check_range("certify.n", self.n, 10, 1_000_000)
        check(0 < self.alpha < 0.5, "certify.alpha", "must be in (0, 0.5)", self.alpha)
        check_subset("certify.max_images", self.max_images, 2, "the whole test split")
        check_min("certify.batch_size", self.batch_size, 1)
        check_range("certify.attack_images", self.attack_images, 0, 1000)
        check_range("certify.attack_samples", self.attack_samples, 1, 1024)
        check_range("certify.l2_steps", self.l2_steps, 0, 10_000)
        check_subset("certify.l2_images", self.l2_images, 2, "every certified image")
