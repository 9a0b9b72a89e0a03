"""Sections that reproduce the paper: configuration, paper vs run, clean models, attacks,
denoising, and feature embeddings."""

from __future__ import annotations

import dataclasses
from typing import Any

from advdenoise.core.params import Params
from advdenoise.report.document import (
    Block,
    Paragraph,
    Section,
    Table,
    config_text,
    metrics_dump,
    num,
    pct,
)
from advdenoise.report.inputs import (
    Inputs,
    attack_accuracy,
    attack_clean,
    clean_accuracy,
    dataset_name,
    denoised_accuracy,
    get,
    not_run,
    stage_results,
)
from advdenoise.report.rules import AUROC_PARTLY, AUROC_SEPARABLE, PAPER, separability

SPACE_NAMES = {"cnn": "CNN penultimate layer", "ae": "autoencoder bottleneck"}
EMBEDDING_NAMES = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}


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
    "train_cnn.arch",
    "train_cnn.<arch>",  # the chosen architecture's section, key by key
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


def _config_keys(p: Params) -> list[str]:
    arch = f"train_cnn.{p.train_cnn.arch}"
    section = [f"{arch}.{f.name}" for f in dataclasses.fields(_param(p, arch))]
    return [k for key in CONFIG_KEYS for k in (section if key == "train_cnn.<arch>" else [key])]


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
    rows: tuple[tuple[str, ...], ...] = tuple(
        (k, config_text(_param(p, k))) for k in _config_keys(p)
    )
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
        if "leakage.nn_accuracy" in prep:
            sec.blocks += leakage_blocks(p.data.split, prep)
        sec.blocks.append(metrics_dump("metrics/prepare.json (the data checks)", prep))
    sec.blocks += inputs.figures["prepare"]
    return sec


def leakage_blocks(split: str, prep: dict[str, Any]) -> list[Block]:
    """What the leakage probe's figures mean; both splits side by side where prepare probed both."""
    blocks: list[Block] = [
        Paragraph(
            f"Leakage ({split} split): {num(prep['leakage.groups_shared'])} of "
            f"{num(prep['leakage.groups'])} scan groups have images in both train and test, and a "
            f"1-nearest-neighbour lookup of test images among training images scores "
            f"{pct(prep['leakage.nn_accuracy'])}. A lookup that comes near the classifier's "
            "accuracy means the test set holds near-copies of training images (slices of one "
            "scan): accuracy then measures recall of scans rather than diagnosis."
        )
    ]
    kinds = [k for k in ("random", "grouped") if f"leakage.{k}.nn_accuracy" in prep]
    if len(kinds) == 2:
        rows = tuple(
            (
                k + (" (this run)" if k == split else ""),
                num(prep[f"leakage.{k}.groups_shared"]),
                pct(prep[f"leakage.{k}.nn_accuracy"]),
            )
            for k in kinds
        )
        blocks.append(Table(("split", "scan groups on both sides", "1-NN accuracy"), rows))
    return blocks


def paper_vs_run(inputs: Inputs) -> Section:
    p = inputs.params
    sec = Section("Paper vs this run")
    acc = clean_accuracy(inputs)
    run_acc = pct(acc) if acc is not None else "not run"
    rows: list[tuple[str, str, str]] = [
        ("dataset", PAPER["dataset"], dataset_name(p)),
        ("image size", f"{PAPER['image_size']} px", f"{p.data.image_size} px"),
        ("CNN epochs", str(PAPER["epochs"]), str(p.train_cnn.epochs)),
        ("learning rate (Adam)", f"{PAPER['lr']:g}", f"{p.train_cnn.lr:g}"),
        ("batch size", str(PAPER["batch_size"]), str(p.train_cnn.batch_size)),
        ("clean test accuracy", pct(PAPER["test_accuracy"]), run_acc),
    ]
    clean = attack_clean(inputs)
    for m in p.attack.methods:
        adv = attack_accuracy(inputs, m)
        rows.append(
            (
                f"{m.upper()} accuracy at eps={p.attack.eps:g}",
                "paper claims: accuracy drops as eps grows",
                f"{pct(adv)} (clean {pct(clean)})" if adv is not None and clean else "not run",
            )
        )
        den = denoised_accuracy(inputs, m)
        rows.append(
            (
                f"{m.upper()} accuracy after denoising",
                "paper claims: denoising does not restore it",
                pct(den) if den is not None else "not run",
            )
        )
    emb = inputs.metrics["embed"]
    for m in p.attack.methods:
        a = get(emb, f"ae.{m}.probe_auroc.full")
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
        sec.blocks.append(Paragraph(f"**{title}** (metrics/{stage}.json)"))
        sec.blocks += stage_results(inputs, stage)
    return sec


def attacks_section(inputs: Inputs) -> Section:
    sec = Section("Attacks")
    sec.blocks.append(
        Paragraph(
            f"FGSM and L-inf PGD ({inputs.params.attack.pgd_steps} steps, step "
            f"{inputs.params.attack.pgd_step_fraction:g} x eps) on the test split at every eps of "
            f"attack.eps_grid (metrics/attack.json); the headline is eps = "
            f"{inputs.params.attack.eps:g}."
        )
    )
    sec.blocks += stage_results(inputs, "attack")
    return sec


def denoise_section(inputs: Inputs) -> Section:
    sec = Section("Denoising")
    sec.blocks.append(
        Paragraph(
            "Clean and adversarial test images passed through the autoencoder, then classified "
            "(metrics/denoise.json)."
        )
    )
    sec.blocks += stage_results(inputs, "denoise")
    return sec


def embed_section(inputs: Inputs) -> Section:
    sec = Section("Feature embeddings and separability")
    m = inputs.metrics["embed"]
    p = inputs.params
    if m is None:
        sec.blocks.append(not_run("embed"))
        sec.blocks += inputs.figures["embed"]
        return sec
    n = get(m, "points_per_group")
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
            full = get(m, f"{k}.probe_auroc.full")
            if full is None:
                continue
            cells = [SPACE_NAMES[space], meth.upper()]
            cells.append(num(round(get(m, f"{k}.silhouette") or 0.0, 3)))
            for where in ("full", "pca", "tsne", "umap"):
                v = get(m, f"{k}.probe_auroc.{where}")
                cells.append(f"{v:.3f}" if v is not None else "-")
            den = get(m, f"{k}.denoised.probe_auroc.full")
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
        a = get(m, f"detector.{meth}.auroc")
        if a is None:
            continue
        tpr = get(m, f"detector.{meth}.tpr_at_5pct_fpr")
        err = get(m, f"detector.{meth}.mean_error")
        det_rows.append(
            (
                meth.upper(),
                f"{a:.3f}",
                pct(tpr) if tpr is not None else "-",
                num(err) if err is not None else "-",
                num(get(m, "detector.clean.mean_error") or 0.0),
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
    sec.blocks.append(metrics_dump("metrics/embed.json", m))
    sec.blocks += inputs.figures["embed"]
    return sec
