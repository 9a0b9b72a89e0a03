"""The run report: one self-contained HTML page and a Markdown twin, built from stage outputs only.

The report computes nothing new. It reads params.yaml, metrics/<stage>.json and plots/<stage>/*.png,
phrases conclusions from those numbers with the explicit thresholds below, and renders one document
model twice: HTML with every PNG embedded as a data URI, and Markdown that links the PNGs by relative
path (readable on a git host). Optional inputs may be absent (a stage not run: its section says so);
present inputs must be well formed (invalid JSON or a non-numeric metric is a PipelineError naming the
file). Output is deterministic: fixed section order, sorted keys, no timestamps.

Thresholds used in the conclusions:
- separability (probe or detector AUROC): < 0.6 indistinguishable, 0.6-0.8 partly separable,
  >= 0.8 separable;
- an attack "lowers accuracy" when it costs >= 5 percentage points;
- denoising "restores" accuracy when it recovers >= 80% of the accuracy the attack took, "partly" for
  20-80%, "does not" below 20%;
- the defence verdicts follow the one rule of `verdicts` (the same as plots/robustness/verdict.csv):
  worst case over every attack at robustness.eps, a 10-point margin over the undefended CNN, and
  within 10 points of the defence's own clean accuracy to "defend".
"""

from __future__ import annotations

import base64
import html
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advdenoise.errors import PipelineError
from advdenoise.io import read_json
from advdenoise.params import Params
from advdenoise.verdicts import MARGIN, defences_in, verdicts

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

PAPER: dict[str, Any] = {
    "title": "Findings on Adversarial Robustness through Autoencoder-Based Denoising for Image "
    "Security (Ghosh & Chatterjee, 2024)",
    "test_accuracy": 0.9323,
    "image_size": 224,
    "epochs": 50,
    "lr": 1e-4,
    "batch_size": 16,
    "dataset": "SARS-CoV-2 CT-scan dataset (1252 COVID, 1230 non-COVID)",
}

AUROC_PARTLY = 0.6
AUROC_SEPARABLE = 0.8
ATTACK_DROP = 0.05
RESTORE_FULL = 0.8
RESTORE_PART = 0.2

SPACE_NAMES = {"cnn": "CNN penultimate layer", "ae": "autoencoder bottleneck"}
EMBEDDING_NAMES = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}

# Captions of the known figures, in display order; any other PNG is shown after them by file name.
CAPTIONS: dict[str, dict[str, str]] = {
    "prepare": {"samples.png": "Example images of each class from the prepared splits."},
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
        "adaptive attack and the worst case over all attacks.",
        "curves.png": "Accuracy vs eps per defence: worst case over the oblivious attacks, over "
        "the adaptive ones (white-box and Square), and over all of them.",
    },
    "train_ae_gauss": {
        "training_curves.png": "Gaussian denoiser (denoised smoothing): loss per epoch.",
    },
    "certify": {
        "certified_accuracy.png": "Certified accuracy vs L2 radius by randomized smoothing, per "
        "model and noise level sigma (top axis: the L-inf radius the L2 ball contains).",
    },
}

Metrics = dict[str, float | bool]


# --------------------------------------------------------------------------- document model


@dataclass(frozen=True)
class Paragraph:
    text: str  # plain text; **bold** is the only markup


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Image:
    path: Path
    caption: str


Block = Paragraph | Bullets | Table | Image


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return slug(self.title)


def slug(title: str) -> str:
    """GitHub-style heading anchor, also used as the HTML id so both TOCs link the same way."""
    text = re.sub(r"[^a-z0-9 _-]", "", title.lower())
    return text.strip().replace(" ", "-")


# --------------------------------------------------------------------------- reading inputs


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> dotted keys, the way DVC shows metrics."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


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


# --------------------------------------------------------------------------- formatting


def pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def num(value: float | bool) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def separability(auroc: float) -> str:
    if auroc < AUROC_PARTLY:
        return "indistinguishable"
    if auroc < AUROC_SEPARABLE:
        return "partly separable"
    return "separable"


def restoration(clean: float, adversarial: float, denoised: float) -> tuple[float | None, str]:
    """Fraction of the accuracy lost to the attack that denoising wins back, and its verdict."""
    lost = clean - adversarial
    if lost < ATTACK_DROP:
        return None, "nothing to restore (the attack cost less than 5 points)"
    fraction = (denoised - adversarial) / lost
    if fraction >= RESTORE_FULL:
        return fraction, "restores it"
    if fraction >= RESTORE_PART:
        return fraction, "partly restores it"
    return fraction, "does not restore it"


def _value(config: Any) -> str:
    if isinstance(config, (tuple, list)):
        return ", ".join(_value(v) for v in config)
    if isinstance(config, dict):
        return ", ".join(f"{k}: {_value(v)}" for k, v in config.items())
    if isinstance(config, float):
        return f"{config:g}"
    return str(config)


def metrics_table(metrics: Metrics) -> Table:
    return Table(("metric", "value"), tuple((k, num(v)) for k, v in metrics.items()))


def not_run(stage: str, what: str = "") -> Paragraph:
    return Paragraph(
        f"**Not run**: metrics/{stage}.json is absent{what}. Run `dvc repro {stage}` to fill this "
        "section."
    )


# --------------------------------------------------------------------------- sections


CONFIG_KEYS = (
    "seed",
    "device",
    "threads",
    "data.source",
    "data.image_size",
    "data.classes",
    "data.test_fraction",
    "data.val_fraction",
    "train_cnn.epochs",
    "train_cnn.lr",
    "train_cnn.batch_size",
    "train_cnn.channels",
    "train_cnn.augment",
    "train_ae.epochs",
    "train_ae.lr",
    "train_ae.channels",
    "train_ae.latent_channels",
    "train_ae.noise",
    "attack.eps",
    "attack.eps_grid",
    "attack.methods",
    "attack.pgd_steps",
    "attack.pgd_step_fraction",
    "attack.pgd_random_init",
    "embed.max_points",
    "embed.tsne_perplexity",
    "embed.umap_neighbors",
    "embed.probe_folds",
    "robustness.defences",
    "robustness.eps",
    "robustness.eps_grid",
)


def _param(params: Params, dotted: str) -> Any:
    value: Any = params
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def dataset_name(params: Params) -> str:
    if params.data.is_synthetic:
        return "synthetic CT-like slices (embedded generator)"
    return f"images from {params.data.source}"


def configuration(inputs: Inputs) -> Section:
    p = inputs.params
    sec = Section("Configuration")
    sec.blocks.append(
        Paragraph(
            f"Dataset: {dataset_name(p)}, greyscale, resized to {p.data.image_size} x "
            f"{p.data.image_size} px, scaled to [0, 1]. Headline attack strength eps = "
            f"{p.attack.eps:g} (L-inf). The full configuration is params.yaml."
        )
    )
    rows: tuple[tuple[str, ...], ...] = tuple((k, _value(_param(p, k))) for k in CONFIG_KEYS)
    sec.blocks.append(Table(("parameter", "value"), rows))
    prep = inputs.metrics["prepare"]
    if prep is None:
        sec.blocks.append(not_run("prepare", " (split sizes unknown)"))
    else:
        columns = (*p.data.classes, "total")
        rows = tuple(
            (
                split,
                *(num(prep[f"{split}.{c}"]) if f"{split}.{c}" in prep else "-" for c in columns),
            )
            for split in ("train", "val", "test", "all")
            if any(f"{split}.{c}" in prep for c in columns)
        )
        if rows:
            sec.blocks.append(Paragraph("Split sizes (images per class, metrics/prepare.json):"))
            sec.blocks.append(Table(("split", *columns), rows))
        sec.blocks.append(Paragraph("All data checks (metrics/prepare.json):"))
        sec.blocks.append(metrics_table(prep))
    sec.blocks += inputs.figures["prepare"]
    return sec


def _get(metrics: Metrics | None, *keys: str) -> float | None:
    """The first of `keys` present in `metrics` (numbers only)."""
    if metrics is None:
        return None
    for key in keys:
        value = metrics.get(key)
        if value is not None and not isinstance(value, bool):
            return float(value)
    return None


def _clean_accuracy(inputs: Inputs) -> float | None:
    return _get(inputs.metrics["train_cnn"], "test.accuracy")


def _attack_clean(inputs: Inputs) -> float | None:
    return _get(inputs.metrics["attack"], "clean_accuracy") or _clean_accuracy(inputs)


def _attack_accuracy(inputs: Inputs, method: str) -> float | None:
    """Accuracy under `method` at the headline eps, from the attack stage's per-eps cells."""
    eps = inputs.params.attack.eps
    return _get(inputs.metrics["attack"], f"{method}.eps_{eps:g}.accuracy")


def _denoised_accuracy(inputs: Inputs, method: str) -> float | None:
    return _get(
        inputs.metrics["denoise"],
        f"{method}.denoised_accuracy",
        f"{method}.accuracy_denoised",
        f"{method}.denoised.accuracy",
        f"denoised.{method}.accuracy",
    )


def paper_vs_run(inputs: Inputs) -> Section:
    p = inputs.params
    sec = Section("Paper vs this run")
    acc = _clean_accuracy(inputs)
    run_acc = pct(acc) if acc is not None else "not run"
    rows: list[tuple[str, str, str]] = [
        ("dataset", PAPER["dataset"], dataset_name(p)),
        ("image size", f"{PAPER['image_size']} px", f"{p.data.image_size} px"),
        ("CNN epochs", str(PAPER["epochs"]), str(p.train_cnn.epochs)),
        ("learning rate (Adam)", f"{PAPER['lr']:g}", f"{p.train_cnn.lr:g}"),
        ("batch size", str(PAPER["batch_size"]), str(p.train_cnn.batch_size)),
        ("clean test accuracy", pct(PAPER["test_accuracy"]), run_acc),
    ]
    clean = _attack_clean(inputs)
    for m in p.attack.methods:
        adv = _attack_accuracy(inputs, m)
        rows.append(
            (
                f"{m.upper()} accuracy at eps={p.attack.eps:g}",
                "paper claims: accuracy drops as eps grows",
                f"{pct(adv)} (clean {pct(clean)})" if adv is not None and clean else "not run",
            )
        )
        den = _denoised_accuracy(inputs, m)
        rows.append(
            (
                f"{m.upper()} accuracy after denoising",
                "paper claims: denoising does not restore it",
                pct(den) if den is not None else "not run",
            )
        )
    emb = inputs.metrics["embed"]
    for m in p.attack.methods:
        a = _get(emb, f"ae.{m}.probe_auroc.full")
        rows.append(
            (
                f"clean vs {m.upper()} in the AE bottleneck",
                "paper claims: features overlap (PCA / t-SNE plots)",
                f"probe AUROC {a:.3f} ({separability(a)})" if a is not None else "not run",
            )
        )
    sec.blocks.append(
        Paragraph(
            f"Paper: {PAPER['title']}. Its figures and claims are quoted as the paper states them; "
            "the right column is this run."
        )
    )
    sec.blocks.append(Table(("", "paper", "this run"), tuple(rows)))
    if p.data.is_synthetic:
        sec.blocks.append(
            Paragraph(
                "This run uses the embedded synthetic data, so its accuracy is not comparable with "
                "the paper's figure; set data.source to the real dataset for that comparison."
            )
        )
    return sec


def clean_models(inputs: Inputs) -> Section:
    sec = Section("Clean models")
    for stage, title in (("train_cnn", "Classifier"), ("train_ae", "Denoising autoencoder")):
        m = inputs.metrics[stage]
        sec.blocks.append(Paragraph(f"**{title}** (metrics/{stage}.json)"))
        sec.blocks.append(not_run(stage) if m is None else metrics_table(m))
        sec.blocks += inputs.figures[stage]
    return sec


def attacks_section(inputs: Inputs) -> Section:
    sec = Section("Attacks")
    m = inputs.metrics["attack"]
    sec.blocks.append(
        Paragraph(
            f"FGSM and L-inf PGD ({inputs.params.attack.pgd_steps} steps, step "
            f"{inputs.params.attack.pgd_step_fraction:g} x eps) on the test split at every eps of "
            f"attack.eps_grid (metrics/attack.json); the headline is eps = "
            f"{inputs.params.attack.eps:g}."
        )
    )
    sec.blocks.append(not_run("attack") if m is None else metrics_table(m))
    sec.blocks += inputs.figures["attack"]
    return sec


def denoise_section(inputs: Inputs) -> Section:
    sec = Section("Denoising")
    m = inputs.metrics["denoise"]
    sec.blocks.append(
        Paragraph(
            "Clean and adversarial test images passed through the autoencoder, then classified "
            "(metrics/denoise.json)."
        )
    )
    sec.blocks.append(not_run("denoise") if m is None else metrics_table(m))
    sec.blocks += inputs.figures["denoise"]
    return sec


def embed_section(inputs: Inputs) -> Section:
    sec = Section("Feature embeddings and separability")
    m = inputs.metrics["embed"]
    p = inputs.params
    if m is None:
        sec.blocks.append(not_run("embed"))
        sec.blocks += inputs.figures["embed"]
        return sec
    n = _get(m, "points_per_group")
    sec.blocks.append(
        Paragraph(
            f"Features of {num(n) if n is not None else '?'} test images per group (the same images "
            f"in every group: clean, adversarial at eps = {p.attack.eps:g}, denoised adversarial), "
            "in the CNN's penultimate layer and the autoencoder's flattened bottleneck. Silhouette: "
            "clean vs adversarial in the full standardised feature space (about 0 = overlap). "
            f"Probe AUROC: a {p.embed.probe_folds}-fold cross-validated logistic regression telling "
            "clean from adversarial (0.5 = chance), in the full space and in each 2-D embedding. "
            f"Verdicts: AUROC < {AUROC_PARTLY} indistinguishable, {AUROC_PARTLY}-{AUROC_SEPARABLE} "
            f"partly separable, >= {AUROC_SEPARABLE} separable."
        )
    )
    rows = []
    for space in ("cnn", "ae"):
        for meth in p.attack.methods:
            k = f"{space}.{meth}"
            full = _get(m, f"{k}.probe_auroc.full")
            if full is None:
                continue
            cells = [SPACE_NAMES[space], meth.upper()]
            cells.append(num(round(_get(m, f"{k}.silhouette") or 0.0, 3)))
            for where in ("full", "pca", "tsne", "umap"):
                v = _get(m, f"{k}.probe_auroc.{where}")
                cells.append(f"{v:.3f}" if v is not None else "-")
            den = _get(m, f"{k}.denoised.probe_auroc.full")
            cells.append(f"{den:.3f}" if den is not None else "-")
            cells.append(separability(full))
            rows.append(tuple(cells))
    sec.blocks.append(
        Table(
            (
                "feature space",
                "attack",
                "silhouette",
                "probe AUROC full",
                "PCA",
                "t-SNE",
                "UMAP",
                "denoised vs clean (full)",
                "verdict (full)",
            ),
            tuple(rows),
        )
    )
    det_rows = []
    for meth in p.attack.methods:
        a = _get(m, f"detector.{meth}.auroc")
        if a is None:
            continue
        tpr = _get(m, f"detector.{meth}.tpr_at_5pct_fpr")
        err = _get(m, f"detector.{meth}.mean_error")
        det_rows.append(
            (
                meth.upper(),
                f"{a:.3f}",
                pct(tpr) if tpr is not None else "-",
                num(err) if err is not None else "-",
                num(_get(m, "detector.clean.mean_error") or 0.0),
                separability(a),
            )
        )
    sec.blocks.append(
        Paragraph(
            "MagNet-style detector: flag an input x when its reconstruction error "
            "mean((AE(x) - x)^2) is large; ROC over the whole test split."
        )
    )
    sec.blocks.append(
        Table(
            (
                "attack",
                "AUROC",
                "TPR at 5% FPR",
                "mean error (adv.)",
                "mean error (clean)",
                "verdict",
            ),
            tuple(det_rows),
        )
    )
    sec.blocks += inputs.figures["embed"]
    return sec


def defence_verdicts(metrics: Metrics) -> list[str]:
    """One sentence per defence, by the rule of `verdicts` (the same as plots/robustness/verdict.csv)."""
    found = verdicts(metrics)
    if not found:
        return ["The robustness metrics hold no undefended baseline ('none'); no verdicts."]
    return [v.text for v in found]


# (threat, method) columns of the robustness table at the headline eps, then the worst cases
ROBUSTNESS_COLUMNS = (
    ("oblivious", "fgsm", "oblivious FGSM"),
    ("oblivious", "pgd", "oblivious PGD"),
    ("adaptive", "fgsm", "adaptive FGSM"),
    ("adaptive", "pgd", "adaptive PGD"),
    ("adaptive", "apgd", "adaptive APGD-CE"),
    ("adaptive", "square", "+ Square on survivors"),
    ("oblivious", "worst", "worst oblivious"),
    ("adaptive", "worst", "worst adaptive"),
    ("", "worst", "worst of all"),
)


def _robustness_key(defence: str, threat: str, method: str) -> str:
    return f"{defence}.{threat + '.' if threat else ''}{method}.accuracy"


def _detector_paragraph(m: Metrics) -> Paragraph | None:
    if "detector.adaptive.auroc" not in m:
        return None
    parts = []
    for threat in ("oblivious", "adaptive"):
        parts.append(
            f"{threat}: AUROC {float(m[f'detector.{threat}.auroc']):.2f}, TPR at 5% FPR "
            f"{pct(float(m[f'detector.{threat}.tpr_at_5fpr']))}, attacks that fool the CNN and pass "
            f"the detector {pct(float(m[f'detector.{threat}.evasion_rate']))}"
        )
    return Paragraph(
        f"Reconstruction-error detector (the paper's autoencoder, threshold at 5% false positives on "
        f"clean images) at eps = {float(m['detector.eps']):g}, oblivious PGD vs a PGD that also keeps "
        f"the reconstruction error under the threshold (Carlini & Wagner 2017): "
        + "; ".join(parts)
        + "."
    )


def robustness_section(inputs: Inputs) -> Section:
    sec = Section("Does denoising defend?")
    m = inputs.metrics["robustness"]
    if m is None:
        sec.blocks.append(not_run("robustness"))
        sec.blocks += inputs.figures["robustness"]
        sec.blocks += _denoiser_stages(inputs)
        return sec
    cfg = inputs.params.robustness
    defences = defences_in(m)
    sec.blocks.append(
        Paragraph(
            f"Accuracy at robustness.eps = {cfg.eps:g} per defence, on {int(m.get('test_images', 0))}"
            " test images (robustness.max_images). Oblivious: adversarial examples crafted against "
            "the bare CNN, then defended (the paper's threat model). Adaptive: white-box attacks "
            "through defence + CNN end to end (BPDA for non-differentiable defences): FGSM, PGD "
            f"({inputs.params.attack.pgd_steps} steps; 2x steps checked), APGD-CE "
            f"({cfg.apgd_steps} steps, {cfg.apgd_restarts} restart(s)), then, as in AutoAttack, the "
            f"gradient-free Square Attack ({cfg.square_queries} queries per image, p_init "
            f"{cfg.square_p_init:g}) on the images every gradient-based attack left correct (if it "
            "breaks any, the gradients were masked: check black_box_finds_nothing_new). Worst "
            "case: an image counts as robust only if it survives every attack of the column's threat "
            "model; the verdicts use the worst case over all attacks."
        )
    )
    columns = ("defence", "clean accuracy", *(label for _, _, label in ROBUSTNESS_COLUMNS))
    rows = []
    for d in defences:
        row = [d, pct(float(m[f"{d}.clean_accuracy"]))]
        for threat, method, _ in ROBUSTNESS_COLUMNS:
            v = m.get(_robustness_key(d, threat, method))
            row.append(pct(float(v)) if v is not None else "-")
        rows.append(tuple(row))
    sec.blocks.append(Table(columns, tuple(rows)))
    sec.blocks.append(
        Paragraph(
            f"Verdicts (a defence helps when its worst-case accuracy beats the undefended CNN's by "
            f">= {100 * MARGIN:.0f} points; it defends when, over all attacks, it also stays within "
            f"{100 * MARGIN:.0f} points of its clean accuracy):"
        )
    )
    sec.blocks.append(Bullets(tuple(defence_verdicts(m))))
    detector = _detector_paragraph(m)
    if detector is not None:
        sec.blocks.append(detector)
    checks = {k: v for k, v in m.items() if isinstance(v, bool)}
    if checks:
        failed = [k for k, v in checks.items() if not v]
        sec.blocks.append(
            Paragraph(
                f"Evaluation checks (Carlini et al. 2019): {len(checks) - len(failed)} of "
                f"{len(checks)} passed" + (f"; failed: {', '.join(failed)}." if failed else ".")
            )
        )
    sec.blocks += inputs.figures["robustness"]
    sec.blocks += _denoiser_stages(inputs)
    return sec


def _denoiser_stages(inputs: Inputs) -> list[Block]:
    blocks: list[Block] = []
    for stage, title in (
        ("train_ae_adv", "Autoencoder retrained on adversarial examples"),
        ("train_ae_guided", "Feature-guided denoiser"),
    ):
        sm = inputs.metrics[stage]
        blocks.append(Paragraph(f"**{title}** (metrics/{stage}.json)"))
        blocks.append(not_run(stage) if sm is None else metrics_table(sm))
        blocks += inputs.figures[stage]
    return blocks


def _best_certified(
    m: Metrics, model: str, radius: float, sigmas: Sequence[float]
) -> tuple[float, float]:
    """(certified accuracy, sigma) of `model` at `radius`, best over sigma."""
    found = [
        (float(m.get(f"{model}.sigma_{s:g}.radius_{radius:g}.certified_accuracy", math.nan)), s)
        for s in sigmas
    ]
    found = [f for f in found if not math.isnan(f[0])]
    return max(found) if found else (math.nan, math.nan)


CERTIFY_MODELS = {
    "cnn": "CNN alone",
    "ae": "paper's AE + CNN",
    "ae_gauss": "Gaussian denoiser + CNN (denoised smoothing)",
}


def certify_section(inputs: Inputs) -> Section:
    sec = Section("Certified robustness: randomized and denoised smoothing")
    m, cfg = inputs.metrics["certify"], inputs.params.certify
    if m is None:
        sec.blocks.append(not_run("certify"))
    else:
        pixels = inputs.params.data.image_size**2
        sec.blocks.append(
            Paragraph(
                f"Cohen et al. (2019) CERTIFY through ART on {int(m.get('images', 0))} test images "
                f"(certify.max_images): n0 = {cfg.n0} selection and n = {cfg.n} estimation samples, "
                f"alpha = {cfg.alpha:g}; with n = {cfg.n} no radius can exceed sigma x "
                f"{_max_z(cfg.n, cfg.alpha):.2f}. Certified accuracy at L2 radius r counts images "
                f"certified for their true class with radius >= r; an L2 ball of radius r holds the "
                f"L-inf ball of radius r / {math.sqrt(pixels):g}."
            )
        )
        radii = tuple(cfg.radii)
        columns = ("model", "sigma", *(f"r={r:g} (L-inf {r / math.sqrt(pixels):.4f})" for r in radii),
                   "smoothed clean", "abstain", "mean radius", "attack violations")  # fmt: skip
        rows = []
        for model in cfg.models:
            for sigma in cfg.sigmas:
                key = f"{model}.sigma_{sigma:g}"
                if f"{key}.abstain_rate" not in m:
                    continue
                rows.append((
                    model, f"{sigma:g}",
                    *(pct(float(m[f"{key}.radius_{r:g}.certified_accuracy"])) for r in radii),
                    pct(float(m[f"{key}.smoothed_clean_accuracy"])),
                    pct(float(m[f"{key}.abstain_rate"])),
                    f"{float(m[f'{key}.mean_radius']):.3f}",
                    f"{int(m.get(f'{key}.attack.violations', 0))} of {int(m.get(f'{key}.attack.images', 0))}",
                ))  # fmt: skip
        sec.blocks.append(Table(columns, tuple(rows)))
        checks = {k: v for k, v in m.items() if k.startswith("checks.") and isinstance(v, bool)}
        failed = [k for k, v in checks.items() if not v]
        sec.blocks.append(
            Paragraph(
                f"Sanity checks (certified accuracy at radius 0 <= the smoothed classifier's clean "
                f"accuracy; non-increasing in the radius; L2 PGD with EOT inside "
                f"{cfg.attack_images} certificates per row never changes the smoothed prediction): "
                f"{len(checks) - len(failed)} of {len(checks)} passed"
                + (f"; failed: {', '.join(failed)}." if failed else ".")
            )
        )
    sec.blocks += inputs.figures["certify"]
    sm = inputs.metrics["train_ae_gauss"]
    sec.blocks.append(Paragraph("**Gaussian denoiser** (metrics/train_ae_gauss.json)"))
    sec.blocks.append(not_run("train_ae_gauss") if sm is None else metrics_table(sm))
    sec.blocks += inputs.figures["train_ae_gauss"]
    return sec


def _max_z(n: int, alpha: float) -> float:
    """Phi^-1 of the Clopper-Pearson lower bound when all n samples agree: alpha ** (1 / n)."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(alpha ** (1.0 / n))


def certify_conclusions(inputs: Inputs) -> list[str]:
    m, cfg = inputs.metrics["certify"], inputs.params.certify
    if m is None:
        return []
    out = []
    positive = [x for x in cfg.radii if x > 0]
    shown = [x for x in positive if x in (0.25, 0.5)] or positive[:2]
    for r in shown:
        parts = []
        for model in cfg.models:
            acc, sigma = _best_certified(m, model, r, cfg.sigmas)
            if not math.isnan(acc):
                parts.append(f"{CERTIFY_MODELS.get(model, model)} {pct(acc)} (sigma={sigma:g})")
        if parts:
            out.append(
                f"Certified accuracy at L2 radius {r:g} (contains the L-inf ball of "
                f"{r / inputs.params.data.image_size:.4f}), best over sigma: "
                + "; ".join(parts)
                + "."
            )
    if out and "chance" in m:
        out.append(
            f"A certified accuracy at or below the {pct(float(m['chance']))} of always answering "
            "the majority class is no evidence of robustness: a smoothed classifier that collapses "
            "to one class under noise is certified for that class at every radius."
        )
    return out


def conclusions(inputs: Inputs) -> Section:
    """Sentences that follow from the numbers, each with the threshold it used."""
    p, eps = inputs.params, inputs.params.attack.eps
    out: list[str] = []
    acc = _clean_accuracy(inputs)
    if acc is not None:
        diff = 100 * (acc - PAPER["test_accuracy"])
        comparable = (
            " (synthetic data: not comparable)"
            if p.data.is_synthetic
            else f" ({diff:+.1f} points vs the paper)"
        )
        out.append(
            f"The CNN reaches {pct(acc)} clean test accuracy on {dataset_name(p)} at "
            f"{p.data.image_size} px; the paper reports {pct(PAPER['test_accuracy'])} on the real "
            f"CT scans at 224 px{comparable}."
        )
    clean = _attack_clean(inputs)
    den_clean = _get(inputs.metrics["denoise"], "denoised_clean_accuracy")
    if den_clean is not None and clean is not None:
        out.append(
            f"Passing clean test images through the autoencoder changes accuracy from {pct(clean)} "
            f"to {pct(den_clean)} ({100 * (den_clean - clean):+.1f} points): the price of the "
            "denoiser on clean inputs."
        )
    for m in p.attack.methods:
        adv = _attack_accuracy(inputs, m)
        if adv is None or clean is None:
            continue
        drop = clean - adv
        verdict = (
            "consistent with the paper's claim that accuracy drops"
            if drop >= ATTACK_DROP
            else "the attack barely changes accuracy (< 5 points), unlike the paper's claim"
        )
        out.append(
            f"{m.upper()} at eps={eps:g} lowers accuracy from {pct(clean)} to {pct(adv)} - {verdict}."
        )
        den = _denoised_accuracy(inputs, m)
        if den is not None:
            fraction, verdict = restoration(clean, adv, den)
            share = f", {pct(fraction)} of the loss recovered" if fraction is not None else ""
            out.append(
                f"Denoising {m.upper()} images with the autoencoder gives {pct(den)}{share}: it "
                f"{verdict} (restores >= {pct(RESTORE_FULL)}, partly >= {pct(RESTORE_PART)})."
            )
    emb = inputs.metrics["embed"]
    for space in ("cnn", "ae"):
        for m in p.attack.methods:
            full = _get(emb, f"{space}.{m}.probe_auroc.full")
            if full is None:
                continue
            in2d = {e: _get(emb, f"{space}.{m}.probe_auroc.{e}") for e in ("pca", "tsne", "umap")}
            best = max((v, e) for e, v in in2d.items() if v is not None)
            out.append(
                f"The {SPACE_NAMES[space]} separates clean from {m.upper()} eps={eps:g} images "
                f"with probe AUROC {full:.2f} - **{separability(full)}**; the best 2-D view "
                f"({EMBEDDING_NAMES[best[1]]}) gives {best[0]:.2f} ({separability(best[0])})."
            )
    for m in p.attack.methods:
        a = _get(emb, f"detector.{m}.auroc")
        if a is not None:
            out.append(
                f"The reconstruction-error detector tells {m.upper()} from clean inputs with AUROC "
                f"{a:.2f} - **{separability(a)}**."
            )
    rob = inputs.metrics["robustness"]
    if rob is not None:
        out += defence_verdicts(rob)
        detector = _detector_paragraph(rob)
        if detector is not None:
            out.append(detector.text)
    out += certify_conclusions(inputs)
    sec = Section("Conclusions")
    if out:
        sec.blocks.append(
            Paragraph(
                f"Thresholds: AUROC < {AUROC_PARTLY} indistinguishable, < {AUROC_SEPARABLE} partly "
                f"separable, else separable; an attack lowers accuracy when it costs >= "
                f"{100 * ATTACK_DROP:.0f} points."
            )
        )
        sec.blocks.append(Bullets(tuple(out)))
    else:
        sec.blocks.append(Paragraph("No stage results yet: run `dvc repro`."))
    return sec


def other_figures(inputs: Inputs, shown: Iterable[Path]) -> Section | None:
    """PNGs of stages this report has no section for (none today; kept so nothing is hidden)."""
    seen = set(shown)
    rest = [img for s in STAGES for img in inputs.figures[s] if img.path not in seen]
    return Section("Other figures", list(rest)) if rest else None


def build_report(inputs: Inputs) -> list[Section]:
    sections = [
        conclusions(inputs),
        paper_vs_run(inputs),
        configuration(inputs),
        clean_models(inputs),
        attacks_section(inputs),
        denoise_section(inputs),
        embed_section(inputs),
        robustness_section(inputs),
        certify_section(inputs),
    ]
    shown = [b.path for s in sections for b in s.blocks if isinstance(b, Image)]
    extra = other_figures(inputs, shown)
    return sections + ([extra] if extra else [])


# --------------------------------------------------------------------------- rendering

TITLE = "Adversarial robustness through autoencoder denoising: run report"

CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  max-width: 1100px; margin: 2rem auto; padding: 0 1.5rem; color: #1f2328; line-height: 1.5; }
h1 { font-size: 1.7rem; border-bottom: 2px solid #d0d7de; padding-bottom: .4rem; }
h2 { font-size: 1.35rem; margin-top: 2.4rem; border-bottom: 1px solid #d0d7de; padding-bottom: .3rem; }
nav { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px; padding: .6rem 1.2rem; }
nav ol { margin: .3rem 0; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .9rem; }
th, td { border: 1px solid #d0d7de; padding: .3rem .6rem; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
tr:nth-child(even) td { background: #fbfcfd; }
figure { margin: 1.2rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { font-size: .88rem; color: #57606a; margin-top: .3rem; }
code { background: #f6f8fa; padding: .1rem .3rem; border-radius: 4px; font-size: .88em; }
li { margin: .25rem 0; }
"""


def _inline_html(text: str) -> str:
    escaped = html.escape(text, quote=False)
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", escaped)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render_html(sections: Sequence[Section]) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(TITLE)}</title>",
        f"<style>{CSS}</style></head>",
        "<body>",
        f"<h1>{html.escape(TITLE)}</h1>",
        "<nav><strong>Contents</strong><ol>",
    ]
    parts += [f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a></li>' for s in sections]
    parts.append("</ol></nav>")
    for s in sections:
        parts.append(f'<h2 id="{s.anchor}">{html.escape(s.title)}</h2>')
        for b in s.blocks:
            if isinstance(b, Paragraph):
                parts.append(f"<p>{_inline_html(b.text)}</p>")
            elif isinstance(b, Bullets):
                parts.append("<ul>")
                parts += [f"<li>{_inline_html(item)}</li>" for item in b.items]
                parts.append("</ul>")
            elif isinstance(b, Table):
                parts.append("<table><thead><tr>")
                parts += [f"<th>{html.escape(c)}</th>" for c in b.columns]
                parts.append("</tr></thead><tbody>")
                for row in b.rows:
                    cells = "".join(f"<td>{_inline_html(c)}</td>" for c in row)
                    parts.append(f"<tr>{cells}</tr>")
                parts.append("</tbody></table>")
            elif isinstance(b, Image):
                cap = html.escape(b.caption)
                parts.append(
                    f'<figure><img src="{_data_uri(b.path)}" alt="{cap}">'
                    f"<figcaption>{cap} <code>{html.escape(b.path.parent.name)}/"
                    f"{html.escape(b.path.name)}</code></figcaption></figure>"
                )
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(sections: Sequence[Section], out_dir: Path) -> str:
    """Markdown with figures linked relative to `out_dir` (where report.md is written)."""
    lines = [f"# {TITLE}", "", "Contents:", ""]
    lines += [f"{i}. [{s.title}](#{s.anchor})" for i, s in enumerate(sections, 1)]
    for s in sections:
        lines += ["", f"## {s.title}", ""]
        for b in s.blocks:
            if isinstance(b, Paragraph):
                lines += [b.text, ""]
            elif isinstance(b, Bullets):
                lines += [f"- {item}" for item in b.items] + [""]
            elif isinstance(b, Table):
                lines.append("| " + " | ".join(_md_cell(c) for c in b.columns) + " |")
                lines.append("|" + "|".join(" --- " for _ in b.columns) + "|")
                lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
                lines.append("")
            elif isinstance(b, Image):
                rel = Path(os.path.relpath(b.path.resolve(), out_dir.resolve())).as_posix()
                lines += [f"![{b.caption}]({rel})", "", f"*{b.caption}*", ""]
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"
