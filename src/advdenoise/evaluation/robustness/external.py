"""The external test set (`data.external`): another site's images, never trained on.

A grouped split keeps scans apart but every image still comes from one hospital; the external set
measures what moving to another site costs. Per defence: clean accuracy on the whole set, and on a
seeded subset (robustness.external_images) the robustness stage's own evaluation at
robustness.eps alone: oblivious sets crafted on the bare CNN for these images, the adaptive
attacks, the convergence extras and Square, so `robust_accuracy` means what it means on the
internal test split. Its random streams are its own (`STREAM`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from advdenoise import attacks
from advdenoise.attacks import runs as attack_runs
from advdenoise.attacks import specs as attack_specs
from advdenoise.attacks.sets import AdversarialSets
from advdenoise.core.params import Params
from advdenoise.core.seeding import named_seed
from advdenoise.data.splits import LabelledImages, evaluation_subset, to_float
from advdenoise.defences.registry import build_defence, defended_classifier
from advdenoise.evaluation.robustness.evaluation import evaluate_defence
from advdenoise.evaluation.robustness.processes import Inputs
from advdenoise.models.inference import predict_labels

STREAM = "robustness.external"  # the subset, the oblivious sets and every attack on them


def evaluate_external(
    params: Params,
    inputs: Inputs,
    external: LabelledImages,
    *,
    device: torch.device | str,
    log: Callable[[str], None] = lambda _msg: None,
) -> dict[str, float]:
    """Flat metrics `external.*`: the set's size and majority rate, the subset's size, and per
    defence `external.<d>.clean_accuracy` (every image), `external.<d>.worst.accuracy` (every
    gradient-based attack) and `external.<d>.robust_accuracy` (Square too) at robustness.eps."""
    cfg, attack, cnn = params.robustness, params.attack, inputs.cnn
    x, y = to_float(external.x).numpy(), external.y
    stream_seed = named_seed(params.seed, STREAM)
    subset = evaluation_subset(y, cfg.external_images, params.seed, f"{STREAM}.subset")
    xs, ys = x[subset], y[subset]
    bare = attacks.make_art_classifier(cnn, xs.shape[1:], inputs.nb_classes, device)
    crafted = attack_runs.attack_grid(
        bare, attack_specs.METHODS, [cfg.eps], xs, ys, attack, stream_seed
    )
    oblivious = AdversarialSets((cfg.eps,), crafted)
    out = {
        "external.images": float(len(y)),
        "external.subset_images": float(len(ys)),
        "external.eps": cfg.eps,
        "external.chance": float(np.bincount(y).max() / len(y)),
    }
    for name in cfg.defences:
        defence = build_defence(name, cfg, inputs.autoencoders)
        model = defended_classifier(defence, cnn)
        clean = predict_labels(model, x, attack.batch_size, device) == y
        result = evaluate_defence(
            name, defence, cnn, xs, ys, oblivious, attack, cfg, seed=stream_seed,
            device=device, nb_classes=inputs.nb_classes, eps_values=(cfg.eps,),
        )  # fmt: skip
        out[f"external.{name}.clean_accuracy"] = float(clean.mean())
        out[f"external.{name}.worst.accuracy"] = result.worst("worst", cfg.eps)
        out[f"external.{name}.robust_accuracy"] = result.robust_accuracy()
        log(f"external: {name} done")
    return out
