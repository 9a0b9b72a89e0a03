"""What the report reads: params, metrics/<stage>.json and plots/<stage>/*.png, checked on load.

Optional inputs may be absent (a stage not run: its section says so); present inputs must be well
formed (invalid JSON or a non-numeric metric is a PipelineError naming the file).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from advdenoise.core.errors import PipelineError
from advdenoise.core.io import flatten, read_json
from advdenoise.core.params import Params
from advdenoise.report.document import Block, Image, Paragraph, metrics_dump, pivot

STAGES = (
    "prepare",
    "train_cnn",
    "train_ae",
    "attack",
    "denoise",
    "embed",
    "train_ae_adv",
    "train_ae_guided",
    "robustness",
    "train_ae_gauss",
    "certify",
)  # every stage of dvc.yaml before this one, in its order (tests/test_report.py checks)


# Captions of the known figures, in display order; any other PNG is shown after them by file name.
CAPTIONS: dict[str, dict[str, str]] = {
    "prepare": {
        "samples.png": "Example images of each class from the prepared splits.",
        "nn_distance.png": "Leakage probe: each test image's distance to its nearest training "
        "image; near-copies across the split (slices of one scan) pile up near 0.",
    },
    "train_cnn": {
        "training_curves.png": "Classifier training: loss and accuracy per epoch (train and "
        "validation); the kept epoch is the best on validation.",
        "confusion.png": "Confusion matrix of the classifier on the test split.",
        "roc.png": "ROC curve of the classifier on the test split (COVID = positive).",
        "reliability.png": "Reliability diagram: confidence vs accuracy per bin (calibration).",
    },
    "train_ae": {
        "training_curves.png": "Denoising autoencoder training: reconstruction loss per epoch.",
        "examples.png": "Noisy inputs, reconstructions and clean targets of the autoencoder.",
    },
    "attack": {"accuracy_vs_eps.png": "Classifier accuracy vs attack strength eps."},
    "denoise": {
        "fig3_accuracy_vs_eps.png": "Accuracy vs eps: clean, adversarial and denoised adversarial "
        "(paper Fig. 3).",
        "fig4_heatmaps.png": "Perturbation heatmaps |x_adv - x| and |AE(x_adv) - x| beside the "
        "images (paper Fig. 4).",
        "fig5_intensity.png": "Pixel-intensity histograms of clean, adversarial and denoised "
        "images (paper Fig. 5).",
        "fig7_recon_loss.png": "Reconstruction loss vs eps for clean and adversarial inputs "
        "(paper Fig. 7).",
    },
    "embed": {
        "cnn_embeddings.png": "CNN penultimate-layer features in 2-D (PCA, t-SNE, UMAP), coloured "
        "by group and by class; the probe AUROC of each 2-D embedding is in the panel titles.",
        "ae_embeddings.png": "Autoencoder bottleneck features in 2-D (PCA, t-SNE, UMAP), "
        "coloured by group and by class.",
        "detector_roc.png": "ROC of the reconstruction-error (MagNet-style) detector and the "
        "distributions of reconstruction error for clean and adversarial inputs.",
    },
    "train_ae_adv": {
        "training_curves.png": "Autoencoder retrained on adversarial examples: loss per epoch.",
    },
    "train_ae_guided": {
        "training_curves.png": "Feature-guided denoiser: training loss per epoch.",
    },
    "robustness": {
        "robustness.png": "Accuracy per defence at the headline eps: clean, oblivious, each "
        "adaptive attack, the gradient attacks' worst case, Square alone and the robust accuracy "
        "(every attack).",
        "curves.png": "Accuracy vs eps per defence: worst case over the oblivious attacks, over "
        "the adaptive white-box ones, and over all gradient-based attacks.",
    },
    "train_ae_gauss": {
        "training_curves.png": "Gaussian denoiser (denoised smoothing): loss per epoch.",
    },
    "certify": {
        "certified_accuracy.png": "Certified accuracy vs L2 radius by randomized smoothing, per "
        "model and noise level sigma (top axis: the L-inf radius the L2 ball contains).",
        "bounds.png": "Per smoothed model and sigma: certified accuracy (solid, a lower bound) "
        "and accuracy under L2 PGD + EOT (dashed, an upper bound) vs L2 radius; the smoothed "
        "classifier's true robust accuracy lies in the shaded gap.",
    },
}

Metrics = dict[str, float | bool]

ENV_PREFIX = "env."  # runtime.environment's keys: strings for `dvc metrics diff`, not figures


def load_metrics(path: Path) -> Metrics | None:
    """Flat numeric metrics of one stage; None when the file is absent (stage not run)."""
    if not path.exists():
        return None
    data = read_json(path)  # invalid JSON -> PipelineError naming the file
    if not isinstance(data, dict):
        raise PipelineError(f"{path}: expected a JSON object of metrics, got {type(data).__name__}")
    flat = {k: v for k, v in flatten(data).items() if not k.startswith(ENV_PREFIX)}
    for key, value in flat.items():
        if isinstance(value, bool):
            continue
        if not isinstance(value, (int, float)):
            raise PipelineError(f"{path}: metric {key!r} is not a number: {value!r}")
        if not math.isfinite(value):
            raise PipelineError(f"{path}: metric {key!r} is not finite: {value!r}")
    return dict(sorted(flat.items()))


def find_figures(plots_dir: Path, stage: str) -> list[Image]:
    """PNGs of a stage: known ones in caption order, then the rest sorted by name."""
    directory = plots_dir / stage
    if not directory.is_dir():
        return []
    found = sorted(p for p in directory.glob("*.png") if p.is_file())
    known = CAPTIONS.get(stage, {})
    by_name = {p.name: p for p in found}
    images = [Image(by_name[n], c) for n, c in known.items() if n in by_name]
    images += [Image(p, p.name) for p in found if p.name not in known]
    return images


@dataclass(frozen=True)
class Inputs:
    params: Params
    metrics: Mapping[str, Metrics | None]  # stage -> metrics (None = not run)
    figures: Mapping[str, list[Image]]  # stage -> images
    metrics_dir: Path
    plots_dir: Path


def load_inputs(params: Params, metrics_dir: Path, plots_dir: Path) -> Inputs:
    metrics = {s: load_metrics(metrics_dir / f"{s}.json") for s in STAGES}
    figures = {s: find_figures(plots_dir, s) for s in STAGES}
    for path in (p for imgs in figures.values() for p in imgs):
        with open(path.path, "rb") as fh:
            if fh.read(8) != b"\x89PNG\r\n\x1a\n":
                raise PipelineError(f"{path.path}: not a PNG file")
    return Inputs(params, metrics, figures, metrics_dir, plots_dir)


def not_run(stage: str, what: str = "") -> Paragraph:
    return Paragraph(
        f"**Not run**: metrics/{stage}.json is absent{what}. Run `dvc repro {stage}` to fill this "
        "section."
    )


def stage_results(inputs: Inputs, stage: str) -> list[Block]:
    """A stage's per-eps metrics as method x eps tables, all its metrics folded, then its figures
    (or the note that it has not run)."""
    m = inputs.metrics[stage]
    if m is None:
        return [not_run(stage), *inputs.figures[stage]]
    blocks: list[Block] = []
    for quantity, table in pivot(m, "eps").items():
        blocks += [Paragraph(f"{quantity} per eps:"), table]
    return [*blocks, metrics_dump(f"metrics/{stage}.json", m), *inputs.figures[stage]]


def dataset_name(params: Params) -> str:
    if params.data.is_synthetic:
        return "synthetic CT-like slices (embedded generator)"
    return f"images from {params.data.source}"


def get(metrics: Metrics | None, *keys: str) -> float | None:
    """The first of `keys` present in `metrics` (numbers only)."""
    if metrics is None:
        return None
    for key in keys:
        value = metrics.get(key)
        if value is not None and not isinstance(value, bool):
            return float(value)
    return None


def clean_accuracy(inputs: Inputs) -> float | None:
    return get(inputs.metrics["train_cnn"], "test.accuracy")


def attack_clean(inputs: Inputs) -> float | None:
    return get(inputs.metrics["attack"], "clean_accuracy") or clean_accuracy(inputs)


def attack_accuracy(inputs: Inputs, method: str) -> float | None:
    """Accuracy under `method` at the headline eps, from the attack stage's per-eps cells."""
    eps = inputs.params.attack.eps
    return get(inputs.metrics["attack"], f"{method}.eps_{eps:g}.accuracy")


def denoised_accuracy(inputs: Inputs, method: str) -> float | None:
    return get(
        inputs.metrics["denoise"],
        f"{method}.denoised_accuracy",
        f"{method}.accuracy_denoised",
        f"{method}.denoised.accuracy",
        f"denoised.{method}.accuracy",
    )
