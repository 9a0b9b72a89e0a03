"""The robustness stage: every defence under oblivious, adaptive white-box and gradient-free attacks."""

# Threat models, per defence and eps (Carlini et al. 2019, "On evaluating adversarial robustness"):
# - oblivious: the attack stage's FGSM and PGD sets (crafted against the bare CNN) through defence +
#   CNN: the paper's threat model;
# - adaptive: FGSM, PGD and APGD-CE (white-box, through defence + CNN end to end; BPDA where the
#   defence has no gradient);
# - gradient-free: the Square Attack at the headline eps, on its own (robustness.square_images,
#   square_queries): it needs scores only, so masked gradients cannot hide a weakness from it. If
#   it breaks more images than the gradient attacks by more than sampling noise (a one-sided exact
#   McNemar test), the check gradient_not_masked fails;
# - L2: APGD-CE with norm 2 at every radius of certify.radii (robustness.l2_images, l2_steps), the
#   threat model of the certificates, so the certify stage's figures meet an attack on it.
# An image counts as robust only if it survives every attack: `robust_accuracy`, the per-image
# worst case over all of them (AutoAttack's robust accuracy), is the figure the verdicts use; the
# worst cases per threat model and eps are the gradient-based attacks'. Attacks run on the images
# the defended CNN classifies correctly (the others are wrong already), with seeds derived from
# (seed, defence, eps, attack).
#
# Checks (True = passed): iterative attacks at least as strong as FGSM; accuracy non-increasing in
# eps; PGD converged (2x steps moves accuracy by at most one point); APGD's extra restarts break at
# most robustness.restarts_tolerance images; the random sign-noise floor; adaptive at least as
# strong as oblivious; gradient_not_masked; L2 at least as strong as the L-inf attacks whose ball
# lies inside its own (l2_le_linf_inside). The reconstruction-error detector is attacked too
# (`detector`).
#
# Modules: `evaluation` (one defence, every attack and eps), `processes` (the cells in worker
# processes, robustness.workers), `summary` (checks, metrics, table, curves); the detector is
# `advdenoise.evaluation.detector`.
