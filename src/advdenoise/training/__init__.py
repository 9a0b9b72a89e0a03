"""Training loops: the CNN and any denoiser (`loops`), the paper's autoencoder on clean + noisy
images (`combined`, with `noise`), denoisers trained on adversarial images (`adversarial`) and the
Gaussian denoiser for randomized smoothing (`gaussian`).
"""
