"""The section where proofs and attacks meet on one threat model: L2 at certify.radii."""

from __future__ import annotations

import math

from advdenoise.evaluation.verdicts import defences_in
from advdenoise.report.document import Paragraph, Section, Table, share
from advdenoise.report.inputs import Inputs

BOUNDS_PNG = "bounds.png"  # the certify stage's figure of this section


def l2_section(inputs: Inputs, figure: bool = True) -> Section | None:
    """Certified (lower bound) beside attacked (upper bound) accuracy of each smoothed model, and
    L2 APGD through every defence (with the certify stage's `figure`); None when neither stage
    wrote L2 figures."""
    cert, rob = inputs.metrics["certify"] or {}, inputs.metrics["robustness"] or {}
    if not any(".l2.radius_" in k for k in (*cert, *rob)):
        return None
    p = inputs.params
    radii = tuple(p.certify.radii)
    sec = Section("Proven vs broken: L2 attacks at the certified radii")
    rows = []
    for model in p.certify.models:
        for sigma in p.certify.sigmas:
            key = f"{model}.sigma_{sigma:g}"
            if f"{key}.l2.radius_0.accuracy" not in cert:
                continue
            cells = (
                f"{share(cert, f'{key}.l2.radius_{r:g}.certified_accuracy')} - "
                f"{share(cert, f'{key}.l2.radius_{r:g}.accuracy')}"
                for r in radii
            )
            held = cert.get(f"checks.{key}.l2_certified_le_attacked")
            rows.append((model, f"{sigma:g}", *cells, "passed" if held else "FAILED"))
    if rows:
        sec.blocks.append(
            Paragraph(
                "Certified accuracy lower-bounds the smoothed classifier's accuracy under every L2 "
                "attack within radius r; its accuracy under one such attack bounds it from above. "
                f"Both on {int(cert.get('l2_images', 0))} of the certify stage's "
                f"{int(cert.get('images', 0))} test images (certify.l2_images): L2 PGD on "
                f"the smoothed classifier with the gradient averaged over {p.certify.attack_samples}"
                f" noise draws per step (EOT, Salman et al. 2019; {p.certify.l2_steps} steps, "
                "certify.l2_steps), smallest radius first on the images still right, where right "
                f"means the majority vote of n = {p.certify.n} noisy copies. Each cell is "
                "certified - attacked; the truth lies between. The check fails where the "
                "certificate claims more than the attack left (one image of slack)."
            )
        )
        columns = ("model", "sigma", *(f"r={r:g}" for r in radii), "certified <= attacked")
        sec.blocks.append(Table(columns, tuple(rows)))
    if figure:
        sec.blocks += [f for f in inputs.figures["certify"] if f.path.name == BOUNDS_PNG]
    defences = [d for d in defences_in(rob) if f"{d}.l2.radius_0.accuracy" in rob]
    if defences:
        pixels = p.data.image_size**2
        sec.blocks.append(
            Paragraph(
                "The same threat model without smoothing: L2 APGD-CE "
                f"({p.robustness.l2_steps} steps, {p.robustness.apgd_restarts} restart(s)) end "
                "to end through every defence (BPDA where needed), smallest radius first, on "
                f"{int(rob.get('l2_images', 0))} of the robustness stage's images "
                "(robustness.l2_images; radius 0 is clean accuracy there). The L-inf ball of eps "
                f"lies inside the L2 ball of eps x {math.sqrt(pixels):g}; check l2_le_linf_inside "
                "fails where the L2 attack leaves more than the L-inf attacks inside its ball."
            )
        )
        table = []
        for d in defences:
            cells = (share(rob, f"{d}.l2.radius_{r:g}.accuracy") for r in radii)
            held = rob.get(f"checks.{d}.l2_le_linf_inside")
            table.append((d, *cells, "-" if held is None else ("passed" if held else "FAILED")))
        columns = ("defence", *(f"r={r:g}" for r in radii), "L2 <= L-inf inside")
        sec.blocks.append(Table(columns, tuple(table)))
    return sec


def l2_conclusions(inputs: Inputs) -> list[str]:
    """Whether the certificates stayed under the attacks, and the widest gap between the two."""
    cert, cfg = inputs.metrics["certify"] or {}, inputs.params.certify
    held, gaps = {}, []
    for model in cfg.models:
        for sigma in cfg.sigmas:
            key = f"{model}.sigma_{sigma:g}"
            if f"checks.{key}.l2_certified_le_attacked" not in cert:
                continue
            held[key] = bool(cert[f"checks.{key}.l2_certified_le_attacked"])
            for r in cfg.radii:
                upper = float(cert[f"{key}.l2.radius_{r:g}.accuracy"])
                lower = float(cert[f"{key}.l2.radius_{r:g}.certified_accuracy"])
                gaps.append((upper - lower, model, sigma, r))
    if not gaps:
        return []
    gap, model, sigma, r = max(gaps)
    failed = [k for k, ok in held.items() if not ok]
    verdict = (
        f"FAILED for {', '.join(failed)}: a certificate claims more than the attack left"
        if failed
        else f"held for all {len(held)} (model, sigma) pairs"
    )
    return [
        f"Proof meets attack on L2 ({int(cert.get('l2_images', 0))} images): certified <= "
        f"attacked accuracy {verdict}. The widest gap, {100 * gap:.1f} points ({model}, "
        f"sigma={sigma:g}, r={r:g}), is how much of the smoothed classifier's robust accuracy "
        "neither proof nor attack settles."
    ]
