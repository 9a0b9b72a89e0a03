"""Defences in front of the CNN, each a torch module mapping [0, 1] images to [0, 1] images: the
registry by name and the composition with the CNN (`registry`), and the preprocessors (`median`,
`squeezing`, `jpeg`) with BPDA gradients where they have none (`bpda`).
"""
