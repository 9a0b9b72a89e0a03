"""The certify stage: certified L2 robustness by randomized smoothing and denoised smoothing.

Cohen et al. 2019: the smoothed classifier g(x) = argmax_c P(f(x + N(0, sigma^2 I)) = c) is robust
within L2 radius sigma * Phi^-1(p_A) of x, where p_A lower-bounds the top class's probability (here
with n Monte Carlo samples, Clopper-Pearson at level alpha; abstain when p_A < 1/2). Models f:
- `cnn`: the CNN as trained (it never saw noise: expected to be poor at large sigma);
- `ae`: the paper's autoencoder in front of the CNN (trained on milder noise);
- `ae_gauss`: denoised smoothing (Salman et al. 2020): the Gaussian denoiser in front of the CNN.
Certified accuracy at radius r = fraction of images certified for the true class with radius >= r.
An L2 ball of radius r contains the L-inf ball of radius r / sqrt(d) (d = pixels), stated beside.
The attack side of the same threat model: accuracy under L2 PGD + EOT within r (`attack_radii`),
an upper bound that the certified lower bound must not exceed (`bounds_meet`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from advdenoise import attacks
from advdenoise.attacks.sets import check_perturbation
from advdenoise.core.params import CertifyParams
from advdenoise.core.seeding import eps_key, named_seed
from advdenoise.data.splits import evaluation_subset

SUBSET_STREAM = "certify.subset"  # data.evaluation_subset stream of this stage
L2_STREAM = "certify.l2_subset"  # the same, of the images attacked at every radius
CURVE_POINTS = 41  # radii of the certified-accuracy curve, 0 .. max(certify.radii)


@dataclass(frozen=True)
class Certification:
    """CERTIFY's output for one (model, sigma) on the evaluation images."""

    model: str
    sigma: float
    y: np.ndarray
    prediction: np.ndarray  # class, or -1 (abstain)
    radius: np.ndarray  # certified L2 radius, 0 where abstained
    votes: np.ndarray  # (N, K) class counts of the n estimation samples

    def take(self, rows: np.ndarray) -> Certification:
        """The certification of the images `rows` only."""
        return Certification(
            self.model, self.sigma, self.y[rows], self.prediction[rows], self.radius[rows],
            self.votes[rows],
        )  # fmt: skip

    def certified_accuracy(self, r: float) -> float:
        return float(np.mean((self.prediction == self.y) & (self.radius >= r)))

    @property
    def majority_accuracy(self) -> float:
        """Accuracy of the Monte Carlo majority vote of the n samples (the smoothed classifier's
        clean accuracy estimate): an upper bound of the certified accuracy at radius 0."""
        return float(np.mean(self.votes.argmax(1) == self.y))

    @property
    def abstain_rate(self) -> float:
        return float(np.mean(self.prediction == -1))

    @property
    def mean_radius(self) -> float:
        """Average certified radius (0 for wrong or abstained images; Zhai et al. 2020)."""
        return float(np.mean(np.where(self.prediction == self.y, self.radius, 0.0)))


def certify_model(
    name: str,
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    sigma: float,
    params: CertifyParams,
    *,
    nb_classes: int,
    seed: int,
    device: torch.device | str,
) -> Certification:
    """CERTIFY (ART's randomized smoothing) of `model` at noise level `sigma` on every image."""
    smoothed = attacks.make_smoothed_classifier(
        model, x.shape[1:], nb_classes, device, sigma=sigma, n0=params.n0, alpha=params.alpha
    )
    pred, radius, votes = attacks.certify(
        smoothed, x, params.n, params.batch_size,
        seed=named_seed(seed, "certify.noise", name, eps_key(sigma)),
    )  # fmt: skip
    return Certification(name, float(sigma), y, pred, radius, votes)


def attack_certificates(
    cert: Certification,
    model: nn.Module,
    x: np.ndarray,
    params: CertifyParams,
    *,
    nb_classes: int,
    seed: int,
    device: torch.device | str,
) -> dict[str, float]:
    """Attack the smoothed classifier inside its certificates: it must never be fooled there.

    The first `attack_images` images certified for their true class are attacked with L2 PGD +
    EOT at 0.99 x their certified radius (20 steps); the attacked image is then classified by
    PREDICT (n samples, abstain allowed). A different, non-abstained class is a violation, which
    a valid certificate allows with probability at most alpha per image.
    """
    rows = np.flatnonzero((cert.prediction == cert.y) & (cert.radius > 0))[: params.attack_images]
    out = {"attack.images": float(len(rows)), "attack.violations": 0.0}
    if len(rows) == 0:
        return out
    cell = (cert.model, eps_key(cert.sigma))
    adv = attacks.eot_pgd_l2(
        model, x[rows], cert.y[rows], 0.99 * cert.radius[rows], cert.sigma,
        samples=params.attack_samples, steps=20, nb_classes=nb_classes, device=device,
        batch_size=params.batch_size, seed=named_seed(seed, "certify.attack", *cell),
    )  # fmt: skip
    l2 = np.sqrt(((adv - x[rows]).astype(np.float64) ** 2).reshape(len(rows), -1).sum(1))
    if np.any(l2 > cert.radius[rows] + 1e-4):
        raise AssertionError("the certificate attack left its L2 ball")
    smoothed = attacks.make_smoothed_classifier(
        model, x.shape[1:], nb_classes, device, sigma=cert.sigma, n0=params.n, alpha=params.alpha
    )
    pred = attacks.smoothed_predict(
        smoothed, adv, params.batch_size, seed=named_seed(seed, "certify.attack_predict", *cell)
    )
    out["attack.violations"] = float(np.sum((pred != cert.y[rows]) & (pred != -1)))
    out["attack.abstained"] = float(np.sum(pred == -1))
    return out


@dataclass(frozen=True)
class AttackedRadii:
    """`attack_radii`'s outcome on its images: their certification and, per radius, whether the
    smoothed classifier is still right there after the attack."""

    cert: Certification
    correct: dict[float, np.ndarray]

    def accuracy(self) -> dict[float, float]:
        return {r: float(ok.mean()) for r, ok in self.correct.items()}

    def certified(self) -> dict[float, float]:
        return {r: self.cert.certified_accuracy(r) for r in self.correct}


def attack_radii(
    cert: Certification,
    model: nn.Module,
    x: np.ndarray,
    params: CertifyParams,
    *,
    nb_classes: int,
    seed: int,
    device: torch.device | str,
) -> AttackedRadii:
    """Is the smoothed classifier still right after an L2 attack within each radius of
    certify.radii? The empirical side of the certificate: an upper bound of the accuracy that
    certified accuracy lower-bounds, on a seeded class-stratified subset (certify.l2_images).

    L2 PGD + EOT (`attack_samples` noise draws per step, `l2_steps` steps) on the smoothed soft
    classifier, smallest radius first, on the images it still gets right (one broken within a
    smaller ball is broken within every larger one); right = the majority vote of n noisy copies
    (the estimate of the smoothed classifier without abstention; radius 0: CERTIFY's votes).
    """
    rows = evaluation_subset(cert.y, params.l2_images, seed, L2_STREAM)
    cert, x = cert.take(rows), x[rows]
    alive = cert.votes.argmax(1) == cert.y
    smoothed = attacks.make_smoothed_classifier(
        model, x.shape[1:], nb_classes, device, sigma=cert.sigma, n0=params.n0, alpha=params.alpha
    )
    correct = {}
    for r in params.radii:
        left = np.flatnonzero(alive)
        if r > 0 and len(left):
            cell = (cert.model, eps_key(cert.sigma), eps_key(r))
            adv = attacks.eot_pgd_l2(
                model, x[left], cert.y[left], np.full(len(left), r), cert.sigma,
                samples=params.attack_samples, steps=params.l2_steps, nb_classes=nb_classes,
                device=device, batch_size=params.batch_size,
                seed=named_seed(seed, "certify.l2", *cell),
            )  # fmt: skip
            check_perturbation(x[left], adv, r, f"certify: {cert.model} radius={r:g}", norm=2)
            votes = attacks.smoothed_votes(
                smoothed, adv, params.n, params.batch_size,
                seed=named_seed(seed, "certify.l2_votes", *cell),
            )  # fmt: skip
            alive = alive.copy()
            alive[left] = votes.argmax(1) == cert.y[left]
        correct[float(r)] = alive
    return AttackedRadii(cert, correct)


def checks(cert: Certification, radii: Sequence[float]) -> dict[str, bool]:
    """Sanity of one certification: radius 0 <= the smoothed clean accuracy; non-increasing in r."""
    curve = [cert.certified_accuracy(r) for r in sorted(radii)]
    return {
        "radius0_le_smoothed_clean": cert.certified_accuracy(0.0) <= cert.majority_accuracy,
        "non_increasing_in_radius": all(b <= a for a, b in zip(curve, curve[1:], strict=False)),
    }


def bounds_meet(
    certified: Mapping[float, float], empirical: Mapping[float, float], images: int
) -> dict[float, bool]:
    """Per radius, whether certified accuracy (a lower bound on the accuracy under any L2 attack
    within r) stays at or below the accuracy under one such attack (an upper bound), on the same
    images, one image of slack. A certificate above an attack that worked is a broken proof or a
    broken evaluation: this check fails then. Radii are those of both mappings."""
    slack = 1 / max(images, 1) + 1e-12
    return {
        r: certified[r] <= empirical[r] + slack for r in sorted(set(certified) & set(empirical))
    }


def certify_metrics(
    results: Sequence[Certification],
    attacked: Mapping[tuple[str, float], Mapping[str, float]],
    empirical: Mapping[tuple[str, float], AttackedRadii],
    params: CertifyParams,
    pixels: int,
) -> dict[str, float | bool]:
    """Flat metrics: `<model>.sigma_<s>.radius_<r>.certified_accuracy`, abstention, mean radius,
    the smoothed clean accuracy, the attack checks, `linf_equivalent.radius_<r>` = r / sqrt(d)
    and on `attack_radii`'s images `<model>.sigma_<s>.l2.radius_<r>.{accuracy,
    certified_accuracy}` (attacked, certified) and `l2_images`."""
    out: dict[str, float | bool] = {}
    if results:
        y = results[0].y
        out["images"] = float(len(y))
        out["chance"] = float(np.bincount(y).max() / len(y))  # a constant classifier's accuracy
    out.update({f"linf_equivalent.radius_{r:g}": r / math.sqrt(pixels) for r in params.radii})
    for c in results:
        key = f"{c.model}.sigma_{c.sigma:g}"
        for r in params.radii:
            out[f"{key}.radius_{r:g}.certified_accuracy"] = c.certified_accuracy(r)
        out[f"{key}.abstain_rate"] = c.abstain_rate
        out[f"{key}.mean_radius"] = c.mean_radius
        out[f"{key}.smoothed_clean_accuracy"] = c.majority_accuracy
        out.update({f"{key}.{k}": v for k, v in attacked.get((c.model, c.sigma), {}).items()})
        for name, ok in checks(c, params.radii).items():
            out[f"checks.{key}.{name}"] = ok
        out[f"checks.{key}.no_violation"] = out.get(f"{key}.attack.violations", 0.0) == 0.0
        l2 = empirical.get((c.model, c.sigma))
        if l2 is not None:
            out["l2_images"] = float(len(l2.cert.y))
            upper, lower = l2.accuracy(), l2.certified()
            for r in upper:
                out[f"{key}.l2.radius_{r:g}.accuracy"] = upper[r]
                out[f"{key}.l2.radius_{r:g}.certified_accuracy"] = lower[r]
            met = bounds_meet(lower, upper, len(l2.cert.y))
            out[f"checks.{key}.l2_certified_le_attacked"] = all(met.values())
    out["checks.all_passed"] = all(v for k, v in out.items() if k.startswith("checks."))
    return out


def bounds_table(empirical: Mapping[tuple[str, float], AttackedRadii], model: str) -> pd.DataFrame:
    """radius + per sigma of `model` its certified accuracy (a lower bound) and its accuracy under
    `attack_radii` (an upper bound) at certify.radii, on the attacked images: a DVC linear plot."""
    table: dict[str, list[float]] = {}
    for (name, sigma), l2 in empirical.items():
        if name == model:
            table["radius"] = list(l2.correct)
            table[f"certified_sigma_{sigma:g}"] = list(l2.certified().values())
            table[f"attacked_sigma_{sigma:g}"] = list(l2.accuracy().values())
    return pd.DataFrame(table)


def certify_curves(results: Sequence[Certification], max_radius: float) -> pd.DataFrame:
    """Long table (model, sigma, radius, certified_accuracy) on CURVE_POINTS radii."""
    radii = np.linspace(0.0, max_radius, CURVE_POINTS)
    rows = [
        (c.model, c.sigma, float(r), c.certified_accuracy(float(r))) for c in results for r in radii
    ]
    return pd.DataFrame(rows, columns=["model", "sigma", "radius", "certified_accuracy"])


def wide_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """radius + one certified-accuracy column per `<model>_sigma_<s>` (a DVC linear plot)."""
    label = curves.model + "_sigma_" + curves.sigma.map(lambda s: f"{s:g}")
    wide = curves.assign(line=label).pivot(
        index="radius", columns="line", values="certified_accuracy"
    )
    return wide[list(dict.fromkeys(label))].reset_index()
