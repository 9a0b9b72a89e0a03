"""The robustness stage: every defence under oblivious, adaptive white-box and gradient-free attacks."""

# Threat models, per defence and eps (Carlini et al. 2019, "On evaluating adversarial robustness"):
# - oblivious: the attack stage's FGSM and PGD sets (crafted against the bare CNN) through defence +
#   CNN: the paper's threat model;
# - adaptive: FGSM, PGD and APGD-CE (white-box, through defence + CNN end to end; BPDA where the
#   defence has no gradient) and the Square Attack (gradient-free: it needs scores only, so gradient
#   masking cannot hide a defence's weakness from it). As in AutoAttack, Square runs on the images
#   that every gradient-based attack left correct: its accuracy is the robust accuracy after all of
#   them, and `square_breaks` counts what it found that they missed (gradient masking if > 0).
# An image counts as robust only if it survives every attack: the per-image worst case over all of
# them is the figure the verdicts use. Attacks run on the images the defended CNN classifies
# correctly (the others are wrong already), with seeds derived from (seed, defence, eps, attack).
#
# Checks (True = passed): iterative attacks at least as strong as FGSM; accuracy non-increasing in
# eps; PGD converged (2x steps moves accuracy by at most one point); the random sign-noise floor;
# adaptive at least as strong as oblivious; gradient-free no stronger than white-box (else the
# white-box evaluation is masked). The reconstruction-error detector is attacked too (`detector`).
#
# Modules: `evaluation` (one defence, every attack and eps), `processes` (the cells in worker
# processes, robustness.workers), `summary` (checks, metrics, table, curves); the detector is
# `advdenoise.evaluation.detector`.
