"""JPEG compression through ART's preprocessor (PIL, on the host), BPDA gradient."""

from __future__ import annotations

import numpy as np

from advdenoise.defences.bpda import ArtPreprocessing


def jpeg_compression(quality: int) -> ArtPreprocessing:
    """ART JpegCompression (greyscale, per image); BPDA identity backward.

    ART converts [0, 1] floats to uint8 by truncation (x * 255 -> astype), which turns k/255 into
    k - 1 whenever float rounding lands just below k; we round to [0, 255] ourselves and use ART's
    [0, 255] mode so that clean 8-bit images enter the codec unchanged.
    """
    from art.defences.preprocessor import JpegCompression

    jpeg = JpegCompression(clip_values=(0, 255), quality=int(quality), channels_first=True)
    return ArtPreprocessing(
        "jpeg", lambda a: jpeg(np.rint(np.clip(a, 0.0, 1.0) * 255.0).astype(np.float32))[0] / 255.0
    )
