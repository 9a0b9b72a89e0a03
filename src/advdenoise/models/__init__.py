"""The networks: the classifier (`classifier`) and the denoising autoencoder (`autoencoder`),
their pickle-free model files (`files`), and batched inference without gradients (`inference`).
"""
